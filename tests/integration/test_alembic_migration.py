"""alembic_migration against real servers: check mode, real run, idempotence, proof by query."""

import pytest

from conftest import (APP, BASELINE, HEAD, INDEX_REVISION, PASSWORD, PROJECT_DIR, alembic, application_role,
                      connect_as, hold_lock, load_reference_data, query, run_module)


def recorded(params):
    rows = query(params, "SELECT to_regclass('alembic_version') IS NOT NULL")
    if not rows[0][0]:
        return None
    return query(params, "SELECT version_num FROM alembic_version")[0][0]


def test_upgrade_check_mode_then_real_then_idempotent(database):
    args = dict(database, project_dir=str(PROJECT_DIR), target=INDEX_REVISION)
    alembic(database, "upgrade", BASELINE)

    check = run_module("alembic_migration", args, check_mode=True, diff=True)
    assert check["changed"] is True
    assert [p["revision"] for p in check["pending"]] == [INDEX_REVISION]
    assert check["diff"] == {"before": {"revision": BASELINE}, "after": {"revision": INDEX_REVISION}}
    assert recorded(database) == BASELINE, "check mode must not migrate"

    real = run_module("alembic_migration", args)
    assert real["changed"] is True and real["direction"] == "upgrade"
    assert real["current"] == BASELINE and real["revision"] == INDEX_REVISION
    assert real["history"] == [BASELINE, INDEX_REVISION]
    assert "diff" not in real
    assert recorded(database) == INDEX_REVISION
    assert query(database, "SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_jobs_published_job_type'")[0][0] == 1

    again = run_module("alembic_migration", args)
    assert again["changed"] is False and again["pending"] == [] and again["direction"] == "none"


def test_status_never_changes_anything(database):
    result = run_module("alembic_migration", dict(database, project_dir=str(PROJECT_DIR), state="status"))
    assert result["changed"] is False
    assert result["current"] is None and len(result["pending"]) == 6 and result["heads"] == [HEAD]
    assert recorded(database) is None


def test_downgrade_needs_permission_then_works(database):
    alembic(database, "upgrade", HEAD)
    args = dict(database, project_dir=str(PROJECT_DIR), target=INDEX_REVISION)
    refused = run_module("alembic_migration", args)
    assert refused["failed"] is True and "allow_downgrade=true" in refused["msg"]
    assert recorded(database) == HEAD

    done = run_module("alembic_migration", dict(args, allow_downgrade=True))
    assert done["changed"] is True and done["direction"] == "downgrade"
    assert recorded(database) == INDEX_REVISION
    assert query(database, "SELECT to_regclass('active_jobs_summary')")[0][0] is None


@pytest.mark.parametrize("change, fragment", [
    ({"target": "jobs; DROP TABLE users"}, "unknown target revision 'jobs; DROP TABLE users'"),
    ({"project_dir": "/nonexistent/app"}, "no Alembic config at /nonexistent/app/alembic.ini"),
])
def test_bad_input_changes_nothing(database, change, fragment):
    alembic(database, "upgrade", BASELINE)
    result = run_module("alembic_migration", {**database, "project_dir": str(PROJECT_DIR), **change})
    assert result["failed"] is True and fragment in result["msg"] and "\n" not in result["msg"]
    assert recorded(database) == BASELINE


def test_failed_migration_reports_where_the_database_stopped(database):
    alembic(database, "upgrade", BASELINE)
    # A duplicate application makes the unique constraint of h8c2d6e5f4g3 impossible.
    query(database, "INSERT INTO users (id, email) VALUES (1, 'a@x')")
    query(database, "INSERT INTO companies (id, name) VALUES (1, 'c')")
    query(database, "INSERT INTO employers (id, user_id, company_id) VALUES (1, 1, 1)")
    query(database, "INSERT INTO candidates (id, user_id) VALUES (1, 1)")
    query(database, "INSERT INTO jobs (id, company_id, employer_id, title) VALUES (1, 1, 1, 't')")
    query(database, "INSERT INTO job_applications (job_id, candidate_id) VALUES (1, 1), (1, 1)")
    result = run_module("alembic_migration", dict(database, project_dir=str(PROJECT_DIR)))
    assert result["failed"] is True
    assert "alembic upgrade to head" in result["msg"]
    assert "could not create unique index" in result["msg"]
    assert result["msg"].endswith(f"the database is now at revision {BASELINE}")
    assert recorded(database) == BASELINE


def test_check_mode_returns_the_sql_it_would_run(database):
    alembic(database, "upgrade", BASELINE)
    result = run_module("alembic_migration", dict(database, project_dir=str(PROJECT_DIR), target=INDEX_REVISION),
                        check_mode=True)
    assert "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS uq_users_email ON users (email)" in result["sql"]
    assert f"UPDATE alembic_version SET version_num='{INDEX_REVISION}'" in result["sql"]
    assert recorded(database) == BASELINE
    # And the way back, rendered in the same run of the project's Python as the plan.
    alembic(database, "upgrade", INDEX_REVISION)
    back = run_module("alembic_migration", dict(database, project_dir=str(PROJECT_DIR), target=BASELINE,
                                                allow_downgrade=True), check_mode=True)
    assert back["direction"] == "downgrade" and "DROP INDEX" in back["sql"], back.get("msg")
    assert f"UPDATE alembic_version SET version_num='{BASELINE}'" in back["sql"]
    assert recorded(database) == INDEX_REVISION


