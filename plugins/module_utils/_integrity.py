# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to intowork.pgops: not a public API, may change without notice.
"""Integrity checks: orphans, duplicates, unvalidated constraints, check violations, row counts.

Every check is a query built with psycopg2.sql (identifiers quoted); operator-given conditions and
filters are SQL expressions by design. Checks run in one REPEATABLE READ, READ ONLY transaction, each
behind a savepoint with its own statement_timeout, so a slow check is reported as timed out and the
others still run against the same snapshot.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.intowork.pgops.plugins.module_utils._connection import PgopsError, one_line, psycopg2, sql
from ansible_collections.intowork.pgops.plugins.module_utils._spec_file import load_yaml_mapping, one_sql_piece

KINDS = ["orphans", "duplicates", "not_valid", "check_violations", "row_counts", "timeouts",
         "missing_foreign_keys", "disabled_triggers", "sequences_behind"]
COMPARE_POLICIES = ["equal", "no_loss"]


SPEC_KEYS = {"relations": list, "duplicates": list, "checks": list, "row_counts": list, "expected_foreign_keys": list}
ENTRY_KEYS = {
    "expected_foreign_keys": (set(["name", "table", "columns", "references"]), set(["referenced_columns"])),
    "relations": (set(["name", "table", "columns", "references", "referenced_columns"]), set(["where"])),
    "duplicates": (set(["name", "table", "columns"]), set(["where"])),
    "checks": (set(["name", "table", "condition"]), set(["where"])),
}


def load_spec_file(path):
    """The file's relations, duplicates, checks and row_counts, each validated; PgopsError naming a bad entry."""
    data = load_yaml_mapping(path, "spec_file")
    unknown = sorted(set(data) - set(SPEC_KEYS))
    if unknown:
        raise PgopsError("spec_file %s has unknown key(s) %s: use %s" % (path, ", ".join(unknown), ", ".join(sorted(SPEC_KEYS))))
    for key, entries in data.items():
        if not isinstance(entries, list):
            raise PgopsError("spec_file %s: %s must be a list" % (path, key))
        if key not in ENTRY_KEYS:
            continue
        required, optional = ENTRY_KEYS[key]
        for position, entry in enumerate(entries, start=1):
            if not isinstance(entry, dict) or not required <= set(entry) or set(entry) - required - optional:
                raise PgopsError("spec_file %s: %s entry %d needs exactly %s (optional: %s)" % (
                    path, key, position, ", ".join(sorted(required)), ", ".join(sorted(optional))))
    return data


def require_single_expressions(params):
    """Every operator-given condition and filter is one SQL expression (see one_sql_piece); PgopsError names it."""
    for key in ("relations", "duplicates", "checks"):
        for position, entry in enumerate(params.get(key) or [], start=1):
            for field in ("condition", "where"):
                if entry.get(field) is not None:
                    one_sql_piece(entry[field], "%s entry %d (%s) %s" % (key, position, entry.get("name"), field))


class Check(object):
    """One query to run: its finding kind, the entry it reports, and the query itself."""

    def __init__(self, kind, report, query):
        self.kind = kind
        self.report = report
        self.query = query


def _tables(catalog):
    return dict((relation["name"], relation) for relation in catalog["relations"])


def require_columns(tables, table, columns, label):
    if table not in tables:
        raise PgopsError("%s names table %s, which is not in the schema (check the name and the schema option)"
                         % (label, table))
    unknown = [column for column in columns if column not in tables[table]["columns"]]
    if unknown:
        raise PgopsError("%s names column(s) %s that table %s does not have" % (label, ", ".join(unknown), table))


def _sample_columns(tables, table, columns):
    """Primary key first, then the checked columns: enough to find each bad row."""
    keys = list(tables[table].get("primary_key") or [])
    return keys + [column for column in columns if column not in keys]


def _found_query(schema, table, sample, condition):
    """count(*) and up to %(sample_size)s sample rows (as JSON) of `table AS t WHERE condition`."""
    return sql.SQL(
        "WITH found AS (SELECT {sample} FROM {table} AS t WHERE {condition}) "
        "SELECT (SELECT count(*) FROM found), "
        "(SELECT coalesce(json_agg(s), '[]'::json) FROM (SELECT * FROM found ORDER BY 1 LIMIT %(sample_size)s) s)"
    ).format(sample=sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in sample),
             table=sql.Identifier(schema, table), condition=condition)


def orphan_condition(schema, columns, parent_schema, parent, parent_columns):
    """NULL-safe anti-join: rows whose non-NULL key has no parent row (MATCH SIMPLE semantics)."""
    not_null = [sql.SQL("t.{} IS NOT NULL").format(sql.Identifier(c)) for c in columns]
    join = [sql.SQL("p.{} = t.{}").format(sql.Identifier(pc), sql.Identifier(c))
            for c, pc in zip(columns, parent_columns)]
    return sql.SQL(" AND ").join(not_null + [sql.SQL("NOT EXISTS (SELECT 1 FROM {} AS p WHERE {})").format(
        sql.Identifier(parent_schema, parent), sql.SQL(" AND ").join(join))])


