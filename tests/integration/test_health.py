"""The health report against real servers: the facts and findings, and the report a browser shows."""

import contextlib
import json
import os
import re
import shutil
import subprocess
import threading
import time

import psycopg2
import pytest

import sandbox
from conftest import (APP, HEAD, PASSWORD, PROJECT_DIR, admin_run, alembic, artifacts, connect_as, database_params,
                      hold_lock, load_reference_data, query, run_module, run_playbook)


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


LOW = {"long_query_seconds": 0, "idle_in_transaction_seconds": 0, "lock_wait_seconds": 0, "dead_tuple_min_rows": 1000,
       "bloat_min_bytes": 262144, "maintenance_max_age_days": 0, "maintenance_min_changes": 1000,
       "wraparound_max_ratio": 0.0, "slow_query_mean_ms": 200, "slow_query_total_seconds": 0.25,
       "unused_index_min_bytes": 0, "unused_index_min_stats_days": 0}


def wait_for(params, statement, what, seconds=30):
    deadline = time.time() + seconds
    while not query(params, statement)[0][0]:
        assert time.time() < deadline, f"{what} did not happen within {seconds} s"
        time.sleep(0.2)


@contextlib.contextmanager
def failing_archive(server, database):
    """archive_command fails until the block ends; then it works again and has archived what it failed on."""
    def switch():
        query(database, "CREATE TABLE pgops_wal_probe (); DROP TABLE pgops_wal_probe")
        query(database, "SELECT pg_switch_wal()")
    admin_run(server, "ALTER SYSTEM SET archive_command = 'false'")
    admin_run(server, "SELECT pg_reload_conf()")
    try:
        switch()
        wait_for(database, "SELECT last_failed_time IS NOT NULL AND last_failed_time > coalesce(last_archived_time, "
                           "'-infinity') FROM pg_stat_archiver", "an archiving failure")
        yield
    finally:
        admin_run(server, "ALTER SYSTEM SET archive_command = '/bin/true'")
        admin_run(server, "SELECT pg_reload_conf()")
        switch()
        wait_for(database, "SELECT last_archived_time > last_failed_time FROM pg_stat_archiver", "archiving again")


@pytest.fixture
def planted(server, unhealthy):
    """Every problem a weekly check looks for, live on the server while the test reads it."""
    database, backups = unhealthy
    statements = [
        # Dead rows and bloat: every row updated twice with autovacuum off, the index column too.
        "CREATE TABLE pgops_churn (id int, v int, pad text) WITH (autovacuum_enabled = false)",
        "INSERT INTO pgops_churn SELECT i, i, repeat('x', 80) FROM generate_series(1, 20000) i",
        "CREATE INDEX ix_pgops_churn_v ON pgops_churn (v)",
        "ANALYZE pgops_churn",
        "UPDATE pgops_churn SET v = v + 1", "UPDATE pgops_churn SET v = v + 1",
        # Sequences near their column's end: a serial integer and a smallint identity.
        "CREATE TABLE pgops_counter (id serial PRIMARY KEY)",
        "SELECT setval('pgops_counter_id_seq', 2000000000)",
        "CREATE TABLE pgops_small (id smallint GENERATED ALWAYS AS IDENTITY)",
        "SELECT setval(pg_get_serial_sequence('pgops_small', 'id'), 30000)",
        # A duplicate index, and an invalid one (a unique build that met duplicates).
        "CREATE TABLE pgops_dupes (v int)", "INSERT INTO pgops_dupes VALUES (1), (1)",
        "CREATE INDEX ix_pgops_dupes_a ON pgops_dupes (v)", "CREATE INDEX ix_pgops_dupes_b ON pgops_dupes (v)",
        # Privileged roles: one on the allow list, one not.
        "CREATE ROLE pgops_rls_reader NOLOGIN BYPASSRLS", "CREATE ROLE pgops_allowed_dba NOLOGIN SUPERUSER",
        "SELECT pg_create_physical_replication_slot('pgops_idle_slot', true)",
        # The lock chain's table, in a schema of its own (the index checks of a locked schema wait, then skip it).
        "CREATE SCHEMA pgops_locks", "CREATE TABLE pgops_locks.queue (id int)",
        "CREATE INDEX ix_queue_pending ON pgops_locks.queue (id) WHERE id > 0",
        # pg_stat_statements tells statements apart by their shape, not their aliases: a function of its own.
        "CREATE FUNCTION pgops_frequent_probe() RETURNS void LANGUAGE sql AS 'SELECT pg_sleep(0.03)'",
    ]
    for statement in statements:
        query(database, statement)
    with pytest.raises(psycopg2.Error, match="could not create unique index"):
        query(database, "CREATE UNIQUE INDEX CONCURRENTLY ix_pgops_dupes_unique ON pgops_dupes (v)")
    # Statements: a frequent one whose total is high and whose mean is not, and a maintenance one that is slow.
    for _call in range(10):
        query(database, "SELECT pgops_frequent_probe()")
    query(database, "DO $$ BEGIN PERFORM pg_sleep(0.3); END $$")
    holder = hold_lock(database, "pgops_locks.queue", "SHARE", application_name="pgops-idle-holder")
    waiter = connect_as(database, application_name="pgops-waiter")
    waiting = threading.Thread(target=lambda: waiter.cursor().execute(
        "LOCK TABLE pgops_locks.queue IN ACCESS EXCLUSIVE MODE"))
    waiting.start()
    try:
        wait_for(database, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgops-waiter' "
                           "AND wait_event_type = 'Lock'", "the lock wait")
        with failing_archive(server, database):
            yield database, backups, holder.get_backend_pid(), waiter.get_backend_pid()
    finally:
        holder.rollback()
        waiting.join()
        waiter.rollback()
        holder.close()
        waiter.close()
        query(database, "SELECT pg_drop_replication_slot('pgops_idle_slot')")
        query(database, "DROP ROLE pgops_rls_reader")
        query(database, "DROP ROLE pgops_allowed_dba")


