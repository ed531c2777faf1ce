"""deploy_lock and preflight_check against real servers."""

import os
import signal
import socket
import time

import pytest

from conftest import BASELINE, alembic, connect_as, hold_lock, query, run_module


def test_lock_check_mode_take_idempotent_refuse_release(database):
    check = run_module("deploy_lock", dict(database, state="acquired", owner="deploy-a"), check_mode=True, diff=True)
    assert check["changed"] is True and check["diff"]["before"] == {"deploy_lock": None}
    assert run_module("deploy_lock", dict(database, state="acquired", owner="deploy-b"))["changed"] is True, \
        "check mode took nothing"
    run_module("deploy_lock", dict(database, state="released", owner="deploy-b"))

    taken = run_module("deploy_lock", dict(database, state="acquired", owner="deploy-a"))
    assert taken["changed"] is True and taken["holder"]["owner"] == "deploy-a"
    assert run_module("deploy_lock", dict(database, state="acquired", owner="deploy-a"))["changed"] is False
    other = run_module("deploy_lock", dict(database, state="acquired", owner="deploy-b"))
    assert other["failed"] is True and "is held by deploy-a since" in other["msg"]
    steal = run_module("deploy_lock", dict(database, state="released", owner="deploy-b"))
    assert steal["failed"] is True and "held by deploy-a, not deploy-b" in steal["msg"]
    released = run_module("deploy_lock", dict(database, state="released", owner="deploy-a"))
    assert released["changed"] is True and released["holder"] is None
    assert run_module("deploy_lock", dict(database, state="released", owner="deploy-a"))["changed"] is False


def test_the_lock_names_who_holds_it_not_only_the_host_the_module_ran_on(database):
    who = {"controller": "laptop-7", "user": "alice", "run_id": "42"}
    taken = run_module("deploy_lock", dict(database, state="acquired", owner="deploy-a", identity=who))
    assert taken["holder"]["by"] == who
    status = run_module("deploy_lock", dict(database, state="status"))
    assert status["holder_text"] == f"run by alice on laptop-7, job 42, lease taken on {socket.gethostname()}"
    other = run_module("deploy_lock", dict(database, state="acquired", owner="deploy-b"))
    assert other["failed"] is True and "held by deploy-a since" in other["msg"]
    assert "(run by alice on laptop-7, job 42, lease taken on " in other["msg"]
    run_module("deploy_lock", dict(database, state="released", owner="deploy-a"))
    assert run_module("deploy_lock", dict(database, state="status"))["holder_text"] is None


def test_only_own_releases_a_runs_own_lock_and_never_anothers(database):
    run_module("deploy_lock", dict(database, state="acquired", owner="deploy-a"))
    run_module("deploy_lock", dict(database, state="acquired", owner="rollback-b", force=True))
    kept = run_module("deploy_lock", dict(database, state="released", owner="deploy-a", only_own=True))
    assert kept["changed"] is False and "failed" not in kept, kept
    assert kept["previous_holder"]["owner"] == kept["holder"]["owner"] == "rollback-b", "taken over: left alone"
    refused = run_module("deploy_lock", dict(database, state="released", owner="deploy-a"))
    assert refused["failed"] is True and "held by rollback-b, not deploy-a" in refused["msg"], refused
    released = run_module("deploy_lock", dict(database, state="released", owner="rollback-b", only_own=True))
    assert released["changed"] is True and released["holder"] is None
    free = run_module("deploy_lock", dict(database, state="released", owner="deploy-a", only_own=True))
    assert free["changed"] is False and free["previous_holder"] is None


def test_abandoned_lock_can_be_taken_over_and_forced(database):
    run_module("deploy_lock", dict(database, state="acquired", owner="deploy-dead"))
    time.sleep(1.1)
    takeover = run_module("deploy_lock", dict(database, state="acquired", owner="deploy-new", stale_after=1,
                                              heartbeat_interval=0.25))
    assert takeover["changed"] is True and takeover["previous_holder"]["owner"] == "deploy-dead"
    forced = run_module("deploy_lock", dict(database, state="released", owner="operator", force=True))
    assert forced["changed"] is True and forced["holder"] is None


def test_a_stale_after_below_four_heartbeats_is_refused_before_the_lock_is_read(database):
    run_module("deploy_lock", dict(database, state="acquired", owner="deploy-alive"))
    refused = run_module("deploy_lock", dict(database, state="acquired", owner="deploy-other", stale_after=0))
    assert refused["failed"] is True
    assert refused["msg"].startswith("stale_after 0 is below its floor of 120 s (4 heartbeat intervals of 30 s)")
    assert run_module("deploy_lock", dict(database, state="status"))["holder"]["owner"] == "deploy-alive"