def _with_filter(condition, where):
    if not where:
        return condition
    return sql.SQL("({}) AND ({})").format(condition, sql.SQL(where))


def plan(catalog, schema, params):
    """The checks to run, in order; PgopsError naming any unknown table or column, before anything runs."""
    tables = _tables(catalog)
    checks = []
    constraints = catalog["constraints"]

    if params.get("foreign_keys"):
        for fk in (c for c in constraints if c["type"] == "foreign_key"):
            sample = _sample_columns(tables, fk["table"], fk["columns"])
            condition = orphan_condition(schema, fk["columns"], fk["references_schema"], fk["references"],
                                         fk["referenced_columns"])
            checks.append(Check("orphans", {"name": fk["name"], "table": fk["table"], "columns": fk["columns"],
                                            "references": fk["references"], "declared": True},
                                _found_query(schema, fk["table"], sample, condition)))

    # A foreign key the spec expects but the catalog lost no longer stops orphans: check it as a relation.
    lost = [dict(fk, referenced_columns=fk.get("referenced_columns")
                 or tables.get(fk["references"], {}).get("primary_key") or [])
            for fk in missing_foreign_keys(catalog, params)]
    for label, relation in ([("relation %s" % r["name"], r) for r in params.get("relations") or []]
                            + [("expected foreign key %s" % fk["name"], fk) for fk in lost]):
        require_columns(tables, relation["table"], relation["columns"], label)
        require_columns(tables, relation["references"], relation["referenced_columns"], label)
        if len(relation["columns"]) != len(relation["referenced_columns"]):
            raise PgopsError("%s pairs %d column(s) with %d referenced column(s): give the same number" % (
                label, len(relation["columns"]), len(relation["referenced_columns"])))
        sample = _sample_columns(tables, relation["table"], relation["columns"])
        condition = orphan_condition(schema, relation["columns"], schema, relation["references"],
                                     relation["referenced_columns"])
        checks.append(Check("orphans", {"name": relation["name"], "table": relation["table"],
                                        "columns": relation["columns"], "references": relation["references"],
                                        "declared": False},
                            _found_query(schema, relation["table"], sample, _with_filter(condition, relation.get("where")))))

    for dup in params.get("duplicates") or []:
        require_columns(tables, dup["table"], dup["columns"], "duplicate check %s" % dup["name"])
        keys = [sql.Identifier(c) for c in dup["columns"]]
        not_null = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(k) for k in keys)
        query = sql.SQL(
            "WITH groups AS (SELECT {keys}, count(*) AS copies FROM {table} WHERE {filter} "
            "GROUP BY {keys} HAVING count(*) > 1) "
            "SELECT (SELECT count(*) FROM groups), "
            "(SELECT coalesce(json_agg(s), '[]'::json) FROM (SELECT * FROM groups ORDER BY copies DESC, {keys} "
            "LIMIT %(sample_size)s) s), (SELECT coalesce(sum(copies - 1), 0) FROM groups)"
        ).format(keys=sql.SQL(", ").join(keys), table=sql.Identifier(schema, dup["table"]),
                 filter=_with_filter(not_null, dup.get("where")))
        checks.append(Check("duplicates", {"name": dup["name"], "table": dup["table"], "columns": dup["columns"],
                                           "where": dup.get("where")}, query))

    if params.get("not_valid_constraints"):
        for con in (c for c in constraints if not c["validated"]):
            sample = _sample_columns(tables, con["table"], con["columns"] or [])
            if con["type"] == "foreign_key":
                condition = orphan_condition(schema, con["columns"], con["references_schema"], con["references"],
                                             con["referenced_columns"])
            else:
                # A CHECK fails only when its expression is false; NULL passes.
                condition = sql.SQL("({}) IS FALSE").format(sql.SQL(con["expression"]))
            checks.append(Check("not_valid", {"name": con["name"], "table": con["table"], "type": con["type"]},
                                _found_query(schema, con["table"], sample, condition)))

    for check in params.get("checks") or []:
        require_columns(tables, check["table"], [], "check %s" % check["name"])
        sample = _sample_columns(tables, check["table"], [])
        condition = _with_filter(sql.SQL("({}) IS FALSE").format(sql.SQL(check["condition"])), check.get("where"))
        checks.append(Check("check_violations", {"name": check["name"], "table": check["table"],
                                                 "condition": check["condition"]},
                            _found_query(schema, check["table"], sample, condition)))

    if params.get("catalog_checks"):
        for owned in catalog.get("sequences") or []:
            checks.append(Check("sequences_behind", dict(owned, name=owned["sequence"]), sql.SQL(
                "SELECT coalesce((m.v > s.v)::int, 0), json_build_array(json_build_object("
                "'sequence', {seq_name}, 'column_max', m.v, 'sequence_last', s.v)) "
                "FROM (SELECT max(t.{column}) AS v FROM {table} AS t) m, "
                "(SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END AS v FROM {sequence}) s").format(
                    seq_name=sql.Literal(owned["sequence"]), column=sql.Identifier(owned["column"]),
                    table=sql.Identifier(schema, owned["table"]), sequence=sql.Identifier(schema, owned["sequence"]))))

    row_count_tables = params.get("row_counts") or []
    for table in row_count_tables:
        require_columns(tables, table, [], "row_counts")
    if row_count_tables:
        query = sql.SQL("SELECT json_build_object({})").format(sql.SQL(", ").join(
            sql.SQL("{}, (SELECT count(*) FROM {})").format(sql.Literal(t), sql.Identifier(schema, t))
            for t in row_count_tables))
        checks.append(Check("row_counts", {"name": "row_counts", "tables": row_count_tables}, query))
    return checks


