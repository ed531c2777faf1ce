"""make demo's script, small: it deploys in both modes with the application writing, and says what the writes
met; nothing in its output reads as a fault."""

import os
import re
import subprocess


from conftest import ROOT


def test_the_demo_shows_both_modes_write_figures_and_no_warning(tmp_path):
    env = dict(os.environ, SCALE="0.01", PGOPS_DEMO_NAME=f"demo-test-{os.getpid()}", PGOPS_DEMO_DIR=str(tmp_path))
    env.pop("ANSIBLE_CONFIG", None)
    try:
        result = subprocess.run([str(ROOT / "tools" / "demo.sh")], cwd=ROOT, env=env, capture_output=True, text=True,
                                check=False, stdin=subprocess.DEVNULL, timeout=600)
    finally:
        subprocess.run([str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "tools" / "sandbox.py"), "down",
                        "--name", env["PGOPS_DEMO_NAME"]], capture_output=True, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert not [line for line in output.splitlines() if "WARNING" in line or "Traceback" in line], output
    maintenance = re.search(r"maintenance +(\d+) of (\d+) writes failed; they failed for ([0-9.]+) s \(the runbook: "
                            r"writes off ([0-9.]+) s\)", output)
    online = re.search(r"online +(\d+) of (\d+) writes failed", output)
    assert maintenance and online, output[-2000:]
    failed, total, window, reported = map(float, maintenance.groups())
    # The write guard did turn the application's writes off, and for about as long as the runbook says.
    assert 0 < failed < total and window > 0 and abs(window - reported) < 3, maintenance.group(0)
    assert online.group(1) == "0" and int(online.group(2)) > 0, online.group(0)
    # Each runbook's own last words, whole: both deployments, the rollback between them, the run with nothing to do;
    # not the job artifacts (JSON) printed after the recap.
    assert len(re.findall(r": deployed \w+ -> \w+ \(\d+ revision\(s\)\), writes off", output)) == 2, output
    assert "Rolled back by downgrade: the database is at revision" in output, output
    assert re.search(r": nothing to deploy: at \w+ \(head\)", output), output
    assert "pgops_deployments" not in output and "pgops_rollbacks" not in output, output
