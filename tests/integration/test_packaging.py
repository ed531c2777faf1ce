"""The built collection: what the tarball holds, and a runbook run from it, outside the checkout, by FQCN only."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import ROOT, artifacts, libpq_env, owner_params, play_recap, query
from test_any_project import CHAIN, BOOKSHELF_PYTHON, recorded
from test_any_project import bookshelf_owned  # noqa: F401  # pylint: disable=unused-import  # a fixture

BIN = Path(sys.executable).parent
# Nothing of the checkout's tooling, tests, run output or the team's own inventories.
NOT_SHIPPED = ("build/", "reports/", "backups/", "tools/", "tests/", "molecule/", "benchmarks/", ".ci/", ".config/",
               "inventories/", "requirements-dev.txt", "Makefile", ".venv", ".collections/", "__pycache__", ".pyc")


def tool(name, *args, cwd, collections=None):
    """A tool of the virtualenv (ansible-galaxy, ansible-builder) with nothing of the checkout's configuration,
    and `collections` the only collections path; its output, after it succeeded."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    if collections:
        env.update(ANSIBLE_COLLECTIONS_PATH=str(collections))
    result = subprocess.run([str(BIN / name), *args], cwd=cwd, env=env, capture_output=True, text=True,
                            check=False, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The collection built from the checkout and installed into an empty collections path."""
    where = tmp_path_factory.mktemp("packaging")
    collections = where / "collections"
    tool("ansible-galaxy", "collection", "build", str(ROOT), "--output-path", str(where / "dist"), cwd=where,
         collections=collections)
    (tarball,) = (where / "dist").glob("intowork-pgops-*.tar.gz")
    installing = tool("ansible-galaxy", "collection", "install", "--offline", "-p", str(collections), str(tarball),
                      cwd=where, collections=collections)
    assert "[WARNING]" not in installing.stdout + installing.stderr, installing.stdout + installing.stderr
    return tarball, collections


def test_the_tarball_holds_the_collection_and_nothing_of_the_checkout(installed):
    tarball, _collections = installed
    with tarfile.open(tarball) as archive:
        names = archive.getnames()
    shipped = [name for name in names if any(part in name for part in NOT_SHIPPED)]
    assert not shipped, shipped
    for wanted in ("COPYING", "meta/runtime.yml", "meta/execution-environment.yml", "bindep.txt",
                   "playbooks/deploy_migration.yml", "roles/backup/files/pgops_backup.py",
                   "examples/bookshelf/inventory/group_vars/all.yml"):
        assert wanted in names, wanted
    playbooks = [name for name in names if name.startswith("playbooks/") and name.endswith(".yml")]
    assert not [name for name in playbooks if "-" in Path(name).name], "collection playbooks cannot have dashes"


@pytest.mark.one_server_version  # packaging, not the server
def test_a_runbook_runs_from_the_installed_collection_by_fqcn(server, bookshelf_owned, installed, tmp_path):
    _tarball, collections = installed
    example = collections / "ansible_collections" / "intowork" / "pgops" / "examples" / "bookshelf"
    outside = tmp_path / "operator"
    outside.mkdir()
    env = {key: value for key, value in libpq_env(owner_params(server, bookshelf_owned)).items()
           if not key.startswith("ANSIBLE_")}
    env.update(ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_NOCOLOR="1", ANSIBLE_SHOW_CUSTOM_STATS="1",
               PGOPS_SANDBOX_BINDIR=server["bindir"],
               PATH=f"{BIN}{os.pathsep}{env['PATH']}")
    settings = {"pgops_alembic_python": str(BOOKSHELF_PYTHON), "pgops_backup_dir": str(tmp_path / "backups"),
                "pgops_reports_dir": str(tmp_path / "reports"), "pgops_program_dir": str(tmp_path / "lib"),
                "pgops_config_dir": str(tmp_path / "etc")}
    result = subprocess.run([str(BIN / "ansible-playbook"), "intowork.pgops.deploy_migration",
                             "-i", str(example / "inventory"), "-e", json.dumps(settings),
                             "-e", f"pgops_migration_target={CHAIN[2]}"],
                            cwd=outside, env=env, capture_output=True, text=True, check=False,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0 and play_recap(result)["failed"] == 0, result.stdout[-3000:] + result.stderr
    name = bookshelf_owned["login_db"]
    assert f"{name}: deployed {CHAIN[0]} -> {CHAIN[2]} (2 revision(s))" in result.stdout, result.stdout[-3000:]
    assert recorded(bookshelf_owned) == CHAIN[2]
    assert query(bookshelf_owned, "SELECT count(*) FROM books")[0][0] == 1
    # The record is a job artifact too (set_stats), for a controller whose disk goes with the job.
    published = artifacts(result)
    (deployment,) = published["pgops_deployments"].values()
    (backup,) = published["pgops_backups"].values()
    assert deployment["outcome"] == "deployed" and backup["sha256"] == deployment["backup"]["sha256"], published


def test_every_role_used_alone_by_fqcn_starts_with_no_inventory(installed, tmp_path):
    """Each role's defaults and argument spec stand without any pgops_* variable: a play of all of them, run
    for their argument validation only (tagged always), passes, and ansible-doc shows literal defaults."""
    _tarball, collections = installed
    roles = sorted(path.name for path in (ROOT / "roles").iterdir() if (path / "meta" / "argument_specs.yml").exists())
    (tmp_path / "hosts.yml").write_text(json.dumps({"all": {"hosts": {"alone": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    (tmp_path / "alone.yml").write_text(json.dumps([{
        "name": "Every role by FQCN", "hosts": "alone", "gather_facts": False,
        "roles": [f"intowork.pgops.{role}" for role in roles]}]))
    result = tool("ansible-playbook", "-i", "hosts.yml", "alone.yml", "--tags", "argument_validation_only",
                  cwd=tmp_path, collections=collections)
    assert play_recap(result) == {"ok": len(roles), "changed": 0, "unreachable": 0, "failed": 0}, result.stdout
    shown = tool("ansible-doc", "-t", "role", "intowork.pgops.backup", cwd=tmp_path, collections=collections).stdout
    assert "default: /var/backups/pgops" in shown and "{{" not in shown, shown[:3000]


def test_an_execution_environment_gets_the_collections_requirements(installed, tmp_path):
    tarball, collections = installed
    # What ansible-builder's introspection (run inside the image build) takes from the installed collection.
    found = tool("ansible-builder", "introspect", "--sanitize", str(collections), cwd=tmp_path).stdout
    for requirement in ("psycopg2-binary>=2.9,<3", "pglast>=7", "alembic>=1.13", "SQLAlchemy>=2.0",
                        "postgresql15 [platform:rpm]", "postgresql18 [platform:rpm]",
                        "postgresql-client-15 [platform:dpkg]", "postgresql-client-18 [platform:dpkg]"):
        assert f"{requirement}  # from collection intowork.pgops" in found, found
    assert "==" not in found, "ranges, not the checkout's pins"
    # The documented definition makes a build context around the tarball (there is no container engine here to
    # build it).
    definition = ROOT / "docs" / "automation-platform" / "execution-environment.yml"
    (tmp_path / "execution-environment.yml").write_bytes(definition.read_bytes())
    (tmp_path / "intowork-pgops.tar.gz").write_bytes(tarball.read_bytes())
    tool("ansible-builder", "create", "-f", "execution-environment.yml", "-c", "context", cwd=tmp_path)
    context = tmp_path / "context"
    assert (context / "_build" / "collections" / "intowork-pgops.tar.gz").read_bytes() == tarball.read_bytes()
    assert "/build/collections/intowork-pgops.tar.gz" in (context / "_build" / "requirements.yml").read_text()
    containerfile = (context / "Dockerfile").read_text()
    assert "pgdg-redhat-repo-latest" in containerfile and "introspect" in containerfile
