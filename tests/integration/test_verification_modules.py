"""Each defect the verification step exists for, planted for real, is found with the right evidence;
a clean reference database passes every check."""

import pytest

from conftest import BASELINE, HEAD, PROJECT_DIR, alembic, load_reference_data, query, run_module

INDEX_SPEC = str(PROJECT_DIR / "index_strategy.yml")
INTEGRITY_SPEC = str(PROJECT_DIR / "integrity_checks.yml")
QUERIES = str(PROJECT_DIR / "critical_queries.yml")
SCALE = 0.01  # 1,000 jobs, 500 candidates, 10,000 applications
APPLICATIONS, CANDIDATES = 10000, 500


@pytest.fixture
def clean(database):
    alembic(database, "upgrade", BASELINE)
    load_reference_data(database, scale=SCALE)
    alembic(database, "upgrade", HEAD)
    query(database, "ANALYZE")
    return database


@pytest.fixture
def defective(database):
    """Baseline schema (no constraints to stop them) with 3 of each planted data defect."""
    alembic(database, "upgrade", BASELINE)
    load_reference_data(database, scale=SCALE, defects=3)
    return database


def test_clean_reference_database_passes_everything(clean):
    indexes = run_module("index_verify", dict(clean, spec_file=INDEX_SPEC))
    assert indexes.get("failed") is not True, indexes.get("msg")
    assert indexes["duplicate"] == [] and indexes["unindexed_fk"] == [] and indexes["redundant"] == []
    integrity = run_module("integrity_check", dict(clean, spec_file=INTEGRITY_SPEC))
    assert integrity.get("failed") is not True, integrity.get("msg")
    assert len(integrity["orphans"]) == 11 and all(o["count"] == 0 for o in integrity["orphans"])
    assert integrity["row_counts"]["job_applications"] == APPLICATIONS
    queries = run_module("query_benchmark", dict(clean, queries_file=QUERIES, iterations=5))
    assert queries.get("failed") is not True, queries.get("msg")
    assert [q["name"] for q in queries["queries"]][:2] == ["job_list_by_location_type", "job_list_by_job_type"]


def test_planted_data_defects_are_found_with_sample_keys(defective):
    result = run_module("integrity_check", dict(defective, spec_file=INTEGRITY_SPEC, sample_size=2))
    assert result["failed"] is True
    assert result["failed_checks"] == ["orphans", "duplicates", "check_violations"]
    orphans = {o["name"]: o for o in result["orphans"]}
    planted = orphans["job_applications_candidate_id_fkey"]
    assert planted["count"] == 3
    assert planted["sample"] == [{"id": APPLICATIONS + 1, "candidate_id": CANDIDATES + 1000001},
                                 {"id": APPLICATIONS + 2, "candidate_id": CANDIDATES + 1000002}]
    assert all(o["count"] == 0 for name, o in orphans.items() if name != "job_applications_candidate_id_fkey")
    duplicates = {d["name"]: d for d in result["duplicates"]}["active_applications_per_candidate_and_job"]
    assert duplicates["count"] == 3 and duplicates["excess_rows"] == 3
    first = query(defective, "SELECT candidate_id, job_id FROM job_applications WHERE status <> 'rejected' "
                             "ORDER BY id LIMIT 1")[0]
    assert {"candidate_id": first[0], "job_id": first[1], "copies": 2} in duplicates["sample"]
    salary = {c["name"]: c for c in result["check_violations"]}["jobs_salary_range"]
    assert salary["count"] == 3 and salary["sample"] == [{"id": 1}, {"id": 2}]
    assert "orphans job_applications_candidate_id_fkey: 3" in result["msg"]


def test_not_valid_constraint_reports_its_violations(defective):
    query(defective, "ALTER TABLE jobs ADD CONSTRAINT ck_salary CHECK (salary_min <= salary_max) NOT VALID")
    result = run_module("integrity_check", dict(defective, foreign_keys=False))
    assert result["failed_checks"] == ["not_valid"]
    (entry,) = result["not_valid"]
    assert (entry["name"], entry["type"], entry["count"]) == ("ck_salary", "check", 3)
    assert [row["id"] for row in entry["sample"]] == [1, 2, 3]


def test_schema_defects_are_found(clean):
    query(clean, "CREATE INDEX ix_ja_job_id ON job_applications (job_id)")
    query(clean, "CREATE INDEX ix_jobs_company_id_copy ON jobs (company_id)")
    query(clean, "DROP INDEX ix_jobs_employer_id")
    result = run_module("index_verify", dict(clean, spec_file=INDEX_SPEC))
    assert result["failed_checks"] == ["missing", "duplicate", "unindexed_fk"]
    assert [m["name"] for m in result["missing"]] == ["ix_jobs_employer_id"]
    assert [(d["name"], d["duplicate_of"]) for d in result["duplicate"]] in (
        [("ix_jobs_company_id_copy", "ix_jobs_company_id")], [("ix_jobs_company_id", "ix_jobs_company_id_copy")])
    assert [(r["name"], r["covered_by"]) for r in result["redundant"]] == [
        ("ix_ja_job_id", "ix_job_applications_job_id_status")]
    assert [(f["name"], f["columns"]) for f in result["unindexed_fk"]] == [("jobs_employer_id_fkey", ["employer_id"])]
    assert {"name": "ix_ja_job_id", "table": "job_applications"}.items() <= {
        u["name"]: u for u in result["unused"]}["ix_ja_job_id"].items()


