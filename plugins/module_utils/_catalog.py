# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to intowork.pgops: not a public API, may change without notice.
"""Catalog SQL, kept in one place; every query takes values as parameters."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

# One round trip: the schema's relations with their columns, every index with its structure and
# usage, every foreign key, and when usage statistics were last reset.
INDEX_CATALOG = """
SELECT
  (SELECT coalesce(json_agg(json_build_object(
            'name', c.relname,
            'rows', c.reltuples::bigint,
            'columns', (SELECT coalesce(json_agg(a.attname ORDER BY a.attnum), '[]'::json)
                          FROM pg_attribute a
                         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped))
          ORDER BY c.relname), '[]'::json)
     FROM pg_class c
    WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p', 'm')) AS relations,
  (SELECT coalesce(json_agg(json_build_object(
            'name', ic.relname,
            'table', tc.relname,
            'valid', i.indisvalid,
            'ready', i.indisready,
            'unique', i.indisunique,
            'primary', i.indisprimary,
            'method', am.amname,
            'predicate', pg_get_expr(i.indpred, i.indrelid),
            'constraint', con.conname,
            'definition', pg_get_indexdef(i.indexrelid),
            'keys', (SELECT json_agg(json_build_object(
                              'expr', pg_get_indexdef(i.indexrelid, k.n, true),
                              'attnum', i.indkey[k.n - 1],
                              'desc', (i.indoption[k.n - 1] & 1) = 1,
                              'opclass', CASE WHEN opc.opcdefault THEN NULL ELSE opc.opcname END)
                            ORDER BY k.n)
                       FROM generate_series(1, i.indnkeyatts) AS k(n)
                       JOIN pg_opclass opc ON opc.oid = i.indclass[k.n - 1]),
            'include', (SELECT coalesce(json_agg(pg_get_indexdef(i.indexrelid, k.n, true) ORDER BY k.n), '[]'::json)
                          FROM generate_series(i.indnkeyatts + 1, i.indnatts) AS k(n)),
            'scans', coalesce(s.idx_scan, 0),
            'size_bytes', pg_relation_size(i.indexrelid)) ORDER BY ic.relname), '[]'::json)
     FROM pg_index i
     JOIN pg_class ic ON ic.oid = i.indexrelid
     JOIN pg_class tc ON tc.oid = i.indrelid
     JOIN pg_am am ON am.oid = ic.relam
     LEFT JOIN pg_stat_all_indexes s ON s.indexrelid = i.indexrelid
     LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
                                AND con.contype IN ('p', 'u', 'x')
    WHERE tc.relnamespace = n.oid) AS indexes,
  (SELECT coalesce(json_agg(json_build_object(
            'name', con.conname,
            'table', tc.relname,
            'references', rc.relname,
            'attnums', con.conkey,
            'columns', (SELECT json_agg(a.attname ORDER BY k.ord)
                          FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
                          JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum))
          ORDER BY tc.relname, con.conname), '[]'::json)
     FROM pg_constraint con
     JOIN pg_class tc ON tc.oid = con.conrelid
     JOIN pg_class rc ON rc.oid = con.confrelid
    WHERE con.contype = 'f' AND tc.relnamespace = n.oid) AS foreign_keys,
  (SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()) AS stats_reset
FROM pg_namespace n
WHERE n.nspname = %(schema)s
"""

# One round trip: what integrity checks need to know about a schema's tables and constraints.
INTEGRITY_CATALOG = """
SELECT
  (SELECT coalesce(json_agg(json_build_object(
            'name', c.relname,
            'columns', (SELECT coalesce(json_agg(a.attname ORDER BY a.attnum), '[]'::json)
                          FROM pg_attribute a
                         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
            'primary_key', (SELECT json_agg(a.attname ORDER BY k.ord)
                              FROM pg_constraint pk
                              CROSS JOIN unnest(pk.conkey) WITH ORDINALITY AS k(attnum, ord)
                              JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
                             WHERE pk.conrelid = c.oid AND pk.contype = 'p'))
          ORDER BY c.relname), '[]'::json)
     FROM pg_class c
    WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p')) AS relations,
  (SELECT coalesce(json_agg(json_build_object(
            'name', con.conname,
            'type', CASE con.contype WHEN 'f' THEN 'foreign_key' ELSE 'check' END,
            'table', tc.relname,
            'validated', con.convalidated,
            'references', rc.relname,
            'references_schema', rn.nspname,
            'columns', (SELECT json_agg(a.attname ORDER BY k.ord)
                          FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
                          JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum),
            'referenced_columns', (SELECT json_agg(a.attname ORDER BY k.ord)
                                     FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, ord)
                                     JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum),
            'expression', CASE WHEN con.contype = 'c' THEN pg_get_expr(con.conbin, con.conrelid) END)
          ORDER BY tc.relname, con.conname), '[]'::json)
     FROM pg_constraint con
     JOIN pg_class tc ON tc.oid = con.conrelid
     LEFT JOIN pg_class rc ON rc.oid = con.confrelid
     LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
    WHERE con.contype IN ('f', 'c') AND tc.relnamespace = n.oid) AS constraints,
  -- Sequences that feed a column (serial or identity): after a restore or a hand-made load they can lag
  -- behind the column, and every insert then fails on the primary key.
  (SELECT coalesce(json_agg(json_build_object('sequence', s.relname, 'table', tc.relname, 'column', a.attname)
          ORDER BY s.relname), '[]'::json)
     FROM pg_class s
     JOIN pg_depend d ON d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = s.oid
                     AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.deptype IN ('a', 'i')
     JOIN pg_class tc ON tc.oid = d.refobjid
     JOIN pg_attribute a ON a.attrelid = tc.oid AND a.attnum = d.refobjsubid
     JOIN pg_sequence ps ON ps.seqrelid = s.oid
    WHERE s.relkind = 'S' AND s.relnamespace = n.oid AND tc.relnamespace = n.oid AND ps.seqincrement > 0)
    AS sequences,
  -- Triggers switched off (ALTER TABLE ... DISABLE TRIGGER ALL before a bulk load, never switched back):
  -- the foreign keys and the application's triggers silently stop being enforced.
  (SELECT coalesce(json_agg(json_build_object('table', tc.relname, 'trigger', tg.tgname,
                                              'internal', tg.tgisinternal)
          ORDER BY tc.relname, tg.tgname), '[]'::json)
     FROM pg_trigger tg
     JOIN pg_class tc ON tc.oid = tg.tgrelid
    WHERE tc.relnamespace = n.oid AND tg.tgenabled = 'D') AS disabled_triggers
FROM pg_namespace n
WHERE n.nspname = %(schema)s
"""
