"""The health report's comparison with earlier reports: growth, rate, and when the disk fills."""

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.intowork.pgops.plugins.filter.health_trend import health_trend
from ansible_collections.intowork.pgops.plugins.modules.health_check import statements_query

MB = 1048576


def report(taken, size, tables, free=None):
    return {"taken": taken, "database": {"size_bytes": size},
            "tables": [{"name": name, "total_bytes": value} for name, value in tables.items()],
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
    assert trend["findings"] == ["disk of /data fills in about 50 days at the current growth (10.0 MB/day): "
                                 "add space or archive data"]


def test_first_report_has_no_growth_and_no_projection():
    trend = health_trend(report("2026-11-18T03:00:00Z", 240 * MB, {"jobs": MB}, free=MB), [])
    assert trend["previous_taken"] is None and trend["bytes_per_day"] is None and trend["days_until_full"] is None
    assert trend["table_growth"] == [{"name": "jobs", "bytes": MB, "previous_bytes": None, "delta_bytes": None}]
    assert trend["findings"] == []


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
    assert f"SELECT calls, {total}, {mean}, rows" in text and '"public".pg_stat_statements' in text
