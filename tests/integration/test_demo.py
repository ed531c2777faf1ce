"""make demo's script, small: it deploys in both modes with the application writing, and says what the writes
met; nothing in its output reads as a fault."""

import hashlib
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
        # What make demo-down runs: it removes this demo's sandbox, and only that one.
        down = subprocess.run([str(ROOT / "tools" / "demo.sh"), "down"], cwd=ROOT, env=env, capture_output=True,
                              text=True, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert down.returncode == 0 and env["PGOPS_DEMO_NAME"] in down.stdout, down.stdout + down.stderr
    again = subprocess.run([str(ROOT / "tools" / "demo.sh"), "down"], cwd=ROOT, env=env, capture_output=True,
                           text=True, check=False)
    assert again.stdout.strip() == f"sandbox {env['PGOPS_DEMO_NAME']}: nothing to remove", again.stdout
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
    assert "INFO  [alembic" not in output, output
    assert re.search(r"the backup before the first deployment: \S+\.dump \(\d+ bytes, verified: true\)", output), output
    assert f"2 deployment records (JSON, and Markdown beside each) in {tmp_path / 'reports'}" in output, output


def test_each_checkout_has_its_own_demo_sandbox():
    env = {key: value for key, value in os.environ.items() if key != "PGOPS_DEMO_NAME"}
    name = subprocess.run([str(ROOT / "tools" / "demo.sh"), "name"], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=False)
    expected = "demo-" + hashlib.sha256(str(ROOT).encode()).hexdigest()[:10]
    assert name.returncode == 0 and name.stdout.strip() == expected, name.stdout + name.stderr
