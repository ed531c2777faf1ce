#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: schema_snapshot
short_description: Snapshot a database's catalog and rows, and prove a later state equals it
version_added: 0.1.0
description:
  - Reads, in one read-only transaction, every object of the database's own schemas (not those of extensions)
    with what makes it that object; tables, views and materialized views with their columns in order, their
    owner and privileges; sequences, indexes and their validity, constraints and their validity (foreign keys
    among them), enum and domain types, functions, triggers, schemas, extensions and their versions. It also
    reads the rows of every table.
  - Rows are counted exactly in tables the planner estimates at O(exact_count_max_rows) rows or fewer; larger
    tables carry the planner's estimate, and RV(estimated_tables) names them.
  - With O(compare_to), an earlier snapshot, lists every difference in one line each (an object gone or new,
    a column gone, new, changed or moved, a definition, owner or validity changed, a privilege gone or new, a
    table with fewer rows) and fails when there is one, unless O(fail_on_difference=false).
  - While a write guard (M(intowork.pgops.write_guard), strategy revoke_writes) holds the application's writes,
    the privileges it took away are read as the guard will give them back, so a snapshot is the same with writes
    off and on.
  - With O(restore_grants), the privileges of every object that still exists are made those of the earlier
    snapshot first, and the comparison is made after. Privileges it had are granted back (a downgrade that dropped
    and re-created a table loses its grants); privileges it did not have are revoked (a downgrade leaves the
    grants its upgrade made on tables that stay).
options:
  schemas:
    description: Schemas to read; empty reads every schema but the system's.
    type: list
    elements: str
    default: []
  exact_count_max_rows:
    description:
      - Largest planner estimate of a table whose rows are counted exactly.
      - When comparing rows (O(compare_rows)), the earlier snapshot's value is used, so that both count alike.
    type: int
    default: 1000000
  compare_to:
    description: An earlier result's RV(snapshot) to compare with. Mutually exclusive with O(compare_to_file).
    type: dict
  compare_to_file:
    description: A snapshot written earlier by O(path), on the managed host, to compare with.
    type: path
  path:
    description:
      - Write the snapshot to this file on the managed host (mode 0600, replaced whole), for a later run's
        O(compare_to_file); a rollback started from another machine, or after this one died, finds it there.
      - With O(compare_to) or O(compare_to_file), written only when the comparison proves the catalog (no
        difference, or with O(judge=deployment) or O(judge=drift) nothing at level V(fail)), so that the file holds
        the catalog a later O(judge=drift) compares with.
      - Not written in check mode.
    type: path
  label:
    description:
      - Words kept in the file written to O(path) that say what the snapshot is (for example C(the catalog
        deployment 20261208-0102 proved)); a later comparison with it names it so.
    type: str
  owner:
    description:
      - The account that owns the file written to O(path), which stays 0600. Give the account that reads it
        next, for example the backup account that owns the folder it lands in, when the play runs as root.
      - By default the account the module runs as; run as root, the account that owns the folder of O(path).
    type: str
  restore_grants:
    description:
      - Before comparing, grant back the privileges O(compare_to) has and the database lost, and revoke those the
        database has and O(compare_to) did not, on objects both have.
      - A REVOKE takes back only what this account granted (or, as the owner, the owner); one it cannot take
        back stays a difference.
    type: bool
    default: false
  compare_rows:
    description:
      - Compare the rows too (a table with fewer rows than in O(compare_to) is a difference).
      - Off when the application has written since the snapshot, and its own deletes are not losses.
    type: bool
    default: true
  judge:
    description:
      - V(rollback) counts every difference from O(compare_to) (after a rollback nothing may differ).
      - V(deployment) judges what the deployment did to what was there, by finding kind. By default it fails
        (RV(broken)) on what breaks the application, a privilege gone from an object that is still there
        (C(privilege_lost)), an owner changed (C(owner_changed)), an index no longer valid (C(index_invalid)), a
        validated constraint now NOT VALID (C(constraint_invalidated)), an extension gone (C(extension_gone)),
        rows gone from a table that is still there (C(rows_lost)); and warns (RV(warned)) of waste and of steps
        taken on purpose, a new index that duplicates another (C(index_duplicate), such as a unique constraint
        and a unique index on the same columns) and a new constraint added NOT VALID (C(constraint_not_valid)).
        O(findings) changes the level of a kind. The other differences are the migration's own changes
        (RV(changes)). What was already there before is never a finding.
      - V(drift) judges what changed since a baseline, the catalog the last deployment proved or one recorded on
        purpose, as an outage, a restore or a hand fix leave it while every name may still be in place. It
        fails on an object gone (C(object_gone)), a column gone or changed (C(column_changed)), a
        constraint's definition changed, deferrability included (C(constraint_changed)), a constraint now NOT
        VALID (C(constraint_invalidated)), an index not valid (C(index_invalid)) or changed (C(index_changed)), a
        trigger disabled (C(trigger_disabled)), a materialized view not populated (C(matview_unpopulated)), row
        level security off (C(row_security_off)), a privilege gone (C(privilege_lost)), an owner changed
        (C(owner_changed)), and any other definition changed (C(definition_changed)); it warns of what is new
        (C(object_added), C(column_added), C(privilege_added)). Rows and comments are not compared.
    type: str
    choices: [rollback, deployment, drift]
    default: rollback
  findings:
    description:
      - With O(judge=deployment) or O(judge=drift), the level of each finding kind (see O(judge)), V(fail),
        V(warn) or V(ignore).
        A kind maps to a level for every object, or to a mapping of object keys (as the findings name them,
        for example C(table public.audit_log)) to levels, with V(default) for the other objects.
      - A kind or level not known fails the task before anything is read.
    type: dict
    default: {}
  fail_on_difference:
    description: Fail when the comparison finds a difference (with O(judge=deployment) or O(judge=drift), a broken one).
    type: bool
    default: true
