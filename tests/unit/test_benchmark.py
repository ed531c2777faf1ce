"""Pure tests of query benchmark parsing, percentiles and plan findings."""

import pytest

from ansible_collections.intowork.pgops.plugins.module_utils._benchmark import (
    percentile,
    plan_findings,
    validate_queries,
)
from ansible_collections.intowork.pgops.plugins.module_utils._connection import PgopsError


@pytest.mark.parametrize("values, fraction, expected", [
    (list(range(1, 21)), 0.95, 19),
    (list(range(1, 21)), 0.50, 10),
    ([5.0], 0.95, 5.0),
    (list(range(1, 101)), 0.95, 95),
])
def test_nearest_rank_percentile(values, fraction, expected):
    assert percentile(values, fraction) == expected


PLAN = {"Node Type": "Limit", "Plans": [
    {"Node Type": "Nested Loop", "Plans": [
        {"Node Type": "Seq Scan", "Relation Name": "jobs"},
        {"Node Type": "Index Scan", "Relation Name": "job_applications", "Index Name": "ix_ja_job_id_status"},
    ]}]}


def test_seq_scan_of_a_large_table_is_a_finding():
    used, findings = plan_findings(PLAN, {"jobs": 100000, "job_applications": 10}, {"name": "q"}, 10000)
    assert used == ["ix_ja_job_id_status"]
    assert [(f["kind"], f["relation"]) for f in findings] == [("seq_scan", "jobs")]


def test_seq_scan_of_a_small_table_is_not():
    _used, findings = plan_findings(PLAN, {"jobs": 500}, {"name": "q"}, 10000)
    assert findings == []


def test_expected_index_missing_from_the_plan():
    _used, findings = plan_findings(PLAN, {}, {"name": "q", "expect_index": "uq_x"}, 10000)
    assert findings == [{"kind": "index_not_used", "index": "uq_x", "detail": "plan does not use uq_x (uses: ix_ja_job_id_status)"}]


@pytest.mark.parametrize("queries, only, fragment", [
    ([{"name": "a"}], None, "query 1 needs at least a name and sql"),
    ([{"name": "a", "sql": "SELECT 1", "maxms": 3}], None, "unknown key(s) maxms"),
    ([{"name": "a", "sql": "SELECT 1"}], ["b"], "only names unknown queries b"),
])
def test_bad_queries_are_named(queries, only, fragment):
    with pytest.raises(PgopsError) as caught:
        validate_queries(queries, only)
    assert fragment in str(caught.value)
