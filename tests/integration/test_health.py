"""The health report against real servers: the facts and findings, and the report a browser shows."""

import json
import shutil
import subprocess
import time

import pytest

from conftest import APP, HEAD, PASSWORD, alembic, artifacts, load_reference_data, query, run_module, run_playbook


@pytest.fixture
def unhealthy(database, tmp_path):
    """The reference data with one of each finding planted."""
    alembic(database, "upgrade", HEAD)
    load_reference_data(database, scale=0.01)
    # The statistics' live-row counts are estimates until the tables are analysed (the load's own counters
    # counted rows twice); one ANALYZE reads every row of these small tables.
    query(database, "ANALYZE")
    query(database, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    query(database, "CREATE INDEX ix_job_applications_cover_letter ON job_applications (cover_letter)")
    query(database, "ALTER TABLE jobs ADD CONSTRAINT ck_jobs_title_short CHECK (length(title) < 500) NOT VALID")
    query(database, f"DROP ROLE IF EXISTS {APP}")
    query(database, f"CREATE ROLE {APP} LOGIN CREATEROLE")
    query(database, f"SET password_encryption = 'md5'; ALTER ROLE {APP} PASSWORD '{PASSWORD}'")
    query(database, "GRANT CREATE ON SCHEMA public TO PUBLIC")
    query(database, "SELECT pg_stat_statements_reset()")
    query(database, "SELECT pg_sleep(0.25) AS pgops_slow_probe")
    backups = tmp_path / "backups"
    backups.mkdir()
    ended = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - 3 * 86400))
    (backups / "intowork-x.dump.manifest.json").write_text(json.dumps({"verified": True, "ended": ended,
                                                                       "path": "intowork-x.dump"}))
    yield database, backups
    query(database, "REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    query(database, f"DROP ROLE {APP}")


def test_health_facts_name_each_planted_finding(unhealthy):
    database, backups = unhealthy
    result = run_module("health_check", dict(database, app_roles=[APP], backup_dir=str(backups),
                                             slow_query_mean_ms=200, unused_index_min_bytes=0))
    assert result.get("failed") is not True, result.get("msg")
    assert result["slow_query_source"] == "pg_stat_statements"
    findings = "\n".join(result["findings"])
    assert "slow query: " in findings and "pgops_slow_probe" in findings, result["slow_queries"]
    assert "unused index ix_job_applications_cover_letter on job_applications" in findings
    assert "constraint ck_jobs_title_short on jobs is NOT VALID" in findings
    assert "security: app_web has CREATEROLE" in findings
    assert "security: app_web has an md5 password hash" in findings
    assert "security: PUBLIC may CREATE in schema public" in findings
    assert "newest verified backup is 72 hours old (over 26)" in findings
    assert result["connections"]["max_connections"] == int(query(database, "SHOW max_connections")[0][0])
    assert 0 < result["cache_hit_ratio"] <= 1
    applications = query(database, "SELECT count(*) FROM job_applications")[0][0]
    assert result["tables"][0]["name"] == "job_applications" and result["tables"][0]["live_rows"] == applications
    assert result["disk"]["free_bytes"] > 0
    assert all(not index["unique"] for index in result["unused_indexes"])


def test_without_pg_stat_statements_the_report_says_why(database):
    alembic(database, "upgrade", HEAD)
    result = run_module("health_check", dict(database))
    assert result["slow_queries"] == []
    assert "pg_stat_statements is not installed in this database" in result["slow_query_source"]
    assert result["findings"] == []


def browser_dom(path):
    browser = shutil.which("chromium-headless-shell") or shutil.which("chromium")
    assert browser, "tools/setup.sh installs chromium-headless-shell"
    shown = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", path.as_uri()],
                           capture_output=True, text=True, timeout=120, check=False)
    assert shown.returncode == 0, shown.stderr[-2000:]
    return shown.stdout


def test_weekly_report_shows_growth_and_its_charts_in_a_browser(server, unhealthy, tmp_path):
    database, backups = unhealthy
    settings = json.dumps({"pgops_app_roles": [APP], "pgops_backup_dir": str(backups)})
    first = run_playbook("health_report.yml", server, database, tmp_path, "-e", settings)
    assert first.returncode == 0, first.stdout[-3000:]
    query(database, "INSERT INTO job_applications (job_id, candidate_id, cover_letter) "
                    "SELECT 1 + i / 500, 1 + i % 500, repeat('growth ', 50) FROM generate_series(0, 4999) i "
                    "ON CONFLICT DO NOTHING")
    time.sleep(1.1)  # report names carry the second
    second = run_playbook("health_report.yml", server, database, tmp_path, "-e", settings)
    assert second.returncode == 0, second.stdout[-3000:]
    assert "NEEDS ACTION: " in second.stdout and "security: app_web has CREATEROLE" in second.stdout
    (published,) = artifacts(second)["pgops_health_reports"].values()
    assert "app_web has CREATEROLE" in " ".join(published["findings"]) and published["trend"]["table_growth"]
    folder = tmp_path / "reports" / "health" / database["login_db"]
    reports = sorted(folder.glob("health-*.json"))
    assert len(reports) == 2
    latest = json.loads(reports[-1].read_text())
    growth = {g["name"]: g["delta_bytes"] for g in latest["trend"]["table_growth"]}
    assert latest["trend"]["previous_taken"] == json.loads(reports[0].read_text())["taken"]
    assert growth["job_applications"] > 0
    markdown = reports[-1].with_suffix(".md").read_text()
    assert "## Needs action" in markdown and "ck_jobs_title_short" in markdown

    dom = browser_dom(reports[-1].with_suffix(".html"))
    assert dom.count('class="chart"') == 2, "both charts were drawn"
    assert 'data-series="1"' in dom and 'data-series="5"' in dom
    assert dom.count('class="line"') == 6 and dom.count("<circle") == 12, "two points per line, one per report"
    assert "job_applications" in dom