def missing_foreign_keys(catalog, params):
    """Foreign keys the spec expects that the catalog no longer has (same table, columns and parent)."""
    declared = set((c["table"], tuple(c["columns"] or []), c["references"])
                   for c in catalog["constraints"] if c["type"] == "foreign_key")
    return [expected for expected in params.get("expected_foreign_keys") or []
            if (expected["table"], tuple(expected["columns"]), expected["references"]) not in declared]


def disabled_triggers(catalog, params):
    """Triggers left disabled; internal ones are the foreign keys' own enforcement."""
    if not params.get("catalog_checks"):
        return []
    return [dict(trigger, name="%s.%s" % (trigger["table"], trigger["trigger"]),
                 enforces="a foreign key" if trigger["internal"] else "an application trigger")
            for trigger in catalog.get("disabled_triggers") or []]


def run(conn, checks, timeout_ms, sample_size):
    """Run the checks in one read-only snapshot; a check that times out is marked, never passed."""
    results = []
    with conn.cursor() as cur:
        cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        # Planning takes a share lock on each table: behind an exclusive lock it waits, so it has the
        # same time limit as the check, and a check that cannot even be planned in time is timed out.
        cur.execute("SET LOCAL statement_timeout = %s", (int(timeout_ms),))
        unplanned = set()
        # Validate every query first (EXPLAIN plans without running): a bad condition fails the task
        # before any check has run.
        for number, check in enumerate(checks):
            cur.execute("SAVEPOINT pgops_check")
            try:
                cur.execute(sql.SQL("EXPLAIN ") + check.query, {"sample_size": sample_size})
            except psycopg2.extensions.QueryCanceledError:
                cur.execute("ROLLBACK TO SAVEPOINT pgops_check")
                unplanned.add(number)
                continue
            except psycopg2.Error as error:
                cur.execute("ROLLBACK")
                raise PgopsError("%s check %s cannot run: %s (fix its condition or filter)" % (
                    check.kind, check.report["name"], one_line(error).split(" LINE ")[0]))
            cur.execute("RELEASE SAVEPOINT pgops_check")
        for number, check in enumerate(checks):
            report = dict(check.report, kind=check.kind)
            if number in unplanned:
                report.update(status="timed_out", count=None, elapsed_ms=float(timeout_ms))
                results.append(report)
                continue
            cur.execute("SAVEPOINT pgops_check; SET LOCAL statement_timeout = %s", (int(timeout_ms),))
            started = time.time()
            try:
                cur.execute(check.query, {"sample_size": sample_size})
                row = cur.fetchone()
            except psycopg2.extensions.QueryCanceledError:
                cur.execute("ROLLBACK TO SAVEPOINT pgops_check")
                report.update(status="timed_out", count=None, elapsed_ms=round((time.time() - started) * 1000, 1))
                results.append(report)
                continue
            cur.execute("RELEASE SAVEPOINT pgops_check")
            report["elapsed_ms"] = round((time.time() - started) * 1000, 1)
            if check.kind == "row_counts":
                report.update(status="ok", counts=row[0])
            else:
                report.update(count=row[0], sample=row[1], status="ok" if row[0] == 0 else "found")
                if check.kind == "duplicates":
                    report["excess_rows"] = int(row[2])
            results.append(report)
        cur.execute("COMMIT")
    return results


def compare_counts(before, after, policy):
    """Tables whose count breaks the policy: `equal` (unchanged) or `no_loss` (never fewer)."""
    changes = []
    for table in sorted(before):
        now = after.get(table)
        was = int(before[table])
        if now is None:
            changes.append({"table": table, "before": was, "after": None, "reason": "not counted now"})
        elif (policy == "equal" and now != was) or (policy == "no_loss" and now < was):
            changes.append({"table": table, "before": was, "after": now,
                            "reason": "%s row(s) %s" % (abs(now - was), "lost" if now < was else "added")})
    return changes
