"""write_guard against real servers: check mode, real run, idempotence, proof by a probe connection."""

import threading
import time

import psycopg2
import pytest

from ansible_collections.intowork.pgops.plugins.module_utils._write_guard import writes_back
from conftest import BASELINE, alembic, connect_as, query, run_module

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


def app_call(params, statement, role=APP):
    """Run `statement` as an application role; the error text, or None when it worked."""
    try:
        conn = psycopg2.connect(host=params["login_host"], port=params["login_port"], user=role, password=PASSWORD,
                                dbname=params["login_db"])
    except psycopg2.OperationalError as error:
        return str(error)
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
        conn.commit()
        return None
    except psycopg2.Error as error:
        return str(error)
    finally:
        conn.close()


def app_write(params, role=APP):
    """Insert a row as an application role; returns the error text, or None when the write worked."""
    return app_call(params, "INSERT INTO companies (name) VALUES ('probe')", role)


def guard(params, state, check_mode=False, **extra):
    args = dict(params, roles=[APP, WORKER], state=state, grace_period=1, probe_user=APP, probe_password=PASSWORD)
    args.update(extra)
    return run_module("write_guard", args, check_mode=check_mode, diff=True)


# (strategy, a statement check mode shows, the application's error while writes are off)
WRITES_OFF = {
    "revoke_writes": ('REVOKE INSERT ON TABLE "public"."companies" FROM "{app}"', "permission denied"),
    "default_transaction_read_only": ('ALTER ROLE "{app}" IN DATABASE "{db}" SET default_transaction_read_only = on',
                                      "read-only transaction"),
}


@pytest.mark.parametrize("strategy", sorted(WRITES_OFF))
def test_writes_off_then_exactly_back_on(app, strategy):
    statement, error = WRITES_OFF[strategy]
    check = guard(app, "read_only", check_mode=True, strategy=strategy)
    assert check["changed"] is True and check["probe"] is None
    assert statement.format(app=APP, db=app["login_db"]) in check["executed_queries"]
    assert app_write(app) is None, "check mode changed nothing"

    off = guard(app, "read_only", strategy=strategy)
    assert off["changed"] is True and off["probe"]["write_allowed"] is False
    assert error in app_write(app)
    assert error in app_write(app, WORKER)
    # Roles that are not guarded, like the migration's, keep writing.
    query(app, "INSERT INTO companies (name) VALUES ('migration still writes')")

    again = guard(app, "read_only", strategy=strategy)
    assert again["changed"] is False and again["executed_queries"] == []

    on = guard(app, "read_write")
    assert on["changed"] is True
    if strategy != "revoke_writes":  # its grants are given back in the same transaction as the record's removal
        assert on["probe"]["write_allowed"] is True
    assert on["diff"]["after"] == {"write_guard": None}
    assert app_write(app) is None and app_write(app, WORKER) is None
    settings = query(app, "SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
                          "WHERE d.datname = %s", (app["login_db"],))
    assert settings[0][0] == 0, "nothing of the guard is left behind"
    assert guard(app, "read_write")["changed"] is False


def test_previous_settings_are_restored_not_reset(app):
    query(app, f'ALTER ROLE {WORKER} IN DATABASE "{app["login_db"]}" SET default_transaction_read_only = off')
    guard(app, "read_only", strategy="default_transaction_read_only")
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


