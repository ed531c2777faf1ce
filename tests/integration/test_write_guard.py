"""write_guard against real servers: check mode, real run, idempotence, proof by a probe connection."""

import psycopg2
import pytest

from conftest import BASELINE, alembic, query, run_module

APP, WORKER = "app_web", "app_worker"
PASSWORD = "app-secret-1"


@pytest.fixture
def app(database):
    """The reference schema and two application roles that may write to it."""
    alembic(database, "upgrade", BASELINE)
    for role in (APP, WORKER):
        query(database, f"DROP ROLE IF EXISTS {role}")
        query(database, f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'")
        query(database, f"GRANT INSERT, SELECT ON companies TO {role}")
        query(database, f"GRANT USAGE ON SEQUENCE companies_id_seq TO {role}")
    yield database
    for role in (APP, WORKER):
        query(database, f"DROP OWNED BY {role}")
        query(database, f"DROP ROLE {role}")


def app_write(params, role=APP):
    """Insert a row as an application role; returns the error text, or None when the write worked."""
    try:
        conn = psycopg2.connect(host=params["login_host"], port=params["login_port"], user=role, password=PASSWORD,
                                dbname=params["login_db"])
    except psycopg2.OperationalError as error:
        return str(error)
    try:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO companies (name) VALUES ('probe')")
        conn.commit()
        return None
    except psycopg2.Error as error:
        return str(error)
    finally:
        conn.close()


def guard(params, state, check_mode=False, **extra):
    args = dict(params, roles=[APP, WORKER], state=state, grace_period=1, probe_user=APP, probe_password=PASSWORD)
    args.update(extra)
    return run_module("write_guard", args, check_mode=check_mode, diff=True)


def test_writes_off_then_exactly_back_on(app):
    check = guard(app, "read_only", check_mode=True)
    assert check["changed"] is True and check["probe"] is None
    assert f'ALTER ROLE "{APP}" IN DATABASE "{app["login_db"]}" SET default_transaction_read_only = on' in check["executed_queries"]
    assert app_write(app) is None, "check mode changed nothing"

    off = guard(app, "read_only")
    assert off["changed"] is True and off["probe"]["write_allowed"] is False
    assert "read-only transaction" in app_write(app)
    assert "read-only transaction" in app_write(app, WORKER)
    # Roles that are not guarded, like the migration's, keep writing.
    query(app, "INSERT INTO companies (name) VALUES ('migration still writes')")

    again = guard(app, "read_only")
    assert again["changed"] is False and again["executed_queries"] == []

    on = guard(app, "read_write")
    assert on["changed"] is True and on["probe"]["write_allowed"] is True
    assert on["diff"]["after"] == {"write_guard": None}
    assert app_write(app) is None
    settings = query(app, "SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
                          "WHERE d.datname = %s", (app["login_db"],))
    assert settings[0][0] == 0, "nothing of the guard is left behind"
    assert guard(app, "read_write")["changed"] is False


def test_previous_settings_are_restored_not_reset(app):
    query(app, f'ALTER ROLE {WORKER} IN DATABASE "{app["login_db"]}" SET default_transaction_read_only = off')
    guard(app, "read_only")
    guard(app, "read_write")
    kept = query(app, "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
                      "WHERE r.rolname = %s", (WORKER,))
    assert kept == [(["default_transaction_read_only=off"],)]


def test_connection_limit_strategy_and_restored_limit(app):
    query(app, f"ALTER ROLE {APP} CONNECTION LIMIT 7")
    off = guard(app, "read_only", strategy="connection_limit")
    assert off["probe"]["write_allowed"] is False and "too many connections" in off["probe"]["detail"]
    guard(app, "read_write")
    limits = dict(query(app, "SELECT rolname, rolconnlimit FROM pg_roles WHERE rolname IN (%s, %s)", (APP, WORKER)))
    assert limits == {APP: 7, WORKER: -1}


def test_open_sessions_are_ended_after_the_grace_period(app):
    writer = psycopg2.connect(host=app["login_host"], port=app["login_port"], user=APP, password=PASSWORD,
                              dbname=app["login_db"])
    writer.cursor().execute("INSERT INTO companies (name) VALUES ('in flight')")  # idle in transaction
    off = guard(app, "read_only", grace_period=1)
    assert len(off["terminated"]) == 1 and off["waited_seconds"] >= 1
    with pytest.raises(psycopg2.Error):
        writer.cursor().execute("INSERT INTO companies (name) VALUES ('after')")
    guard(app, "read_write")


@pytest.mark.parametrize("extra, fragment", [
    ({"roles": ["no_such_role"]}, "application role(s) no_such_role do not exist"),
    ({"roles": ["pgops"]}, "are superusers, which no guard can stop"),
])
def test_bad_roles_are_refused_and_nothing_changes(app, extra, fragment):
    result = guard(app, "read_only", **extra)
    assert result["failed"] is True and fragment in result["msg"]
    assert app_write(app) is None


def test_a_different_guard_must_be_lifted_first(app):
    guard(app, "read_only")
    other = guard(app, "read_only", strategy="connection_limit")
    assert other["failed"] is True and "set state=read_write first" in other["msg"]
    guard(app, "read_write")
