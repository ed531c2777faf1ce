"""The project's ansible-lint rule: a registered result made un-failable must not decide a gate."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

SWALLOWED = """---
- name: Check something
  ansible.builtin.command: /bin/false
  register: _probe
  changed_when: false
  failed_when: {keep}

- name: Judge it
  ansible.builtin.fail:
    msg: the check failed
  when: _probe is failed
"""


@pytest.mark.parametrize("keep, fires", [("false", True), ("_probe.rc > 1", False)])
def test_swallowed_verdict_rule(tmp_path, keep, fires):
    role = tmp_path / "roles" / "demo" / "tasks"
    role.mkdir(parents=True)
    (role / "main.yml").write_text(SWALLOWED.format(keep=keep))
    (tmp_path / ".ansible-lint").write_text(
        "---\nprofile: min\nrulesdir:\n  - %s\nuse_default_rules: true\nenable_list:\n  - pgops-swallowed-verdict\n"
        % (ROOT / "tools" / "lint_rules"))
    lint = shutil.which("ansible-lint", path=str(Path(sys.executable).parent))
    result = subprocess.run([lint, "--nocolor", "roles/demo"], cwd=tmp_path, capture_output=True, text=True,
                            check=False)
    output = result.stdout + result.stderr
    assert ("pgops-swallowed-verdict" in output and "_probe is registered with failed_when: false" in output) == fires, output
    assert (result.returncode != 0) == fires, output