@pytest.mark.parametrize("strategy", ["revoke_writes", "default_transaction_read_only"])
def test_only_own_gives_back_its_own_guard_and_leaves_anyone_elses(app, strategy):
    """A clean-up path ends its own guard and nobody else's, decided from the record the module reads."""
    assert guard(app, "read_write", owner="deploy-1", only_own=True)["left_as_is"] == "writes were not off"
    guard(app, "read_only", owner="deploy-1", strategy=strategy)
    theirs = guard(app, "read_write", owner="deploy-2", only_own=True, strategy=strategy)
    assert theirs["changed"] is False and theirs["state"] == "read_only", theirs
    assert "under the write guard of deploy-1; only deploy-2's own guard ends here" in theirs["left_as_is"], theirs
    assert app_write(app) is not None, "another run's guard stays on"
    mine = guard(app, "read_write", owner="deploy-1", only_own=True, strategy=strategy)
    assert mine["changed"] is True and mine["state"] == "read_write" and "committed_at" in mine, mine
    assert app_write(app) is None, "its own guard is given back"
    missing = guard(app, "read_write", only_own=True)
    assert missing["failed"] is True and "owner" in missing["msg"], missing

    # A run whose lock was taken over leaves its guard to the new holder, without failing its clean-up.
    run_module("deploy_lock", dict(app, state="acquired", owner="deploy-1"))
    guard(app, "read_only", owner="deploy-1", lease_owner="deploy-1", strategy=strategy)
    run_module("deploy_lock", dict(app, state="acquired", owner="rollback-2", force=True))
    handed = guard(app, "read_write", owner="deploy-1", lease_owner="deploy-1", only_own=True, strategy=strategy)
    assert handed["changed"] is False and "only deploy-1's own guard ends here" in handed["left_as_is"], handed
    # A lock released by force leaves the guard with its owner, who may no longer change it.
    run_module("deploy_lock", dict(app, state="released", owner="operator", force=True))
    guard(app, "read_write", strategy=strategy)
    run_module("deploy_lock", dict(app, state="acquired", owner="deploy-1"))
    guard(app, "read_only", owner="deploy-1", lease_owner="deploy-1", strategy=strategy)
    run_module("deploy_lock", dict(app, state="released", owner="operator", force=True))
    lost = guard(app, "read_write", owner="deploy-1", lease_owner="deploy-1", only_own=True, strategy=strategy)
    assert lost["changed"] is False and lost["state"] == "read_only", lost
    assert "no longer held by deploy-1 (released)" in lost["left_as_is"], lost
    assert app_write(app) is not None, "nobody holds the lock: the guard stays until someone who does ends it"
    guard(app, "read_write", strategy=strategy)


def test_a_run_that_lost_the_deployment_lock_cannot_change_the_guard(app):
    run_module("deploy_lock", dict(app, state="acquired", owner="deploy-new"))
    stale = guard(app, "read_only", lease_owner="deploy-old")
    assert stale["failed"] is True and stale["msg"] == (
        f"the deployment lock of {app['login_db']} is no longer held by deploy-old (now held by deploy-new): "
        "the write guard was left as it is")
    assert app_write(app) is None and guard(app, "status")["guard"] is None, "nothing was changed"
    assert guard(app, "read_only", lease_owner="deploy-new")["changed"] is True
    assert app_write(app) is not None
    run_module("deploy_lock", dict(app, state="released", owner="deploy-new"))
    assert guard(app, "read_write", lease_owner="deploy-new")["failed"] is True, "released counts as lost too"
    assert app_write(app) is not None, "writes stay as they were"
    guard(app, "read_write")


@pytest.mark.parametrize("lease_owner", [None, "deploy-busy"])
def test_the_guard_and_a_busy_lease_heartbeat_never_collide(app, lease_owner):
    """Both write the database's one row of settings: the guard's record while the deployment's keeper beats
    (every module beats while it works), and neither may fail on the other."""
    from ansible_collections.intowork.pgops.plugins.module_utils._lease import heartbeat

    run_module("deploy_lock", dict(app, state="acquired", owner="deploy-busy"))
    beats, errors, done = [], [], threading.Event()

    def beat_hard():
        while not done.is_set():
            try:
                beats.append(heartbeat(app, "deploy-busy"))
            except psycopg2.Error as error:
                errors.append(str(error).strip())

    beater = threading.Thread(target=beat_hard)
    beater.start()
    try:
        # At least ten turns, and on until 50 beats have met them: a loaded machine beats less per turn.
        turns, deadline = 0, time.monotonic() + 120
        while turns < 10 or (len(beats) <= 50 and time.monotonic() < deadline):
            result = guard(app, ("read_only", "read_write")[turns % 2],
                           **({"lease_owner": lease_owner} if lease_owner else {}))
            assert result.get("failed") is not True, result["msg"]
            turns += 1
        if turns % 2:
            guard(app, "read_write", **({"lease_owner": lease_owner} if lease_owner else {}))
    finally:
        done.set()
        beater.join()
        guard(app, "read_write")
        run_module("deploy_lock", dict(app, state="released", owner="deploy-busy"))
    assert errors == [] and len(beats) > 50 and all(beats), (len(beats), errors[:3])
    assert app_write(app) is None