def test_health_facts_name_each_planted_problem_with_its_threshold(planted):
    database, backups, holder, waiter = planted
    result = run_module("health_check", dict(database, app_roles=[APP], backup_dir=str(backups), thresholds=LOW,
                                             privileged_roles_allowed=["pgops_allowed_dba"]))
    assert result.get("failed") is not True, result.get("msg")
    assert result["slow_query_source"].startswith("pg_stat_statements")
    findings = "\n".join(result["findings"])
    checks = {problem["check"] for problem in result["problems"]}
    expected = [
        f"pid {holder} (pgops, pgops-idle-holder) has been idle in transaction for ",
        "(threshold: idle_in_transaction_seconds 0)",
        f"pid {waiter} (pgops, pgops-waiter) has run one statement for ",
        "(threshold: long_query_seconds 0)",
        f"pid {waiter} (pgops) has waited ",
        f"for a lock held by pid {holder}; the chain starts at pid {holder} (pgops, idle in transaction)",
        "(threshold: lock_wait_seconds 0)",
        "table pgops_churn has 40000 dead rows, 67% of its 60000 rows (last vacuum never, autovacuum off on it): ",
        "table pgops_churn has autovacuum off (autovacuum_enabled = false)",
        "(threshold: dead_tuple_ratio 0.2 with at least 1000 dead rows)",
        "table pgops_churn: no vacuum in 0 days of statistics, with 40000 dead rows",
        "(threshold: maintenance_max_age_days 0 with at least 1000 dead rows)",
        "table pgops_churn: about ",
        "index ix_pgops_churn_v: about ",
        "(threshold: bloat_ratio 0.5 with at least 256 kB)",
        f"database {database['login_db']}: oldest transaction ID is ",
        "(threshold: wraparound_max_ratio 0.0)",
        "sequence public.pgops_counter_id_seq (pgops_counter.id, int4) has used 93.1% of its range (at 2000000000 of "
        "2147483647): widen pgops_counter.id to bigint",
        "sequence public.pgops_small_id_seq (pgops_small.id, int2) has used 91.6% of its range",
        "(threshold: sequence_max_ratio 0.8)",
        "index ix_pgops_dupes_unique on pgops_dupes is invalid",
        "index ix_pgops_dupes_b on pgops_dupes (16 kB) has the same keys as ix_pgops_dupes_a: drop ix_pgops_dupes_b",
        "replication slot pgops_idle_slot (physical) is inactive and holds back ",
        "(threshold: inactive_slot_min_bytes 0)",
        "WAL archiving is failing: the last attempt, on ",
        "security: pgops_rls_reader has BYPASSRLS (threshold: privileged_roles_allowed (allowed: pgops (bootstrap "
        "superuser), pgops_allowed_dba))",
        "security: app_web has CREATEROLE",
        "frequent_probe",
        "(threshold: slow_query_total_seconds 0.25)",
        "pgops_slow_probe",
        "(threshold: slow_query_mean_ms 200.0 and slow_query_total_seconds 0.25)",
        "unused index ix_job_applications_cover_letter on job_applications",
        "constraint ck_jobs_title_short on jobs is NOT VALID",
        "security: app_web has an md5 password hash",
        "security: PUBLIC may CREATE in schema public",
        "newest verified backup is 72 hours old (over 26)",
    ]
    missing = [text for text in expected if text not in findings]
    assert not missing, (missing, findings, result["slow_queries"])
    notes = "\n".join(result["notes"])
    assert "sizes of pgops_locks.queue estimated from the catalog: locked by another session" in notes, notes
    assert "invalid and duplicate indexes of schema pgops_locks not checked: " in notes, notes
    assert "pgops_allowed_dba" not in findings.replace("allowed: pgops (bootstrap superuser), pgops_allowed_dba", "")
    assert "PERFORM pg_sleep" not in findings, "maintenance statements are left out by default"
    severities = {p["check"]: p["severity"] for p in result["problems"]}
    assert severities["wraparound"] == severities["WAL archiving"] == "critical"
    assert {"dead rows", "bloat", "vacuum overdue", "invalid index", "duplicate index", "sequence exhaustion",
            "inactive replication slot", "blocking lock chain", "idle in transaction"} <= checks
    assert result["connections"]["max_connections"] == int(query(database, "SHOW max_connections")[0][0])
    assert 0 < result["cache_hit_ratio"] <= 1
    applications = query(database, "SELECT count(*) FROM job_applications")[0][0]
    assert {"name": "job_applications", "live_rows": applications}.items() <= next(
        t for t in result["tables"] if t["name"] == "job_applications").items()
    assert result["disk"]["free_bytes"] > 0
    assert all(not index["unique"] for index in result["unused_indexes"])


