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

# One round trip: every object of the database's own schemas that a deployment or a rollback may change, each
# with what makes it what it is (definitions, validity, owners, privileges), keyed by kind and qualified name.
# Privileges are aclexplode'd with the defaults filled in, so "no ACL" and "the owner's defaults" compare equal.
SCHEMA_SNAPSHOT = """
WITH nsp AS (
  SELECT n.oid, n.nspname
    FROM pg_namespace n
   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%%'
     AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
     AND (cardinality(%(schemas)s::text[]) = 0 OR n.nspname = ANY(%(schemas)s::text[]))
     -- Objects of an extension are the extension's: its version stands for them.
     AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass AND d.objid = n.oid
                                               AND d.deptype = 'e')
),
grants AS (
  SELECT c.oid, coalesce(json_agg(
           CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END || ':' || a.privilege_type
           || CASE WHEN a.is_grantable THEN '*' ELSE '' END ORDER BY 1) FILTER (WHERE a.privilege_type IS NOT NULL),
           '[]'::json) AS acl
    FROM pg_class c
    JOIN nsp ON nsp.oid = c.relnamespace
    LEFT JOIN LATERAL aclexplode(coalesce(c.relacl, acldefault(
      CASE WHEN c.relkind = 'S' THEN 's'::"char" ELSE 'r'::"char" END, c.relowner))) a ON true
   GROUP BY c.oid
)
SELECT json_build_object(
  'schemas', (SELECT coalesce(json_object_agg('schema ' || quote_ident(nsp.nspname), json_build_object(
                'owner', pg_get_userbyid(n.nspowner),
                'comment', obj_description(n.oid, 'pg_namespace'),
                'acl', (SELECT coalesce(json_agg(CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee)
                                                 END || ':' || a.privilege_type ORDER BY 1), '[]'::json)
                          FROM aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a))), '{}'::json)
                FROM nsp JOIN pg_namespace n ON n.oid = nsp.oid),
  'relations', (SELECT coalesce(json_object_agg(
                  CASE c.relkind WHEN 'S' THEN 'sequence ' WHEN 'v' THEN 'view ' WHEN 'm' THEN 'materialized view '
                                 WHEN 'f' THEN 'foreign table ' ELSE 'table ' END
                  || quote_ident(nsp.nspname) || '.' || quote_ident(c.relname), json_build_object(
                'oid', c.oid,
                'kind', c.relkind,
                'comment', obj_description(c.oid, 'pg_class'),
                'owner', pg_get_userbyid(c.relowner),
                'persistence', c.relpersistence,
                -- A materialized view not populated (WITH NO DATA, or a restore that skipped its refresh) fails reads.
                'populated', CASE WHEN c.relkind = 'm' THEN c.relispopulated END,
                'row_security', CASE WHEN c.relkind IN ('r', 'p') THEN c.relrowsecurity END,
                'rows_estimate', c.reltuples::bigint,
                'columns', (SELECT coalesce(json_agg(json_build_object(
                                'name', a.attname,
                                'type', format_type(a.atttypid, a.atttypmod),
                                'not_null', a.attnotnull,
                                'default', pg_get_expr(ad.adbin, ad.adrelid),
                                'identity', a.attidentity,
                                'generated', a.attgenerated,
                                'collation', CASE WHEN a.attcollation <> t.typcollation THEN a.attcollation::regcollation::text END,
                                'comment', col_description(a.attrelid, a.attnum))
                              ORDER BY a.attnum), '[]'::json)
                              FROM pg_attribute a
                              JOIN pg_type t ON t.oid = a.atttypid
                              LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
                             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind <> 'S'),
                'definition', CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END,
                'sequence', (SELECT json_build_object('type', format_type(s.seqtypid, NULL), 'increment', s.seqincrement,
                                                      'cycle', s.seqcycle)
                               FROM pg_sequence s WHERE s.seqrelid = c.oid),
                'acl', g.acl)), '{}'::json)
                  FROM pg_class c
                  JOIN nsp ON nsp.oid = c.relnamespace
                  JOIN grants g ON g.oid = c.oid
                 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
                   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                                                             AND d.deptype = 'e')),
  'indexes', (SELECT coalesce(json_object_agg('index ' || quote_ident(nsp.nspname) || '.' || quote_ident(ic.relname),
                json_build_object('table', tc.relname, 'definition', pg_get_indexdef(i.indexrelid),
                                  'valid', i.indisvalid, 'comment', obj_description(i.indexrelid, 'pg_class'))),
                '{}'::json)
                FROM pg_index i
                JOIN pg_class ic ON ic.oid = i.indexrelid
                JOIN pg_class tc ON tc.oid = i.indrelid
                JOIN nsp ON nsp.oid = ic.relnamespace),
  'constraints', (SELECT coalesce(json_object_agg('constraint ' || quote_ident(nsp.nspname) || '.'
                    || quote_ident(coalesce(tc.relname, ty.typname)) || '.' || quote_ident(con.conname),
                    json_build_object('definition', pg_get_constraintdef(con.oid), 'validated', con.convalidated,
                                      'comment', obj_description(con.oid, 'pg_constraint'))),
                    '{}'::json)
                    FROM pg_constraint con
                    JOIN nsp ON nsp.oid = con.connamespace
                    LEFT JOIN pg_class tc ON tc.oid = con.conrelid
                    LEFT JOIN pg_type ty ON ty.oid = con.contypid),
  'types', (SELECT coalesce(json_object_agg(
              CASE t.typtype WHEN 'e' THEN 'enum ' WHEN 'd' THEN 'domain ' ELSE 'type ' END
              || quote_ident(nsp.nspname) || '.' || quote_ident(t.typname), json_build_object(
              'owner', pg_get_userbyid(t.typowner),
              'comment', obj_description(t.oid, 'pg_type'),
              'labels', (SELECT json_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid),
              'base', CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END)), '{}'::json)
              FROM pg_type t
              JOIN nsp ON nsp.oid = t.typnamespace
             WHERE t.typtype IN ('e', 'd', 'r', 'm')
                OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')),
  'functions', (SELECT coalesce(json_object_agg('function ' || quote_ident(nsp.nspname) || '.' || quote_ident(p.proname)
                  || '(' || pg_get_function_identity_arguments(p.oid) || ')', json_build_object(
                  'owner', pg_get_userbyid(p.proowner),
                  'comment', obj_description(p.oid, 'pg_proc'),
                  'result', pg_get_function_result(p.oid),
                  'body_md5', md5(coalesce(p.prosrc, '')),
                  'acl', (SELECT coalesce(json_agg(CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee)
                                                   END || ':' || a.privilege_type ORDER BY 1), '[]'::json)
                            FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a))), '{}'::json)
                  FROM pg_proc p
                  JOIN nsp ON nsp.oid = p.pronamespace
                 WHERE NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                                                               AND d.deptype = 'e')),
  'triggers', (SELECT coalesce(json_object_agg('trigger ' || quote_ident(nsp.nspname) || '.' || quote_ident(c.relname)
                 || '.' || quote_ident(tg.tgname), json_build_object('definition', pg_get_triggerdef(tg.oid),
                                                                     'enabled', tg.tgenabled,
                                                                     'comment', obj_description(tg.oid, 'pg_trigger'))),
                 '{}'::json)
                 FROM pg_trigger tg
                 JOIN pg_class c ON c.oid = tg.tgrelid
                 JOIN nsp ON nsp.oid = c.relnamespace
                WHERE NOT tg.tgisinternal),
  -- Row level security's policies, each as CREATE POLICY would say it: who, for what, under which conditions.
  'policies', (SELECT coalesce(json_object_agg('policy ' || quote_ident(nsp.nspname) || '.' || quote_ident(c.relname)
                 || '.' || quote_ident(p.polname), json_build_object('definition', concat_ws(' ',
                   CASE WHEN p.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END, 'FOR',
                   CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                                 WHEN 'd' THEN 'DELETE' ELSE 'ALL' END, 'TO',
                   (SELECT string_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r)) END, ', '
                                      ORDER BY 1) FROM unnest(p.polroles) r),
                   'USING (' || pg_get_expr(p.polqual, p.polrelid) || ')',
                   'WITH CHECK (' || pg_get_expr(p.polwithcheck, p.polrelid) || ')'))), '{}'::json)
                 FROM pg_policy p
                 JOIN pg_class c ON c.oid = p.polrelid
                 JOIN nsp ON nsp.oid = c.relnamespace),
  'extensions', (SELECT coalesce(json_object_agg('extension ' || quote_ident(e.extname), json_build_object(
                   'version', e.extversion, 'schema', n.nspname)), '{}'::json)
                   FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                  WHERE e.extname <> 'plpgsql')
)
"""
