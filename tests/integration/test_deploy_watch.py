"""The dead-man switch on the database host: the backup program's `watch`, run by cron as the read-only backup
account, notices a deployment whose lease stopped beating, records it and alerts once; a live one is left alone.
By the inventory's choice it also gives the abandoned deployment's writes back, as the deploy account."""

import json
import os
import signal
import time

import pytest
from psycopg2 import sql

from conftest import (APP, BASELINE, PASSWORD, Hook, admin_connect, alembic, assert_application_survived, create_accounts,
                      failure_message, query, run_module, run_playbook, start_playbook)
from test_backup_account import ACCOUNT, cron_command, run_as_cron
from test_backup_program import run_program, write_config
from test_deploy_faults import app_can_write

PLAN = ["b1b1b1b1b1b1", "c2c2c2c2c2c2"]


def plant_lease(server, params, heartbeat_age, migration_started=True, owner="deploy-dead-1", plan=None):
    """A deployment lease taken by deploy_lock itself (so the watch reads the format the module writes), then
    aged: its last heartbeat `heartbeat_age` seconds ago."""
    taken = run_module("deploy_lock", dict(params, state="acquired", owner=owner,
                                           identity={"user": "alice", "controller": "laptop"},
                                           details={"revision_before": BASELINE, "plan": plan or PLAN,
                                                    "backup": "/var/backups/x.dump",
                                                    **({"migration_started": "2026-12-01T00:01:00Z"}
                                                       if migration_started else {})}))
    beat = time.time() - heartbeat_age
    lease = dict(taken["holder"], taken_at=beat - 60, heartbeat_at=beat)
    conn = admin_connect(server)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("ALTER DATABASE {} SET pgops.deploy_lock = {}").format(
            sql.Identifier(params["login_db"]), sql.Literal(json.dumps(lease))))
    conn.close()


@pytest.fixture
def loaded(server, database):
    alembic(database, "upgrade", BASELINE)
    create_accounts(server, database["login_db"])  # the backup role, which the watch runs as, reads it
    return database


def watch(server, loaded, tmp_path, hook_url):
    config, backups = write_config(server, loaded, tmp_path, user=server["backup_user"], alert_webhook=hook_url)
    return run_program("watch", config, server["backup_password"], "--stale-after-seconds=600"), backups


def test_an_abandoned_deployment_is_recorded_and_alerted_once(server, loaded, tmp_path, hook):
    plant_lease(server, loaded, heartbeat_age=3600)
    first, backups = watch(server, loaded, tmp_path, hook)
    assert first.returncode == 1, first.stderr
    (line,) = [line for line in first.stderr.splitlines() if "FAILED" in line]
    assert "deployment deploy-dead-1 is abandoned: no heartbeat for 36" in line and "(limit 600 s)" in line
    assert f"the database is at revision {BASELINE} ({PLAN[0]} may be half-applied)" in line, line
    assert "Roll it back: ansible-playbook playbooks/rollback.yml -e force_unlock=yes -e confirm=yes" in line
    assert "finish_deployment" not in line, "a half-way plan has nothing to finish"
    record = json.loads((backups / "abandoned-deploy-dead-1.json").read_text())
    assert record["possibly_half_applied"] == PLAN[0] and record["revision"] == BASELINE
    assert record["run_by"] == {"user": "alice", "controller": "laptop"} and record["plan"] == PLAN
    assert len(Hook.received) == 1 and "deploy-dead-1 is abandoned" in Hook.received[0]["message"]
    assert Hook.received[0]["event"] == "deployment_abandoned", "its own event, not the watch failing"

    again, _backups = watch(server, loaded, tmp_path, hook)
    assert again.returncode == 0 and json.loads(again.stdout)["abandoned"] is True
    assert "still abandoned (alerted before)" in again.stderr
    assert len(Hook.received) == 1, "one alert per abandoned deployment, not one per cron run"
    # The watch only reads: the lease is left for rollback.yml -e force_unlock=yes to take over.
    assert query(loaded, "SELECT count(*) FROM pg_db_role_setting WHERE setconfig::text LIKE '%deploy-dead-1%'")[0][0]


def test_an_abandoned_deployment_whose_migration_completed_is_offered_the_finish(server, loaded, tmp_path, hook):
    # The database records the last revision of the plan: the deployment only missed its checks.
    plant_lease(server, loaded, heartbeat_age=3600, plan=[BASELINE])
    result, _backups = watch(server, loaded, tmp_path, hook)
    assert result.returncode == 1, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "FAILED" in line]
    assert f"the database is at revision {BASELINE}, its plan was {BASELINE}" in line, line
    assert "Its migration completed: finish it (its checks, then writes on): ansible-playbook " \
           "playbooks/finish_deployment.yml -e force_unlock=yes -e confirm=yes; or roll it back: ansible-playbook " \
           "playbooks/rollback.yml -e force_unlock=yes -e confirm=yes. Record: " in line, line


