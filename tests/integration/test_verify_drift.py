"""verify.yml against the baseline catalog, with no spec file: what an outage, a restore or a hand fix leave behind
while every name may still be in place is named through the playbook, and what only warns passes."""

import json

import pytest

from conftest import APP, application_role, failure_message, last_line, owner_params, query, run_playbook

# No index strategy, integrity rules or critical queries: what fails is the catalog against its baseline (and the
# declared foreign keys, which the data check always reads).
NO_SPEC_FILES = ("-e", "pgops_index_spec_file=", "-e", "pgops_integrity_spec_file=",
                 "-e", "pgops_critical_queries_file=", "-e", "pgops_index_min_count=0")
RECORD = ("-e", "pgops_verify_record_baseline=true")

# What the application has beyond the reference schema: a trigger and its function, a materialized view, row level
# security. Made by the deploy role, as a migration would.
APPLICATION_OBJECTS = [
    "CREATE FUNCTION touch_job() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$",
    "CREATE TRIGGER jobs_touch BEFORE UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION touch_job()",
    "CREATE MATERIALIZED VIEW jobs_per_company AS SELECT company_id, count(*) AS jobs FROM jobs GROUP BY company_id",
    "ALTER TABLE sessions ENABLE ROW LEVEL SECURITY",
    "CREATE POLICY sessions_live ON sessions FOR SELECT TO PUBLIC USING (expires > now())",
]

# Each state left behind (as the superuser, the way a hand fix or a restore does it), and its line in the play's
# last message: the finding, its kind in brackets.
DRIFT = {
    "foreign key gone": (
        "ALTER TABLE job_applications DROP CONSTRAINT job_applications_job_id_fkey",
        "constraint public.job_applications.job_applications_job_id_fkey (FOREIGN KEY (job_id) REFERENCES jobs(id) "
        "ON DELETE CASCADE) is gone (object_gone)"),
    "constraint no longer the same": (
        "ALTER TABLE jobs ALTER CONSTRAINT jobs_company_id_fkey DEFERRABLE INITIALLY DEFERRED",
        "constraint public.jobs.jobs_company_id_fkey was FOREIGN KEY (company_id) REFERENCES companies(id) ON DELETE "
        "CASCADE, is FOREIGN KEY (company_id) REFERENCES companies(id) ON DELETE CASCADE DEFERRABLE INITIALLY "
        "DEFERRED (constraint_changed)"),
    "constraint re-added NOT VALID": (
        "ALTER TABLE jobs DROP CONSTRAINT jobs_employer_id_fkey, ADD CONSTRAINT jobs_employer_id_fkey "
        "FOREIGN KEY (employer_id) REFERENCES employers(id) NOT VALID",
        "constraint public.jobs.jobs_employer_id_fkey is NOT VALID: the rows it held were never checked against it "
        "(constraint_invalidated)"),
    "trigger disabled": (
        "ALTER TABLE jobs DISABLE TRIGGER jobs_touch",
        "trigger public.jobs.jobs_touch is disabled (ALTER TABLE ... ENABLE TRIGGER) (trigger_disabled)"),
    "materialized view unpopulated": (
        "REFRESH MATERIALIZED VIEW jobs_per_company WITH NO DATA",
        "materialized view public.jobs_per_company is not populated: reads fail until REFRESH MATERIALIZED VIEW "
        "(matview_unpopulated)"),
    "row level security off": (
        "ALTER TABLE sessions DISABLE ROW LEVEL SECURITY",
        "table public.sessions: row level security is off (ALTER TABLE ... ENABLE ROW LEVEL SECURITY) "
        "(row_security_off)"),
    "policy dropped": (
        "DROP POLICY sessions_live ON sessions",
        "policy public.sessions.sessions_live (PERMISSIVE FOR SELECT TO PUBLIC USING ((expires > now()))) is gone "
        "(object_gone)"),
    "privilege gone": (
        f"REVOKE INSERT ON job_applications FROM {APP}",
        f"table public.job_applications: grant INSERT to {APP} is gone (privilege_lost)"),
    "owner changed": (
        f"ALTER FUNCTION touch_job() OWNER TO {APP}",
        f"function public.touch_job(): owner was {{deploy}}, is {APP} (owner_changed)"),
    "column default gone": (
        "ALTER TABLE users ALTER COLUMN role DROP DEFAULT",
        "table public.users: column role was role text NOT NULL DEFAULT 'candidate'::text, is role text NOT NULL "
        "(column_changed)"),
    "index invalid": (
        "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'ix_jobs_company_id'::regclass",
        "index public.ix_jobs_company_id is not valid (a concurrent build that failed): drop it and build it again "
        "(index_invalid)"),
    "index built another way": (
        "DROP INDEX ix_sessions_user_id; CREATE INDEX ix_sessions_user_id ON sessions (user_id, id)",
        "index public.ix_sessions_user_id was CREATE INDEX ix_sessions_user_id ON public.sessions USING btree "
        "(user_id), is CREATE INDEX ix_sessions_user_id ON public.sessions USING btree (user_id, id) (index_changed)"),
    "function changed by hand": (
        "CREATE OR REPLACE FUNCTION touch_job() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$",
        "function public.touch_job(): its body changed (definition_changed)"),
}