extends_documentation_fragment:
  - intowork.pgops._connection
  - intowork.pgops._connection.ATTRIBUTES
attributes:
  check_mode:
    support: full
    details: Reads and compares; grants nothing back, and lists what it would grant.
  diff_mode:
    support: none
  idempotent:
    support: full
author:
  - INTOWORK platform team (@intowork)
"""

EXAMPLES = r"""
- name: Snapshot the catalog before the deployment
  intowork.pgops.schema_snapshot:
  register: catalog_before

- name: Name what changed in the catalog since the last deployment proved it
  intowork.pgops.schema_snapshot:
    compare_to_file: /var/backups/pgops/intowork.catalog-baseline.json
    judge: drift
    compare_rows: false

- name: After a rollback, prove the catalog and rows are as before, granting lost privileges back
  intowork.pgops.schema_snapshot:
    compare_to: "{{ catalog_before.snapshot }}"
    restore_grants: true
"""

RETURN = r"""
snapshot:
  description: The catalog and row counts, to give to a later run as O(compare_to).
  returned: always
  type: dict
seconds:
  description: Time the snapshot (and the comparison) took.
  returned: always
  type: float
object_count:
  description: Objects in the snapshot.
  returned: always
  type: int
estimated_tables:
  description: Tables larger than O(exact_count_max_rows), compared by the planner's estimate.
  returned: always
  type: list
  elements: str
compared_with:
  description: What the earlier snapshot is, in words (its O(label), and when it was taken).
  returned: when O(compare_to) is given
  type: str
  sample: the catalog deployment 20261208T010203-alice proved (2026-12-08T01:02:09Z)
differences:
  description: One line per difference from O(compare_to), after any privileges were granted back.
  returned: when O(compare_to) is given
  type: list
  elements: str
  sample: ["table public.books: column isbn is gone", "table public.books: 5 rows before, 0 now (5 lost)"]
broken:
  description: With O(judge=deployment) or O(judge=drift), the findings at level V(fail), one line each, the kind in brackets.
  returned: when O(compare_to) is given and O(judge) is V(deployment) or V(drift)
  type: list
  elements: str
warned:
  description: With O(judge=deployment) or O(judge=drift), the findings at level V(warn), one line each, the kind in brackets.
  returned: when O(compare_to) is given and O(judge) is V(deployment) or V(drift)
  type: list
  elements: str
ignored:
  description: With O(judge=deployment) or O(judge=drift), the findings O(findings) set to V(ignore), one line each.
  returned: when O(compare_to) is given and O(judge) is V(deployment) or V(drift)
  type: list
  elements: str
changes:
  description: With O(judge=deployment), the other differences, the migration's own changes.
  returned: when O(compare_to) is given and O(judge=deployment)
  type: list
  elements: str
destroyed:
  description:
    - What held data in O(compare_to) and is gone or rewritten now, one line each, from the catalog and the
      earlier snapshot's rows; a table that had rows, a column of such a table, a column whose type changed.
    - A downgrade would re-create these empty; only a restore gives their data back.
  returned: when O(compare_to) is given
  type: list
  elements: str
  sample: ["table public.books: column isbn (5 rows) is gone"]