def test_a_deployment_whose_lease_beats_is_left_alone(server, loaded, tmp_path, hook):
    plant_lease(server, loaded, heartbeat_age=20)
    result, backups = watch(server, loaded, tmp_path, hook)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["abandoned"] is False and seen["lease"] == "deploy-dead-1" and 20 <= seen["heartbeat_age_seconds"] < 60
    assert not list(backups.glob("abandoned-*")) and Hook.received == []


def test_no_deployment_no_alert(server, loaded, tmp_path, hook):
    result, _backups = watch(server, loaded, tmp_path, hook)
    assert result.returncode == 0 and json.loads(result.stdout)["lease"] is None and Hook.received == []


def writes_off_by(params, server, owner):
    """The write guard on, as the deployment `owner` turns it on (the deploy account, which owns the tables)."""
    guard = run_module("write_guard", dict(params, login_user=server["deploy_user"],
                                           login_password=server["deploy_password"], state="read_only",
                                           roles=[APP], owner=owner, grace_period=0))
    assert guard.get("changed") and not app_can_write(params), guard


def passfile(tmp_path, server, params, *users):
    path = tmp_path / "pgpass"
    lines = ["%s:%s:*:%s:%s\n" % (params["login_host"], params["login_port"], server[user + "_user"],
                                  server[user + "_password"]) for user in users]
    path.write_text("".join(lines))
    path.chmod(0o600)
    return str(path)


@pytest.mark.one_server_version
@pytest.mark.parametrize("choice, migration_started, writes", [
    ("never", False, "left as they are (watch_writes_on: never)"),
    ("before_migration", True, "left as they are (watch_writes_on: before_migration, and the migration had started)"),
    ("before_migration", False, "turned back on by the watch, for " + APP),
    ("always", True, "turned back on by the watch, for " + APP),
])
def test_the_inventory_chooses_whether_an_abandoned_deployment_gets_its_writes_back(
        server, deployable, tmp_path, hook, choice, migration_started, writes):
    writes_off_by(deployable, server, "deploy-dead-1")
    plant_lease(server, deployable, heartbeat_age=3600, migration_started=migration_started)
    config, backups = write_config(server, deployable, tmp_path, user=server["backup_user"], alert_webhook=hook,
                                   watch_writes_on=choice, guard_user=server["deploy_user"],
                                   passfile=passfile(tmp_path, server, deployable, "deploy", "backup"))
    first = run_program("watch", config, None, "--stale-after-seconds=600")
    assert first.returncode == 1, first.stderr
    (line,) = [line for line in first.stderr.splitlines() if "FAILED" in line]
    assert f"; writes {writes}. Roll it back" in line, line
    assert app_can_write(deployable) is writes.startswith("turned back on")
    assert json.loads((backups / "abandoned-deploy-dead-1.json").read_text())["writes"] == writes
    # The lease stays for rollback.yml; the next watch neither alerts nor touches the guard again.
    again = run_program("watch", config, None, "--stale-after-seconds=600")
    assert again.returncode == 0 and len(Hook.received) == 1, again.stderr
    assert f"writes {writes}" in again.stderr


@pytest.mark.one_server_version
def test_a_guard_that_is_not_the_abandoned_deployments_is_left_on(server, deployable, tmp_path, hook):
    writes_off_by(deployable, server, "maintenance-by-hand")
    plant_lease(server, deployable, heartbeat_age=3600, migration_started=False)
    config, _backups = write_config(server, deployable, tmp_path, user=server["backup_user"], alert_webhook=hook,
                                    watch_writes_on="always", guard_user=server["deploy_user"],
                                    passfile=passfile(tmp_path, server, deployable, "deploy", "backup"))
    result = run_program("watch", config, None, "--stale-after-seconds=600")
    assert result.returncode == 1
    assert "writes kept off: the write guard belongs to maintenance-by-hand, not to this deployment" in result.stderr
    assert not app_can_write(deployable)


