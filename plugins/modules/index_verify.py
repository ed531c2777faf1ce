#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: index_verify
short_description: Compare the indexes a database should have with the ones it has
version_added: 0.1.0
description:
  - Reads every index, foreign key and index usage counter of one schema in a single catalog query.
  - Compares the indexes with an expected specification, given inline or as a YAML file, and reports
    those missing, present but invalid or not ready (a failed concurrent build), and present with a
    different structure (keys, order, operator class, include columns, method, uniqueness, predicate,
    backing constraint).
  - Whatever the specification, also reports duplicate indexes, redundant ones (keys a leading prefix
    of another btree index's), unused ones (never scanned since the statistics reset, constraint
    indexes excepted), and foreign keys that no index supports.
  - Read-only; never changes anything. A table or plain column of the specification that the schema
    lacks is an error naming it, before any comparison.
options:
  indexes:
    description:
      - Expected indexes. Each entry has O(indexes[].name) and O(indexes[].table).
      - Mutually exclusive with O(spec_file). With neither, only the schema-wide findings are reported.
    type: list
    elements: dict
    suboptions:
      name:
        description: Index name (for a constraint's index, the constraint name).
        type: str
        required: true
      table:
        description: Table or materialized view the index belongs to.
        type: str
        required: true
      columns:
        description: Key columns or expressions, optionally followed by ASC/DESC or an operator class.
        type: list
        elements: str
      method:
        description: Access method.
        type: str
        default: btree
      unique:
        description: Whether the index is unique.
        type: bool
        default: false
      constraint:
        description: Whether a constraint of the same name must use the index.
        type: bool
        default: false
      where:
        description: Predicate of a partial index.
        type: str
      include:
        description: Non-key columns of a covering index.
        type: list
        elements: str
      revision:
        description: Migration that creates the index (informational).
        type: str
      purpose:
        description: Why the index exists (informational).
        type: str
  spec_file:
    description:
      - YAML file with a top-level C(indexes) list of entries shaped like O(indexes), and an optional C(schema).
      - Read on the managed host.
    type: path
  revisions:
    description:
      - Migration revisions applied to the database. When set, only entries whose O(indexes[].revision)
        is in this list, or that name no revision, are expected; the others are counted in RV(not_yet_expected).
      - Lets one strategy file serve every revision, for example with RV(intowork.pgops.alembic_migration#module:history).
    type: list
    elements: str
  schema:
    description:
      - Schema to inspect. Defaults to the spec file's C(schema), else C(public).
    type: str
  count_pattern:
    description:
      - Regular expression; the module counts the valid indexes of the schema whose names match it.
    type: str
  fail_on:
    description:
      - Findings that make the task fail.
    type: list
    elements: str
    choices: [missing, invalid, different, duplicate, redundant, unused, unindexed_fk]
    default: [missing, invalid, different, duplicate, unindexed_fk]
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
- name: Verify the INTOWORK index strategy
  intowork.pgops.index_verify:
    spec_file: "{{ playbook_dir }}/../examples/intowork/index_strategy.yml"
    count_pattern: "^(ix|uq)_"

- name: Check one index, tolerating a definition change
  intowork.pgops.index_verify:
    indexes:
      - name: ix_jobs_company_id
        table: jobs
        columns: [company_id]
    fail_on: [missing, invalid]
"""

RETURN = r"""
schema:
  description: Schema inspected.
  returned: always
  type: str
not_yet_expected:
  description: Entries skipped because their revision is not in O(revisions).
  returned: always
  type: int
expected:
  description: Number of indexes expected (after O(revisions) filtering).
  returned: always
  type: int
ok:
  description: Names of expected indexes present, valid and as specified.
  returned: always
  type: list
  elements: str
missing:
  description: Expected indexes not found.
  returned: always
  type: list
  elements: dict
invalid:
  description: Expected indexes present but not valid or not ready, with their definition.
  returned: always
  type: list
  elements: dict
different:
  description: Expected indexes present with another method, uniqueness, predicate or constraint, and why.
  returned: always
  type: list
  elements: dict
pattern_count:
  description: Valid indexes of the schema whose names match O(count_pattern).
  returned: when O(count_pattern) is set
  type: int
duplicate:
  description: Valid indexes with the same table, method, keys and predicate as another; the one to drop is named.
  returned: always
  type: list
  elements: dict
redundant:
  description: Non-unique btree indexes whose keys lead another index of the same table and predicate.
  returned: always
  type: list
  elements: dict
unused:
  description: Indexes never scanned since RV(stats_reset), with their size; constraint indexes are left out.
  returned: always
  type: list
  elements: dict
unindexed_fk:
  description: Foreign keys whose columns lead no valid, non-partial index of the referencing table.
  returned: always
  type: list
  elements: dict
stats_reset:
  description: When the database's statistics were last reset; null when never.
  returned: always
  type: str
index_count:
  description: Indexes in the schema.
  returned: always
  type: int
failed_checks:
  description: The finding kinds that made the task fail.
  returned: always
  type: list
  elements: str
"""

import re

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.intowork.pgops.plugins.module_utils._catalog import INDEX_CATALOG
from ansible_collections.intowork.pgops.plugins.module_utils._connection import (
    PgopsError,
    connect,
    connection_spec,
    psycopg2,
    require_psycopg2,
    run_module,
)
from ansible_collections.intowork.pgops.plugins.module_utils._index_spec import (
    FINDINGS,
    compare,
    load_spec_file,
    overlaps,
    unindexed_foreign_keys,
    unused,
    validate_entries,
)

DEFAULT_FAIL_ON = ["missing", "invalid", "different", "duplicate", "unindexed_fk"]
CATALOG_LOCK_TIMEOUT_SECONDS = 10
LOCK_NOT_AVAILABLE = "55P03"


def verify(params, check_mode):
    file_schema = None
    if params["spec_file"]:
        file_schema, raw_entries = load_spec_file(params["spec_file"])
    else:
        raw_entries = params["indexes"] or []
    entries = validate_entries(raw_entries)
    strategy_names = [entry["name"] for entry in entries]
    not_yet_expected = 0
    if params["revisions"] is not None:
        applied = set(params["revisions"])
        expected = [entry for entry in entries if not entry.get("revision") or entry["revision"] in applied]
        not_yet_expected = len(entries) - len(expected)
        entries = expected
    schema = params["schema"] or file_schema or "public"
    pattern = None
    if params["count_pattern"]:
        try:
            pattern = re.compile(params["count_pattern"])
        except re.error as error:
            raise PgopsError("count_pattern %r is not a valid regular expression: %s" % (params["count_pattern"], error))

    conn = connect(params)
    try:
        with conn.cursor() as cur:
            conn.set_session(readonly=True)
            # Index sizes need a share lock on each table: behind an exclusive lock, fail clearly, never hang.
            cur.execute("SET LOCAL lock_timeout = %s", ("%ds" % CATALOG_LOCK_TIMEOUT_SECONDS,))
            try:
                cur.execute(INDEX_CATALOG, {"schema": schema})
            except psycopg2.OperationalError as error:
                if error.pgcode != LOCK_NOT_AVAILABLE:
                    raise
                raise PgopsError("the index catalog of schema %s could not be read: a table is locked exclusively "
                                 "for more than %d s (see pg_locks); run again when it is free" % (
                                     schema, CATALOG_LOCK_TIMEOUT_SECONDS))
            row = cur.fetchone()
        conn.rollback()
    finally:
        conn.close()
    if row is None:
        raise PgopsError("schema %r does not exist in the database: check the schema option" % schema)
    catalog = {"relations": row[0], "indexes": row[1], "foreign_keys": row[2],
               "stats_reset": row[3].isoformat() if row[3] else None}

    findings = compare(entries, catalog)
    findings["duplicate"], findings["redundant"] = overlaps(catalog, strategy_names)
    findings["unused"] = unused(catalog)
    findings["unindexed_fk"] = unindexed_foreign_keys(catalog)
    result = dict(findings, schema=schema, expected=len(entries), not_yet_expected=not_yet_expected,
                  stats_reset=catalog["stats_reset"], index_count=len(catalog["indexes"]), changed=False)
    if pattern is not None:
        result["pattern_count"] = sum(1 for index in catalog["indexes"]
                                      if index["valid"] and pattern.search(index["name"]))
    result["failed_checks"] = [kind for kind in params["fail_on"] if findings[kind]]
    if result["failed_checks"]:
        summary = "; ".join("%s: %s" % (kind, ", ".join(item["name"] for item in findings[kind]))
                            for kind in result["failed_checks"])
        result["failed"] = True
        result["msg"] = "index verification failed on schema %s: %s" % (schema, summary)
    return result


def main():
    argument_spec = connection_spec()
    argument_spec.update(
        indexes=dict(type="list", elements="dict", options=dict(
            name=dict(type="str", required=True),
            table=dict(type="str", required=True),
            columns=dict(type="list", elements="str"),
            method=dict(type="str", default="btree"),
            unique=dict(type="bool", default=False),
            constraint=dict(type="bool", default=False),
            where=dict(type="str"),
            include=dict(type="list", elements="str"),
            revision=dict(type="str"),
            purpose=dict(type="str"),
        )),
        spec_file=dict(type="path"),
        revisions=dict(type="list", elements="str"),
        schema=dict(type="str"),
        count_pattern=dict(type="str"),
        fail_on=dict(type="list", elements="str", choices=FINDINGS, default=DEFAULT_FAIL_ON),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        mutually_exclusive=[("indexes", "spec_file")],
    )
    require_psycopg2(module)
    run_module(module, verify)


if __name__ == "__main__":
    main()
