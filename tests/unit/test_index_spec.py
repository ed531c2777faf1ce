"""Pure tests of index spec validation and of the comparison with a catalog snapshot."""

import pytest

from ansible_collections.intowork.pgops.plugins.module_utils._connection import PgopsError
from ansible_collections.intowork.pgops.plugins.module_utils._index_spec import compare, validate_entries

PARTIAL = {"name": "ix_jobs_published_job_type", "table": "jobs", "columns": ["status", "job_type"],
           "where": "status = 'published'"}


def catalog_index(**overrides):
    index = {"name": "ix_jobs_published_job_type", "table": "jobs", "valid": True, "ready": True,
             "unique": False, "method": "btree", "predicate": "(status = 'published'::text)",
             "constraint": None, "definition": "CREATE INDEX ..."}
    index.update(overrides)
    return {"relations": ["jobs", "users"], "indexes": [index]}


@pytest.mark.parametrize("entries, fragment", [
    ([{"name": "a", "table": "jobs", "colums": ["x"]}], "unknown key(s) colums"),
    ([{"table": "jobs"}], "needs 'name'"),
    ([{"name": "a"}], "needs 'table'"),
    (["ix_jobs"], "not a mapping"),
    ([{"name": "a", "table": "jobs"}, {"name": "a", "table": "users"}], "names a more than once"),
])
def test_bad_entries_are_named(entries, fragment):
    with pytest.raises(PgopsError, match=None) as caught:
        validate_entries(entries)
    assert fragment in str(caught.value)


def test_defaults_are_filled():
    (entry,) = validate_entries([{"name": "a", "table": "jobs", "method": None}])
    assert entry["method"] == "btree" and entry["unique"] is False and entry["constraint"] is False


def test_matching_index_is_ok_despite_predicate_formatting():
    findings = compare(validate_entries([PARTIAL]), catalog_index())
    assert findings["ok"] == ["ix_jobs_published_job_type"]
    assert not findings["missing"] and not findings["invalid"] and not findings["different"]


@pytest.mark.parametrize("overrides, kind", [
    ({"valid": False}, "invalid"),
    ({"ready": False}, "invalid"),
    ({"unique": True}, "different"),
    ({"method": "hash"}, "different"),
    ({"predicate": None}, "different"),
    ({"predicate": "(status = 'draft'::text)"}, "different"),
    ({"name": "other_name"}, "missing"),
])
def test_each_kind_of_finding(overrides, kind):
    findings = compare(validate_entries([PARTIAL]), catalog_index(**overrides))
    assert [item["name"] for item in findings[kind]] == ["ix_jobs_published_job_type"]
    assert findings["ok"] == []


def test_constraint_backed_index_without_constraint_is_different():
    entry = {"name": "ix_jobs_published_job_type", "table": "jobs", "unique": True, "constraint": True,
             "where": "status = 'published'"}
    findings = compare(validate_entries([entry]), catalog_index(unique=True))
    assert findings["different"][0]["reasons"] == ["no constraint uses it"]


def test_unknown_table_is_an_error_naming_it():
    entry = {"name": "ix_x", "table": "jobs; DROP TABLE users"}
    with pytest.raises(PgopsError) as caught:
        compare(validate_entries([entry]), catalog_index())
    assert "jobs; DROP TABLE users" in str(caught.value)
