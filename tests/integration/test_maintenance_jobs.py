"""Maintenance jobs through the backup program's runner: batches, locks, logs and alerts."""

import fcntl
import hashlib
import json
import re

import pytest

from conftest import HEAD, Hook, alembic, failure_message, load_reference_data, query, run_playbook
from test_backup_program import run_program, write_config
from test_deploy_playbook import assert_quiet

JOBS = {
    "expire_sessions": {"kind": "delete", "table": "sessions",
                        "where": "expires < now() - make_interval(days => %(days)s)", "params": {"days": 30},
                        "batch_size": 7, "pause_seconds": 0},
    "password_reset_tokens": {"kind": "delete", "table": "password_reset_tokens",
                              "where": "used_at IS NOT NULL OR expires_at < now()", "batch_size": 1000},
    "refresh_active_jobs_summary": {"kind": "refresh", "view": "active_jobs_summary"},
    "broken": {"kind": "delete", "table": "sessions", "where": "no_such_column < now()"},
}


@pytest.fixture
def setup(server, database, tmp_path):
    alembic(database, "upgrade", HEAD)
    load_reference_data(database, scale=0.01)
    # Sessions that must stay: current ones, and one expired only yesterday.
    query(database, "UPDATE sessions SET expires = now() + interval '1 day' WHERE id % 10 = 0")
    query(database, "UPDATE sessions SET expires = now() - interval '1 day' WHERE id = 1")
    config, backups = write_config(server, database, tmp_path)
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps(JOBS))
    return database, config, backups, jobs


def job(config, database, jobs, name, **kwargs):
    return run_program("job", config, database["login_password"], f"--jobs-file={jobs}", f"--job={name}", **kwargs)


def kept_sessions_digest(params):
    rows = query(params, "SELECT id, session_token, expires FROM sessions WHERE expires >= now() - interval '30 days' "
                         "ORDER BY id")
    return len(rows), hashlib.sha256(repr(rows).encode()).hexdigest()


def test_delete_job_removes_exactly_the_expired_rows_in_batches(setup):
    database, config, backups, jobs = setup
    expired = query(database, "SELECT count(*) FROM sessions WHERE expires < now() - interval '30 days'")[0][0]
    kept = kept_sessions_digest(database)
    assert expired > 7
    result = job(config, database, jobs, "expire_sessions")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["deleted"] == expired and report["batches"] == expired // 7 + 1
    assert kept_sessions_digest(database) == kept, "every other row is untouched"
    log = (backups / "pgops-backup.log").read_text()
    assert "job:expire_sessions[" in log and f"deleted {expired} row(s) of sessions" in log
    again = json.loads(job(config, database, jobs, "expire_sessions").stdout)
    assert again["deleted"] == 0 and again["batches"] == 1


def test_token_cleanup_and_concurrent_refresh(setup):
    database, config, _backups, jobs = setup
    stale = query(database, "SELECT count(*) FROM password_reset_tokens WHERE used_at IS NOT NULL OR expires_at < now()")
    result = job(config, database, jobs, "password_reset_tokens")
    assert json.loads(result.stdout)["deleted"] == stale[0][0]
    assert query(database, "SELECT count(*) FROM password_reset_tokens WHERE used_at IS NOT NULL")[0][0] == 0
    summary_sql = "SELECT coalesce(sum(published_jobs), 0) FROM active_jobs_summary WHERE company_id = 1"
    query(database, "REFRESH MATERIALIZED VIEW active_jobs_summary")
    assert query(database, summary_sql)[0][0] > 0
    query(database, "UPDATE jobs SET status = 'closed' WHERE company_id = 1")
    refreshed = job(config, database, jobs, "refresh_active_jobs_summary")
    assert refreshed.returncode == 0, refreshed.stderr
    assert query(database, summary_sql)[0][0] == 0, "the refresh saw the closed jobs"