def test_at_the_default_thresholds_young_statistics_are_too_early_to_tell(planted):
    database, backups = planted[:2]
    result = run_module("health_check", dict(database, app_roles=[APP], backup_dir=str(backups),
                                             thresholds={"unused_index_min_bytes": 0}))
    assert not any("unused index" in line for line in result["findings"])
    assert result["unused_indexes"] == [] and result["unused_indexes_too_early"] is True
    (note,) = [note for note in result["notes"] if note.startswith("unused indexes: too early to tell")]
    assert "ix_job_applications_cover_letter" in note and "after 35 days" in note, note
    # The strategy's indexes are never called unused, however old the statistics.
    spec = PROJECT_DIR / "index_strategy.yml"
    result = run_module("health_check", dict(database, index_spec_file=str(spec), thresholds=LOW))
    unused = [index["name"] for index in result["unused_indexes"]]
    assert "ix_job_applications_cover_letter" in unused and "ix_jobs_company_id" not in unused, unused


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
    settings = json.dumps({"pgops_app_roles": [APP], "pgops_backup_dir": str(backups),
                           "pgops_health_thresholds": {"slow_query_mean_ms": 200}})
    first = run_playbook("health_report.yml", server, database, tmp_path, "-e", settings)
    assert first.returncode == 0, first.stdout[-3000:]
    query(database, "INSERT INTO job_applications (job_id, candidate_id, cover_letter) "
                    "SELECT 1 + i / 500, 1 + i % 500, repeat('growth ', 50) FROM generate_series(0, 4999) i "
                    "ON CONFLICT DO NOTHING")
    for _call in range(3):
        query(database, "SELECT pg_sleep(0.25) AS pgops_slow_probe")
    # pg_stat_statements keeps a utility statement verbatim, its password too.
    query(database, f"ALTER ROLE {APP} PASSWORD 'planted-cleartext-4f2'")
    time.sleep(1.1)  # report names carry the second
    second = run_playbook("health_report.yml", server, database, tmp_path, "-e", settings)
    assert second.returncode == 0, second.stdout[-3000:]
    kept = [path for path in tmp_path.rglob("*") if path.is_file() and b"planted-cleartext" in path.read_bytes()]
    assert kept == [] and "planted-cleartext" not in second.stdout, kept
    assert any(f"ALTER ROLE {APP} PASSWORD '***'" in q["query"]
               for q in json.loads(sorted((tmp_path / "reports").rglob("health-*.json"))[-1].read_text())["statements"])
    assert "NEEDS ACTION: " in second.stdout and "security: app_web has CREATEROLE" in second.stdout
    (published,) = artifacts(second)["pgops_health_reports"].values()
    assert "app_web has CREATEROLE" in " ".join(published["findings"]) and published["trend"]["table_growth"]
    folder = tmp_path / "reports" / "health" / database["login_db"]
    reports = sorted(folder.glob("health-*.json"))
    assert len(reports) == 2
    earlier, latest = (json.loads(path.read_text()) for path in reports)
    growth = {g["name"]: g["delta_bytes"] for g in latest["trend"]["table_growth"]}
    assert latest["trend"]["previous_taken"] == earlier["taken"]
    assert growth["job_applications"] > 0
    assert latest["trend"]["bytes_per_day"] is None and "a projection needs 7 (min_span_days)" in latest["trend"][
        "projection"], "two reports a second apart project nothing"
    # Weekly means the period: the slow probe ran once before the first report and three times since.
    assert latest["slow_query_source"] == f"pg_stat_statements, from the report of {earlier['taken']} to now"
    (probe,) = [q for q in latest["slow_queries"] if "pgops_slow_probe" in q["query"]]
    assert probe["calls"] == 3 and 750 <= probe["total_ms"] < 1500, probe
    assert [q for q in earlier["slow_queries"] if "pgops_slow_probe" in q["query"]][0]["calls"] == 1
    markdown = reports[-1].with_suffix(".md").read_text()
    assert "## Needs action: " in markdown and "ck_jobs_title_short" in markdown and "(threshold: " in markdown
    # Each finding says what it is once: the label is not repeated by a text that starts with it.
    assert re.search(r"\*\* slow query: \d+ call\(s\)", markdown) and "slow query: slow query" not in markdown
    assert "** security: app_web has CREATEROLE" in markdown and "security: security" not in markdown
    # Statistics minutes old: no index is listed as unused, and the section says why.
    unused_section = markdown.split("## Unused indexes")[1].split("\n## ")[0]
    assert "Too early to tell" in unused_section and "ix_job_applications_cover_letter" not in unused_section

    dom = browser_dom(reports[-1].with_suffix(".html"))
    critical = sum(1 for p in latest["problems"] + latest["trend"]["problems"] if p["severity"] == "critical")
    summary = dom[dom.index('id="summary"'):dom.index("<h2>")]
    assert f'data-count="{critical}">{critical} critical' in summary, "the summary comes first, before any section"
    assert dom.count('class="finding critical"') == critical
    charts = re.findall(r'<svg[^>]*class="chart".*?</svg>', dom, re.S)
    tables = min(5, len(latest["tables"]))
    assert len(charts) == 1 + tables, "the database, and each large table on its own scale"
    for chart in charts:
        x_axis = re.search(r'<g class="x-axis">(.*?)</g>', chart, re.S).group(1)
        y_axis = re.search(r'<g class="y-axis">(.*?)</g>', chart, re.S).group(1)
        assert re.search(r">\d\d-\d\d \d\d:\d\d<", x_axis) and "report time (UTC)" in x_axis, x_axis
        assert re.search(r">[\d.]+ (B|kB|MB|GB)<", y_axis) and ">size<" in y_axis, y_axis
        # From zero, three ticks that read differently: a small change is not drawn as a climb.
        ticks = re.findall(r'class="tick"[^>]*>([^<]+)<', y_axis)
        assert len(ticks) == len(set(ticks)) == 3 and ticks[0] == "0 B", ticks
        assert chart.count('class="line"') == 1 and chart.count("<circle") == 2, "one point per report"
        assert chart.count('class="legend"') == 1
    assert 'aria-label="job_applications"' in dom
    assert "pgops_slow_probe" in dom[dom.index('id="slow-queries"'):]
    assert re.search(r"<td>slow query</td>\s*<td>\d+ call\(s\)", dom), "the check column names it, the text does not"
    # Every section of the Markdown is on the page too.
    headings = [line[3:].split(" (")[0].split(":")[0] for line in markdown.splitlines() if line.startswith("## ")]
    shown = re.findall(r"<h2>([^<]*)</h2>", dom)
    assert not [heading for heading in headings if not any(h.startswith(heading) for h in shown)], (headings, shown)
    assert "pgops_slow_probe" in dom[dom.index('id="slow-queries-by-mean"'):]


