#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: integrity_check
short_description: Prove a PostgreSQL database's data is consistent, with counts and sample keys
version_added: 0.1.0
description:
  - Finds orphaned rows for every declared foreign key and for extra logical relations, duplicates over
    a key set, constraints still C(NOT VALID) (with the rows that would violate them), rows violating
    given check conditions, and takes a row-count snapshot that a later run can compare against.
  - Orphan checks are NULL-safe anti-joins (C(NOT EXISTS)), never C(NOT IN (subquery)), which a NULL
    makes return nothing and which turns into a per-row subplan on large tables.
  - All checks run in one C(REPEATABLE READ READ ONLY) transaction, so they see one snapshot; each has
    its own O(statement_timeout) and a check that hits it is reported as timed out, never as passed.
  - Every finding has a count and up to O(sample_size) sample keys (primary key and checked columns).
  - Read-only. Unknown tables or columns, and conditions that do not parse, fail the task before any
    check runs.
options:
  spec_file:
    description:
      - YAML file with any of the keys C(relations), C(duplicates), C(checks), C(row_counts) and
        C(expected_foreign_keys), shaped like
        the options of those names, read on the managed host. An option given inline, even an empty list,
        takes precedence over the file's key of the same name.
    type: path
  schema:
    description: Schema of the tables to check.
    type: str
    default: public
  foreign_keys:
    description: Check every declared foreign key of the schema for orphans.
    type: bool
    default: true
  relations:
    description:
      - Logical relations that no constraint declares, checked for orphans like foreign keys.
    type: list
    elements: dict
    suboptions:
      name:
        description: Name for the report.
        type: str
        required: true
      table:
        description: Referencing table.
        type: str
        required: true
      columns:
        description: Referencing columns.
        type: list
        elements: str
        required: true
      references:
        description: Referenced table.
        type: str
        required: true
      referenced_columns:
        description: Referenced columns, in the order of O(relations[].columns).
        type: list
        elements: str
        required: true
      where:
        description: SQL filter on the referencing rows (alias C(t)), for example C(t.deleted_at IS NULL).
        type: str
  duplicates:
    description: Key sets that should be unique; rows with a NULL key are not duplicates (as in a unique index).
    type: list
    elements: dict
    suboptions:
      name:
        description: Name for the report.
        type: str
        required: true
      table:
        description: Table to check.
        type: str
        required: true
      columns:
        description: Columns that together should be unique.
        type: list
        elements: str
        required: true
      where:
        description: SQL filter, for example C(status <> 'rejected').
        type: str
  not_valid_constraints:
    description: Report constraints still C(NOT VALID) and count the rows that violate each.
    type: bool
    default: true
  checks:
    description: Conditions every row must meet; a row violates one when the condition is false (NULL passes, as in CHECK).
    type: list
    elements: dict
    suboptions:
      name:
        description: Name for the report.
        type: str
        required: true
      table:
        description: Table to check.
        type: str
        required: true
      condition:
        description: SQL boolean expression over the table's columns.
        type: str
        required: true
      where:
        description: SQL filter limiting the rows checked.
        type: str
  row_counts:
    description: Tables to count exactly; the counts are returned as RV(row_counts).
    type: list
    elements: str
  expected_foreign_keys:
    description:
      - Foreign keys the application relies on. One the catalog no longer has (dropped by a hand fix, or
        lost in a partial restore) is a finding, and its rows are checked for orphans as a relation.
    type: list
    elements: dict
    suboptions:
      name:
        description: Name for the report.
        type: str
        required: true
      table:
        description: Referencing table.
        type: str
        required: true
      columns:
        description: Referencing columns.
        type: list
        elements: str
        required: true
      references:
        description: Referenced table.
        type: str
        required: true
      referenced_columns:
        description: Referenced columns; the referenced table's primary key when left out.
        type: list
        elements: str
  catalog_checks:
    description:
      - Also check what breaks an application while every name is in place, without reading the data
        twice - triggers left disabled (foreign keys then go unenforced) and sequences behind the
        column they feed (every insert then fails on the key).
    type: bool
    default: true
  compare_to:
    description:
      - Row counts from an earlier run (its RV(row_counts)), compared under O(compare_policy).
    type: dict
  compare_policy:
    description:
      - V(equal) requires every count unchanged; V(no_loss) requires no count to have dropped.
    type: str
    choices: [equal, no_loss]
    default: no_loss
  sample_size:
    description: Sample keys returned per finding.
    type: int
    default: 5
  statement_timeout:
    description: Milliseconds each check may run.
    type: int
    default: 60000
  fail_on:
    description: Finding kinds that make the task fail.
    type: list
    elements: str
    choices: [orphans, duplicates, not_valid, check_violations, row_counts, timeouts, missing_foreign_keys,
              disabled_triggers, sequences_behind]
    default: [orphans, duplicates, not_valid, check_violations, row_counts, timeouts, missing_foreign_keys,
              disabled_triggers, sequences_behind]