def test_lock_keeps_the_plan_for_whoever_comes_after(database):
    assert run_module("deploy_lock", dict(database, state="status"))["holder"] is None
    plan = {"revision_before": BASELINE, "plan": ["h8c2d6e5f4g3"]}
    run_module("deploy_lock", dict(database, state="acquired", owner="deploy-a", details=plan))
    again = run_module("deploy_lock", dict(database, state="acquired", owner="deploy-a", details=plan))
    assert again["changed"] is False
    more = dict(plan, backup="/var/backups/x.dump")
    updated = run_module("deploy_lock", dict(database, state="acquired", owner="deploy-a", details=more), diff=True)
    assert updated["changed"] is True and updated["diff"]["before"]["deploy_lock"]["details"] == plan
    kept = run_module("deploy_lock", dict(database, state="acquired", owner="deploy-a"))
    assert kept["changed"] is False, "no details given: the lease keeps its own"
    status = run_module("deploy_lock", dict(database, state="status"))
    assert status["changed"] is False and status["holder"]["owner"] == "deploy-a"
    assert status["holder"]["details"] == more
    missing = run_module("deploy_lock", dict(database, state="acquired"))
    assert missing["failed"] is True and "owner" in missing["msg"]


def test_the_lock_status_says_how_far_a_plan_got_and_how_to_undo_it(database):
    """The record, its progress against the revision the database records, and the undo decided from them."""
    alembic(database, "upgrade", BASELINE)
    record = {"revision_before": None, "plan": [BASELINE, "f00dfeed0001"], "mode": "maintenance",
              "irreversible": ["f00dfeed0001"], "writes_guarded": False, "backup": "/var/backups/x.dump",
              "migration_started": "2026-12-07T05:00:00Z"}
    run_module("deploy_lock", dict(database, state="acquired", owner="deploy-a", details=record))
    mine = run_module("deploy_lock", dict(database, state="status", owner="deploy-a"))
    assert mine["record"] == record and mine["write_guard"] is None
    assert (mine["progress"]["applied"], mine["progress"]["possibly_half_applied"]) == ([BASELINE], "f00dfeed0001")
    # Maintenance mode with no application roles named: the revision a downgrade cannot undo goes back by the
    # backup, but writes count as on (the application may write through a role nobody named): the restore must
    # discard none, and no row may be lost.
    assert (mine["undo"]["method"], mine["undo"]["target"], mine["undo"]["row_count_policy"],
            mine["undo"]["writes_off_since_backup"]) == ("restore", "base", "no_loss", False), mine["undo"]
    theirs = run_module("deploy_lock", dict(database, state="status", owner="deploy-b"))
    assert (theirs["record"], theirs["undo"]) == ({}, None), "another run's record is not this one's to undo"
    online = dict(record, mode="online")
    run_module("deploy_lock", dict(database, state="acquired", owner="deploy-a", details=online))
    undo = run_module("deploy_lock", dict(database, state="status"))["undo"]
    assert (undo["method"], undo["row_count_policy"]) == ("downgrade", "no_loss"), undo


def test_preflight_passes_an_idle_server_and_reports_its_facts(database, tmp_path):
    result = run_module("preflight_check", dict(database, backup_dir=str(tmp_path / "not-yet" / "backups")))
    assert result.get("failed") is not True, result.get("msg")
    assert result["in_recovery"] is False and result["database_size_bytes"] > 0 and result["backup_free_bytes"] > 0


