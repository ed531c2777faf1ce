"""pool_config against real servers: the sizing arithmetic, live usage, and the roles' timeouts."""

import pytest

from conftest import APP, PASSWORD, connect_as, query, run_module


@pytest.fixture
def app_role(database):
    query(database, f"DROP ROLE IF EXISTS {APP}")
    query(database, f"CREATE ROLE {APP} LOGIN PASSWORD '{PASSWORD}'")
    yield database
    query(database, f"DROP ROLE {APP}")


def test_fitting_pool_reports_its_arithmetic_and_live_usage(app_role):
    app = connect_as(app_role, APP, PASSWORD, "intowork-web")
    other = connect_as(app_role, app_role["login_user"], app_role["login_password"], "report-job")
    try:
        result = run_module("pool_config", dict(app_role, roles=[APP], pool_size=10, max_overflow=5, workers=2))
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
    result = run_module("pool_config", dict(app_role, roles=[APP], instances=2, workers=4, apply=True))
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
