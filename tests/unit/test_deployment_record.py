"""The decisions taken from a deployment record, without a playbook: how far a plan got, whether writes were off
since the backup, and how a failed deployment is undone. The runbook tests take each branch through the plays."""

import pytest

from ansible_collections.intowork.pgops.plugins.module_utils._deployment_record import (
    progress,
    record_of,
    undo_plan,
    writes_off_since_backup,
)

PLAN = ["r1", "r2", "r3"]
STARTED = {"revision_before": "r0", "plan": PLAN, "mode": "maintenance", "irreversible": [], "writes_guarded": True,
           "backup": "/b/db.dump", "row_counts_before": {"t": 3}, "catalog_before": "/b/d.catalog.json",
           "migration_started": "2026-12-07T05:00:00Z"}
MY_GUARD = {"owner": "deploy-1", "roles": ["app"], "strategy": "revoke_writes"}


def test_record_of_reads_only_the_named_owners_record():
    lease = {"owner": "deploy-1", "details": {"plan": PLAN}}
    assert record_of(lease) == {"plan": PLAN}
    assert record_of(lease, "deploy-1") == {"plan": PLAN}
    assert record_of(lease, "deploy-2") == {}, "someone else's lease is not this run's record"
    assert record_of(None) == {} and record_of({"owner": "x"}) == {}


@pytest.mark.parametrize("recorded, applied, completed, half, words", [
    ("r0", [], False, "r1", "the database records r0, 0 of 3 revision(s) of the plan applied; r1 may be half-applied"),
    (None, [], False, "r1", "the database records base, 0 of 3"),
    ("r2", ["r1", "r2"], False, "r3", "2 of 3 revision(s) of the plan applied; r3 may be half-applied"),
    ("r3", PLAN, True, None, "the migration completed (the database records r3, all 3 revision(s) of the plan applied)"),
])
def test_progress_of_a_started_migration(recorded, applied, completed, half, words):
    got = progress(STARTED, recorded)
    assert (got["applied"], got["completed"], got["possibly_half_applied"]) == (applied, completed, half)
    assert words in got["text"], got["text"]


def test_progress_before_the_migration_started_has_nothing_half_applied():
    got = progress(dict(STARTED, migration_started=None), "r0")
    assert (got["completed"], got["possibly_half_applied"], got["text"]) == (
        False, None, "the migration had not started")
    assert progress({}, "r0")["text"] == "the deployment had no plan" and not progress({}, None)["completed"]


def test_writes_were_off_only_under_this_deployments_guard():
    assert writes_off_since_backup(MY_GUARD, "deploy-1")
    assert not writes_off_since_backup(MY_GUARD, "deploy-2"), "another run's guard"
    assert not writes_off_since_backup(None, "deploy-1"), "guard gone (or none: no roles named): writes on"


def test_with_no_roles_named_a_restore_is_planned_but_writes_count_as_on():
    """The application may write through a role nobody named: the restore is still the plan where a downgrade
    cannot undo, but the backup program measures what it would discard (writes held) and refuses to drop any."""
    unguarded = dict(STARTED, writes_guarded=False, irreversible=["r2"])
    undo = undo_plan(unguarded, None, "deploy-1")
    assert (undo["method"], undo["writes_off_since_backup"], undo["row_count_policy"]) == (
        "restore", False, "no_loss"), undo
    assert undo["reason"].endswith("(no application roles are guarded: only if it would discard no write since the "
                                   "backup)"), undo["reason"]
    assert undo_plan(dict(unguarded, irreversible=[]), None, "deploy-1")["method"] == "auto"
    assert undo_plan(dict(unguarded, mode="online"), None, "deploy-1")["method"] == "downgrade"


def test_nothing_to_undo_before_the_migration_started():
    assert undo_plan(dict(STARTED, migration_started=None), MY_GUARD, "deploy-1") is None


def test_a_migration_that_stopped_before_its_first_revision_is_not_undone():
    """alembic_migration clears migration_started and notes nothing_ran when env.py failed before any revision."""
    stopped = dict(STARTED, migration_started=None, nothing_ran="alembic upgrade ... (nothing ran): No module")
    assert undo_plan(stopped, MY_GUARD, "deploy-1") is None
    got = progress(stopped, "r0")
    assert (got["migration_started"], got["possibly_half_applied"], got["text"]) == (
        False, None, "the migration stopped before its first revision (nothing ran)")