@pytest.mark.one_server_version
def test_backup_cron_installs_the_switch_that_gives_writes_back(server, deployable, host_dirs, tmp_path):
    """As production provisions it: backup_cron.yml writes the guard account's password line and the choice, and
    the watch line, run as cron runs it, gives the abandoned deployment's writes back."""
    as_backup = dict(deployable, login_user=server["backup_user"], login_password=server["backup_password"])
    settings = {
        "pgops_backup_os_user": ACCOUNT, "backup_python": "/usr/bin/python3",
        "pgops_backup_dir": str(host_dirs / "backups"), "pgops_program_dir": str(host_dirs / "lib"),
        "pgops_config_dir": str(host_dirs / "pgops etc"), "pgops_cron_dir": str(host_dirs / "cron.d"),
        "pgops_deploy_watch_stale_after_seconds": 600, "pgops_deploy_watch_writes_on": "sometimes"}
    refused = run_playbook("backup_cron.yml", server, as_backup, tmp_path, "-e", json.dumps(settings))
    assert refused.returncode == 2, refused.stdout[-3000:]
    assert failure_message(refused) == (
        'Bad backup settings, nothing was written: backup_watch_writes_on (pgops_deploy_watch_writes_on) "sometimes" is '
        'not one of never, before_migration, always'), refused.stdout[-3000:]
    assert not (host_dirs / "cron.d").exists() and not (host_dirs / "pgops etc").exists(), "a refused setting writes nothing"

    settings.update(pgops_deploy_watch_writes_on="before_migration", pgops_deploy_watch_guard_user=server["deploy_user"],
                    pgops_deploy_watch_guard_password=server["deploy_password"])
    scheduled = run_playbook("backup_cron.yml", server, as_backup, tmp_path, "-e", json.dumps(settings))
    assert scheduled.returncode == 0, scheduled.stdout[-3000:]
    assert server["deploy_password"] not in scheduled.stdout
    writes_off_by(deployable, server, "deploy-dead-2")
    plant_lease(server, deployable, heartbeat_age=3600, migration_started=False, owner="deploy-dead-2")
    account, command = cron_command(host_dirs / "cron.d" / f"pgops-backup-{deployable['login_db']}", "watch")
    watched = run_as_cron(account, command)
    assert watched.returncode == 1, watched.stderr
    assert "deployment deploy-dead-2 is abandoned" in watched.stderr
    assert f"writes turned back on by the watch, for {APP}" in watched.stderr, watched.stderr
    assert app_can_write(deployable)


@pytest.mark.one_server_version
def test_a_controller_killed_with_writes_off_is_noticed_and_writes_come_back_within_minutes(
        server, deployable, tmp_path, hook, live_writer):
    """The machine running the deployment dies while writes are off (before the migration). With the defaults
    (every module beats at its start and every 30 s; stale after 180 s), the watch notices and, as the inventory
    chooses (before_migration), gives the writes back: every committed write kept, the application writing again
    within the 4 minutes the defaults promise, plus the minute cron waits between two watches."""
    writer = live_writer(deployable)
    guard = json.dumps({"pgops_app_roles": [APP], "pgops_app_probe_user": APP, "pgops_app_probe_password": PASSWORD})
    deploy = start_playbook("deploy_migration.yml", server, deployable, tmp_path, "-e", guard)
    deadline = time.monotonic() + 240
    while not writer.failed:  # the guard is on: the deployment is between writes off and the migration
        assert deploy.poll() is None and time.monotonic() < deadline, deploy.communicate()[0][-3000:]
        time.sleep(0.05)
    os.killpg(deploy.pid, signal.SIGKILL)
    killed_at = time.time()
    deploy.wait()
    lease = run_module("deploy_lock", dict(deployable, state="status"))["holder"]
    assert lease and "migration_started" not in (lease.get("details") or {}), lease

    watch_dir = tmp_path / "watch"
    watch_dir.mkdir()
    config, _backups = write_config(server, deployable, watch_dir, user=server["backup_user"], alert_webhook=hook,
                                    watch_writes_on="before_migration", guard_user=server["deploy_user"],
                                    passfile=passfile(watch_dir, server, deployable, "deploy", "backup"))
    # Cron runs the watch every minute; here every 5 s, to measure when it first can notice.
    while True:
        watched = run_program("watch", config, None)  # the program's default --stale-after-seconds
        if watched.returncode == 1:
            break
        assert watched.returncode == 0 and json.loads(watched.stdout)["abandoned"] is False, watched.stderr
        assert time.time() - killed_at < 300, "the abandoned deployment was not noticed within 5 minutes"
        time.sleep(5)
    noticed = time.time() - killed_at
    assert "is abandoned" in watched.stderr and f"writes turned back on by the watch, for {APP}" in watched.stderr
    assert noticed <= 180 + 30 + 10, f"noticed {noticed:.0f} s after the controller died"
    time.sleep(1)
    print(f"controller killed; noticed and writes given back {noticed:.0f} s later "
          f"(a cron minute adds up to 60 s); writer: {writer.figures()}")
    assert_application_survived(writer, deployable, noticed + 30)
    assert len(Hook.received) == 1 and "is abandoned" in Hook.received[0]["message"]