def bypass_write(params, bypass):
    """The application tries to write anyway, the way each bypass does; the error text, or None if it wrote."""
    options = "-c default_transaction_read_only=off" if bypass == "pgoptions" else None
    try:
        conn = psycopg2.connect(host=params["login_host"], port=params["login_port"], user=APP, password=PASSWORD,
                                dbname=params["login_db"], options=options)
    except psycopg2.OperationalError as error:
        return str(error)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            if bypass == "alter_role":
                # For good: its next sessions start read-write whatever the guard set.
                cur.execute("SET default_transaction_read_only = off")
                cur.execute(f"ALTER ROLE {APP} IN DATABASE {params['login_db']} SET default_transaction_read_only = off")
                conn.close()
                return bypass_write(params, "none")
            first = {"set_default_off": "SET default_transaction_read_only = off",
                     "begin_read_write": "BEGIN READ WRITE",
                     "session_characteristics": "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE"}.get(bypass)
            if first:
                cur.execute(first)
            cur.execute("INSERT INTO companies (name) VALUES ('bypass')")
            if bypass == "begin_read_write":
                cur.execute("COMMIT")
        return None
    except psycopg2.Error as error:
        return str(error)
    finally:
        conn.close()


BYPASSES = ["none", "set_default_off", "begin_read_write", "session_characteristics", "pgoptions", "alter_role"]
# What each strategy stops, as docs/security.md says: only a default is changed by default_transaction_read_only.
STOPPED = {"revoke_writes": set(BYPASSES), "connection_limit": set(BYPASSES), "default_transaction_read_only": {"none"}}


def relation_acls(params):
    """Every relation's privileges, a missing ACL spelled out as the owner's defaults, items in order."""
    return query(params, "SELECT c.oid::regclass::text, (SELECT array_agg(a::text ORDER BY a::text) FROM unnest("
                         "coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::\"char\", c.relowner)))"
                         " a) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                         "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'S') ORDER BY 1")


@pytest.mark.parametrize("strategy", sorted(STOPPED))
def test_what_each_strategy_stops(app, strategy):
    acls = relation_acls(app)
    off = run_module("write_guard", dict(app, roles=[APP, WORKER], state="read_only", strategy=strategy,
                                         grace_period=0))
    assert off.get("failed") is not True, off.get("msg")
    outcomes = dict((bypass, bypass_write(app, bypass)) for bypass in BYPASSES)
    wrote = set(bypass for bypass, error in outcomes.items() if error is None)
    assert set(BYPASSES) - wrote == STOPPED[strategy], outcomes
    query(app, f"ALTER ROLE {APP} IN DATABASE {app['login_db']} RESET default_transaction_read_only") \
        if strategy != "default_transaction_read_only" else None
    on = run_module("write_guard", dict(app, roles=[APP, WORKER], state="read_write"))
    assert on.get("failed") is not True, on.get("msg")
    assert relation_acls(app) == acls, "exactly the privileges of before"
    assert app_write(app) is None and app_write(app, WORKER) is None


def test_revoke_writes_refuses_what_it_cannot_take_away_and_changes_nothing(app):
    acls = relation_acls(app)
    query(app, "GRANT UPDATE ON jobs TO PUBLIC")
    public = run_module("write_guard", dict(app, roles=[APP], state="read_only", strategy="revoke_writes"))
    assert public["failed"] is True and public["msg"].startswith("nothing was changed: after revoking their own "
                                                                 "grants the roles can still write (app_web on public.jobs)")
    assert app_write(app) is None, "writes still on: nothing was changed"
    query(app, "REVOKE UPDATE ON jobs FROM PUBLIC")
    assert relation_acls(app) == acls
    query(app, f"ALTER TABLE jobs OWNER TO {WORKER}")
    owner = run_module("write_guard", dict(app, roles=[APP, WORKER], state="read_only", strategy="revoke_writes"))
    query(app, f"ALTER TABLE jobs OWNER TO {app['login_user']}")
    # jobs and the sequence of its id
    assert owner["failed"] is True and "app_worker own application relations (app_worker: 2, e.g. public.jobs)" in \
        owner["msg"] and "connection_limit" in owner["msg"]
    assert app_write(app) is None


