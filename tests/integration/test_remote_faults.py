"""The runbooks over SSH, as production runs them (a loopback sshd, an account with key-only login and sudo):
a connection lost in the middle of a migration is survived (the migration is a job the controller polls), and a
host that drops off the network is cleaned up from the controller, or left for rollback.yml, as the inventory
allows."""

import json
import os
import re
import signal
import sys
import time
import types

import pytest

import ssh_host
from conftest import (BASELINE, HEAD, ROOT, Hook, assert_application_survived, assert_writes_kept_off,
                      failure_message, hold_lock, last_line, query, run_module, run_playbook, start_playbook)
from test_backup_program import client_bin
from test_deploy_faults import app_can_write, counts
from test_deploy_interruptions import (BLOCKED_TABLE, SETTINGS, TOLERATE_BLOCKER, assert_back_where_it_was, let_go,
                                       wait_until_migration_waits)
from test_deploy_playbook import revision
from sandbox import SANDBOX_USER


@pytest.fixture(scope="session")
def remote_host():
    name = f"pytest-{os.getpid()}"
    state = ssh_host.up(name)
    yield state
    ssh_host.down(name)


@pytest.fixture
def remote_inventory(remote_host, tmp_path, host_dirs, deployable):
    """The local inventory's settings, with its database host reached over SSH (sudo to root, whose Python is
    this venv's: the host_python role's environment is the remote Molecule scenario's business), set up as
    production is: backups become the backup account (the server's OS account, as postgres is), into folders
    it owns, and a superuser installed pg_stat_statements in public, as monitoring.yml does."""
    query(deployable, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements WITH SCHEMA public")
    backup_account = json.dumps({
        "pgops_backup_os_user": SANDBOX_USER, "backup_python": "/usr/bin/python3",
        "pgops_backup_dir": str(host_dirs / "backups"), "pgops_program_dir": str(host_dirs / "lib"),
        "pgops_config_dir": str(host_dirs / "etc"), "pgops_cron_dir": str(host_dirs / "cron.d")})
    folder = tmp_path / "inventory"
    folder.mkdir()
    (folder / "group_vars").symlink_to(ROOT / "inventories" / "local" / "group_vars")
    (folder / "hosts.yml").write_text(json.dumps({"databases": {"hosts": {"db-remote": {
        "ansible_connection": "ssh", "ansible_host": remote_host["host"], "ansible_port": remote_host["port"],
        "ansible_user": remote_host["user"], "ansible_ssh_private_key_file": remote_host["private_key"],
        "ansible_ssh_common_args": remote_host["ssh_args"], "ansible_become": True,
        "ansible_python_interpreter": sys.executable,
        # Over SSH the migration is a job polled every second (the local inventory runs it in its task).
        "pgops_async_poll_seconds": 1}}}}))
    return ["-i", str(folder), "-e", f"pgops_project_root={ROOT}", "-e", backup_account]


# PostgreSQL 15 over SSH: molecule/remote deploys (and rolls back) there with the host's own environment.


PROGRESS = re.compile(r"db-remote: migration to \S+: revision 1 of \d+ \(\w+\), \d+ s so far")


@pytest.mark.one_server_version
def test_a_connection_lost_mid_migration_is_survived(
        server, deployable, tmp_path, remote_host, remote_inventory, live_writer):
    """The deployment's SSH sessions are killed while Alembic waits for a lock on the host: the migration is a job
    on the host, so the next poll reconnects and the deployment finishes as if nothing had happened, over SSH
    throughout."""
    writer = live_writer(deployable)
    holder = hold_lock(deployable, BLOCKED_TABLE, "SHARE UPDATE EXCLUSIVE", application_name="blocker")
    deploy = start_playbook("deploy_migration.yml", server, deployable, tmp_path, "-e", SETTINGS,
                            "-e", TOLERATE_BLOCKER, *remote_inventory)
    try:
        wait_until_migration_waits(deployable, deploy)
        killed = ssh_host.sessions(remote_host)
        assert killed, "the deployment's SSH session should be open"
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        # A poll over a new connection while the migration still waits: it says which revision runs.
        seen = []
        deadline = time.monotonic() + 180
        while not seen or not PROGRESS.search(seen[-1]):
            line = deploy.stdout.readline()
            assert line and time.monotonic() < deadline, "".join(seen)[-3000:]
            seen.append(line)
    finally:
        let_go(holder)
    output = "".join(seen) + deploy.communicate(timeout=600)[0]
    assert deploy.returncode == 0, output[-3000:]
    assert re.search(r"db-remote\s*: ok=\d+\s+changed=\d+\s+unreachable=0\s+failed=0", output), output[-500:]
    assert "TASK [intowork.pgops.migration : Wait for the migration job" in output, "the migration is a polled job"
    # Each poll says which revision of the plan is running, and for how long.
    assert PROGRESS.search(output), output[-3000:]
    (path,) = (tmp_path / "reports").glob("deploy-*.json")
    report = json.loads(path.read_text())
    assert report["outcome"] == "deployed" and report["writes"] == "on" and report["revision_after"] == HEAD
    assert report["host"] == "db-remote"
    assert revision(deployable) == HEAD and app_can_write(deployable)
    assert_application_survived(writer, deployable, report["write_off_seconds"])


def deploy_until_the_host_is_cut(server, params, tmp_path, remote_host, remote_inventory, *extra):
    """A deployment whose host drops off the network while Alembic waits for a lock there: (exit status, the
    play's last line, the record). The blocker is let go only after the play has ended."""
    holder = hold_lock(params, BLOCKED_TABLE, "SHARE UPDATE EXCLUSIVE", application_name="blocker")
    # The migration statement keeps waiting through the cut (no 5 s lock timeout and retry gap in which the
    # controller's fencing would find no session to end).
    deploy = start_playbook("deploy_migration.yml", server, params, tmp_path, "-e", SETTINGS,
                            "-e", TOLERATE_BLOCKER, "-e", '{"migration_lock_timeout": 120000}',
                            *remote_inventory, *extra)
    try:
        wait_until_migration_waits(params, deploy)
        ssh_host.cut(remote_host)
        output = deploy.communicate(timeout=600)[0]
    finally:
        let_go(holder)
        ssh_host.restore(remote_host)
    last = failure_message(types.SimpleNamespace(stdout=output))  # the play's last line: its summary
    (path,) = (tmp_path / "reports").glob("deploy-*.json")
    return deploy.returncode, last, json.loads(path.read_text())


def lock_owner(params):
    holder = run_module("deploy_lock", dict(params, state="status"))["holder"]
    return (holder or {}).get("owner")


@pytest.mark.one_server_version
def test_a_host_cut_off_is_fenced_from_the_controller_then_rolled_back(
        server, deployable, tmp_path, remote_host, remote_inventory, live_writer):
    """The host drops off the network mid-migration; the controller reaches the database directly: the job left
    on the host is fenced (lock taken over, its sessions ended) and writes stay off (the migration may be
    half-applied) until rollback.yml, once the host is back, undoes it."""
    before = counts(deployable)
    writer = live_writer(deployable)
    started = time.time()
    status, last, report = deploy_until_the_host_is_cut(
        server, deployable, tmp_path, remote_host, remote_inventory,
        "-e", f"pgops_db_host_from_controller={deployable['login_host']}")
    assert status == 2, last
    assert "failed at Stop when the connection to the host was lost while migrating" in last, last
    assert "From the controller: the run left on the host was fenced" in last, last
    assert "1 migration session(s) ended" in last and "writes are kept OFF" in last, last
    assert "rollback.yml -e force_unlock=yes" in last, last
    assert report["outcome"] == "host_lost" and report["writes"] == "kept off: the host was lost"
    assert lock_owner(deployable) == report["deployment"] + "-from-controller"
    time.sleep(3)  # the fenced job on the host must not go on now that the lock on the table is gone
    assert query(deployable, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgops_migration'")[0][0] == 0
    assert revision(deployable) == BASELINE and not app_can_write(deployable)

    rollback = run_playbook("rollback.yml", server, deployable, tmp_path, "-e", SETTINGS, "-e", "force_unlock=yes",
                            "-e", "confirm=yes", *remote_inventory)
    assert rollback.returncode == 0, rollback.stdout[-3000:]
    # Writes were off from the deployment's guard until the rollback gave them back: no longer than that.
    assert_back_where_it_was(deployable, before, writer, time.time() - started)


@pytest.mark.one_server_version
def test_a_host_cut_off_without_a_way_from_the_controller_is_left_as_it_is(
        server, deployable, tmp_path, remote_host, remote_inventory, hook, live_writer):
    """The other branch: no pgops_db_host_from_controller, so nothing is touched and the last line says what to run;
    people are told from the controller (the host, which sends the other notifications, is gone)."""
    writer = live_writer(deployable)
    status, last, report = deploy_until_the_host_is_cut(server, deployable, tmp_path, remote_host, remote_inventory,
                                                        "-e", f"pgops_notify_webhook_url={hook}")
    assert status == 2, last
    assert "the controller has no way to the database (pgops_db_host_from_controller is not set)" in last, last
    assert last.rstrip().endswith("-e force_unlock=yes -e confirm=yes Record: " + str(
        tmp_path / "reports" / (report["deployment"] + ".json"))), last
    assert report["outcome"] == "host_lost" and report["writes"] == "kept off: the host was lost"
    # Cut mid-migration with no way to the database: how far the job on the host got is unknown, and said so.
    assert (report["revision_after"], report["applied"]) == (None, None), report
    assert lock_owner(deployable) == report["deployment"], "the lock stays with the run left on the host"
    (lost,) = [event for event in Hook.received if event["event"] == "host_lost"]
    assert lost["host"] == "db-remote" and f"deployment {report['deployment']} lost its host db-remote" in lost["message"]
    assert "the controller has no way to the database" in lost["message"], lost
    assert_writes_kept_off(writer, deployable)


@pytest.mark.one_server_version
def test_a_host_cut_off_before_migrating_gets_its_writes_back_from_the_controller(
        server, deployable, tmp_path, remote_host, remote_inventory, live_writer, host_dirs):
    """The other branch of the controller's clean-up: the host drops off during the backup, before the migration
    started, so nothing can be half-applied: writes come back on and the lock is released, from the controller."""
    writer = live_writer(deployable)
    deploy_started = time.time()
    # Where the backup account, which runs pg_dump, can reach the stand-in and leave its mark.
    reachable = host_dirs / "client"
    reachable.mkdir(mode=0o777)
    reachable.chmod(0o777)
    started = reachable / "pg_dump-started"
    slow_client = client_bin(reachable, server, pg_dump=f'touch "{started}"\nsleep 20\nexec "$REAL/pg_dump" "$@"\n')
    deploy = start_playbook("deploy_migration.yml", server, deployable, tmp_path, "-e", SETTINGS, *remote_inventory,
                            "-e", f"pgops_pg_bin_dir={slow_client}",
                            "-e", f"pgops_db_host_from_controller={deployable['login_host']}")
    try:
        deadline = time.monotonic() + 180
        while not started.exists():
            assert deploy.poll() is None and time.monotonic() < deadline, deploy.stdout.read()[-3000:]
            time.sleep(0.2)
        assert not app_can_write(deployable), "writes are off while the backup runs"
        ssh_host.cut(remote_host)
        output = deploy.communicate(timeout=600)[0]
    finally:
        ssh_host.restore(remote_host)
    assert deploy.returncode == 2, output[-3000:]
    last = failure_message(types.SimpleNamespace(stdout=output))
    assert "failed at Stop when the connection to the host was lost during the backup" in last, last
    assert "The migration had not started: writes are back on and the lock is released." in last, last
    (path,) = (tmp_path / "reports").glob("deploy-*.json")
    report = json.loads(path.read_text())
    assert report["outcome"] == "host_lost" and report["writes"] == "on"
    assert app_can_write(deployable) and lock_owner(deployable) is None and revision(deployable) == BASELINE
    # Writes were off from the guard to the controller's clean-up: within the run, and back on since.
    assert_application_survived(writer, deployable, time.time() - deploy_started)


@pytest.mark.one_server_version
def test_a_migration_that_completes_after_its_host_is_cut_off_is_recorded_as_it_is(
        server, deployable, tmp_path, remote_host, remote_inventory, live_writer):
    """The job on the host finishes the migration just after the host drops off the network (the lock it waited
    for is let go right after the cut). The controller fences what is left, reads the revision the database
    records, and the record and the last line say the truth: every revision of the plan applied, not "may be
    half-applied" at the old revision."""
    writer = live_writer(deployable)
    holder = hold_lock(deployable, BLOCKED_TABLE, "SHARE UPDATE EXCLUSIVE", application_name="blocker")
    deploy = start_playbook("deploy_migration.yml", server, deployable, tmp_path, "-e", SETTINGS,
                            "-e", TOLERATE_BLOCKER, "-e", '{"migration_lock_timeout": 120000}', *remote_inventory,
                            "-e", f"pgops_db_host_from_controller={deployable['login_host']}")
    try:
        wait_until_migration_waits(deployable, deploy)
        ssh_host.cut(remote_host)
        let_go(holder)
        deadline = time.monotonic() + 60
        while revision(deployable) != HEAD:  # the job on the host goes on alone
            assert time.monotonic() < deadline and deploy.poll() is None, "the job did not finish the migration"
            time.sleep(0.2)
        output = deploy.communicate(timeout=600)[0]
    finally:
        ssh_host.restore(remote_host)
    assert deploy.returncode == 2, output[-3000:]
    last = " ".join(failure_message(types.SimpleNamespace(stdout=output)).split())
    (path,) = (tmp_path / "reports").glob("deploy-*.json")
    report = json.loads(path.read_text())
    plan = report["plan"]
    assert f"Before the fence, the migration completed (the database records {HEAD}, all {len(plan)} " \
           "revision(s) of the plan applied), but the checks after it did not run: writes are kept OFF" in last, last
    finish = "ansible-playbook playbooks/finish_deployment.yml -e force_unlock=yes -e confirm=yes"
    assert "may be half-applied" not in last and finish in last and "rollback.yml -e force_unlock=yes" in last, last
    assert report["outcome"] == "host_lost" and report["revision_after"] == HEAD and report["applied"] == plan, report
    assert revision(deployable) == HEAD and not app_can_write(deployable)

    # The host is back: the remedy the line offers, over SSH, runs the checks and gives writes back.
    finished = run_playbook("finish_deployment.yml", server, deployable, tmp_path, "-e", SETTINGS, *remote_inventory,
                            "-e", "force_unlock=yes", "-e", "confirm=yes")
    assert finished.returncode == 0, finished.stdout[-3000:]
    line = last_line(finished)
    # The lock the controller's clean-up fenced the job with, and kept with the plan.
    assert line.startswith(f"Finished {report['deployment']}-from-controller: ") and "every check passed" in line, line
    reported = float(re.search(r"Writes were off for ([0-9.]+) s ", line)[1])
    assert revision(deployable) == HEAD and lock_owner(deployable) is None
    assert_application_survived(writer, deployable, reported)