extends_documentation_fragment:
  - intowork.pgops._connection
  - intowork.pgops._connection.ATTRIBUTES
attributes:
  check_mode:
    support: full
    details: Read-only, so check mode runs the same checks.
  diff_mode:
    support: none
  idempotent:
    support: full
author:
  - INTOWORK platform team (@intowork)
"""

EXAMPLES = r"""
- name: Check INTOWORK data before a deployment and keep the row counts
  intowork.pgops.integrity_check:
    relations:
      - name: verification_tokens_user
        table: verification_tokens
        columns: [identifier]
        references: users
        referenced_columns: [email]
    duplicates:
      - name: active_applications
        table: job_applications
        columns: [candidate_id, job_id]
        where: status <> 'rejected'
    checks:
      - name: salary_range
        table: jobs
        condition: salary_min <= salary_max
    row_counts: [users, jobs, job_applications]
  register: before

- name: After the migration, no table may have lost rows
  intowork.pgops.integrity_check:
    foreign_keys: false
    not_valid_constraints: false
    row_counts: [users, jobs, job_applications]
    compare_to: "{{ before.row_counts }}"
    compare_policy: no_loss
"""

RETURN = r"""
orphans:
  description: One entry per foreign key or relation checked, with RV(orphans[].count) and RV(orphans[].sample).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Constraint or relation name.
      type: str
    count:
      description: Orphaned rows; null when the check timed out.
      type: int
    sample:
      description: Up to O(sample_size) rows of key columns.
      type: list
      elements: dict
    status:
      description: V(ok), V(found) or V(timed_out).
      type: str
    elapsed_ms:
      description: Time the check took.
      type: float
duplicates:
  description: One entry per key set, with the number of duplicated keys, the excess rows and sample keys.
  returned: always
  type: list
  elements: dict
not_valid:
  description: Constraints still NOT VALID, with the number of rows violating each.
  returned: always
  type: list
  elements: dict
check_violations:
  description: One entry per condition, with the violating rows' count and sample keys.
  returned: always
  type: list
  elements: dict
row_counts:
  description: Exact row count per table of O(row_counts).
  returned: always
  type: dict
row_count_changes:
  description: Tables whose count breaks O(compare_policy) against O(compare_to).
  returned: always
  type: list
  elements: dict
missing_foreign_keys:
  description: Entries of O(expected_foreign_keys) that the catalog does not have.
  returned: always
  type: list
  elements: dict
disabled_triggers:
  description: Disabled triggers (C(table), C(trigger), C(internal)); internal ones enforce foreign keys.
  returned: always
  type: list
  elements: dict
sequences_behind:
  description: One entry per sequence that feeds a column; V(found) when it lags behind the column's maximum.
  returned: always
  type: list
  elements: dict
timed_out:
  description: Names of the checks that hit O(statement_timeout).
  returned: always
  type: list
  elements: str
failed_checks:
  description: The finding kinds that made the task fail.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.intowork.pgops.plugins.module_utils._catalog import INTEGRITY_CATALOG
from ansible_collections.intowork.pgops.plugins.module_utils._connection import (
    PgopsError,
    connect,
    connection_spec,
    require_psycopg2,
    run_module,
)
from ansible_collections.intowork.pgops.plugins.module_utils._integrity import (
    COMPARE_POLICIES,
    KINDS,
    compare_counts,
    disabled_triggers,
    missing_foreign_keys,
    load_spec_file,
    plan,
    require_single_expressions,
    run,
)