grants_restored:
  description: Privileges granted back (in check mode, those that would be).
  returned: when O(compare_to) is given
  type: list
  elements: str
  sample: ["SELECT on table public.books to bookshelf_reader"]
grants_revoked:
  description: Privileges revoked (in check mode, those that would be).
  returned: when O(compare_to) is given
  type: list
  elements: str
  sample: ["SELECT on table public.authors from bookshelf_reader"]
"""

import json
import os
import pwd
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.intowork.pgops.plugins.module_utils._connection import (
    PgopsError,
    connect,
    connection_spec,
    require_psycopg2,
    run_module,
    target_label,
)
from ansible_collections.intowork.pgops.plugins.module_utils._findings import (
    DRIFT_KINDS,
    FINDING_KINDS,
    finding_level_problems,
)
from ansible_collections.intowork.pgops.plugins.module_utils._schema_snapshot import (
    compare,
    destroyed,
    estimated_tables,
    findings_by_change,
    findings_by_drift,
    judge_findings,
    with_privileges_of,
    privilege_changes,
    privilege_line,
    privilege_statement,
    take,
    without_new_empty_version_table,
)


def read(conn, params, count=True):
    conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
    try:
        return take(conn, params["schemas"], params["exact_count_max_rows"], count)
    finally:
        conn.rollback()
        conn.set_session(isolation_level="DEFAULT", readonly=False)


def load(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError) as error:
        raise PgopsError("cannot read the snapshot %s (%s): give the file schema_snapshot wrote with path" % (
            path, error))


def account_ids(owner):
    try:
        entry = pwd.getpwnam(owner)
    except KeyError:
        raise PgopsError("owner %s is not an account on this host: give the account that reads the snapshot next" % (
            json.dumps(owner)))
    return entry.pw_uid, entry.pw_gid


def folder_owner(folder):
    """Run as root with no owner given, the account owning the folder the file lands in (the backup account's
    folder): whoever reads the file next is that folder's owner, not root."""
    try:
        info = os.stat(folder)
    except OSError:
        return None  # said when the file is written
    return (info.st_uid, info.st_gid) if os.geteuid() == 0 and info.st_uid != 0 else None


def write(path, snapshot, owner=None):
    """Replace `path` whole with the snapshot, readable by its owner only (`owner`, given before it has its name)."""
    folder = os.path.dirname(os.path.abspath(path))
    ids = account_ids(owner) if owner else folder_owner(folder)
    partial = None
    try:
        handle, partial = tempfile.mkstemp(dir=folder, prefix=".%s." % os.path.basename(path), suffix=".partial")
        with os.fdopen(handle, "w") as stream:
            json.dump(snapshot, stream, sort_keys=True)
        if ids and ids[0] != os.geteuid():
            try:
                os.chown(partial, *ids)
            except PermissionError:
                raise PgopsError("cannot give the snapshot %s to %s: only root can; run with become, or as %s" % (
                    path, owner, owner))
        os.rename(partial, path)
    except OSError as error:
        raise PgopsError("cannot write the snapshot to %s (%s): give a path in a folder this account can write" % (
            path, error))
    finally:
        if partial and os.path.exists(partial):
            os.unlink(partial)


# The inventory variable an operator sets a finding kind's level in, per judge.
FINDINGS_VARIABLE = {"deployment": "pgops_catalog_findings", "drift": "pgops_drift_findings"}


def described(snapshot):
    """What an earlier snapshot is, in words: its label, and when it was taken."""
    taken = snapshot.get("taken")
    if snapshot.get("label"):
        return "%s%s" % (snapshot["label"], " (%s)" % taken if taken else "")
    return "the snapshot taken %s" % taken if taken else "the snapshot"


def labelled(snapshot, label):
    return dict(snapshot, label=label) if label else snapshot