def test_a_clean_database_after_a_fresh_build_gives_no_finding_four_times(server, database, tmp_path):
    alembic(database, "upgrade", HEAD)
    load_reference_data(database, scale=0.01)
    query(database, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    settings = json.dumps({"pgops_backup_dir": str(tmp_path / "backups")})
    backup = run_playbook("backup.yml", server, database, tmp_path, "-e", settings)
    assert backup.returncode == 0, backup.stdout[-3000:]
    for attempt in range(4):
        time.sleep(1.1)  # report names carry the second
        if attempt == 1:  # a load between two reports: its bulk write is not one of the application's queries
            query(database, "CREATE TABLE pgops_load (id int)")
            query(database, "INSERT INTO pgops_load SELECT generate_series(1, 5000)")
        result = run_playbook("health_report.yml", server, database, tmp_path, "-e", settings)
        assert result.returncode == 0, result.stdout[-3000:]
        (report,) = artifacts(result)["pgops_health_reports"].values()
        assert report["findings"] == [] and report["trend"]["findings"] == [], (attempt, report["findings"])
        # The report's own reading (the previous report's, in this period), the load and the migration's
        # bookkeeping are left out of the slow lists, as docs/health.md says.
        listed = [q["query"] for q in report["slow_queries"] + report["slow_queries_by_mean"]]
        assert not [text for text in listed if re.search(r"pg_stat|pg_replication_slots|pgops_load|alembic_version|"
                                                         r"set_config", text)], (attempt, listed)
        assert "No finding needs action; report " in result.stdout and "NEEDS ACTION" not in result.stdout
        assert not [note for note in report["notes"] if "not checked" in note], report["notes"]
    assert report["trend"]["bytes_per_day"] is None and "min_span_days" in report["trend"]["projection"]


def test_dead_rows_name_what_holds_the_horizon_or_that_nothing_does(server, database, tmp_path):
    """A table with autovacuum off is named; its dead-row advice names the session whose snapshot holds the xmin
    horizon back while it does, and says nothing holds it once it has ended: through the runbook."""
    alembic(database, "upgrade", HEAD)
    for statement in ("CREATE TABLE pgops_churn (id int, v int) WITH (autovacuum_enabled = false)",
                      "INSERT INTO pgops_churn SELECT i, i FROM generate_series(1, 5000) i", "ANALYZE pgops_churn",
                      "UPDATE pgops_churn SET v = v + 1"):
        query(database, statement)
    settings = json.dumps({"pgops_backup_dir": str(tmp_path / "backups"), "pgops_health_thresholds": {
        "dead_tuple_min_rows": 1000, "idle_in_transaction_seconds": 1}})
    holder = connect_as(database, application_name="pgops-snapshot-holder")
    holder.set_session(isolation_level="REPEATABLE READ")
    holder.cursor().execute("SELECT count(*) FROM pgops_churn")
    try:
        time.sleep(1.5)  # older than idle_in_transaction_seconds
        held = run_playbook("health_report.yml", server, database, tmp_path, "-e", settings)
    finally:
        holder.rollback()
        holder.close()
    assert held.returncode == 0, held.stdout[-3000:]
    assert ("table pgops_churn has autovacuum off (autovacuum_enabled = false): its dead rows and statistics "
            "wait for a hand-run VACUUM and ANALYZE; ALTER TABLE pgops_churn RESET (autovacuum_enabled)"
            in held.stdout), held.stdout[-3000:]
    assert re.search(r"table pgops_churn has 5000 dead rows, 50% of its 10000 rows \(last vacuum never, "
                     r"autovacuum off on it\): the xmin horizon is held back by pid \d+ \(pgops, pgops-snapshot-holder, "
                     r"idle in transaction, its transaction open [\d.]+ s, \d+ transactions old\): end it if it is "
                     r"stuck, then VACUUM", held.stdout), held.stdout[-3000:]
    time.sleep(1.1)  # report names carry the second
    released = run_playbook("health_report.yml", server, database, tmp_path, "-e", settings)
    assert released.returncode == 0, released.stdout[-3000:]
    assert ("table pgops_churn has 5000 dead rows, 50% of its 10000 rows (last vacuum never, autovacuum off on "
            "it): nothing holds the xmin horizon back: VACUUM it") in released.stdout, released.stdout[-3000:]


def test_the_report_names_what_is_new_resolved_and_regressed_since_the_last_one(server, database, tmp_path):
    """Three weekly reports through the runbook: a finding that appears is new in the next, and resolved in the one
    after it goes; a statement whose mean doubled from one period to the next, with enough calls, is a finding."""
    alembic(database, "upgrade", HEAD)
    query(database, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    settings = json.dumps({"pgops_backup_dir": str(tmp_path / "backups")})

    def report(statement=None, calls=0):
        for _call in range(calls):
            query(database, statement)
        time.sleep(1.1)  # report names carry the second
        result = run_playbook("health_report.yml", server, database, tmp_path, "-e", settings)
        assert result.returncode == 0, result.stdout[-3000:]
        (published,) = artifacts(result)["pgops_health_reports"].values()
        return published

    first = report()
    assert first["trend"]["new_findings"] is None, "no earlier report: nothing is new"
    query(database, "GRANT CREATE ON SCHEMA public TO PUBLIC")
    try:
        second = report("SELECT pg_sleep(0.001) AS pgops_regression_probe", 60)
    finally:
        query(database, "REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    (new,) = second["trend"]["new_findings"]
    assert "PUBLIC may CREATE in schema public" in new, second["trend"]
    assert second["trend"]["resolved_findings"] == [] and second["trend"]["regressions"] == []
    third = report("SELECT pg_sleep(0.006) AS pgops_regression_probe", 60)
    assert any("PUBLIC may CREATE in schema public" in line for line in third["trend"]["resolved_findings"]), third
    (regression,) = third["trend"]["regressions"]
    assert "pgops_regression_probe" in regression["query"] and regression["calls"] == regression["previous_calls"] == 60
    assert regression["ratio"] >= 2.0, regression
    assert re.search(r"query regression: [\d.]+ ms on average over 60 call\(s\), [\d.]+x the previous period's [\d.]+ ms "
                     r"\(60 call\(s\)\) \(pgops\): SELECT pg_sleep\(\$1\) AS pgops_regression_probe \(threshold: "
                     r"regression_ratio 2.0 with at least 50 calls in each period\)", "\n".join(third["trend"]["findings"]))
    folder = tmp_path / "reports" / "health" / database["login_db"]
    markdown = sorted(folder.glob("health-*.md"))[-1].read_text()
    since = markdown.split("## Since the report of ")[1].split("\n## ")[0]
    assert "PUBLIC may CREATE in schema public" in since.split("Resolved:")[1], since
    html = sorted(folder.glob("health-*.html"))[-1].read_text()
    assert "PUBLIC may CREATE in schema public" in html.split('id="resolved-findings"')[1].split("</ul>")[0]


def test_autovacuum_off_for_the_whole_server_is_a_critical_finding(tmp_path):
    """A server of its own (the shared ones serve tests side by side, whose clean reports it would spoil), with
    autovacuum turned off as a bulk load's runbook might leave it: the report's critical finding, with the fix."""
    name = f"pytest-noautovacuum-{os.getpid()}"
    state = sandbox.up(name, "15", "postgres")
    try:
        admin_run(state, "ALTER SYSTEM SET autovacuum = off")
        admin_run(state, "SELECT pg_reload_conf()")
        params = database_params(state, "postgres")
        wait_for(params, "SELECT current_setting('autovacuum') = 'off'", "autovacuum off")
        result = run_playbook("health_report.yml", state, params, tmp_path,
                              "-e", json.dumps({"pgops_db_name": "postgres",
                                                "pgops_backup_dir": str(tmp_path / "backups")}))
        assert result.returncode == 0, result.stdout[-3000:]
        (report,) = artifacts(result)["pgops_health_reports"].values()
        (finding,) = [p for p in report["problems"] if p["check"] == "autovacuum off"]
        assert finding["severity"] == "critical" and finding["detail"] == (
            "autovacuum is off on the server (autovacuum = off): no table is vacuumed or analysed unless someone runs "
            "it, and only vacuums against wraparound start on their own; turn it on (ALTER SYSTEM SET autovacuum = "
            "on; SELECT pg_reload_conf())"), finding
        assert "NEEDS ACTION: " in result.stdout
    finally:
        sandbox.down(name)