def test_lock_timeout_is_retried_then_reported_and_resumes(database):
    alembic(database, "upgrade", INDEX_REVISION)
    holder = hold_lock(database, "jobs")  # an open transaction reading jobs
    args = dict(database, project_dir=str(PROJECT_DIR), lock_timeout=300, lock_retries=1, lock_retry_backoff=0.1)
    try:
        blocked = run_module("alembic_migration", args)
    finally:
        holder.rollback()
        holder.close()
    assert blocked["failed"] is True
    assert "lock timeout" in blocked["msg"] and "(after 2 attempts)" in blocked["msg"]
    assert blocked["msg"].endswith(f"the database is now at revision {INDEX_REVISION}")
    assert recorded(database) == INDEX_REVISION
    resumed = run_module("alembic_migration", args)
    assert resumed["changed"] is True and resumed["attempts"] == 1 and recorded(database) == HEAD


def test_invalid_index_from_an_interrupted_build_is_dropped_and_rebuilt(database):
    alembic(database, "upgrade", BASELINE)
    query(database, "INSERT INTO users (id, email) VALUES (1, 'same@x'), (2, 'same@x')")
    failed = run_module("alembic_migration", dict(database, project_dir=str(PROJECT_DIR), target=INDEX_REVISION))
    assert failed["failed"] is True and "could not create unique index" in failed["msg"]
    invalid = query(database, "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                              "WHERE NOT i.indisvalid")
    assert invalid == [("uq_users_email",)]
    query(database, "DELETE FROM users WHERE id = 2")
    check = run_module("alembic_migration", dict(database, project_dir=str(PROJECT_DIR), target=INDEX_REVISION),
                       check_mode=True)
    assert check["invalid_indexes"] == ["public.uq_users_email"]
    fixed = run_module("alembic_migration", dict(database, project_dir=str(PROJECT_DIR), target=INDEX_REVISION))
    assert fixed.get("failed") is not True, fixed.get("msg")
    assert fixed["changed"] is True and fixed["invalid_indexes"] == ["public.uq_users_email"]
    assert query(database, "SELECT count(*) FROM pg_index WHERE NOT indisvalid")[0][0] == 0
    assert query(database, "SELECT conname FROM pg_constraint WHERE conname = 'uq_users_email'") == [("uq_users_email",)]


def test_revision_that_failed_halfway_completes_on_rerun(database):
    alembic(database, "upgrade", BASELINE)
    load_reference_data(database, scale=0.002)
    query(database, "UPDATE jobs SET salary_min = salary_max + 1 WHERE id = 1")
    failed = run_module("alembic_migration", dict(database, project_dir=str(PROJECT_DIR)))
    # d5e6f7a8b9c0 adds its checks NOT VALID (committed), validates the first, then fails on the bad row.
    assert failed["failed"] is True and 'violated by some row' in failed["msg"]
    assert recorded(database) == "c4d5e6f7a8b9"
    assert query(database, "SELECT count(*) FROM pg_constraint WHERE conname LIKE 'ck_jobs_%' AND NOT convalidated")[0][0] == 2
    query(database, "UPDATE jobs SET salary_min = salary_max WHERE id = 1")
    fixed = run_module("alembic_migration", dict(database, project_dir=str(PROJECT_DIR)))
    assert fixed.get("failed") is not True, fixed.get("msg")
    assert recorded(database) == HEAD
    assert query(database, "SELECT count(*) FROM pg_constraint WHERE conname LIKE 'ck_jobs_%' AND convalidated")[0][0] == 3


def test_a_session_that_only_calls_itself_a_migration_is_left_alone(database):
    alembic(database, "upgrade", BASELINE)
    with application_role(database):
        impostor = connect_as(database, APP, PASSWORD, application_name="pgops_migration")
        impostor.autocommit = True
        try:
            result = run_module("alembic_migration", dict(database, project_dir=str(PROJECT_DIR),
                                                          target=INDEX_REVISION))
            assert result.get("failed") is not True, result.get("msg")
            assert result["terminated_sessions"] == [], "the application's session is not the deploy role's"
            with impostor.cursor() as cur:
                cur.execute("SELECT 1")
                assert cur.fetchone() == (1,), "the application's session still works"
        finally:
            impostor.close()


def test_a_migration_whose_lock_was_taken_over_runs_nothing(database):
    alembic(database, "upgrade", BASELINE)
    run_module("deploy_lock", dict(database, state="acquired", owner="deploy-new"))
    args = dict(database, project_dir=str(PROJECT_DIR), target=INDEX_REVISION, lease_owner="deploy-old")
    fenced = run_module("alembic_migration", args)
    assert fenced["failed"] is True and fenced["msg"] == (
        f"the deployment lock of {database['login_db']} is no longer held by deploy-old (now held by deploy-new): "
        "this run stopped before ending leftover migration sessions")
    assert recorded(database) == BASELINE
    assert run_module("alembic_migration", dict(args, lease_owner="deploy-new"))["changed"] is True
    assert recorded(database) == INDEX_REVISION
