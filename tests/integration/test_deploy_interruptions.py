"""Deployments cut off in the middle of a migration: the alembic process killed, the ansible-playbook process
killed (then rollback.yml alone), the server restarted. Each ends with writes back on, the old revision, the
snapshot's row counts and nothing of the half-applied revision left."""

import json
import os
import signal
import time
import types
from pathlib import Path

import psycopg2
import pytest

import sandbox
from conftest import (APP, BASELINE, PASSWORD, assert_application_survived, failure_message, hold_lock,
                      process_argvs, query, run_module, run_playbook, start_playbook)
from test_deploy_faults import app_can_write, counts
from test_deploy_playbook import revision

SETTINGS = json.dumps({"pgops_app_roles": [APP], "pgops_app_probe_user": APP, "pgops_app_probe_password": PASSWORD})
# The index revision builds the job_applications and jobs indexes first; a lock on employers stops it there.
# The lock lets the snapshot and the backup read the table, and the preflight is told to tolerate it.
BLOCKED_TABLE = "employers"
TOLERATE_BLOCKER = json.dumps({"preflight_max_lock_seconds": 86400, "preflight_max_transaction_seconds": 86400})


def let_go(conn):
    try:
        conn.rollback()
        conn.close()
    except psycopg2.Error:
        pass  # the server restart already ended it


def wait_until_migration_waits(params, process, timeout=180, half_applied=None):
    """Until the migration session waits for the blocked table, with part of its revision committed (by default:
    some of the index revision's indexes built)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()[-3000:]
        waiting = query(params, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgops_migration' "
                                "AND wait_event_type = 'Lock'")[0][0]
        if waiting:
            assert (half_applied or (lambda: new_indexes(params) > 0))(), \
                "the revision should be half-applied when it is cut off"
            return
        time.sleep(0.2)
    pytest.fail("the migration never reached the blocked table")


def new_indexes(params):
    return query(params, "SELECT count(*) FROM pg_indexes WHERE indexname ~ '^(ix|uq)_'")[0][0]


def alembic_processes(params):
    """The Alembic upgrades of this test's database (PGDATABASE in their environment), not another test's beside
    it: the migration is a job of its own on the host, no longer a child of the playbook."""
    wanted = b"PGDATABASE=" + params["login_db"].encode()
    pids = []
    for pid, argv in process_argvs():
        # The module's Alembic runner: `python - {"command": "upgrade", ...}`, its source on stdin.
        if len(argv) < 3 or argv[1] != b"-" or b'"command": "upgrade"' not in argv[2]:
            continue
        try:
            environment = Path("/proc", str(pid), "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if wanted in environment:
            pids.append(pid)
    return pids


def assert_back_where_it_was(params, before, writer=None, write_off_seconds=0.0):
    """The old revision and counts, nothing half-applied left, the lock free; with the application writing all
    along, every committed write kept and writes failed only while the runbook had them off."""
    assert revision(params) == BASELINE
    assert counts(params) == before
    assert new_indexes(params) == 0, "nothing of the half-applied revision is left"
    assert query(params, "SELECT count(*) FROM pg_index WHERE NOT indisvalid")[0][0] == 0
    assert app_can_write(params), "writes are back on"
    assert run_module("deploy_lock", dict(params, state="acquired", owner="next-deploy"))["changed"] is True
    if writer is not None:
        assert_application_survived(writer, params, write_off_seconds)


def reported_write_off(tmp_path):
    """The write-off time the deployment's record reports."""
    (record,) = (tmp_path / "reports").glob("deploy-*.json")
    return json.loads(record.read_text())["write_off_seconds"]


def cut_off_deployment(server, params, tmp_path, interrupt):
    """Start deploy_migration.yml, and when its migration is half-way, call interrupt(process)."""
    holder = hold_lock(params, BLOCKED_TABLE, "SHARE UPDATE EXCLUSIVE", application_name="blocker")
    deploy = start_playbook("deploy_migration.yml", server, params, tmp_path, "-e", SETTINGS,
                            "-e", TOLERATE_BLOCKER)
    try:
        wait_until_migration_waits(params, deploy)
        interrupt(deploy)
    finally:
        let_go(holder)
    output = deploy.communicate(timeout=600)[0]
    return deploy.returncode, output


def kill_alembic(params):
    killed = alembic_processes(params)
    assert killed
    for pid in killed:
        os.kill(pid, signal.SIGKILL)


@pytest.mark.one_server_version
def test_alembic_killed_mid_migration_is_rolled_back(server, deployable, tmp_path, live_writer):
    before = counts(deployable)
    writer = live_writer(deployable)
    returncode, output = cut_off_deployment(server, deployable, tmp_path, lambda _deploy: kill_alembic(deployable))
    assert returncode != 0
    assert "was killed (signal 9)" in output
    assert "Rolled back by downgrade: the database is at revision a7f3b2c1d9e8" in output
    assert_back_where_it_was(deployable, before, writer, reported_write_off(tmp_path))


