"""Pure tests of index spec validation and of the findings against a catalog snapshot."""

import pytest

from ansible_collections.intowork.pgops.plugins.module_utils._connection import PgopsError
from ansible_collections.intowork.pgops.plugins.module_utils._index_spec import (
    compare,
    overlaps,
    parse_column,
    unindexed_foreign_keys,
    unused,
    validate_entries,
)

PARTIAL = {"name": "ix_jobs_published_job_type", "table": "jobs", "columns": ["status", "job_type"],
           "where": "status = 'published'"}
JOB_COLUMNS = ["id", "status", "job_type", "posted_at", "title", "employer_id"]


def key(expr, attnum, desc=False, opclass=None):
    return {"expr": expr, "attnum": attnum, "desc": desc, "opclass": opclass}


def index(**overrides):
    found = {"name": "ix_jobs_published_job_type", "table": "jobs", "valid": True, "ready": True,
             "unique": False, "primary": False, "method": "btree", "predicate": "(status = 'published'::text)",
             "constraint": None, "definition": "CREATE INDEX ...", "keys": [key("status", 2), key("job_type", 3)],
             "include": [], "scans": 7, "size_bytes": 8192}
    found.update(overrides)
    return found


def catalog(*indexes, foreign_keys=()):
    return {"relations": [{"name": "jobs", "columns": JOB_COLUMNS}, {"name": "users", "columns": ["id", "email"]}],
            "indexes": list(indexes) or [index()], "foreign_keys": list(foreign_keys), "stats_reset": None}


@pytest.mark.parametrize("text, parsed", [
    ("job_id", {"expr": "job_id", "desc": False, "opclass": None}),
    ("applied_at DESC", {"expr": "applied_at", "desc": True, "opclass": None}),
    ("posted_at asc", {"expr": "posted_at", "desc": False, "opclass": None}),
    ("title gin_trgm_ops", {"expr": "title", "desc": False, "opclass": "gin_trgm_ops"}),
    ("lower(email) text_pattern_ops DESC", {"expr": "lower(email)", "desc": True, "opclass": "text_pattern_ops"}),
])
def test_parse_column(text, parsed):
    assert parse_column(text) == parsed


@pytest.mark.parametrize("entries, fragment", [
    ([{"name": "a", "table": "jobs", "colums": ["x"]}], "unknown key(s) colums"),
    ([{"table": "jobs"}], "needs 'name'"),
    ([{"name": "a"}], "needs 'table'"),
    (["ix_jobs"], "not a mapping"),
    ([{"name": "a", "table": "jobs"}, {"name": "a", "table": "users"}], "names a more than once"),
])
def test_bad_entries_are_named(entries, fragment):
    with pytest.raises(PgopsError) as caught:
        validate_entries(entries)
    assert fragment in str(caught.value)


def test_defaults_are_filled():
    (entry,) = validate_entries([{"name": "a", "table": "jobs", "method": None}])
    assert entry["method"] == "btree" and entry["unique"] is False and entry["constraint"] is False


def test_matching_index_is_ok_despite_predicate_formatting():
    findings = compare(validate_entries([PARTIAL]), catalog())
    assert findings["ok"] == ["ix_jobs_published_job_type"]
    assert not findings["missing"] and not findings["invalid"] and not findings["different"]


@pytest.mark.parametrize("overrides, kind", [
    ({"valid": False}, "invalid"),
    ({"ready": False}, "invalid"),
    ({"unique": True}, "different"),
    ({"method": "hash"}, "different"),
    ({"predicate": None}, "different"),
    ({"predicate": "(status = 'draft'::text)"}, "different"),
    ({"keys": [key("job_type", 3), key("status", 2)]}, "different"),
    ({"keys": [key("status", 2), key("job_type", 3, desc=True)]}, "different"),
    ({"keys": [key("status", 2)]}, "different"),
    ({"include": ["title"]}, "different"),
    ({"name": "other_name"}, "missing"),
])
def test_each_kind_of_finding(overrides, kind):
    findings = compare(validate_entries([PARTIAL]), catalog(index(**overrides)))
    assert [item["name"] for item in findings[kind]] == ["ix_jobs_published_job_type"]
    assert findings["ok"] == []


