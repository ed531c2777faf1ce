"""Every module's documentation renders with ansible-doc, under its FQCN."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

MODULES = sorted(path.stem for path in (ROOT / "plugins" / "modules").glob("*.py") if path.stem != "__init__")


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_renders(module):
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    result = subprocess.run([str(Path(sys.executable).parent / "ansible-doc"), f"intowork.pgops.{module}"],
                            cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert f"intowork.pgops.{module}" in result.stdout
    assert "EXAMPLES:" in result.stdout and "RETURN VALUES:" in result.stdout
    # Every module that connects to the database documents the shared connection options (its action group's).
    connects = module in yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())["action_groups"]["pgops"]
    assert ("connect_timeout" in result.stdout) == connects, "the shared connection options are documented"


def test_filter_documentation_renders():
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    result = subprocess.run([str(Path(sys.executable).parent / "ansible-doc"), "-t", "filter",
                             "intowork.pgops.health_trend"], cwd=ROOT, env=env, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert "days until" in result.stdout


def test_every_health_threshold_is_in_the_health_guide():
    from ansible_collections.intowork.pgops.plugins.module_utils._health import THRESHOLDS
    from ansible_collections.intowork.pgops.plugins.modules import health_check

    documented = yaml.safe_load(health_check.DOCUMENTATION)["options"]["thresholds"]["suboptions"]
    assert {name: spec["default"] for name, spec in documented.items()} == THRESHOLDS
    guide = (ROOT / "docs" / "health.md").read_text()
    assert [name for name in THRESHOLDS if f"`{name}`" not in guide] == []
