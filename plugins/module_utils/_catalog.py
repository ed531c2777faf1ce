# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to intowork.pgops: not a public API, may change without notice.
"""Catalog SQL, kept in one place; every query takes values as parameters."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

# One round trip: the schema's relations and every index on them, as JSON.
INDEX_CATALOG = """
SELECT
  (SELECT coalesce(json_agg(c.relname ORDER BY c.relname), '[]'::json)
     FROM pg_class c
    WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p', 'm')) AS relations,
  (SELECT coalesce(json_agg(json_build_object(
            'name', ic.relname,
            'table', tc.relname,
            'valid', i.indisvalid,
            'ready', i.indisready,
            'unique', i.indisunique,
            'method', am.amname,
            'predicate', pg_get_expr(i.indpred, i.indrelid),
            'constraint', con.conname,
            'definition', pg_get_indexdef(i.indexrelid)) ORDER BY ic.relname), '[]'::json)
     FROM pg_index i
     JOIN pg_class ic ON ic.oid = i.indexrelid
     JOIN pg_class tc ON tc.oid = i.indrelid
     JOIN pg_am am ON am.oid = ic.relam
     LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
                                AND con.contype IN ('p', 'u', 'x')
    WHERE tc.relnamespace = n.oid) AS indexes
FROM pg_namespace n
WHERE n.nspname = %(schema)s
"""
