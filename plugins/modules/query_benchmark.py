#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: query_benchmark
short_description: Time critical queries and check their plans against targets
version_added: 0.1.0
description:
  - Runs named SQL queries with parameters, after unmeasured warm-up runs, and reports the p50, p95 and
    maximum latency of each, measured at the client.
  - Reads each query's plan (C(EXPLAIN (FORMAT JSON)), which does not run it) and reports sequential scans
    of tables larger than O(seq_scan_rows) and an expected index the plan does not use.
  - A query whose p95 exceeds its C(max_ms) target, or a plan finding listed in O(fail_on), fails the task.
  - Queries run in a read-only transaction that is rolled back, so a query that writes fails instead.
options:
  queries:
    description: Queries to run. Mutually exclusive with O(queries_file).
    type: list
    elements: dict
    suboptions:
      name:
        description: Name for the report.
        type: str
        required: true
      sql:
        description: The query, with C(%(name\)s) placeholders for O(queries[].params).
        type: str
        required: true
      params:
        description: Values for the placeholders, passed as query parameters.
        type: dict
      max_ms:
        description: Target for the p95 latency in milliseconds.
        type: float
      expect_index:
        description: Index the plan must use.
        type: str
      purpose:
        description: What the query serves (informational).
        type: str
      revision:
        description:
          - The migration revision that made what the query needs (a column, the index it expects).
          - With O(revisions), the query runs only once that revision is applied.
        type: str
  queries_file:
    description: YAML file with a top-level C(queries) list shaped like O(queries), read on the managed host.
    type: path
  revisions:
    description:
      - Migration revisions applied to the database. When set, only queries whose O(queries[].revision) is in
        this list, or that name no revision, run; the others are counted in RV(not_yet_expected).
      - Lets one queries file serve every revision, for example after a rollback, with
        RV(intowork.pgops.alembic_migration#module:current_history).
    type: list
    elements: str
  only:
    description: Names of the queries to run; all when empty.
    type: list
    elements: str
    default: []
  warmup:
    description: Unmeasured runs of each query before timing, to warm the caches.
    type: int
    default: 3
  iterations:
    description: Timed runs of each query.
    type: int
    default: 20
  seq_scan_rows:
    description: A sequential scan of a table with more rows than this is a finding.
    type: int
    default: 10000
  fail_on:
    description: Finding kinds that make the task fail.
    type: list
    elements: str
    choices: [threshold, seq_scan, index_not_used]
    default: [threshold, seq_scan, index_not_used]
extends_documentation_fragment:
  - intowork.pgops._connection
  - intowork.pgops._connection.ATTRIBUTES
attributes:
  check_mode:
    support: full
    details: Read-only, so check mode runs the same measurements.
  diff_mode:
    support: none
  idempotent:
    support: full
author:
  - INTOWORK platform team (@intowork)
"""

EXAMPLES = r"""
- name: Time the INTOWORK critical queries against their targets
  intowork.pgops.query_benchmark:
    queries_file: /srv/intowork/current/critical_queries.yml

- name: Take a baseline without failing on targets
  intowork.pgops.query_benchmark:
    queries:
      - name: job_list_remote
        sql: SELECT id FROM jobs WHERE status = 'published' AND location_type = %(type)s LIMIT 20
        params:
          type: remote
        max_ms: 20
    fail_on: []
"""

RETURN = r"""
not_yet_expected:
  description: Queries not run because their revision is not in O(revisions).
  returned: always
  type: int
queries:
  description: One report per query.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Query name.
      type: str
    p50_ms:
      description: Median latency in milliseconds.
      type: float
    p95_ms:
      description: 95th percentile latency in milliseconds.
      type: float
    max_ms:
      description: Slowest timed run in milliseconds.
      type: float
    threshold_ms:
      description: The query's target, if any.
      type: float
    rows:
      description: Rows the query returned.
      type: int
    indexes_used:
      description: Indexes in the plan.
      type: list
      elements: str
    findings:
      description: Threshold and plan findings, each with C(kind) and C(detail).
      type: list
      elements: dict
failed_checks:
  description: The finding kinds that made the task fail.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.intowork.pgops.plugins.module_utils._benchmark import (
    FINDINGS,
    benchmark,
    load_queries_file,
    validate_queries,
)
from ansible_collections.intowork.pgops.plugins.module_utils._connection import (
    PgopsError,
    connect,
    connection_spec,
    require_psycopg2,
    run_module,
)


def run_benchmark(params, check_mode):
    raw = load_queries_file(params["queries_file"]) if params["queries_file"] else params["queries"]
    queries = validate_queries(raw, params["only"])
    not_yet_expected = 0
    if params["revisions"] is not None:
        applied = set(params["revisions"])
        expected = [query for query in queries if not query.get("revision") or query["revision"] in applied]
        not_yet_expected, queries = len(queries) - len(expected), expected
    if params["iterations"] < 1 or params["warmup"] < 0:
        raise PgopsError("iterations must be at least 1 and warmup at least 0, got %d and %d" % (
            params["iterations"], params["warmup"]))
    conn = connect(params)
    try:
        reports = benchmark(conn, queries, params["warmup"], params["iterations"], params["seq_scan_rows"])
    finally:
        conn.close()
    kinds = set(finding["kind"] for report in reports for finding in report["findings"])
    result = {"queries": reports, "changed": False, "not_yet_expected": not_yet_expected,
              "failed_checks": [kind for kind in params["fail_on"] if kind in kinds]}
    if result["failed_checks"]:
        result["failed"] = True
        result["msg"] = "query benchmark failed: " + "; ".join(
            "%s: %s" % (report["name"], finding["detail"]) for report in reports
            for finding in report["findings"] if finding["kind"] in result["failed_checks"])
    return result


def main():
    argument_spec = connection_spec()
    argument_spec.update(
        queries=dict(type="list", elements="dict", options=dict(
            name=dict(type="str", required=True),
            sql=dict(type="str", required=True),
            params=dict(type="dict"),
            max_ms=dict(type="float"),
            expect_index=dict(type="str"),
            purpose=dict(type="str"),
            revision=dict(type="str"),
        )),
        revisions=dict(type="list", elements="str"),
        queries_file=dict(type="path"),
        only=dict(type="list", elements="str", default=[]),
        warmup=dict(type="int", default=3),
        iterations=dict(type="int", default=20),
        seq_scan_rows=dict(type="int", default=10000),
        fail_on=dict(type="list", elements="str", choices=FINDINGS, default=FINDINGS),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           mutually_exclusive=[("queries", "queries_file")],
                           required_one_of=[("queries", "queries_file")])
    require_psycopg2(module)
    run_module(module, run_benchmark)


if __name__ == "__main__":
    main()