@pytest.mark.one_server_version
def test_playbook_killed_mid_migration_then_rollback_alone(server, deployable, tmp_path, live_writer):
    before = counts(deployable)
    writer = live_writer(deployable)
    started = time.time()
    # The machine running Ansible is gone, all at once: the playbook, its module and Alembic.
    cut_off_deployment(server, deployable, tmp_path, lambda deploy: os.killpg(deploy.pid, signal.SIGKILL))
    assert not app_can_write(deployable), "the dead deployment left writes off"
    assert not list((tmp_path / "reports").glob("deploy-*.json")), "and wrote no record"

    refused = run_playbook("rollback.yml", server, deployable, tmp_path, "-e", SETTINGS, "-e", "confirm=yes")
    assert refused.returncode != 0
    # The job left on the host may have finished the plan meanwhile: the refusal then offers the finish too.
    assert "If it died, run again with -e force_unlock=yes (its plan will be undone: back to revision " \
           "a7f3b2c1d9e8)" in refused.stdout and failure_message(refused).endswith(" Nothing was changed.")

    result = run_playbook("rollback.yml", server, deployable, tmp_path, "-e", SETTINGS, "-e", "confirm=yes",
                          "-e", "force_unlock=yes")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "(undoing deploy-" in result.stdout
    assert "Rolled back by downgrade" in result.stdout
    # Writes were off from the dead deployment's guard until this rollback gave them back: no longer than that.
    assert_back_where_it_was(deployable, before, writer, time.time() - started)


@pytest.mark.one_server_version
def test_server_restarted_mid_migration_is_rolled_back(server, deployable, tmp_path, live_writer):
    """With the application writing: the counts the rollback is held to were taken with writes off, so the
    correct downgrade after the restart is not declared failed."""
    before = counts(deployable)
    writer = live_writer(deployable)
    returncode, output = cut_off_deployment(server, deployable, tmp_path,
                                            lambda _deploy: sandbox.restart(server["name"]))
    assert returncode != 0, output[-3000:]
    assert "Rolled back by downgrade: the database is at revision a7f3b2c1d9e8" in output, output[-3000:]
    assert_back_where_it_was(deployable, before, writer, reported_write_off(tmp_path))


def wait_until_migration_backs_off(params, process, timeout=180):
    """Until the migration's first attempt has timed out on its lock and the module sleeps before the retry."""
    wait_until_migration_waits(params, process, timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not query(params, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgops_migration'")[0][0]:
            return
        time.sleep(0.1)
    pytest.fail("the migration's first attempt never gave up its lock wait")


@pytest.mark.one_server_version
def test_a_cut_off_deployment_taken_over_by_force_never_migrates_again(server, deployable, tmp_path):
    """The network to the controller is cut while the migration waits to retry; another operator rolls back with
    force_unlock. The old run's module, still alive on the host, must not run its retry, and the old controller,
    when it comes back, must say it lost the lock, not that it deployed."""
    before = counts(deployable)
    holder = hold_lock(deployable, BLOCKED_TABLE, "SHARE UPDATE EXCLUSIVE", application_name="blocker")
    # 1 s lock waits, then a 40 s pause before the retry: time for the takeover to happen in between.
    retry_later = json.dumps({"migration_lock_timeout": 1000, "migration_lock_retries": 3,
                              "migration_lock_retry_backoff": 40})
    deploy = start_playbook("deploy_migration.yml", server, deployable, tmp_path, "-e", SETTINGS,
                            "-e", TOLERATE_BLOCKER, "-e", retry_later)
    try:
        wait_until_migration_backs_off(deployable, deploy)
        os.killpg(deploy.pid, signal.SIGSTOP)  # the controller is cut off; the module goes on alone
    finally:
        let_go(holder)
    try:
        takeover = run_playbook("rollback.yml", server, deployable, tmp_path, "-e", SETTINGS, "-e", "confirm=yes",
                                "-e", "force_unlock=yes")
        assert takeover.returncode == 0, takeover.stdout[-3000:]
        assert "Rolled back by downgrade" in takeover.stdout
    finally:
        os.killpg(deploy.pid, signal.SIGCONT)
    output = deploy.communicate(timeout=600)[0]
    assert deploy.returncode != 0, output[-3000:]
    last = failure_message(types.SimpleNamespace(stdout=output))  # the play's last line: its summary
    assert "is no longer held by deploy-" in last and "this run stopped before attempt 2" in last, output[-3000:]
    assert "This run lost its deployment lock (released) and stopped" in last, last
    (path,) = (tmp_path / "reports").glob("deploy-*.json")
    assert json.loads(path.read_text())["outcome"] == "lost_lock"
    assert_back_where_it_was(deployable, before)