def test_a_job_runs_once_at_a_time_and_does_not_block_backups(setup):
    database, config, backups, jobs = setup
    with open(backups / ".pgops-job-expire_sessions.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        refused = job(config, database, jobs, "expire_sessions")
        other = job(config, database, jobs, "password_reset_tokens")
    assert refused.returncode == 75 and "refused: another pgops-job-expire_sessions run holds" in refused.stderr
    assert other.returncode == 0, "another job has its own lock"


def test_failed_job_is_one_line_alerted_and_changes_nothing(server, setup, tmp_path, hook):
    database, _config, _backups, jobs = setup
    config = write_config(server, database, tmp_path, alert_webhook=hook)[0]
    before = query(database, "SELECT count(*) FROM sessions")[0][0]
    result = job(config, database, jobs, "broken")
    assert result.returncode == 1
    failures = [line for line in result.stderr.splitlines() if "FAILED" in line]
    assert len(failures) == 1 and 'column "no_such_column" does not exist' in failures[0]
    assert Hook.received and "no_such_column" in Hook.received[0]["message"]
    assert query(database, "SELECT count(*) FROM sessions")[0][0] == before


@pytest.mark.parametrize("name, jobs, fragment", [
    ("missing", {}, "has no job 'missing'"),
    ("x", {"x": {"kind": "truncate", "table": "sessions"}}, "kind 'truncate', choose delete or refresh"),
    ("x", {"x": {"kind": "delete", "table": "sessions; DROP TABLE users", "where": "true"}}, "is not a table or view"),
    ("x", {"x": {"kind": "delete", "table": "sessions"}}, "needs a where condition"),
    ("x", {"x": {"kind": "delete", "table": "sessions", "where": "true", "batch_size": 0}}, "batch_size 0"),
])
def test_bad_jobs_are_one_clear_line(setup, name, jobs, fragment):
    database, config, _backups, path = setup
    path.write_text(json.dumps(jobs))
    result = job(config, database, path, name)
    assert result.returncode == 1 and fragment in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.one_server_version
def test_playbook_refuses_a_job_that_would_fail_then_installs_runs_and_reports_one_that_fails(server, setup, tmp_path):
    database, _config, _backups, _jobs = setup
    expire = {"name": "expire_sessions", "kind": "delete", "table": "sessions", "schedule": "20 3 * * mon",
              "where": "expires < now() - make_interval(days => %(days)s)", "params": {"days": 30}}
    typo = {"name": "typo", "kind": "delete", "table": "sessions", "where": "no_such_column < now()",
            "schedule": "0 * * * *"}
    settings = {"maintenance_jobs_run_now": ["all"], "pgops_cron_dir": str(tmp_path / "cron.d"),
                "pgops_program_dir": str(tmp_path / "lib"), "pgops_config_dir": str(tmp_path / "etc")}
    expired = "SELECT count(*) FROM sessions WHERE expires < now() - interval '30 days'"
    before = query(database, expired)[0][0]
    assert before > 0
    # A job the database would refuse (a column that is not there) is found by planning it: nothing is written.
    refused = run_playbook("maintenance_cron.yml", server, database, tmp_path, "-e",
                           json.dumps(dict(settings, pgops_maintenance_jobs=[expire, typo])))
    assert refused.returncode == 2, refused.stdout[-3000:]
    assert failure_message(refused).startswith("Maintenance job typo failed: ")
    assert failure_message(refused).endswith(
        'job typo would fail: column "no_such_column" does not exist. Nothing was written: fix the job and run again.')
    assert not (tmp_path / "cron.d").exists() and query(database, expired)[0][0] == before, "nothing ran"
    # One that plans but fails on the rows it meets is installed, run, and reported with the others.
    on_rows = {"name": "on_rows", "kind": "delete", "table": "sessions", "where": "1 / (length(session_token) - length(session_token)) = 1",
               "schedule": "0 * * * *"}
    result = run_playbook("maintenance_cron.yml", server, database, tmp_path, "-e",
                          json.dumps(dict(settings, pgops_maintenance_jobs=[expire, on_rows])))
    assert result.returncode != 0
    assert 'Maintenance job on_rows failed: ' in result.stdout and "division by zero" in result.stdout
    # Each job's result is in the play, the good one's figures too.
    assert re.search(r'"msg": "expire_sessions: deleted \d+ row\(s\) of sessions in \d+ batch\(es\) in [0-9.]+ s"',
                     result.stdout), result.stdout[-3000:]
    assert '"msg": "on_rows: FAILED: ' in result.stdout
    assert_quiet(result)
    cron = (tmp_path / "cron.d" / f"pgops-maintenance-{database['login_db']}").read_text()
    assert "20 3 * * mon " in cron and "--job=expire_sessions" in cron and "--job=on_rows" in cron
    assert query(database, expired)[0][0] == 0


@pytest.mark.parametrize("jobs, fragment", [
    ([{"name": "bad name!", "kind": "delete", "table": "sessions", "where": "true", "schedule": "0 * * * *"}],
     "Bad maintenance jobs"),
    ([{"name": "x", "kind": "delete", "table": "sessions", "where": "true", "schedule": "every hour"}],
     "x / delete / every hour"),
    ([{"name": "x", "kind": "delete", "table": "sessions", "where": "true", "schedule": "0 4 * * mun"}],
     "cron schedule (day of week 'mun': each value must be * or 0-7 or sun/mon/tue/wed/thu/fri/sat)"),
])
def test_playbook_refuses_bad_jobs_before_writing(server, setup, tmp_path, jobs, fragment):
    database = setup[0]
    extra = json.dumps({"pgops_maintenance_jobs": jobs, "pgops_cron_dir": str(tmp_path / "cron.d")})
    result = run_playbook("maintenance_cron.yml", server, database, tmp_path, "-e", extra)
    assert result.returncode != 0 and fragment in result.stdout
    assert not (tmp_path / "cron.d").exists()