def verify(server, params, tmp_path, *extra):
    return run_playbook("verify.yml", server, params, tmp_path, *NO_SPEC_FILES, *extra)


@pytest.fixture
def application(server, migrated):
    """The reference database with the application's own objects and login role."""
    for statement in APPLICATION_OBJECTS:
        query(owner_params(server, migrated), statement)
    with application_role(migrated):
        yield migrated
        # What the login role was given stays with the database (its trigger needs the function).
        query(migrated, f"REASSIGN OWNED BY {APP} TO {server['deploy_user']}")


def test_every_drift_fails_the_play_and_is_named(server, application, tmp_path):
    baseline = tmp_path / "backups" / f"{application['login_db']}.catalog-baseline.json"
    (tmp_path / "backups").mkdir()
    first = verify(server, application, tmp_path)
    assert first.returncode == 0, failure_message(first)
    assert f"; no catalog baseline at {baseline} yet" in last_line(first)

    recorded = verify(server, application, tmp_path, *RECORD)
    assert recorded.returncode == 0, failure_message(recorded)
    assert f"as the baseline in {baseline}." in recorded.stdout
    assert json.loads(baseline.read_text())["label"] == "the catalog verify.yml recorded on intowork-local"
    assert baseline.stat().st_mode & 0o777 == 0o600

    same = verify(server, application, tmp_path)
    assert same.returncode == 0, failure_message(same)
    assert "; no drift from the catalog verify.yml recorded on intowork-local (" in last_line(same)

    for statement, _line in DRIFT.values():
        query(application, statement)
    drifted = verify(server, application, tmp_path)
    assert drifted.returncode != 0
    message = failure_message(drifted)
    assert message.startswith("Verification failed: "), message
    # One more than planted: the function's old owner lost its EXECUTE with the ownership.
    assert f"changed in {len(DRIFT) + 1} way(s) since the catalog verify.yml recorded on intowork-local (" in message
    assert f"function public.touch_job(): grant EXECUTE to {server['deploy_user']} is gone (privilege_lost)" in message
    for name, (_statement, line) in DRIFT.items():
        assert line.format(deploy=server["deploy_user"]) in message, (name, message)
    (report,) = sorted((tmp_path / "reports").glob("verify-*.md"))[-1:]
    assert "materialized view public.jobs_per_company is not populated" in report.read_text()

    # The operator who meant the change records it: the differences are accepted by name, and the next run passes.
    accepted = verify(server, application, tmp_path, *RECORD, "-e", "pgops_drift_findings={}")
    assert accepted.returncode != 0, "the data check still fails on the foreign key gone: nothing is recorded"
    assert "Recorded the catalog" not in accepted.stdout
    for statement in ("ALTER TABLE job_applications ADD CONSTRAINT job_applications_job_id_fkey FOREIGN KEY (job_id) "
                      "REFERENCES jobs (id) ON DELETE CASCADE",
                      "ALTER TABLE jobs VALIDATE CONSTRAINT jobs_employer_id_fkey", "REINDEX INDEX ix_jobs_company_id",
                      "ALTER TABLE jobs ENABLE TRIGGER jobs_touch"):
        query(application, statement)
    accepted = verify(server, application, tmp_path, *RECORD)
    assert accepted.returncode == 0, failure_message(accepted)
    assert "accepting 10 difference(s) from the previous one: " in last_line(accepted), last_line(accepted)
    assert "(row_security_off)" in last_line(accepted) and "(trigger_disabled)" not in last_line(accepted)
    again = verify(server, application, tmp_path)
    assert again.returncode == 0, failure_message(again)


def test_what_only_warns_passes_and_is_named(server, application, tmp_path):
    (tmp_path / "backups").mkdir()
    assert verify(server, application, tmp_path, *RECORD).returncode == 0
    query(application, "CREATE INDEX jobs_title_by_hand ON jobs (title)")
    query(application, f"GRANT DELETE ON sessions TO {APP}")
    result = verify(server, application, tmp_path)
    assert result.returncode == 0, failure_message(result)
    assert last_line(result).endswith(
        "2 warning(s): table public.sessions: new grant DELETE to app_web (privilege_added); new index "
        "public.jobs_title_by_hand (CREATE INDEX jobs_title_by_hand ON public.jobs USING btree (title)) "
        "(object_added)"), last_line(result)
    # An inventory that fails on hand-made indexes fails the play on it.
    strict = verify(server, application, tmp_path, "-e", '{"pgops_drift_findings": {"object_added": "fail"}}')
    assert strict.returncode != 0
    assert "new index public.jobs_title_by_hand" in failure_message(strict)


@pytest.mark.one_server_version
def test_a_bad_finding_level_is_refused_before_anything_runs(server, application, tmp_path):
    result = verify(server, application, tmp_path, "-e", '{"pgops_drift_findings": {"object_gone": "maybe"}}')
    assert result.returncode != 0
    message = failure_message(result)
    assert message.startswith("Bad verification settings, nothing was changed: "), message
    assert "object_gone default: level 'maybe' is not one of fail, warn, ignore" in message
