"""session_role: the module's own queries and the Alembic child process both run as that role."""

from conftest import BASELINE, PROJECT_DIR, query, run_module


def test_migration_runs_as_the_session_role(database):
    query(database, "CREATE ROLE intowork_owner NOLOGIN")
    try:
        query(database, "GRANT CREATE ON SCHEMA public TO intowork_owner")
        args = dict(database, project_dir=str(PROJECT_DIR), target=BASELINE, session_role="intowork_owner")
        result = run_module("alembic_migration", args)
        assert result["changed"] is True and result["revision"] == BASELINE
        owners = query(database, "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
        assert owners == [("intowork_owner",)]
    finally:
        query(database, "DROP OWNED BY intowork_owner")
        query(database, "DROP ROLE intowork_owner")


def test_unknown_session_role_is_one_clear_line(database):
    result = run_module("alembic_migration", dict(database, project_dir=str(PROJECT_DIR), state="status",
                                                  session_role="no_such_role"))
    assert result["failed"] is True
    assert result["msg"].startswith("cannot SET ROLE no_such_role on ")
    assert 'role "no_such_role" does not exist' in result["msg"] and "\n" not in result["msg"]
