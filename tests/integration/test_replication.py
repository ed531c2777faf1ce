"""A primary with a streaming standby (pg_basebackup from the sandbox, same major version): migrations run on
the primary only, preflight stops on a standby behind or a forgotten slot, and a deployment is done only once
the standby has replayed it."""

import contextlib
import json
import subprocess
import time

import psycopg2
import pytest

import sandbox
from conftest import HEAD, PROJECT_DIR, admin_connect, failure_message, query, run_module, run_playbook
from test_backup_program import TABLES, run_program, write_config
from test_deploy_gates import deploy, project, record
from test_deploy_playbook import revision

NEW_TABLE = ("0c00000000a1", "    op.execute('CREATE TABLE replica_notes (id int)')",
             "    op.execute('DROP TABLE replica_notes')")


@pytest.fixture(scope="module")
def standby(server):
    """A hot standby of the session's server, for this file's tests only: the other tests' deployments (and
    their server restarts) run without one."""
    name = server["name"] + "-standby"
    state = sandbox.standby(name, server["name"])
    yield state
    sandbox.down(name)


def on_standby(standby_state, params):
    """The same database's parameters, on the standby."""
    return dict(params, login_host=standby_state["host"], login_port=standby_state["port"])


@contextlib.contextmanager
def replay_paused(standby_state):
    """The standby receives WAL but does not apply it, for the block."""
    conn = admin_connect(standby_state)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_wal_replay_pause()")
        # The call only asks for the pause; replay goes on until the startup process takes it.
        deadline = time.monotonic() + 10
        cur.execute("SELECT pg_get_wal_replay_pause_state()")
        while cur.fetchone()[0] != "paused" and time.monotonic() < deadline:
            time.sleep(0.05)
            cur.execute("SELECT pg_get_wal_replay_pause_state()")
    try:
        yield
    finally:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_wal_replay_resume()")
        conn.close()


@contextlib.contextmanager
def forgotten_slot(server, name="forgotten_slot"):
    """A physical replication slot nobody consumes, keeping WAL from now on."""
    conn = admin_connect(server)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_create_physical_replication_slot(%s, true)", (name,))
    try:
        yield name
    finally:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_drop_replication_slot(%s)", (name,))
        conn.close()


def test_preflight_reads_the_standby_and_stops_on_one_behind(server, standby, migrated):
    ready = run_module("preflight_check", migrated)
    assert not ready.get("failed"), ready.get("msg")
    (seen,) = [s for s in ready["standbys"] if s["name"] == standby["name"]]
    assert seen["state"] == "streaming" and seen["lag_bytes"] >= 0
    with replay_paused(standby):
        query(migrated, "CREATE TABLE wal_filler AS SELECT g AS id, repeat('x', 200) AS pad "
                        "FROM generate_series(1, 5000) g")
        behind = run_module("preflight_check", dict(migrated, max_replica_lag_bytes=1024))
    assert behind["failed"] and f"standby {standby['name']} is " in behind["msg"]
    assert "of WAL behind (limit 1 kB): wait until it has caught up" in behind["msg"], behind["msg"]
    missing = run_module("preflight_check", dict(migrated, min_standbys=2))
    assert missing["failed"] and "1 standby(s) stream from this server, the inventory expects at least 2" in missing["msg"]


def test_the_health_report_names_a_standby_behind_and_not_once_it_has_caught_up(server, standby, migrated):
    with replay_paused(standby):
        query(migrated, "CREATE TABLE health_lag_filler AS SELECT g AS id FROM generate_series(1, 5000) g")
        behind = run_module("health_check", dict(migrated, thresholds={"replication_lag_bytes": 1024}))
    lag = [p for p in behind["problems"] if p["check"] == "replication lag"]
    assert [p["subject"] for p in lag] == [standby["name"]], behind["findings"]
    assert "of WAL behind (threshold: replication_lag_seconds 300 or replication_lag_bytes 1 kB)" in \
        behind["findings"][[p["check"] for p in behind["problems"]].index("replication lag")]
    assert not run_module("replication_wait", dict(migrated, timeout=60)).get("failed")
    caught_up = run_module("health_check", dict(migrated, thresholds={"replication_lag_bytes": 1024}))
    assert not [p for p in caught_up["problems"] if p["check"] == "replication lag"], caught_up["findings"]
    assert [s["name"] for s in caught_up["replication"]["standbys"]] == [standby["name"]]


