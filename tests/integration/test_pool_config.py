"""pool_config against real servers: the sizing arithmetic, live usage, and the roles' timeouts."""

import json
import threading
import time

import pytest

from conftest import (APP, PASSWORD, assert_application_survived, connect_as, failure_message, play_recap, query,
                      run_module, run_playbook)

REPORTER, REPORTER_PASSWORD = "app_reporter", "reporter-secret-3"


@pytest.fixture
def app_role(database):
    query(database, f"DROP ROLE IF EXISTS {APP}")
    query(database, f"CREATE ROLE {APP} LOGIN PASSWORD '{PASSWORD}'")
    yield database
    query(database, f"DROP OWNED BY {APP}")  # its grants, where a test gave it some
    query(database, f"DROP ROLE {APP}")


def test_fitting_pool_reports_its_arithmetic_and_live_usage(app_role):
    app = connect_as(app_role, APP, PASSWORD, "intowork-web")
    other = connect_as(app_role, app_role["login_user"], app_role["login_password"], "report-job")
    try:
        result = run_module("pool_config", dict(app_role, roles=[APP], pool_size=10, max_overflow=5, workers=2,
                                                sample_seconds=0))
    finally:
        app.close()
        other.close()
    assert result.get("failed") is not True, result.get("msg")
    assert result["demand"] == {"per_process": 15, "processes": 2, "steady": 20, "peak": 30}
    capacity = result["capacity"]
    assert capacity["max_connections"] == int(query(app_role, "SHOW max_connections")[0][0])
    assert capacity["other_clients"] >= 1, "report-job counts; the application's own connections do not"
    assert capacity["available"] == (capacity["max_connections"] - capacity["superuser_reserved"]
                                     - capacity["reserved"] - capacity["other_clients"] - 5)
    assert result["headroom"] == capacity["available"] - 30
    # The sentence on screen adds up: every term of the sum is in it.
    assert capacity["summary"] == (
        f"{capacity['available']} available (max_connections {capacity['max_connections']} - superuser_reserved "
        f"{capacity['superuser_reserved']} - reserved {capacity['reserved']} - {capacity['other_clients']} held by "
        f"other clients - 5 kept for operators)")
    names = {(row["usename"], row["application_name"]) for row in result["usage"]}
    assert (APP, "intowork-web") in names and (app_role["login_user"], "report-job") in names
    assert result["environment"] == {"DATABASE_TIMEOUT": "10", "STATEMENT_TIMEOUT": "30000", "POOL_SIZE": "10",
                                     "MAX_OVERFLOW": "5", "POOL_TIMEOUT": "30", "POOL_RECYCLE": "3600",
                                     "POOL_PRE_PING": "true"}
    assert result["changed"] is False


def test_oversubscribed_pool_fails_with_the_sizing_and_writes_nothing(app_role):
    result = run_module("pool_config", dict(app_role, roles=[APP], instances=2, workers=4, apply=True,
                                            sample_seconds=0))
    assert result["failed"] is True
    assert "pool oversubscribed: peak demand 2 instance(s) x 4 worker(s) x (pool_size 20 + max_overflow 40) = " \
           "480 connections, but the server has " in result["msg"] and " kept for operators): " in result["msg"]
    assert "raise max_connections, or put PgBouncer in front. Nothing was changed." in result["msg"]
    assert query(app_role, "SELECT count(*) FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
                           "WHERE r.rolname = %s", (APP,))[0][0] == 0


def test_apply_sets_the_timeouts_idempotently_with_check_mode_and_diff(app_role):
    args = dict(app_role, roles=[APP], apply=True, statement_timeout=30000, idle_in_transaction_session_timeout=60000)
    check = run_module("pool_config", args, check_mode=True, diff=True)
    assert check["changed"] is True
    assert check["diff"]["after"]["role_settings"][APP] == {"statement_timeout": "30000",
                                                            "idle_in_transaction_session_timeout": "60000"}
    app = connect_as(app_role, APP, PASSWORD, "probe")
    with app.cursor() as cur:
        cur.execute("SHOW statement_timeout")
        assert cur.fetchone()[0] == "0", "check mode wrote nothing"
    app.close()

    assert run_module("pool_config", args)["changed"] is True
    assert run_module("pool_config", args)["changed"] is False
    app = connect_as(app_role, APP, PASSWORD, "probe")
    with app.cursor() as cur:
        cur.execute("SHOW statement_timeout")
        assert cur.fetchone()[0] == "30s"
        cur.execute("SHOW idle_in_transaction_session_timeout")
        assert cur.fetchone()[0] == "1min"
    app.close()
    changed = run_module("pool_config", dict(args, statement_timeout=15000), diff=True)
    assert changed["changed"] is True
    assert changed["diff"]["before"]["role_settings"][APP]["statement_timeout"] == "30000"


@pytest.mark.parametrize("args, message", [
    ({"roles": ["no_such_app"]}, "application role(s) no_such_app do not exist"),
    ({"pool_size": 0}, "pool_size=0 is out of range: it must be at least 1"),
    ({"apply": True}, "apply=true needs roles"),
])
def test_bad_input_is_one_clear_line(app_role, args, message):
    result = run_module("pool_config", dict(app_role, **args))
    assert result["failed"] is True and message in result["msg"]