def test_with_writes_off_a_downgrade_falls_back_on_the_backup():
    undo = undo_plan(STARTED, MY_GUARD, "deploy-1")
    assert (undo["method"], undo["target"], undo["backup"], undo["row_count_policy"]) == (
        "auto", "r0", "/b/db.dump", "equal")
    assert undo["interrupted_plan"] == PLAN and undo["row_counts"] == {"t": 3}
    assert undo["catalog"] == "/b/d.catalog.json" and undo["writes_off_since_backup"] is True
    assert undo["reason"] == "a downgrade to r0, and the backup /b/db.dump if it fails (writes were off since the backup)"


def test_an_irreversible_revision_with_writes_off_restores_the_backup():
    undo = undo_plan(dict(STARTED, irreversible=["r2"]), MY_GUARD, "deploy-1")
    assert undo["method"] == "restore" and undo["row_count_policy"] == "equal"
    assert undo["reason"].startswith("revision(s) r2 cannot be undone by a downgrade"), undo["reason"]
    without_backup = undo_plan(dict(STARTED, irreversible=["r2"], backup=""), MY_GUARD, "deploy-1")
    assert without_backup["method"] == "auto" and "no backup to fall back on" in without_backup["reason"]


@pytest.mark.parametrize("record, guard", [
    (dict(STARTED, mode="online", irreversible=["r2"]), None),
    (dict(STARTED, irreversible=["r2"]), None),  # writes came back on before the failure
    (dict(STARTED, irreversible=["r2"]), dict(MY_GUARD, owner="rollback-9")),
])
def test_with_writes_on_only_a_downgrade_is_automatic(record, guard):
    undo = undo_plan(record, guard, "deploy-1")
    assert (undo["method"], undo["row_count_policy"], undo["writes_off_since_backup"]) == (
        "downgrade", "no_loss", False)
    assert "a restore would drop the application's writes since the backup" in undo["reason"], undo["reason"]


def test_the_first_deployment_of_a_project_goes_back_to_base():
    assert undo_plan(dict(STARTED, revision_before=None), MY_GUARD, "deploy-1")["target"] == "base"


POINT = {"name": "deploy-1", "lsn": "0/3000028", "wal_file": "000000010000000000000003"}


def test_without_a_backup_the_restore_point_takes_its_place_only_with_writes_off():
    """pgops_deploy_logical_backup false: an irreversible revision goes back by a recovery of the cluster to the
    deployment's restore point, and a failed downgrade falls through to it; never while writes were on."""
    pointed = dict(STARTED, backup="", restore_point=POINT)
    undo = undo_plan(dict(pointed, irreversible=["r2"]), MY_GUARD, "deploy-1")
    assert (undo["method"], undo["restore_point"], undo["row_count_policy"]) == ("pitr", POINT, "equal"), undo
    assert undo["reason"] == ("revision(s) r2 cannot be undone by a downgrade (irreversible, or destroying data) and "
                              "no backup was taken: recover the cluster to restore point deploy-1 (writes were off "
                              "since it)"), undo["reason"]
    fallback = undo_plan(pointed, MY_GUARD, "deploy-1")
    assert (fallback["method"], fallback["restore_point"]) == ("auto", POINT)
    assert fallback["reason"] == ("a downgrade to r0, and a recovery of the cluster to restore point deploy-1 if it "
                                  "fails (writes were off since the restore point)"), fallback["reason"]
    # Writes on since (online, or the guard gone) or never guarded: a recovery would take the application's back.
    for record, guard in [(dict(pointed, mode="online", irreversible=["r2"]), None),
                          (dict(pointed, irreversible=["r2"]), None),
                          (dict(pointed, irreversible=["r2"], writes_guarded=False), None)]:
        undo = undo_plan(record, guard, "deploy-1")
        assert undo["method"] != "pitr" and undo["restore_point"] == {}, undo
    # With a backup too, the backup restores this database alone: the cluster's others are left as they are.
    both = undo_plan(dict(pointed, backup="/b/db.dump", irreversible=["r2"]), MY_GUARD, "deploy-1")
    assert (both["method"], both["restore_point"]) == ("restore", {})