def test_preflight_stops_on_a_forgotten_replication_slot(server, standby, migrated):
    with forgotten_slot(server) as slot:
        result = run_module("preflight_check", migrated)
        ignored = run_module("preflight_check", dict(migrated, fail_on_inactive_slots=False))
    assert result["failed"] and f"replication slot {slot} is inactive and keeps" in result["msg"], result["msg"]
    assert "drop it (pg_drop_replication_slot)" in result["msg"]
    assert not ignored.get("failed"), ignored.get("msg")


def test_a_migration_is_refused_on_the_standby(server, standby, migrated):
    # The database was made a moment ago: the standby has it once it has replayed that far.
    caught_up = run_module("replication_wait", dict(migrated, timeout=60))
    assert not caught_up.get("failed"), caught_up.get("msg")
    replica = on_standby(standby, migrated)
    result = run_module("alembic_migration", {**replica, "project_dir": str(PROJECT_DIR), "target": "base",
                                              "allow_downgrade": True})
    assert result["failed"] and "is a standby (in recovery): migrations run on the primary only" in result["msg"]
    assert revision(replica) == HEAD


def test_the_wait_returns_once_replayed_and_names_a_standby_still_behind(server, standby, migrated):
    query(migrated, "CREATE TABLE replayed_marker (id int)")
    done = run_module("replication_wait", dict(migrated, timeout=30))
    assert not done.get("failed"), done.get("msg")
    assert [s["replayed"] for s in done["standbys"] if s["name"] == standby["name"]] == [True]
    assert query(on_standby(standby, migrated), "SELECT to_regclass('replayed_marker') IS NOT NULL")[0][0]
    with replay_paused(standby):
        query(migrated, "CREATE TABLE unreplayed_marker (id int)")
        late = run_module("replication_wait", dict(migrated, timeout=1, poll_interval=0.2))
    assert late["failed"] and "after 1.0 s, a standby has not replayed the primary's position" in late["msg"]
    assert standby["name"] in late["msg"], late["msg"]
    bad = run_module("replication_wait", dict(migrated, timeout=0))
    assert bad["failed"] and bad["msg"] == "timeout must be more than 0 seconds, got 0.0; nothing was read"


@pytest.mark.one_server_version
def test_a_deployment_is_done_once_the_standby_has_replayed_it(server, standby, guarded_db, tmp_path):
    result, recap = deploy(server, guarded_db, tmp_path, "-e", project(tmp_path, NEW_TABLE))
    assert result.returncode == 0 and recap["failed"] == 0, result.stdout[-3000:]
    assert revision(on_standby(standby, guarded_db)) == NEW_TABLE[0]
    report = record(tmp_path)
    (before,) = [s for s in report["standbys_before"] if s["name"] == standby["name"]]
    (after,) = [s for s in report["standbys_after"] if s["name"] == standby["name"]]
    assert before["state"] == "streaming" and after["replayed"] is True
    assert report["standby_catchup_seconds"] is not None


@pytest.mark.one_server_version
def test_a_standby_that_does_not_catch_up_fails_the_deployment_and_rolls_it_back(
        server, standby, guarded_db, tmp_path):
    with replay_paused(standby):
        result, recap = deploy(server, guarded_db, tmp_path, "-e", project(tmp_path, NEW_TABLE),
                               "-e", json.dumps({"pgops_replica_catchup_seconds": 2}))
    assert result.returncode == 2 and recap["failed"] == 1
    message = failure_message(result)
    assert "failed at Wait until the standbys have replayed the migration" in message, message
    assert "Rolled back by downgrade" in message and standby["name"] in message, message
    # The rollback stands, and says which standby does not have it yet (replay is still paused).
    assert "Not yet on every standby: after 2.0 s, a standby has not replayed" in message, message
    assert revision(guarded_db) == HEAD
    kept = record(tmp_path)
    assert kept["outcome"] == "rolled_back" and kept["rollback"]["standbys_behind"].startswith("after 2.0 s")