def test_revoke_writes_gives_back_only_what_still_exists(app):
    query(app, "CREATE TABLE scratch_notes (id int)")
    query(app, f"GRANT INSERT ON scratch_notes TO {APP}")
    off = run_module("write_guard", dict(app, roles=[APP], state="read_only", strategy="revoke_writes",
                                         grace_period=0))
    assert ["public", "scratch_notes", "TABLE", APP, "INSERT", False] in off["guard"]["previous"]["grants"]
    query(app, "DROP TABLE scratch_notes")  # a migration dropped it meanwhile
    on = run_module("write_guard", dict(app, roles=[APP], state="read_write"))
    assert on.get("failed") is not True, on.get("msg")
    assert not any("scratch_notes" in statement for statement in on["executed_queries"][:-1])
    assert app_write(app) is None


def column_acls(params):
    """Every column privilege of the schema's relations, items in order."""
    return query(params, "SELECT a.attrelid::regclass::text, a.attname, (SELECT array_agg(x::text ORDER BY x::text) "
                         "FROM unnest(a.attacl) x) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                         "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
                         "AND a.attacl IS NOT NULL ORDER BY 1, 2")


def test_revoke_writes_takes_column_grants_away_and_gives_them_back_exactly(app):
    # A column grant that duplicates a table grant (a table-level REVOKE takes both), and one alone.
    query(app, f"GRANT UPDATE ON companies TO {APP}")
    query(app, f"GRANT UPDATE (name) ON companies TO {APP} WITH GRANT OPTION")
    query(app, f"GRANT INSERT (title), UPDATE (title, location) ON jobs TO {WORKER}")
    before = relation_acls(app), column_acls(app)
    assert len(before[1]) == 3

    off = run_module("write_guard", dict(app, roles=[APP, WORKER], state="read_only", strategy="revoke_writes",
                                         grace_period=0))
    assert off.get("failed") is not True, off.get("msg")
    assert ["public", "jobs", "TABLE", WORKER, "UPDATE", False, "location"] in off["guard"]["previous"]["grants"]
    assert query(app, f"SELECT has_any_column_privilege('{WORKER}', 'jobs', 'INSERT, UPDATE'), "
                      f"has_any_column_privilege('{APP}', 'companies', 'UPDATE')")[0] == (False, False)

    on = run_module("write_guard", dict(app, roles=[APP, WORKER], state="read_write"))
    assert on.get("failed") is not True, on.get("msg")
    assert (relation_acls(app), column_acls(app)) == before, "exactly the privileges of before, column grants too"


def test_revoke_writes_gives_back_only_the_columns_that_still_exist(app):
    query(app, "CREATE TABLE scratch_notes (id int, note text, draft text)")
    query(app, f"GRANT UPDATE (note, draft) ON scratch_notes TO {APP}")
    off = run_module("write_guard", dict(app, roles=[APP], state="read_only", strategy="revoke_writes",
                                         grace_period=0))
    assert off.get("failed") is not True, off.get("msg")
    query(app, "ALTER TABLE scratch_notes DROP COLUMN draft")  # a migration dropped it meanwhile
    on = run_module("write_guard", dict(app, roles=[APP], state="read_write"))
    assert on.get("failed") is not True, on.get("msg")
    assert not any("draft" in statement for statement in on["executed_queries"])
    assert column_acls(app) == [("scratch_notes", "note", [f"{APP}=w/{app['login_user']}"])]


def routine_acls(params):
    """Every routine's EXECUTE privileges in public, a missing ACL spelled out as the owner's defaults."""
    return query(params, "SELECT p.oid::regprocedure::text, (SELECT array_agg(a::text ORDER BY a::text) FROM unnest("
                         "coalesce(p.proacl, acldefault('f', p.proowner))) a) FROM pg_proc p "
                         "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' ORDER BY 1")