def check_integrity(params, check_mode):
    if params["spec_file"]:
        params = dict(params)
        for key, value in load_spec_file(params["spec_file"]).items():
            if params[key] is None:
                params[key] = value
    require_single_expressions(params)
    conn = connect(params)
    try:
        with conn.cursor() as cur:
            cur.execute(INTEGRITY_CATALOG, {"schema": params["schema"]})
            row = cur.fetchone()
        conn.rollback()
        if row is None:
            raise PgopsError("schema %r does not exist in the database: check the schema option" % params["schema"])
        catalog = {"relations": row[0], "constraints": row[1], "sequences": row[2], "disabled_triggers": row[3]}
        checks = plan(catalog, params["schema"], params)
        results = run(conn, checks, params["statement_timeout"], params["sample_size"])
    finally:
        conn.close()

    result = dict((kind, [r for r in results if r["kind"] == kind])
                  for kind in ("orphans", "duplicates", "not_valid", "check_violations", "sequences_behind"))
    result["missing_foreign_keys"] = missing_foreign_keys(catalog, params)
    result["disabled_triggers"] = disabled_triggers(catalog, params)
    counted = [r for r in results if r["kind"] == "row_counts"]
    result["row_counts"] = counted[0]["counts"] if counted and counted[0]["status"] == "ok" else {}
    result["timed_out"] = [r["name"] for r in results if r["status"] == "timed_out"]
    result["row_count_changes"] = (compare_counts(params["compare_to"], result["row_counts"], params["compare_policy"])
                                   if params["compare_to"] is not None else [])
    found = {
        "orphans": any(r["status"] == "found" for r in result["orphans"]),
        "duplicates": any(r["status"] == "found" for r in result["duplicates"]),
        "not_valid": bool(result["not_valid"]),
        "check_violations": any(r["status"] == "found" for r in result["check_violations"]),
        "row_counts": bool(result["row_count_changes"]),
        "timeouts": bool(result["timed_out"]),
        "missing_foreign_keys": bool(result["missing_foreign_keys"]),
        "disabled_triggers": bool(result["disabled_triggers"]),
        "sequences_behind": any(r["status"] == "found" for r in result["sequences_behind"]),
    }
    result["failed_checks"] = [kind for kind in params["fail_on"] if found[kind]]
    result["changed"] = False
    if result["failed_checks"]:
        result["failed"] = True
        result["msg"] = "integrity check failed on schema %s: %s" % (params["schema"], summary(result))
    return result


def summary(result):
    parts = []
    for kind in ("orphans", "duplicates", "not_valid", "check_violations"):
        for entry in result[kind]:
            if entry["kind"] == "not_valid":
                parts.append("%s is NOT VALID (%s violating rows)" % (entry["name"], entry["count"]))
            elif entry["status"] == "found":
                parts.append("%s %s: %d" % (kind.replace("_", " "), entry["name"], entry["count"]))
    for entry in result["missing_foreign_keys"]:
        parts.append("foreign key %s (%s.%s -> %s) is gone from the catalog" % (
            entry["name"], entry["table"], ",".join(entry["columns"]), entry["references"]))
    for entry in result["disabled_triggers"]:
        parts.append("trigger %s on %s is disabled, so %s is not enforced" % (
            entry["trigger"], entry["table"], entry["enforces"]))
    for entry in result["sequences_behind"]:
        if entry["status"] == "found":
            fact = entry["sample"][0]
            parts.append("sequence %s is at %s, behind %s.%s (max %s): the next insert fails on a duplicate key" % (
                entry["sequence"], fact["sequence_last"], entry["table"], entry["column"], fact["column_max"]))
    parts.extend("%s timed out" % name for name in result["timed_out"])
    parts.extend("%s %s" % (change["table"], change["reason"]) for change in result["row_count_changes"])
    return "; ".join(parts)


def main():
    argument_spec = connection_spec()
    argument_spec.update(
        spec_file=dict(type="path"),
        schema=dict(type="str", default="public"),
        foreign_keys=dict(type="bool", default=True),
        relations=dict(type="list", elements="dict", options=dict(
            name=dict(type="str", required=True),
            table=dict(type="str", required=True),
            columns=dict(type="list", elements="str", required=True),
            references=dict(type="str", required=True),
            referenced_columns=dict(type="list", elements="str", required=True),
            where=dict(type="str"),
        )),
        duplicates=dict(type="list", elements="dict", options=dict(
            name=dict(type="str", required=True),
            table=dict(type="str", required=True),
            columns=dict(type="list", elements="str", required=True),
            where=dict(type="str"),
        )),
        not_valid_constraints=dict(type="bool", default=True),
        checks=dict(type="list", elements="dict", options=dict(
            name=dict(type="str", required=True),
            table=dict(type="str", required=True),
            condition=dict(type="str", required=True),
            where=dict(type="str"),
        )),
        row_counts=dict(type="list", elements="str"),
        expected_foreign_keys=dict(type="list", elements="dict", no_log=False, options=dict(
            name=dict(type="str", required=True),
            table=dict(type="str", required=True),
            columns=dict(type="list", elements="str", required=True),
            references=dict(type="str", required=True),
            referenced_columns=dict(type="list", elements="str"),
        )),
        catalog_checks=dict(type="bool", default=True),
        compare_to=dict(type="dict"),
        compare_policy=dict(type="str", choices=COMPARE_POLICIES, default="no_loss"),
        sample_size=dict(type="int", default=5),
        statement_timeout=dict(type="int", default=60000),
        fail_on=dict(type="list", elements="str", choices=KINDS, default=KINDS),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    require_psycopg2(module)
    run_module(module, check_integrity)


if __name__ == "__main__":
    main()