@pytest.mark.one_server_version
def test_a_forgotten_slot_stops_the_deployment_before_anything_changes(server, standby, guarded_db, tmp_path):
    with forgotten_slot(server) as slot:
        result, recap = deploy(server, guarded_db, tmp_path, "-e", project(tmp_path, NEW_TABLE))
    assert result.returncode == 2 and recap["failed"] == 1
    message = failure_message(result)
    assert f"replication slot {slot} is inactive" in message and "Nothing was migrated" in message, message
    assert revision(guarded_db) == HEAD
    with pytest.raises(psycopg2.Error):
        query(guarded_db, "SELECT 1 FROM replica_notes")


def test_a_backup_is_read_from_the_standby_only_when_it_is_one_and_caught_up(server, standby, migrated, tmp_path):
    run_module("replication_wait", dict(migrated, timeout=60))
    config, _backups = write_config(server, migrated, tmp_path, standby_host=standby["host"],
                                    standby_port=standby["port"], max_standby_lag_seconds=1)
    taken = run_program("backup", config, migrated["login_password"], "--from-standby")
    assert taken.returncode == 0, taken.stderr
    manifest = json.loads(taken.stdout)
    assert manifest["source"] == f"standby {standby['host']}:{standby['port']}", manifest
    assert manifest["alembic_revision"] == HEAD and manifest["verified"] is True
    assert manifest["row_counts"] == {table: query(migrated, f"SELECT count(*) FROM {table}")[0][0] for table in TABLES}

    with replay_paused(standby):
        query(migrated, "CREATE TABLE after_the_pause (id int)")
        time.sleep(2.5)  # the last transaction the standby replayed is now older than the 1 s allowed
        behind = run_program("backup", config, migrated["login_password"], "--from-standby")
    assert behind.returncode == 1
    assert (f"standby {standby['host']}:{standby['port']} is " in behind.stderr
            and "s behind its primary (limit max_standby_lag_seconds 1 s): nothing was dumped" in behind.stderr), behind.stderr

    # The primary named as the standby (or a promoted standby): not in recovery, so no dump.
    (tmp_path / "primary").mkdir()
    primary, _primary_backups = write_config(server, migrated, tmp_path / "primary", standby_host=migrated["login_host"],
                                             standby_port=migrated["login_port"])
    refused = run_program("backup", primary, migrated["login_password"], "--from-standby")
    assert refused.returncode == 1 and "is not in recovery (promoted, or not a standby): nothing was dumped" in refused.stderr
    assert len(list(tmp_path.rglob("*.dump"))) == 1, "only the caught-up standby's backup was written"


@pytest.mark.one_server_version
def test_the_backup_schedule_reads_from_the_standby_when_the_inventory_says_so(server, standby, migrated, tmp_path):
    settings = ["-e", f"pgops_cron_dir={tmp_path / 'cron.d'}", "-e", f"pgops_config_dir={tmp_path / 'etc'}",
                "-e", "pgops_backup_from_standby=true"]
    unnamed = run_playbook("backup_cron.yml", server, migrated, tmp_path, *settings)
    assert unnamed.returncode == 2
    assert failure_message(unnamed).startswith(
        "backup_schedule_from_standby (pgops_backup_from_standby) is on but no standby is named"), unnamed.stdout[-2000:]
    assert not (tmp_path / "cron.d").exists()

    run_module("replication_wait", dict(migrated, timeout=60))
    scheduled = run_playbook("backup_cron.yml", server, migrated, tmp_path, *settings,
                             "-e", f"pgops_backup_standby_host={standby['host']}",
                             "-e", f"pgops_backup_standby_port={standby['port']}")
    assert scheduled.returncode == 0, scheduled.stdout[-3000:]
    cron = (tmp_path / "cron.d" / f"pgops-backup-{migrated['login_db']}").read_text().splitlines()
    (line,) = [line for line in cron if " backup --config=" in line]
    command = line.split(None, 6)[6]  # as cron runs it: after the five time fields and the account
    assert command.endswith(" --from-standby"), command
    ran = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, check=False)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["source"] == f"standby {standby['host']}:{standby['port']}"