@pytest.fixture
def reporter(app_role):
    """Another client of the database, not a superuser: a report job's login."""
    query(app_role, f"CREATE ROLE {REPORTER} LOGIN PASSWORD '{REPORTER_PASSWORD}'")
    yield app_role
    query(app_role, f"DROP ROLE {REPORTER}")


def timeouts_set(params):
    return query(params, "SELECT count(*) FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
                         "WHERE r.rolname = %s", (APP,))[0][0]


def test_the_peak_must_fit_under_the_roles_and_the_databases_connection_limits(reporter):
    """ALTER ROLE ... CONNECTION LIMIT 20 with a peak of 60 was accepted: the server had room, the role did not."""
    database = reporter["login_db"]
    args = dict(reporter, roles=[APP], pool_size=10, max_overflow=20, workers=2, apply=True, sample_seconds=0)
    query(reporter, f"ALTER ROLE {APP} CONNECTION LIMIT 20")
    refused = run_module("pool_config", args)
    assert refused["failed"] is True
    assert "= 60 connections, but role app_web has CONNECTION LIMIT 20: lower pool_size, max_overflow or workers, " \
           "raise it (ALTER ROLE app_web CONNECTION LIMIT 60), or put PgBouncer in front. Nothing was changed." \
           in refused["msg"], refused["msg"]
    assert timeouts_set(reporter) == 0

    # The database's own limit counts what other clients (not superusers) hold in it.
    query(reporter, f"ALTER ROLE {APP} CONNECTION LIMIT -1")
    query(reporter, f'ALTER DATABASE "{database}" CONNECTION LIMIT 40')
    others = [connect_as(reporter, REPORTER, REPORTER_PASSWORD, "report-job") for _number in range(3)]
    try:
        short = run_module("pool_config", args)
        fits = run_module("pool_config", dict(args, max_overflow=5, apply=False))
    finally:
        for conn in others:
            conn.close()
        query(reporter, f'ALTER DATABASE "{database}" CONNECTION LIMIT -1')
    assert short["failed"] is True
    assert f"but database {database} has CONNECTION LIMIT 40, 3 of it held by other clients: lower pool_size, " \
           f"max_overflow or workers, raise it (ALTER DATABASE {database} CONNECTION LIMIT 63)" in short["msg"], \
           short["msg"]
    assert "the server has" not in short["msg"], "the server had room: only the limit that is short is named"
    assert fits.get("failed") is not True, fits.get("msg")
    assert fits["capacity"]["limits"][1] == {
        "name": f"database {database} has CONNECTION LIMIT 40, 3 of it held by other clients", "available": 37}
    assert fits["headroom"] == 37 - 30
    assert timeouts_set(reporter) == 0


def test_other_clients_count_at_their_most_over_the_window(reporter):
    """A report job that holds connections for a moment is counted, not missed by the one look it happened to
    fall between."""
    started = threading.Event()

    def report_job():
        started.set()
        time.sleep(1.0)
        conns = [connect_as(reporter, REPORTER, REPORTER_PASSWORD, "report-job") for _number in range(4)]
        time.sleep(1.0)
        for conn in conns:
            conn.close()

    args = dict(reporter, roles=[APP], pool_size=5, max_overflow=0)
    quiet = run_module("pool_config", dict(args, sample_seconds=0))["capacity"]
    job = threading.Thread(target=report_job)
    job.start()
    started.wait()
    sampled = run_module("pool_config", dict(args, sample_seconds=3))["capacity"]
    job.join()
    assert quiet["samples"] == 1 and sampled["samples"] >= 5, sampled
    assert sampled["other_clients"] >= quiet["other_clients"] + 4, (quiet, sampled)
    assert f"- {sampled['other_clients']} held by other clients -" in sampled["summary"]


@pytest.mark.one_server_version  # the runbook's verdict, not the server's
def test_pool_config_yml_refuses_a_pool_the_roles_limit_cannot_hold(server, reporter, tmp_path, live_writer):
    """Both verdicts with the application writing through its role: the refusal changes nothing, and the run that
    sets the role's timeouts costs it no write."""
    query(reporter, "CREATE TABLE companies (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, name text)")
    query(reporter, f"GRANT SELECT, INSERT ON companies TO {APP}")
    query(reporter, f"GRANT USAGE ON SEQUENCE companies_id_seq TO {APP}")
    query(reporter, f"ALTER ROLE {APP} CONNECTION LIMIT 20")
    settings = {"pgops_app_roles": [APP], "pgops_pool_size": 10, "pgops_pool_max_overflow": 20, "pgops_app_workers": 2,
                "pgops_pool_sample_seconds": 0}
    writer = live_writer(reporter)
    refused = run_playbook("pool_config.yml", server, reporter, tmp_path, "-e", json.dumps(settings))
    assert refused.returncode == 2 and play_recap(refused)["failed"] == 1, refused.stdout[-3000:]
    assert "but role app_web has CONNECTION LIMIT 20: " in failure_message(refused)
    assert failure_message(refused).endswith("Nothing was changed.")
    assert timeouts_set(reporter) == 0

    query(reporter, f"ALTER ROLE {APP} CONNECTION LIMIT 100")
    passed = run_playbook("pool_config.yml", server, reporter, tmp_path, "-e", json.dumps(settings))
    assert passed.returncode == 0, passed.stdout[-3000:]
    assert "role app_web has CONNECTION LIMIT 100: headroom " in passed.stdout
    assert timeouts_set(reporter) == 1
    assert_application_survived(writer, reporter)
