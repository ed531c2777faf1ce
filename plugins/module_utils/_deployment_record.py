# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to intowork.pgops: not a public API, may change without notice.
"""The deployment record: what a deployment keeps in its lease (`details`), and the decisions taken from it.

Every run that has to finish or undo a deployment (its own rescue, the controller's clean-up, rollback.yml,
finish_deployment.yml, the backup program's watch) reads the record through this file, so "how far did the
plan get" and "how is it undone" have one answer. Plain Python, no imports: the backup program loads it
beside itself on hosts without the collection.

The record, written by phase (deploy_lock state=acquired, merge):
  preflight:  revision_before, target, plan (revision ids, in order), mode (maintenance | online),
              irreversible (revision ids a downgrade cannot undo), writes_guarded (application roles were named)
  backup:     backup (its path; empty without pg_dump), backup_taken (words), row_counts_before, catalog_before,
              restore_point ({name, lsn, wal_file}: the named point in the archived WAL, or null),
              migration_started (UTC)
  migration:  nothing_ran (why; with migration_started cleared) when Alembic failed before its first revision
  finish:     finishing (the owner of the deployment another run finishes)
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


def record_of(lease, owner=None):
    """The record in `lease`: the holder's, or only `owner`'s when given ({} when someone else holds it)."""
    if not lease or (owner and lease.get("owner") != owner):
        return {}
    return lease.get("details") or {}


def progress(record, recorded_revision):
    """How far the record's plan got, given the revision the database records (None: none)."""
    plan = list(record.get("plan") or [])
    started = bool(record.get("migration_started"))
    applied = plan[:plan.index(recorded_revision) + 1] if recorded_revision in plan else []
    completed = bool(plan) and started and len(applied) == len(plan)
    half_applied = plan[len(applied)] if started and len(applied) < len(plan) else None
    at = recorded_revision or "base"
    if not plan:
        text = "the deployment had no plan"
    elif record.get("nothing_ran"):
        text = "the migration stopped before its first revision (nothing ran)"
    elif not started:
        text = "the migration had not started"
    elif completed:
        text = "the migration completed (the database records %s, all %d revision(s) of the plan applied)" % (
            at, len(plan))
    else:
        text = ("the migration did not complete (the database records %s, %d of %d revision(s) of the plan "
                "applied; %s may be half-applied)" % (at, len(applied), len(plan), half_applied))
    return {"plan": plan, "recorded": recorded_revision, "applied": applied, "migration_started": started,
            "completed": completed, "possibly_half_applied": half_applied, "text": text}


def writes_off_since_backup(guard, owner):
    """Whether no application write can have landed since the deployment's backup: this deployment's write guard
    is still on. With no application roles named, writes were never off: the application may be writing
    through a role nobody named."""
    return bool(guard and owner and guard.get("owner") == owner)


def unguarded_maintenance(record):
    """Maintenance mode with no application roles named: writes stayed on, but a restore may still undo the
    deployment if it would discard no write (the backup program measures it with the writes held, and refuses
    otherwise)."""
    return record.get("mode", "maintenance") == "maintenance" and record.get("writes_guarded") is False


def undo_plan(record, guard, owner):
    """How the deployment's own rescue undoes it, or None when its migration never started (nothing to undo).

    With writes on since the backup (online mode, a failure after they came back, or a guard no longer this
    deployment's) a restore would drop the application's writes: only a downgrade is automatic. With writes off,
    revisions a downgrade cannot undo go back by the backup, and a failed downgrade falls through to it. Without a
    backup (pgops_deploy_logical_backup false) the restore point takes its place: a point-in-time recovery of the
    whole cluster, only with writes off since the point (what it discards is then the migration's own work)."""
    if not record.get("migration_started"):
        return None
    off = writes_off_since_backup(guard, owner)
    irreversible = list(record.get("irreversible") or [])
    backup = record.get("backup") or ""
    point = record.get("restore_point") or {}
    target = record.get("revision_before") or "base"
    online = record.get("mode") == "online"
    unguarded = unguarded_maintenance(record)
    # What lets a restore run on its own: writes off since the backup, or nothing written since (measured).
    restores_when = ("writes were off since the backup" if off else
                     "no application roles are guarded: only if it would discard no write since the backup")
    # A recovery takes back every write since the point: only automatic while nobody but the migration wrote.
    recovers = bool(point) and not backup and off
    if online or not (off or unguarded):
        method = "downgrade"
        reason = ("%s: a restore would drop the application's writes since the backup, so only a downgrade to %s "
                  "is automatic" % ("online mode, writes stayed on" if online else "writes were back on", target))
    elif irreversible and backup:
        method = "restore"
        reason = ("revision(s) %s cannot be undone by a downgrade (irreversible, or destroying data): restore %s "
                  "(%s)" % (", ".join(irreversible), backup, restores_when))
    elif irreversible and recovers:
        method = "pitr"
        reason = ("revision(s) %s cannot be undone by a downgrade (irreversible, or destroying data) and no backup "
                  "was taken: recover the cluster to restore point %s (writes were off since it)" % (
                      ", ".join(irreversible), point["name"]))
    else:
        method = "auto"
        fallback = ("the backup " + backup if backup else
                    "a recovery of the cluster to restore point " + point["name"] if recovers else
                    "no backup to fall back on")
        reason = "a downgrade to %s, and %s if it fails (%s)" % (
            target, fallback, "writes were off since the restore point" if recovers and not backup else restores_when)
    return {"method": method, "target": target, "backup": backup, "interrupted_plan": list(record.get("plan") or []),
            "restore_point": point if recovers else {},
            "row_counts": record.get("row_counts_before") or {}, "catalog": record.get("catalog_before") or "",
            "writes_off_since_backup": off, "row_count_policy": "equal" if off else "no_loss", "reason": reason}
