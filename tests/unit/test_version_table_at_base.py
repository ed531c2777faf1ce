"""A downgrade to base leaves Alembic's version table behind, empty: the catalog comparison takes that as the
database before the first deployment (no table), and nothing else."""

from ansible_collections.intowork.pgops.plugins.module_utils._schema_snapshot import (
    compare,
    without_new_empty_version_table,
)

SCHEMA = {"schema public": {"owner": "app", "acl": []}}
VERSION_TABLE = {
    "relations": {"table public.alembic_version": {"kind": "r", "owner": "deploy", "columns": [], "acl": []}},
    "indexes": {"index public.alembic_version_pkc": {"table": "alembic_version", "definition": "...", "valid": True}},
    "constraints": {"constraint public.alembic_version.alembic_version_pkc": {"definition": "PRIMARY KEY"}},
}


def snapshot(version_rows=None, extra=None):
    objects = {"schemas": dict(SCHEMA), "relations": {}, "indexes": {}, "constraints": {}}
    rows = {}
    if version_rows is not None:
        for section, items in VERSION_TABLE.items():
            objects[section].update(items)
        rows["public.alembic_version"] = {"rows": version_rows, "exact": True}
    for key, value in (extra or {}).items():
        objects["relations"][key] = value
    return {"objects": objects, "rows": rows, "object_count": 0}


def test_an_empty_version_table_new_since_base_is_no_difference():
    before, after = snapshot(), snapshot(version_rows=0)
    trimmed = without_new_empty_version_table(before, after)
    assert compare(before, trimmed) == []
    assert trimmed["object_count"] == 1 and after["objects"]["relations"], "the snapshot given is not changed"


def test_a_version_table_that_records_a_revision_or_was_there_before_stays_compared():
    before = snapshot()
    recording = without_new_empty_version_table(before, snapshot(version_rows=1))
    assert "new table public.alembic_version" in compare(before, recording)
    # Present before too: an ordinary table, compared as such.
    both = snapshot(version_rows=0)
    assert without_new_empty_version_table(both, snapshot(version_rows=0)) == snapshot(version_rows=0)


def test_only_alembics_table_is_left_out():
    other = {"kind": "r", "owner": "app", "columns": [], "acl": []}
    before = snapshot()
    after = snapshot(version_rows=0, extra={"table public.orders": other})
    after["rows"]["public.orders"] = {"rows": 0, "exact": True}
    assert compare(before, without_new_empty_version_table(before, after)) == ["new table public.orders"]
