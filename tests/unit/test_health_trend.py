"""The health report's arithmetic: growth, rate and when the disk fills; the statements' delta over a period;
bloat estimates; what counts as a maintenance statement."""

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.intowork.pgops.plugins.filter.health_trend import health_trend
from ansible_collections.intowork.pgops.plugins.module_utils._health import (
    btree_bloat_bytes, heap_bloat_bytes, is_maintenance, statement_delta)
from ansible_collections.intowork.pgops.plugins.module_utils._health_gather import statements_query

MB = 1048576


def report(taken, size, tables, free=None, dead=None):
    dead = dead or {}
    return {"taken": taken, "database": {"size_bytes": size},
            "tables": [{"name": name, "total_bytes": value, "table_bytes": value, "live_rows": 100,
                        "dead_rows": dead.get(name, 0)} for name, value in tables.items()],
            "indexes": [], "disk": {"path": "/data", "free_bytes": free} if free is not None else None}


def test_growth_since_the_previous_report_and_the_projection():
    history = [report("2026-11-04T03:00:00Z", 100 * MB, {"jobs": 10 * MB}),
               report("2026-11-11T03:00:00Z", 170 * MB, {"jobs": 20 * MB, "job_applications": 50 * MB})]
    current = report("2026-11-18T03:00:00Z", 240 * MB, {"jobs": 25 * MB, "job_applications": 90 * MB}, free=500 * MB)
    trend = health_trend(current, list(reversed(history)))
    assert trend["previous_taken"] == "2026-11-11T03:00:00Z"
    assert [s["size_bytes"] for s in trend["series"]] == [100 * MB, 170 * MB, 240 * MB]
    growth = dict((g["name"], g["delta_bytes"]) for g in trend["table_growth"])
    assert growth == {"jobs": 5 * MB, "job_applications": 40 * MB}
    assert trend["bytes_per_day"] == pytest.approx(10 * MB, rel=1e-6)
    assert trend["days_until_full"] == 50.0
    assert trend["findings"] == ["disk of /data fills in about 50 days at the growth of the last 14 days "
                                 "(10.0 MB/day): add space or archive data (threshold: warn_days 90)"]
    assert trend["problems"][0]["severity"] == "critical"


def test_reports_minutes_apart_project_nothing_whatever_they_grew():
    history = [report("2026-11-18T03:00:00Z", 100 * MB, {"jobs": 10 * MB})]
    current = report("2026-11-18T03:06:00Z", 600 * MB, {"jobs": 510 * MB}, free=500 * MB)
    trend = health_trend(current, history)
    assert trend["bytes_per_day"] is None and trend["days_until_full"] is None and trend["findings"] == []
    assert trend["projection"] == ("not projected: the reports span 0.0 days, and a projection needs 7 "
                                   "(min_span_days)")
    assert trend["table_growth"][0]["delta_bytes"] == 500 * MB, "the growth itself is still shown"


def test_growth_that_is_dead_rows_is_said_so():
    history = [report("2026-11-04T03:00:00Z", 100 * MB, {"jobs": 50 * MB})]
    # 100 rows live, 100 dead: half the heap (95 MB in 14 days) is dead rows.
    current = report("2026-11-18T03:00:00Z", 240 * MB, {"jobs": 190 * MB}, free=500 * MB, dead={"jobs": 100})
    trend = health_trend(current, history)
    assert trend["dead_bytes"] == 95 * MB and trend["dead_bytes_delta"] == 95 * MB
    assert "(10.0 MB/day, of which 6.8 MB/day is dead rows that vacuum can reclaim)" in trend["findings"][0]


def test_first_report_has_no_growth_and_no_projection():
    trend = health_trend(report("2026-11-18T03:00:00Z", 240 * MB, {"jobs": MB}, free=MB), [])
    assert trend["previous_taken"] is None and trend["bytes_per_day"] is None and trend["days_until_full"] is None
    assert trend["table_growth"] == [{"name": "jobs", "bytes": MB, "previous_bytes": None, "delta_bytes": None}]
    assert trend["findings"] == [] and trend["projection"] == "needs two reports"


