# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to intowork.pgops: not a public API, may change without notice.
"""Statements that destroy data, found in a revision's offline SQL by PostgreSQL's own parser (pglast).

A dropped table or column, a type or schema dropped with CASCADE, a column rewritten to a type that cannot hold
every value it had, a TRUNCATE or a DELETE without WHERE cannot be given back by a downgrade: the downgrade
re-creates the object empty. No marker in the revision is needed. Each one found says why.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

try:
    import pglast
    from pglast import ast
    from pglast.enums import AlterTableType, ObjectType
    HAS_PGLAST = True
except ImportError:
    HAS_PGLAST = False

# Alembic writes this line before each revision's SQL in offline mode.
REVISION_HEADER = re.compile(r"^-- Running (?:upgrade|downgrade) (\S*) -> (\S+)\s*$", re.MULTILINE)


def split_by_revision(offline_sql):
    """{revision: its SQL} from the offline SQL of a span."""
    parts = {}
    headers = list(REVISION_HEADER.finditer(offline_sql))
    for number, header in enumerate(headers):
        end = headers[number + 1].start() if number + 1 < len(headers) else len(offline_sql)
        parts[header.group(2)] = offline_sql[header.end():end]
    return parts


def destructive_statements(text, catalog=None):
    """The statements of `text` that destroy data, each as it is written (on one line, shortened) with why.

    `catalog` (a ColumnCatalog, or None) knows the columns' types before the deployment: with it, a type change
    that cannot lose a value (see kept_values) is not destructive; without it, every type change is."""
    found = []
    created_enums = {}
    for raw in pglast.parse_sql(text):
        node = raw.stmt
        if isinstance(node, ast.CreateEnumStmt):
            created_enums[node.typeName[-1].sval] = [value.sval for value in node.vals or ()]
            continue
        why = losing(node, catalog, created_enums)
        if why:
            statement = text[raw.stmt_location:raw.stmt_location + raw.stmt_len] if raw.stmt_len else \
                text[raw.stmt_location:]
            statement = " ".join(statement.split())
            found.append("%s (%s)" % (statement if len(statement) <= 160 else statement[:157] + "...", why))
    return found


DROPPED_WITH_DATA = {"OBJECT_TABLE": "drops the table and its rows", "OBJECT_FOREIGN_TABLE": "drops the table",
                     "OBJECT_SEQUENCE": "drops the sequence and its position"}
# Dropped without CASCADE these fail while anything uses them, so they lose no data; with CASCADE they take the
# columns and tables that use them along.
DROPPED_WITH_DEPENDENTS = ("OBJECT_SCHEMA", "OBJECT_TYPE", "OBJECT_DOMAIN")
DROP_CASCADE = 1


def losing(node, catalog=None, created_enums=None):
    """Why `node` destroys data, or None."""
    if isinstance(node, ast.DropStmt):
        for name, why in DROPPED_WITH_DATA.items():
            if node.removeType == getattr(ObjectType, name):
                return why
        if node.behavior == DROP_CASCADE and any(node.removeType == getattr(ObjectType, name)
                                                 for name in DROPPED_WITH_DEPENDENTS):
            return "CASCADE drops what uses it, with its data"
        return None
    if isinstance(node, ast.AlterTableStmt):
        for cmd in node.cmds or ():
            if not isinstance(cmd, ast.AlterTableCmd):
                continue
            if cmd.subtype == AlterTableType.AT_DropColumn:
                return "drops column %s and its data" % cmd.name
            if cmd.subtype == AlterTableType.AT_AlterColumnType:
                why = type_change_loss(node.relation, cmd, catalog, created_enums or {})
                if why:
                    return why
        return None
    if isinstance(node, ast.TruncateStmt):
        return "removes every row"
    if isinstance(node, ast.DeleteStmt):
        return "deletes every row" if node.whereClause is None else None
    return None


INTEGER_WIDTH = {"int2": 2, "int4": 4, "int8": 8}
TEXT_TYPES = ("text", "varchar", "citext")


def type_change_loss(relation, cmd, catalog, created_enums):
    """Why changing the type of column `cmd.name` of `relation` can lose a value, or None when it cannot."""
    column, definition = cmd.name, cmd.def_
    new = definition.typeName.names[-1].sval
    new_length = definition.typeName.typmods[0].val.ival if definition.typeName.typmods and \
        isinstance(definition.typeName.typmods[0], ast.A_Const) else None
    old = catalog.column(relation.schemaname, relation.relname, column) if catalog else None
    if old is None:
        return "rewrites column %s to %s: its type before is not known, a value may be lost" % (column, new)
    if definition.raw_default is not None and not casts_only(definition.raw_default, column):
        return "rewrites column %s with a USING expression" % column
    # Read once: an enum created earlier in the same SQL, else the database's.
    labels = None
    if old["labels"] is not None:
        labels = created_enums.get(new)
        if labels is None:
            labels = catalog.enum_labels(new)
    if kept_values(old, new, new_length, labels, catalog):
        return None
    lost = [label for label in old["labels"] if label not in labels] if labels else []
    if lost:
        return "rewrites column %s from enum %s to %s, which has no label %s" % (
            column, old["type"], new, ", ".join(lost))
    return "rewrites column %s from %s to %s%s, which can lose values" % (
        column, old["type"], new, "(%d)" % new_length if new_length is not None else "")


def casts_only(expression, column):
    """Whether a USING expression is the column itself, cast (column::text::new_enum)."""
    while isinstance(expression, ast.TypeCast):
        expression = expression.arg
    return isinstance(expression, ast.ColumnRef) and [getattr(field, "sval", None) for field in expression.fields][-1:] \
        == [column]


def kept_values(old, new, new_length, new_labels, catalog):
    """Whether every value of a column of type `old` (ColumnCatalog.column) survives as type `new` (of labels
    `new_labels` when an enum): an enum whose labels all remain, a longer or unbounded varchar, text and citext
    between themselves, a wider integer, or a cast pg_cast says is binary coercible to a type without a length."""
    if old["labels"] is not None:
        return new_labels is not None and set(old["labels"]) <= set(new_labels)
    if old["name"] == "varchar" and new == "varchar":
        return new_length is None or (old["length"] is not None and new_length >= old["length"])
    if old["name"] in TEXT_TYPES and new in TEXT_TYPES and new_length is None:
        return True
    if old["name"] in INTEGER_WIDTH and new in INTEGER_WIDTH:
        return INTEGER_WIDTH[new] >= INTEGER_WIDTH[old["name"]]
    return new_length is None and catalog.binary_coercible(old["oid"], new)


COLUMN_TYPE = """
SELECT t.typname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.atttypid::bigint,
       CASE WHEN t.typname IN ('varchar', 'bpchar') AND a.atttypmod >= 4 THEN a.atttypmod - 4 END,
       CASE WHEN t.typtype = 'e' THEN (SELECT pg_catalog.array_agg(e.enumlabel::text ORDER BY e.enumsortorder)
                                         FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid) END
  FROM pg_catalog.pg_attribute a
  JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
  JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relname = %(table)s AND a.attname = %(column)s AND NOT a.attisdropped
   AND (n.nspname = %(schema)s OR (%(schema)s IS NULL AND pg_catalog.pg_table_is_visible(c.oid)))
"""
ENUM_LABELS = """
SELECT pg_catalog.array_agg(e.enumlabel::text ORDER BY e.enumsortorder)
  FROM pg_catalog.pg_enum e WHERE e.enumtypid = pg_catalog.to_regtype(%(name)s)
"""
BINARY_COERCIBLE = """
SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_cast
                WHERE castsource = %(source)s AND casttarget = pg_catalog.to_regtype(%(target)s) AND castmethod = 'b')
"""


class ColumnCatalog(object):
    """The column types of the database before the deployment, read as the destructive check asks."""

    def __init__(self, conn):
        self.conn = conn

    def _one(self, query, values):
        with self.conn.cursor() as cur:
            cur.execute(query, values)
            row = cur.fetchone()
        return row

    def column(self, schema, table, column):
        row = self._one(COLUMN_TYPE, {"schema": schema, "table": table, "column": column})
        if row is None:
            return None
        return {"name": row[0], "type": row[1], "oid": row[2], "length": row[3], "labels": row[4]}

    def enum_labels(self, name):
        row = self._one(ENUM_LABELS, {"name": name})
        return row[0] if row else None

    def binary_coercible(self, source_oid, target):
        return bool(self._one(BINARY_COERCIBLE, {"source": source_oid, "target": target})[0])
