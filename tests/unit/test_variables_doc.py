"""docs/variables.md is generated and stays so: it equals what the specs and docs/runbook-variables.yml give,
and every pgops_* name the runbooks and roles read is in it."""

import re

import yaml

from conftest import ROOT
from variables_doc import document, inventory_variables, roles

SOURCES = [path for folder in ("playbooks", "roles") for path in (ROOT / folder).rglob("*")
           if path.suffix in (".yml", ".j2") and path.is_file() and not path.is_symlink()]


def playbook_variables():
    return yaml.safe_load((ROOT / "docs" / "runbook-variables.yml").read_text())


def test_the_reference_is_the_generated_one():
    assert (ROOT / "docs" / "variables.md").read_text() == document(), (
        "docs/variables.md is stale: run .venv/bin/python tools/variables_doc.py > docs/variables.md")


def test_every_inventory_variable_the_runbooks_read_is_documented():
    sections = playbook_variables()
    documented = {name for key, section in sections.items() if key != "not_settings" for name in section["variables"]}
    documented |= set(inventory_variables(roles())) | set(sections["not_settings"])
    read = set()
    for path in SOURCES:
        # File names (pgops_backup.py) and Prometheus metrics (pgops_backup_*) are not variables.
        text = re.sub(r"pgops_\w+\.(py|json|sql)\b", "", path.read_text())
        if "monitoring" in path.parts and path.suffix == ".yml" and "files" in path.parts:
            continue
        read |= set(re.findall(r"\bpgops_[a-z0-9_]+", text))
    assert not read - documented, f"not in docs/runbook-variables.yml: {sorted(read - documented)}"


def test_the_rollback_runbooks_extra_vars_are_the_ones_it_reads():
    runbook = (ROOT / "playbooks" / "rollback.yml").read_text()
    for name in playbook_variables()["rollback_extra_vars"]["variables"]:
        assert re.search(r"\b%s\b \| default\(" % name, runbook), f"rollback.yml does not read -e {name}"


def test_the_finish_runbooks_extra_vars_are_the_ones_it_reads():
    runbook = (ROOT / "playbooks" / "finish_deployment.yml").read_text()
    for name in playbook_variables()["finish_extra_vars"]["variables"]:
        assert re.search(r"\b%s\b \| default\(" % name, runbook), f"finish_deployment.yml does not read -e {name}"
