"""verify.yml, the gate an operator runs (and deploy_migration runs after migrating), fails on each kind of
damage a restore, a failed deployment or a hand fix leaves behind, with the finding in its last message."""

import re

import pytest

from conftest import INDEX_REVISION, alembic, failure_message, hold_lock, query, run_playbook


def verify(server, params, tmp_path, *extra):
    return run_playbook("verify.yml", server, params, tmp_path, *extra)


def test_a_clean_database_passes(server, migrated, tmp_path):
    result = verify(server, migrated, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Verification passed: 23 strategy indexes valid" in result.stdout
    (report,) = (tmp_path / "reports").glob("verify-*.md")
    assert "Result: **PASS**" in report.read_text()


PLANTED = {
    "invalid_index": (
        ["UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'ix_jobs_company_id'::regclass"],
        "invalid: ix_jobs_company_id"),
    "missing_index": (
        ["DROP INDEX ix_sessions_user_id"],
        "missing: ix_sessions_user_id"),
    "orphans": (
        ["INSERT INTO verification_tokens (identifier, token, expires) VALUES ('nobody@nowhere', 'tok-1', now())"],
        "orphans verification_tokens_identifier_user_email: 1"),
    "not_valid_check": (
        ["UPDATE jobs SET title = '' WHERE id = 7",
         "ALTER TABLE jobs ADD CONSTRAINT ck_jobs_title_not_empty CHECK (title <> '') NOT VALID"],
        "ck_jobs_title_not_empty is NOT VALID (1 violating rows)"),
    "duplicates": (
        ["ALTER TABLE users DROP CONSTRAINT uq_users_email",
         "INSERT INTO users (email, name) SELECT email, 'copy' FROM users WHERE id = 3"],
        "duplicates users_email: 1"),
    "missing_foreign_key": (
        ["ALTER TABLE job_applications DROP CONSTRAINT job_applications_job_id_fkey"],
        "foreign key job_applications_job (job_applications.job_id -> jobs) is gone from the catalog"),
    "disabled_trigger": (
        ["ALTER TABLE job_applications DISABLE TRIGGER ALL"],
        "on job_applications is disabled, so a foreign key is not enforced"),
    "sequence_behind": (
        ["SELECT setval('companies_id_seq', 1)"],
        "sequence companies_id_seq is at 1, behind companies.id"),
    "query_plan": (
        ["ALTER TABLE job_applications DROP CONSTRAINT uq_job_applications_candidate_id_job_id"],
        "application_duplicate_check"),
}


@pytest.mark.one_server_version
@pytest.mark.parametrize("kind", sorted(PLANTED))
def test_each_planted_finding_fails_the_play_with_its_reason(server, migrated, tmp_path, kind):
    statements, expected = PLANTED[kind]
    for statement in statements:
        query(migrated, statement)
    result = verify(server, migrated, tmp_path)
    assert result.returncode != 0, result.stdout[-3000:]
    message = failure_message(result)
    assert message.startswith("Verification failed: "), message
    assert expected in message
    assert "Verification passed" not in result.stdout
    (report,) = (tmp_path / "reports").glob("verify-*.md")
    top = report.read_text().split("## Indexes")[0]
    assert "Result: **FAIL**" in top and expected in top


@pytest.mark.one_server_version
def test_a_check_that_times_out_fails_and_is_not_counted_as_passed(server, migrated, tmp_path):
    holder = hold_lock(migrated, "verification_tokens", "ACCESS EXCLUSIVE")
    try:
        result = verify(server, migrated, tmp_path, "-e", "verification_statement_timeout_ms=1500")
    finally:
        holder.rollback()
        holder.close()
    assert result.returncode != 0
    message = failure_message(result)
    assert "verification_tokens_identifier_user_email timed out" in message


def test_duplicate_indexes_name_the_one_outside_the_strategy(server, migrated, tmp_path):
    query(migrated, "CREATE INDEX aaa_jobs_company ON jobs (company_id)")
    result = verify(server, migrated, tmp_path)
    assert result.returncode != 0
    message = failure_message(result)
    assert "duplicate: aaa_jobs_company" in message and "ix_jobs_company_id" not in message.split("duplicate:")[1]


def test_a_strategy_table_that_is_gone_is_reported_not_hidden_by_the_count_rule(server, migrated, tmp_path):
    query(migrated, "DROP TABLE password_reset_tokens")
    result = verify(server, migrated, tmp_path)
    assert result.returncode != 0
    message = failure_message(result)
    assert "index spec names table(s) not in the schema: password_reset_tokens" in message
    assert "indexes match" not in message


@pytest.mark.one_server_version
# Not the baseline: its foreign keys are unindexed, a finding the local inventory fails on (pgops_index_fail_on).
@pytest.mark.parametrize("revision", [INDEX_REVISION, "e6f7a8b9c0d1"])
def test_after_a_rollback_the_spec_of_later_revisions_waits(server, migrated, tmp_path, revision):
    """docs/runbooks/rollback.md says to run verify.yml after any rollback: at an older revision, the strategy
    entries of the revisions rolled back are not expected (and the last line says how many waited), while the
    older revisions' entries still are."""
    alembic(migrated, "downgrade", revision)
    result = verify(server, migrated, tmp_path)
    assert result.returncode == 0, failure_message(result)
    waiting = re.search(r"; (\d+) index strategy entries and (\d+) critical queries of revisions after (\w+) not "
                        r"expected", result.stdout)
    assert waiting and waiting.group(3) == revision and int(waiting.group(1)) > 0, result.stdout[-3000:]
    if revision == INDEX_REVISION:
        query(migrated, "DROP INDEX ix_sessions_user_id")
        missing = verify(server, migrated, tmp_path)
        assert missing.returncode != 0 and "missing: ix_sessions_user_id" in failure_message(missing)
