"""The drift judge's reading of two catalogs: what changed is named once, by kind; what a newer snapshot reads
and an older file lacks is no drift; comments and validity alone are not a changed definition."""

from ansible_collections.intowork.pgops.plugins.module_utils._schema_snapshot import compare, findings_by_drift

FK = "FOREIGN KEY (job_id) REFERENCES jobs(id)"


def catalog(**sections):
    objects = {"schemas": {}, "relations": {}, "indexes": {}, "constraints": {}, "triggers": {}}
    objects.update(sections)
    return {"objects": objects, "rows": {}}


def kinds(before, after):
    return [(kind, key) for kind, key, _words in findings_by_drift(before, after)]


def test_a_constraint_re_added_not_valid_is_invalidated_not_changed():
    key = "constraint public.applications.applications_job_id_fkey"
    before = catalog(constraints={key: {"definition": FK, "validated": True}})
    after = catalog(constraints={key: {"definition": FK + " NOT VALID", "validated": False}})
    assert kinds(before, after) == [("constraint_invalidated", key)]


def test_deferrability_is_a_changed_constraint_with_both_definitions():
    key = "constraint public.applications.applications_job_id_fkey"
    before = catalog(constraints={key: {"definition": FK, "validated": True}})
    after = catalog(constraints={key: {"definition": FK + " DEFERRABLE INITIALLY DEFERRED", "validated": True}})
    (finding,) = findings_by_drift(before, after)
    assert finding == ("constraint_changed", key, "%s was %s, is %s DEFERRABLE INITIALLY DEFERRED" % (key, FK, FK))


def test_attributes_an_older_snapshot_lacks_are_no_drift():
    old = {"kind": "m", "owner": "deploy", "acl": [], "columns": []}
    new = dict(old, populated=True, comment="daily counts")
    assert kinds(catalog(relations={"materialized view public.counts": old}),
                 catalog(relations={"materialized view public.counts": new})) == []
    unpopulated = dict(new, populated=False)
    assert kinds(catalog(relations={"materialized view public.counts": new}),
                 catalog(relations={"materialized view public.counts": unpopulated})) == [
        ("matview_unpopulated", "materialized view public.counts")]


def test_a_section_an_older_snapshot_lacks_is_not_read_as_all_new():
    before = catalog()
    del before["objects"]["triggers"]
    after = catalog(triggers={"trigger public.jobs.touch": {"definition": "CREATE TRIGGER touch ...", "enabled": "O"}})
    assert kinds(before, after) == []


def test_trigger_states_read_as_words_and_disabled_is_its_own_kind():
    key = "trigger public.jobs.touch"
    before = catalog(triggers={key: {"definition": "CREATE TRIGGER touch ...", "enabled": "O"}})
    assert kinds(before, catalog(triggers={key: {"definition": "CREATE TRIGGER touch ...", "enabled": "D"}})) == [
        ("trigger_disabled", key)]
    (replica,) = findings_by_drift(before, catalog(triggers={key: {"definition": "CREATE TRIGGER touch ...",
                                                                   "enabled": "R"}}))
    assert replica == ("definition_changed", key, "%s: enabled was enabled, is enabled on replicas only" % key)


def test_a_comment_alone_is_no_drift_and_a_new_column_only_warns():
    key = "table public.users"
    column = {"name": "email", "type": "text", "not_null": True, "comment": None}
    before = catalog(relations={key: {"kind": "r", "owner": "deploy", "acl": [], "columns": [column],
                                      "comment": None}})
    after = catalog(relations={key: {"kind": "r", "owner": "deploy", "acl": [], "comment": "people",
                                     "columns": [dict(column, comment="login"),
                                                 {"name": "nickname", "type": "text"}]}})
    assert kinds(before, after) == [("column_added", key)]


def test_a_rollback_against_a_snapshot_older_than_policies_sees_no_new_policy():
    before = catalog()
    del before["objects"]["triggers"]
    after = catalog(triggers={"trigger public.jobs.touch": {"definition": "CREATE TRIGGER touch ...", "enabled": "O"}})
    after["objects"]["policies"] = {"policy public.jobs.own": {"definition": "PERMISSIVE FOR ALL TO PUBLIC"}}
    assert compare(before, after, rows=False) == []