def test_old_reports_fall_out_of_the_rate_window_and_shrinking_projects_nothing():
    history = [report("2025-01-01T00:00:00Z", 1, {}), report("2026-11-11T00:00:00Z", 300 * MB, {})]
    trend = health_trend(report("2026-11-18T00:00:00Z", 200 * MB, {}, free=MB), history, window_days=28)
    assert trend["bytes_per_day"] < 0 and trend["days_until_full"] is None


def test_bad_input_is_a_clear_error():
    with pytest.raises(AnsibleFilterError, match="the input must be a health_check result"):
        health_trend({"nothing": 1}, [])
    with pytest.raises(AnsibleFilterError, match="report time 'yesterday'"):
        health_trend(report("2026-11-18T00:00:00Z", 1, {}), [report("yesterday", 1, {})])


@pytest.mark.parametrize("version, total, mean", [(120000, "total_time", "mean_time"),
                                                  (130000, "total_exec_time", "mean_exec_time"),
                                                  (180000, "total_exec_time", "mean_exec_time")])
def test_statement_columns_follow_the_server_version(version, total, mean):
    text = statements_query(version, '"public"')
    assert f"calls, {total}, rows" in text and '"public".pg_stat_statements' in text and mean not in text


def statement(queryid, calls, total_ms, role="app"):
    return {"queryid": queryid, "role": role, "calls": calls, "total_ms": total_ms, "rows": calls, "query": queryid}


def test_the_period_is_what_happened_between_the_snapshots():
    before = [statement("a", 100, 1000.0), statement("b", 10, 5000.0), statement("gone", 5, 50.0)]
    now = [statement("a", 124, 7048.0), statement("b", 10, 5000.0), statement("new", 2, 30.0),
           statement("a", 3, 3.0, role="other")]
    period = {(s["queryid"], s["role"]): s for s in statement_delta(now, before)}
    assert period[("a", "app")]["calls"] == 24 and period[("a", "app")]["total_ms"] == 6048.0
    assert period[("a", "app")]["mean_ms"] == 252.0
    assert ("b", "app") not in period, "a statement not called in the period is not in it"
    assert period[("new", "app")]["calls"] == 2 and period[("a", "other")]["calls"] == 3


def test_a_reset_between_the_snapshots_counts_everything_now_as_the_period():
    before = [statement("a", 100, 1000.0)]
    assert statement_delta([statement("a", 7, 70.0)], before)[0]["calls"] == 7, "fewer calls than before: evicted"
    period = statement_delta([statement("a", 150, 1500.0)], before, "2026-11-01T00:00:00", "2026-11-20T00:00:00")
    assert period[0]["calls"] == 150


@pytest.mark.parametrize("text, maintenance", [
    ("VACUUM ANALYZE jobs", True), ("create index concurrently ix on t (c)", True), ("COPY t FROM STDIN", True),
    ("  ALTER TABLE t ADD COLUMN c int", True), ("DO $$ BEGIN PERFORM 1; END $$", True), ("COMMIT", True),
    ("SELECT pg_stat_statements_reset()", True), ("SELECT pg_create_physical_replication_slot($1)", True),
    ("SELECT * FROM jobs WHERE id = $1", False), ("UPDATE jobs SET title = $1", False),
    ("select pg_sleep($1)", False), ("WITH x AS (SELECT 1) SELECT * FROM x", False), ("selective", False),
    ("/* pgops health_check */\nSELECT current_database()", True), ("/* app */ SELECT 1", False)])
def test_maintenance_statements_are_told_from_the_application_s(text, maintenance):
    assert is_maintenance(text) is maintenance


def test_bloat_estimates():
    # 10,000 rows of 100 bytes (132 with header and line pointer) need 162 pages of 8,168 usable bytes.
    assert heap_bloat_bytes(400 * 8192, 10000, 100, 100, 8192) == (400 - 162) * 8192
    assert heap_bloat_bytes(100 * 8192, 10000, 100, 100, 8192) == 0, "never negative"
    assert heap_bloat_bytes(400 * 8192, 10000, None, 100, 8192) is None, "no statistics, no estimate"
    # 10,000 int4 keys need 20 bytes each: 28 leaves at 90% fill, plus the metapage and one upper page.
    assert btree_bloat_bytes(100 * 8192, 10000, 4, 8192) == (100 - 30) * 8192