def test_operator_class_is_compared():
    spec = [{"name": "ix_title", "table": "jobs", "columns": ["title gin_trgm_ops"], "method": "gin"}]
    same = index(name="ix_title", method="gin", predicate=None, keys=[key("title", 5, opclass="gin_trgm_ops")])
    other = index(name="ix_title", method="gin", predicate=None, keys=[key("title", 5, opclass="gin_bigm_ops")])
    assert compare(validate_entries(spec), catalog(same))["ok"] == ["ix_title"]
    assert compare(validate_entries(spec), catalog(other))["different"][0]["reasons"] == [
        "keys (title gin_bigm_ops), expected (title gin_trgm_ops)"]


def test_constraint_backed_index_without_constraint_is_different():
    entry = dict(PARTIAL, unique=True, constraint=True)
    findings = compare(validate_entries([entry]), catalog(index(unique=True)))
    assert findings["different"][0]["reasons"] == ["no constraint uses it"]


@pytest.mark.parametrize("entry, fragment", [
    ({"name": "ix_x", "table": "jobs; DROP TABLE users"}, "table(s) not in the schema: jobs; DROP TABLE users"),
    ({"name": "ix_x", "table": "jobs", "columns": ["stauts"]}, "index ix_x names column(s) stauts that table jobs"),
    ({"name": "ix_x", "table": "jobs", "columns": ["id"], "include": ["nope"]}, "column(s) nope"),
])
def test_unknown_names_are_errors_naming_them(entry, fragment):
    with pytest.raises(PgopsError) as caught:
        compare(validate_entries([entry]), catalog())
    assert fragment in str(caught.value)


def test_expressions_are_not_mistaken_for_unknown_columns():
    entry = {"name": "ix_lower", "table": "users", "columns": ["lower(email)"]}
    findings = compare(validate_entries([entry]), catalog(index(name="ix_lower", table="users", predicate=None,
                                                                keys=[key("lower(email)", 0)])))
    assert findings["ok"] == ["ix_lower"]


def test_duplicate_keeps_the_enforcing_index():
    plain = index(name="ix_dup", predicate=None)
    unique = index(name="uq_keep", predicate=None, unique=True, constraint="uq_keep")
    duplicate, redundant = overlaps(catalog(plain, unique))
    assert [(d["name"], d["duplicate_of"]) for d in duplicate] == [("ix_dup", "uq_keep")]
    assert redundant == []


def test_prefix_index_is_redundant_but_not_across_predicates_or_unique():
    short = index(name="ix_status", predicate=None, keys=[key("status", 2)])
    long_ = index(name="ix_status_type", predicate=None)
    partial = index(name="ix_status_partial", keys=[key("status", 2)])
    unique_short = index(name="uq_status", predicate=None, unique=True, keys=[key("status", 2)])
    _duplicate, redundant = overlaps(catalog(short, long_, partial, unique_short))
    assert [(r["name"], r["covered_by"]) for r in redundant] == [("ix_status", "ix_status_type")]


def test_unused_leaves_out_constraint_indexes():
    never = index(name="ix_never", scans=0)
    enforcing = index(name="uq_never", scans=0, unique=True)
    used = index(name="ix_used", scans=3)
    assert [u["name"] for u in unused(catalog(never, enforcing, used))] == ["ix_never"]


def test_foreign_key_needs_an_index_led_by_its_columns():
    fk = {"name": "jobs_employer_id_fkey", "table": "jobs", "references": "employers", "attnums": [6],
          "columns": ["employer_id"]}
    trailing = index(name="ix_status_employer", predicate=None, keys=[key("status", 2), key("employer_id", 6)])
    leading = index(name="ix_employer_status", predicate=None, keys=[key("employer_id", 6), key("status", 2)])
    partial = index(name="ix_employer_partial", keys=[key("employer_id", 6)])
    assert [f["name"] for f in unindexed_foreign_keys(catalog(trailing, partial, foreign_keys=[fk]))] == [
        "jobs_employer_id_fkey"]
    assert unindexed_foreign_keys(catalog(trailing, leading, foreign_keys=[fk])) == []