def test_slow_query_with_a_seq_scan_is_found(clean):
    slow = {"name": "letters", "sql": "SELECT count(*) FROM job_applications WHERE cover_letter LIKE %(p)s",
            "params": {"p": "%42%"}, "max_ms": 0.001, "expect_index": "ix_job_applications_job_id_status"}
    result = run_module("query_benchmark", dict(clean, queries=[slow], iterations=3, seq_scan_rows=1000))
    assert result["failed"] is True
    assert result["failed_checks"] == ["threshold", "seq_scan", "index_not_used"]
    kinds = [f["kind"] for f in result["queries"][0]["findings"]]
    assert sorted(kinds) == ["index_not_used", "seq_scan", "threshold"]
    assert "sequential scan of job_applications" in result["msg"]
    relaxed = run_module("query_benchmark", dict(clean, queries=[slow], iterations=3, fail_on=[]))
    assert relaxed.get("failed") is not True and relaxed["queries"][0]["p95_ms"] > 0


def test_a_check_that_times_out_is_reported_not_passed(clean):
    slow = [{"name": "sleepy", "table": "jobs", "condition": "pg_sleep(0.01) IS NOT NULL"}]
    result = run_module("integrity_check", dict(clean, foreign_keys=False, checks=slow, statement_timeout=200,
                                                row_counts=["jobs"]))
    assert result["failed"] is True and result["failed_checks"] == ["timeouts"]
    assert result["timed_out"] == ["sleepy"]
    assert result["check_violations"][0]["status"] == "timed_out" and result["check_violations"][0]["count"] is None
    # The checks after it still ran, in the same snapshot.
    assert result["row_counts"] == {"jobs": 1000}


def test_bad_condition_fails_before_any_check_runs(clean):
    bad = [{"name": "typo", "table": "jobs", "condition": "salary_mni < 0"}]
    result = run_module("integrity_check", dict(clean, checks=bad))
    assert result["failed"] is True and "orphans" not in result
    assert result["msg"].startswith("check_violations check typo cannot run: column \"salary_mni\" does not exist")


def test_row_count_loss_is_caught(clean):
    before = run_module("integrity_check", dict(clean, foreign_keys=False, row_counts=["jobs", "job_applications"]))
    query(clean, "DELETE FROM job_applications WHERE id <= 2")
    after = run_module("integrity_check", dict(clean, foreign_keys=False, row_counts=["jobs", "job_applications"],
                                               compare_to=before["row_counts"], compare_policy="no_loss"))
    assert after["failed_checks"] == ["row_counts"]
    assert after["row_count_changes"] == [{"table": "job_applications", "before": APPLICATIONS,
                                           "after": APPLICATIONS - 2, "reason": "2 row(s) lost"}]


ESCAPE = "true) IS FALSE; COMMIT; CREATE TABLE pwned (id int); SELECT (true"


@pytest.mark.parametrize("module, args, named", [
    ("integrity_check", {"checks": [{"name": "escape", "table": "jobs", "condition": ESCAPE}]},
     "checks entry 1 (escape) condition holds ';'"),
    ("integrity_check", {"relations": [{"name": "r", "table": "jobs", "columns": ["company_id"],
                                        "references": "companies", "referenced_columns": ["id"],
                                        "where": "true; COMMIT; CREATE TABLE pwned (id int)"}]},
     "relations entry 1 (r) where holds ';'"),
    ("integrity_check", {"checks": [{"name": "hidden", "table": "jobs", "condition": "true --"}]},
     "checks entry 1 (hidden) condition holds a '--' comment"),
    ("query_benchmark", {"queries": [{
        "name": "escape", "sql": "SELECT 1; COMMIT; SET default_transaction_read_only = off; CREATE TABLE pwned (id int)"}]},
     "query escape sql holds ';'"),
], ids=["check-condition", "relation-filter", "comment", "benchmark-sql"])
def test_spec_sql_cannot_leave_the_read_only_transaction(migrated, module, args, named):
    result = run_module(module, dict(migrated, **args))
    assert result["failed"] is True and named in result["msg"], result["msg"]
    assert query(migrated, "SELECT to_regclass('pwned') IS NULL")[0][0], "nothing was created"


def test_a_query_may_end_with_one_semicolon(migrated):
    ok = run_module("query_benchmark", dict(migrated, queries=[{"name": "one", "sql": "SELECT 1;"}], iterations=1))
    assert ok.get("failed") is not True and ok["queries"][0]["name"] == "one"