def snapshot(params, check_mode):
    kinds = DRIFT_KINDS if params["judge"] == "drift" else FINDING_KINDS
    problems = finding_level_problems(params["findings"], kinds)
    if problems:
        raise PgopsError("findings: %s; nothing was read" % "; ".join(problems))
    if params["exact_count_max_rows"] < 0:
        raise PgopsError("exact_count_max_rows %d is negative: give 0 (estimates only) or more" % (
            params["exact_count_max_rows"]))
    before = load(params["compare_to_file"]) if params["compare_to_file"] else params["compare_to"]
    if before is not None and not isinstance(before.get("objects"), dict):
        raise PgopsError("compare_to is not a snapshot (it has no objects): give an earlier result's snapshot")
    # Rows compared are counted alike on both sides.
    if before is not None and "exact_count_max_rows" in before and params["compare_rows"]:
        params = dict(params, exact_count_max_rows=before["exact_count_max_rows"])
    conn = connect(params)
    try:
        started = time.monotonic()
        # Rows are counted for a comparison of rows, or for a snapshot a later run compares with.
        now = read(conn, params, count=before is None or params["compare_rows"])
        result = {"changed": False, "snapshot": now, "object_count": now["object_count"],
                  "estimated_tables": estimated_tables(now)}
        if before is None:
            result["seconds"] = round(time.monotonic() - started, 3)
            if params["path"] and not check_mode:
                write(params["path"], labelled(now, params["label"]), params["owner"])
                result["changed"] = True
            return result
        now = without_new_empty_version_table(before, now)
        result.update(snapshot=now, object_count=now["object_count"], compared_with=described(before))
        changes = []
        if params["restore_grants"]:
            changes = privilege_changes(before, now)
            statements = [privilege_statement(*change) for change in changes]
            if statements and not check_mode:
                with conn.cursor() as cur:
                    for statement in statements:
                        cur.execute(statement)
                conn.commit()
                now = without_new_empty_version_table(before, read(conn, params, count=params["compare_rows"]))
                result["snapshot"] = now
            result["changed"] = bool(statements)
        result["grants_restored"] = [privilege_line(*change) for change in changes if change[0].startswith("GRANT")]
        result["grants_revoked"] = [privilege_line(*change) for change in changes if change[0].startswith("REVOKE")]
        if check_mode and changes:
            # Nothing was granted or revoked: compare as if it had been.
            now = dict(now, objects=with_privileges_of(before, now["objects"]))
        result["differences"] = compare(before, now, rows=params["compare_rows"])
        result["destroyed"] = destroyed(before, now)
        result["seconds"] = round(time.monotonic() - started, 3)
        if params["judge"] == "rollback":
            proven = not result["differences"]
            if not proven and params["fail_on_difference"]:
                result["failed"] = True
                result["msg"] = "%s differs from the snapshot in %d way(s): %s" % (
                    target_label(params), len(result["differences"]), "; ".join(result["differences"]))
        else:
            if params["judge"] == "deployment":
                findings, result["changes"] = findings_by_change(before, now, rows=params["compare_rows"])
            else:
                findings = findings_by_drift(before, now)
            judged = judge_findings(findings, params["findings"], kinds)
            result.update(broken=judged["fail"], warned=judged["warn"], ignored=judged["ignore"])
            proven = not result["broken"]
            if result["broken"] and params["fail_on_difference"]:
                if params["judge"] == "deployment":
                    what = "the deployment broke %d thing(s) on %s" % (len(result["broken"]), target_label(params))
                else:
                    what = "%s changed in %d way(s) since %s" % (
                        target_label(params), len(result["broken"]), described(before))
                result["failed"] = True
                result["msg"] = ("%s: %s. Each kind (in brackets) can be set to warn, for one object or all, in "
                                 "findings (%s)" % (what, "; ".join(result["broken"]),
                                                    FINDINGS_VARIABLE[params["judge"]]))
        # Only a catalog the comparison proved becomes the file a later run compares with.
        if proven and params["path"] and not check_mode:
            write(params["path"], labelled(now, params["label"]), params["owner"])
            result["changed"] = True
        return result
    finally:
        conn.close()


def main():
    argument_spec = connection_spec()
    argument_spec.update(
        schemas=dict(type="list", elements="str", default=[]),
        exact_count_max_rows=dict(type="int", default=1000000),
        compare_to=dict(type="dict"),
        compare_to_file=dict(type="path"),
        path=dict(type="path"),
        owner=dict(type="str"),
        restore_grants=dict(type="bool", default=False),
        fail_on_difference=dict(type="bool", default=True),
        compare_rows=dict(type="bool", default=True),
        judge=dict(type="str", default="rollback", choices=["rollback", "deployment", "drift"]),
        label=dict(type="str"),
        findings=dict(type="dict", default={}),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           mutually_exclusive=[("compare_to", "compare_to_file")])
    require_psycopg2(module)
    run_module(module, snapshot)


if __name__ == "__main__":
    main()
