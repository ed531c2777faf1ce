"""Pure tests of integrity planning: names checked before anything runs, and row-count policies."""

import pytest

from ansible_collections.intowork.pgops.plugins.module_utils._connection import PgopsError
from ansible_collections.intowork.pgops.plugins.module_utils._integrity import compare_counts, load_spec_file, plan

CATALOG = {
    "relations": [{"name": "users", "columns": ["id", "email"], "primary_key": ["id"]},
                  {"name": "tokens", "columns": ["identifier", "token"], "primary_key": None}],
    "constraints": [],
}


@pytest.mark.parametrize("params, fragment", [
    ({"relations": [{"name": "r", "table": "tokens", "columns": ["identifer"], "references": "users",
                     "referenced_columns": ["email"]}]}, "relation r names column(s) identifer that table tokens"),
    ({"relations": [{"name": "r", "table": "tokens", "columns": ["identifier"], "references": "people",
                     "referenced_columns": ["email"]}]}, "relation r names table people"),
    ({"relations": [{"name": "r", "table": "tokens", "columns": ["identifier", "token"], "references": "users",
                     "referenced_columns": ["email"]}]}, "pairs 2 column(s) with 1 referenced"),
    ({"duplicates": [{"name": "d", "table": "users; DROP TABLE users", "columns": ["email"]}]},
     "names table users; DROP TABLE users"),
    ({"row_counts": ["users", "nope"]}, "row_counts names table nope"),
])
def test_unknown_names_fail_before_anything_runs(params, fragment):
    with pytest.raises(PgopsError) as caught:
        plan(CATALOG, "public", params)
    assert fragment in str(caught.value)


def test_plan_orders_checks_by_kind():
    checks = plan(CATALOG, "public", {
        "relations": [{"name": "r", "table": "tokens", "columns": ["identifier"], "references": "users",
                       "referenced_columns": ["email"]}],
        "duplicates": [{"name": "d", "table": "users", "columns": ["email"]}],
        "checks": [{"name": "c", "table": "users", "condition": "email <> ''"}],
        "row_counts": ["users"]})
    assert [(c.kind, c.report["name"]) for c in checks] == [
        ("orphans", "r"), ("duplicates", "d"), ("check_violations", "c"), ("row_counts", "row_counts")]


@pytest.mark.parametrize("policy, before, after, changed", [
    ("equal", {"users": 10}, {"users": 10}, []),
    ("equal", {"users": 10}, {"users": 11}, ["users"]),
    ("no_loss", {"users": 10}, {"users": 11}, []),
    ("no_loss", {"users": "10"}, {"users": 9}, ["users"]),
    ("no_loss", {"users": 10}, {}, ["users"]),
])
def test_row_count_policies(policy, before, after, changed):
    assert [c["table"] for c in compare_counts(before, after, policy)] == changed


def test_spec_file_entries_are_validated(tmp_path):
    path = tmp_path / "spec.yml"
    path.write_text("duplicates:\n  - name: d\n    table: users\n")
    with pytest.raises(PgopsError) as caught:
        load_spec_file(str(path))
    assert "duplicates entry 1 needs exactly columns, name, table" in str(caught.value)
    path.write_text("orphans: []\n")
    with pytest.raises(PgopsError) as caught:
        load_spec_file(str(path))
    assert "unknown key(s) orphans" in str(caught.value)
