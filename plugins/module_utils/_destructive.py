# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to intowork.pgops: not a public API, may change without notice.
"""Statements that destroy data, found in a revision's offline SQL by PostgreSQL's own parser (pglast).

A dropped table, column, type or schema, a column whose type is changed (rewritten, maybe cast with loss), a
TRUNCATE or a DELETE without WHERE cannot be given back by a downgrade: the downgrade re-creates the object
empty. No marker in the revision is needed.
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


def destructive_statements(text):
    """The statements of `text` that destroy data, each as it is written (on one line, shortened)."""
    found = []
    for raw in pglast.parse_sql(text):
        if losing(raw.stmt):
            statement = text[raw.stmt_location:raw.stmt_location + raw.stmt_len] if raw.stmt_len else \
                text[raw.stmt_location:]
            statement = " ".join(statement.split())
            found.append(statement if len(statement) <= 160 else statement[:157] + "...")
    return found


DROPPED_WITH_DATA = ("OBJECT_TABLE", "OBJECT_SCHEMA", "OBJECT_TYPE", "OBJECT_DOMAIN",
                     "OBJECT_FOREIGN_TABLE", "OBJECT_SEQUENCE")


def losing(node):
    if isinstance(node, ast.DropStmt):
        return any(node.removeType == getattr(ObjectType, name) for name in DROPPED_WITH_DATA)
    if isinstance(node, ast.AlterTableStmt):
        return any(cmd.subtype in (AlterTableType.AT_DropColumn, AlterTableType.AT_AlterColumnType)
                   for cmd in node.cmds or () if isinstance(cmd, ast.AlterTableCmd))
    if isinstance(node, ast.TruncateStmt):
        return True
    if isinstance(node, ast.DeleteStmt):
        return node.whereClause is None
    return False
