"""The runbooks over SSH, as production runs them (a loopback sshd, an account with key-only login and sudo):
a connection lost in the middle of a migration still ends in the rescue and always path."""

import json
import os
import signal
import sys
import types

import pytest

import ssh_host
from conftest import HEAD, ROOT, failure_message, hold_lock, play_recap, run_playbook, start_playbook
from test_deploy_faults import counts
from test_deploy_interruptions import (BLOCKED_TABLE, SETTINGS, TOLERATE_BLOCKER, assert_back_where_it_was, let_go,
                                       wait_until_migration_waits)
from test_deploy_playbook import revision


@pytest.fixture(scope="session")
def remote_host():
    name = f"pytest-{os.getpid()}"
    state = ssh_host.up(name)
    yield state
    ssh_host.down(name)


@pytest.fixture
def remote_inventory(remote_host, tmp_path):
    """The local inventory's settings, with its database host reached over SSH (sudo to root, whose Python is
    this venv's: the host_python role's environment is the remote Molecule scenario's business)."""
    folder = tmp_path / "inventory"
    folder.mkdir()
    (folder / "group_vars").symlink_to(ROOT / "inventories" / "local" / "group_vars")
    (folder / "hosts.yml").write_text(json.dumps({"databases": {"hosts": {"db-remote": {
        "ansible_connection": "ssh", "ansible_host": remote_host["host"], "ansible_port": remote_host["port"],
        "ansible_user": remote_host["user"], "ansible_ssh_private_key_file": remote_host["private_key"],
        "ansible_ssh_common_args": remote_host["ssh_args"], "ansible_become": True,
        "ansible_python_interpreter": sys.executable}}}}))
    return ["-i", str(folder), "-e", f"pgops_project_root={ROOT}"]


# PostgreSQL 15 over SSH: molecule/remote deploys (and rolls back) there with the host's own environment.


def ssh_sessions(user):
    """Pids of the sshd processes serving `user`'s sessions (not the listener)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv = handle.read()
        except OSError:
            continue
        if argv.startswith(f"sshd: {user}".encode()):
            pids.append(int(pid))
    return pids


@pytest.mark.one_server_version
def test_a_deployment_over_ssh_deploys(server, deployable, tmp_path, remote_inventory):
    result = run_playbook("deploy-migration.yml", server, deployable, tmp_path, "-e", SETTINGS, *remote_inventory)
    assert result.returncode == 0, result.stdout[-3000:]
    assert play_recap(result)["unreachable"] == 0
    (path,) = (tmp_path / "reports").glob("deploy-*.json")
    report = json.loads(path.read_text())
    assert report["outcome"] == "deployed" and report["host"] == "db-remote" and report["revision_after"] == HEAD
    assert revision(deployable) == HEAD


def test_a_connection_lost_mid_migration_still_rolls_back_and_cleans_up(
        server, deployable, tmp_path, remote_host, remote_inventory):
    """The deployment's SSH session is killed while Alembic waits for a lock on the host: the play must not drop
    the host (writes off, lock taken, nothing recorded), but roll back over a new connection and clean up."""
    before = counts(deployable)
    holder = hold_lock(deployable, BLOCKED_TABLE, "SHARE UPDATE EXCLUSIVE", application_name="blocker")
    deploy = start_playbook("deploy-migration.yml", server, deployable, tmp_path, "-e", SETTINGS,
                            "-e", TOLERATE_BLOCKER, *remote_inventory)
    try:
        wait_until_migration_waits(deployable, deploy)
        sessions = ssh_sessions(remote_host["user"])
        assert sessions, "the deployment's SSH session should be open"
        for pid in sessions:
            os.kill(pid, signal.SIGKILL)
    finally:
        let_go(holder)
    output = deploy.communicate(timeout=600)[0]
    assert deploy.returncode == 2, output[-3000:]
    last = failure_message(types.SimpleNamespace(stdout=output))  # the play's last line: its summary
    assert "failed at Stop when the connection to the host was lost while migrating" in last, last
    assert "Rolled back by downgrade: the database is at revision a7f3b2c1d9e8" in last, last
    (path,) = (tmp_path / "reports").glob("deploy-*.json")
    report = json.loads(path.read_text())
    assert report["outcome"] == "rolled_back" and report["writes"] == "on"
    assert_back_where_it_was(deployable, before)