@pytest.fixture
def definer(app):
    """Routines that write with their owner's (the tables' owner's) rights: one any role may run (PUBLIC, the
    default), an overload only app_worker may run (with grant option); and two that are no way around the guard."""
    query(app, "CREATE FUNCTION add_company(name text) RETURNS void LANGUAGE sql SECURITY DEFINER "
               "AS $$ INSERT INTO companies (name) VALUES (name) $$")
    query(app, "CREATE FUNCTION add_company(name text, copies int) RETURNS void LANGUAGE sql SECURITY DEFINER "
               "AS $$ INSERT INTO companies (name) SELECT name FROM generate_series(1, copies) $$")
    query(app, "REVOKE EXECUTE ON FUNCTION add_company(text, int) FROM PUBLIC")
    query(app, f"GRANT EXECUTE ON FUNCTION add_company(text, int) TO {WORKER} WITH GRANT OPTION")
    query(app, "CREATE FUNCTION add_company_as_caller(name text) RETURNS void LANGUAGE sql "
               "AS $$ INSERT INTO companies (name) VALUES (name) $$")
    yield app
    query(app, "DROP FUNCTION IF EXISTS add_company(text), add_company(text, int), add_company_as_caller(text)")


def test_definer_routines_are_named_and_left_alone_by_default(definer):
    owner = definer["login_user"]
    off = guard(definer, "read_only", strategy="revoke_writes")
    assert off.get("failed") is not True, off.get("msg")
    assert off["definer_routines"] == [f"public.add_company(text) (owned by {owner})",
                                       f"public.add_company(text, integer) (owned by {owner})"]
    assert "permission denied" in app_call(definer, "SELECT add_company_as_caller('x')")
    assert app_call(definer, "SELECT add_company('through its owner')") is None, "allow leaves them runnable"
    assert guard(definer, "read_write").get("failed") is not True


def test_revoke_takes_execute_away_for_the_window_and_gives_exactly_it_back(definer):
    before = routine_acls(definer)
    off = guard(definer, "read_only", strategy="revoke_writes", definer_routines="revoke")
    assert off.get("failed") is not True, off.get("msg")
    # PUBLIC's (the default) on one, app_worker's with its grant option on the other.
    assert off["guard"]["previous"]["routines"] == [["public", "add_company", "text", "", False],
                                                    ["public", "add_company", "text, integer", WORKER, True]]
    assert "permission denied for function add_company" in app_call(definer, "SELECT add_company('x')")
    assert "permission denied for function add_company" in app_call(definer, "SELECT add_company('x', 2)", WORKER)
    # The owner (the deploy role's side) still runs them.
    query(definer, "SELECT add_company('migration')")
    again = guard(definer, "read_only", strategy="revoke_writes", definer_routines="revoke")
    assert again["changed"] is False and again["definer_routines"] == []

    on = guard(definer, "read_write")
    assert on.get("failed") is not True, on.get("msg")
    assert routine_acls(definer) == before, "exactly the EXECUTE privileges of before, grant option included"
    assert app_call(definer, "SELECT add_company('x', 2)", WORKER) is None


def test_the_dead_man_switch_gives_the_routines_back_too(definer):
    """The watch on the database host gives writes back with writes_back() (the same plan, read from the record)."""
    before = routine_acls(definer)
    assert guard(definer, "read_only", strategy="revoke_writes", definer_routines="revoke").get("failed") is not True
    conn = connect_as(definer)
    try:
        with conn.cursor() as cur:
            statements, _guard = writes_back(cur, definer["login_db"])
            for statement in statements:
                cur.execute(statement)
        conn.commit()
    finally:
        conn.close()
    assert routine_acls(definer) == before and app_call(definer, "SELECT add_company('x')") is None


def test_revoke_refuses_a_routine_it_cannot_take_away_and_changes_nothing(definer):
    query(definer, "DROP ROLE IF EXISTS app_runners")
    query(definer, "CREATE ROLE app_runners")
    query(definer, f"GRANT app_runners TO {APP}")
    query(definer, "GRANT EXECUTE ON FUNCTION add_company(text, int) TO app_runners")
    try:
        before = routine_acls(definer), relation_acls(definer)
        refused = guard(definer, "read_only", strategy="revoke_writes", definer_routines="revoke")
        assert refused["failed"] is True
        owner = definer["login_user"]
        assert refused["msg"] == (
            "nothing was changed: after revoking EXECUTE the roles can still run SECURITY DEFINER routine(s) that "
            f"write: public.add_company(text, integer) (owned by {owner}) for {APP}, through a role they belong to "
            "or a grant this login cannot revoke; run the guard as the routines' owner, or revoke those by hand")
        assert (routine_acls(definer), relation_acls(definer)) == before
        assert app_write(definer) is None
    finally:
        query(definer, "DROP OWNED BY app_runners")
        query(definer, "DROP ROLE app_runners")