def test_preflight_runs_the_client_programs_and_names_each_that_cannot_serve_the_server(server, database, tmp_path):
    server_major = query(database, "SHOW server_version_num")[0][0]
    server_major = int(server_major) // 10000
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pg_dump").symlink_to(os.path.join(server["bindir"], "pg_dump"))
    (bin_dir / "pg_old").write_text("#!/bin/sh\necho 'pg_old (PostgreSQL) 9.6.24'\n")
    (bin_dir / "pg_broken").write_text("#!/bin/sh\necho 'libpq.so.5: cannot open shared object file' >&2\nexit 127\n")
    for script in ("pg_old", "pg_broken"):
        (bin_dir / script).chmod(0o755)
    passed = run_module("preflight_check", dict(database, client_programs=["pg_dump"], client_bin_dir=str(bin_dir)))
    assert passed.get("failed") is not True, passed.get("msg")
    assert passed["client_versions"] == {"pg_dump": server_major}
    refused = run_module("preflight_check", dict(database, client_bin_dir=str(bin_dir),
                                                 client_programs=["pg_dump", "pg_old", "pg_broken", "pg_missing"]))
    assert refused["failed"] is True and refused["client_versions"] == {
        "pg_dump": server_major, "pg_old": 9, "pg_broken": None, "pg_missing": None}
    assert refused["failed_gates"] == [
        f"pg_old is version 9 but the server is {server_major}: install clients of that major version and set the "
        "bin folder (pgops_pg_bin_dir) to theirs",
        f"pg_broken in {bin_dir} does not run (libpq.so.5: cannot open shared object file): install the PostgreSQL "
        f"{server_major} client programs and set the bin folder (pgops_pg_bin_dir) to theirs",
        f"pg_missing in {bin_dir} does not run ([Errno 2] No such file or directory: '{bin_dir}/pg_missing'): "
        f"install the PostgreSQL {server_major} client programs and set the bin folder (pgops_pg_bin_dir) to theirs"]


def test_preflight_names_long_transactions_lock_holders_and_missing_space(database, tmp_path):
    alembic(database, "upgrade", BASELINE)
    holder = hold_lock(database, "jobs", application_name="nightly-report")
    time.sleep(1.1)
    try:
        result = run_module("preflight_check", dict(database, tables=["jobs"], max_transaction_seconds=1,
                                                    max_lock_seconds=1, backup_dir=str(tmp_path),
                                                    space_factor=1e9))
        others = run_module("preflight_check", dict(database, tables=["users"], max_transaction_seconds=60))
    finally:
        holder.rollback()
        holder.close()
    assert result["failed"] is True and len(result["failed_gates"]) == 3
    assert "(pgops, nightly-report) has had a transaction open for" in result["msg"]
    assert "(pgops, nightly-report) holds AccessShareLock on jobs" in result["msg"]
    assert "the backup needs about" in result["msg"]
    assert others.get("failed") is not True, "a lock on another table is no gate"
    assert query(database, "SELECT 1") == [(1,)]


def test_a_lease_kept_alive_is_never_stale_and_merges_each_step(database):
    from ansible_collections.intowork.pgops.plugins.module_utils._lease import LeaseKeeper

    run_module("deploy_lock", dict(database, state="acquired", owner="deploy-long", details={"plan": ["r1"]}))
    with LeaseKeeper(database, "deploy-long", interval=0.5) as keeper:
        time.sleep(4.5)
        refused = run_module("deploy_lock", dict(database, state="acquired", owner="deploy-next", stale_after=3,
                                                 heartbeat_interval=0.5))
    assert refused["failed"] is True and "is held by deploy-long" in refused["msg"], "a live lease was taken over"
    assert keeper.lost is False
    step = run_module("deploy_lock", dict(database, state="acquired", owner="deploy-long", merge=True,
                                          details={"backup": "/b/x.dump"}))
    assert step["changed"] is True and step["holder"]["details"] == {"plan": ["r1"], "backup": "/b/x.dump"}
    time.sleep(3.5)  # no heartbeat any more: now it is stale
    takeover = run_module("deploy_lock", dict(database, state="acquired", owner="deploy-next", stale_after=3,
                                              heartbeat_interval=0.5))
    assert takeover["changed"] is True and takeover["holder"]["owner"] == "deploy-next"
    with LeaseKeeper(database, "deploy-long", interval=0.2) as keeper:
        time.sleep(0.6)
    assert keeper.lost is True, "the keeper notices that its lease was taken"


@pytest.mark.one_server_version
def test_a_migration_session_that_will_not_end_stops_the_clean_up(database):
    """A session of the old run that outlives pg_terminate_backend (here its backend is stopped) is named, and
    nothing goes on as if it were gone."""
    from ansible_collections.intowork.pgops.plugins.module_utils._alembic import terminate_leftover_sessions
    from ansible_collections.intowork.pgops.plugins.module_utils._connection import PgopsError

    old_run = connect_as(database, application_name="pgops_migration")
    with old_run.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    cleaner = connect_as(database)  # in a transaction, as deploy_lock's is after its commit
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(PgopsError, match=f"pid {pid}\\) were told to end 1 s ago and are still there"):
            terminate_leftover_sessions(cleaner, wait_seconds=1)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert terminate_leftover_sessions(cleaner, wait_seconds=10) in ([], [pid]), "it ends once it runs again"
    assert query(database, f"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}")[0][0] == 0
    cleaner.close()
    old_run.close()
