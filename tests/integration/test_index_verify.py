"""index_verify against real catalogs: missing at baseline, all valid at head, invalid builds caught."""

from conftest import BASELINE, HEAD, INDEX_REVISION, PROJECT_DIR, alembic, load_reference_data, query, run_module

SPEC_FILE = str(PROJECT_DIR / "index_strategy.yml")


def test_baseline_reports_the_strategy_missing(database):
    alembic(database, "upgrade", BASELINE)
    whole = run_module("index_verify", dict(database, spec_file=SPEC_FILE), check_mode=True)
    assert whole["failed"] is True
    assert "table(s) not in the schema: active_jobs_summary" in whole["msg"]

    result = run_module("index_verify", dict(database, spec_file=SPEC_FILE, revisions=[BASELINE, INDEX_REVISION]),
                        check_mode=True)
    assert result["failed"] is True and result["changed"] is False
    assert result["expected"] == 18 and result["not_yet_expected"] == 5 and len(result["missing"]) == 18
    # Baseline has foreign keys and no index behind them: both findings are real.
    assert result["failed_checks"] == ["missing", "unindexed_fk"]
    assert len(result["unindexed_fk"]) == 10
    assert result["msg"].startswith("index verification failed on schema public: missing: ix_job_applications_job_id_status")

    nothing_due = run_module("index_verify", dict(database, spec_file=SPEC_FILE, revisions=[BASELINE],
                                                  fail_on=["missing", "invalid", "different"]))
    assert nothing_due.get("failed") is not True and nothing_due["expected"] == 0


def test_head_has_every_index_valid(database):
    alembic(database, "upgrade", BASELINE)
    load_reference_data(database, scale=0.002)
    alembic(database, "upgrade", HEAD)
    result = run_module("index_verify", dict(database, spec_file=SPEC_FILE, count_pattern="^(ix|uq)_"))
    assert result.get("failed") is not True, result.get("msg")
    assert len(result["ok"]) == 23 and result["pattern_count"] == 22
    # The count matches the catalog, independently of the module.
    counted = query(database, "SELECT count(*) FROM pg_indexes WHERE schemaname = 'public' AND indexname ~ '^(ix|uq)_'")
    assert counted[0][0] == 22


def test_failed_concurrent_build_is_reported_invalid(database):
    alembic(database, "upgrade", BASELINE)
    query(database, "INSERT INTO users (id, email) VALUES (1, 'same@x'), (2, 'same@x')")
    conn_result = None
    try:
        query(database, "CREATE UNIQUE INDEX CONCURRENTLY uq_users_email ON users (email)")
    except Exception as error:  # the build fails on the duplicate and leaves an INVALID index behind
        conn_result = error
    assert conn_result is not None
    spec = [{"name": "uq_users_email", "table": "users", "columns": ["email"], "unique": True}]
    result = run_module("index_verify", dict(database, indexes=spec, fail_on=["missing", "invalid"]))
    assert result["failed"] is True and result["failed_checks"] == ["invalid"]
    assert result["invalid"][0]["name"] == "uq_users_email" and result["invalid"][0]["valid"] is False

    tolerant = run_module("index_verify", dict(database, indexes=spec, fail_on=["missing"]))
    assert tolerant.get("failed") is not True and tolerant["invalid"]


def test_hostile_names_are_names_not_sql(database):
    alembic(database, "upgrade", BASELINE)
    spec = [{"name": "ix_x'; DROP TABLE users; --", "table": "jobs"}]
    result = run_module("index_verify", dict(database, indexes=spec, schema="public"))
    assert result["missing"] == [{"name": "ix_x'; DROP TABLE users; --", "table": "jobs"}]
    bad_table = run_module("index_verify", dict(database, indexes=[{"name": "ix", "table": "jobs; DROP TABLE users"}]))
    assert "table(s) not in the schema: jobs; DROP TABLE users" in bad_table["msg"]
    assert query(database, "SELECT to_regclass('users') IS NOT NULL")[0][0] is True


def test_unknown_schema_and_bad_pattern_are_clear(database):
    spec = [{"name": "ix", "table": "jobs"}]
    no_schema = run_module("index_verify", dict(database, indexes=spec, schema="nope"))
    assert no_schema["msg"] == "schema 'nope' does not exist in the database: check the schema option"
    bad_pattern = run_module("index_verify", dict(database, indexes=spec, count_pattern="(ix"))
    assert bad_pattern["failed"] is True and "count_pattern '(ix'" in bad_pattern["msg"]
