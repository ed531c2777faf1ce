# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to intowork.pgops: not a public API, may change without notice.
"""Critical-query timing and plan checks."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import math
import time

from ansible_collections.intowork.pgops.plugins.module_utils._connection import PgopsError, one_line, psycopg2
from ansible_collections.intowork.pgops.plugins.module_utils._spec_file import load_yaml_mapping, one_sql_piece

QUERY_KEYS = frozenset(["name", "sql", "params", "max_ms", "expect_index", "purpose", "revision"])
FINDINGS = ["threshold", "seq_scan", "index_not_used"]

RELATION_ROWS = "SELECT c.relname, c.reltuples::bigint FROM pg_class c WHERE c.relname = ANY(%s) AND c.relkind IN ('r', 'p', 'm')"


def load_queries_file(path):
    data = load_yaml_mapping(path, "queries_file")
    if not isinstance(data.get("queries"), list):
        raise PgopsError("queries_file %s needs a top-level 'queries' list" % path)
    return data["queries"]


def validate_queries(queries, only=None):
    checked = []
    for position, query in enumerate(queries, start=1):
        if not isinstance(query, dict) or not query.get("name") or not query.get("sql"):
            raise PgopsError("query %d needs at least a name and sql" % position)
        unknown = sorted(set(query) - QUERY_KEYS)
        if unknown:
            raise PgopsError("query %s has unknown key(s) %s: use %s" % (
                query["name"], ", ".join(unknown), ", ".join(sorted(QUERY_KEYS))))
        statement = one_sql_piece(query["sql"], "query %s sql" % query["name"], "statement")
        checked.append(dict(query, sql=statement, params=query.get("params") or {}))
    if only:
        names = [q["name"] for q in checked]
        unknown = [name for name in only if name not in names]
        if unknown:
            raise PgopsError("only names unknown queries %s: choose from %s" % (", ".join(unknown), ", ".join(names)))
        checked = [q for q in checked if q["name"] in only]
    return checked


def percentile(sorted_values, fraction):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, int(math.ceil(fraction * len(sorted_values))))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def plan_nodes(node):
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


def plan_findings(plan, relation_rows, query, seq_scan_rows):
    """Sequential scans of large tables, and an expected index the plan does not use."""
    nodes = list(plan_nodes(plan))
    used = sorted(set(node["Index Name"] for node in nodes if "Index Name" in node))
    findings = []
    for node in nodes:
        if node.get("Node Type") == "Seq Scan":
            rows = relation_rows.get(node.get("Relation Name"), 0)
            if rows > seq_scan_rows:
                findings.append({"kind": "seq_scan", "relation": node["Relation Name"], "table_rows": rows,
                                 "detail": "sequential scan of %s (%d rows)" % (node["Relation Name"], rows)})
    expected = query.get("expect_index")
    if expected and expected not in used:
        findings.append({"kind": "index_not_used", "index": expected,
                         "detail": "plan does not use %s (uses: %s)" % (expected, ", ".join(used) or "no index")})
    return used, findings


def measure(conn, query, warmup, iterations):
    """Latencies in milliseconds, client side, of `iterations` runs after `warmup` unmeasured ones."""
    timings = []
    with conn.cursor() as cur:
        for run in range(warmup + iterations):
            started = time.perf_counter()
            cur.execute(query["sql"], query["params"])
            rows = cur.fetchall()
            if run >= warmup:
                timings.append((time.perf_counter() - started) * 1000.0)
    return sorted(timings), len(rows)


def benchmark(conn, queries, warmup, iterations, seq_scan_rows):
    """One report per query: percentiles, plan, findings."""
    reports = []
    conn.set_session(readonly=True, autocommit=False)
    with conn.cursor() as cur:
        plans = {}
        for query in queries:
            try:
                cur.execute("EXPLAIN (FORMAT JSON) " + query["sql"], query["params"])
            except psycopg2.Error as error:
                conn.rollback()
                raise PgopsError("query %s cannot run: %s (fix its sql or params)" % (
                    query["name"], one_line(error).split(" LINE ")[0]))
            except (KeyError, TypeError, ValueError) as error:
                conn.rollback()
                raise PgopsError("query %s has parameters that do not match its sql: %s" % (query["name"], error))
            raw = cur.fetchone()[0]
            plans[query["name"]] = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
        relations = sorted(set(node["Relation Name"] for plan in plans.values() for node in plan_nodes(plan)
                               if "Relation Name" in node))
        cur.execute(RELATION_ROWS, (relations,))
        relation_rows = dict(cur.fetchall())
    for query in queries:
        timings, rows = measure(conn, query, warmup, iterations)
        used, findings = plan_findings(plans[query["name"]], relation_rows, query, seq_scan_rows)
        report = {
            "name": query["name"],
            "purpose": query.get("purpose"),
            "rows": rows,
            "p50_ms": round(percentile(timings, 0.50), 3),
            "p95_ms": round(percentile(timings, 0.95), 3),
            "max_ms": round(timings[-1], 3),
            "threshold_ms": query.get("max_ms"),
            "indexes_used": used,
            "findings": findings,
        }
        if query.get("max_ms") is not None and report["p95_ms"] > float(query["max_ms"]):
            findings.append({"kind": "threshold", "detail": "p95 %.1f ms over the %s ms target" % (
                report["p95_ms"], query["max_ms"])})
        reports.append(report)
    conn.rollback()
    return reports
