#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: health_check
short_description: Read the weekly health facts of a PostgreSQL database, with the findings that need action
version_added: 0.1.0
description:
  - Reads, without changing anything, what the weekly health report shows - slow queries from
    C(pg_stat_statements) (its columns are named C(total_time) before PostgreSQL 13 and C(total_exec_time)
    after; both work), table and index sizes, unused indexes, the cache hit ratio, connections against
    C(max_connections), C(NOT VALID) constraints, the age of the newest verified backup, the free space of
    the data directory's file system, and security findings (application roles with SUPERUSER or
    CREATEROLE, md5 password hashes, CREATE on schema public for PUBLIC, remote connections without SSL).
  - Returns one line per finding that needs action in RV(findings).
  - Growth over time is the health report's job (the C(intowork.pgops.health_trend) filter compares
    reports); this module describes one moment.
options:
  app_roles:
    description: The application's roles, checked for SUPERUSER and CREATEROLE.
    type: list
    elements: str
    default: []
  backup_dir:
    description: Folder of the verified backups (with their manifests) on this host; empty skips the backup age.
    type: path
  max_backup_age_hours:
    description: A newest verified backup older than this is a finding.
    type: int
    default: 26
  slow_query_limit:
    description: How many statements to list, by total time.
    type: int
    default: 10
  slow_query_mean_ms:
    description: A statement whose mean time exceeds this many milliseconds is a finding.
    type: float
    default: 500
  min_cache_hit_ratio:
    description: A database cache hit ratio below this is a finding.
    type: float
    default: 0.99
  max_connection_ratio:
    description: Connections above this share of C(max_connections) are a finding.
    type: float
    default: 0.8
  unused_index_min_bytes:
    description: An index never scanned since the statistics were reset is a finding from this size on.
    type: int
    default: 1048576
extends_documentation_fragment:
  - intowork.pgops._connection
  - intowork.pgops._connection.ATTRIBUTES
attributes:
  check_mode:
    support: full
    details: Reads only.
  diff_mode:
    support: none
  idempotent:
    support: full
author:
  - INTOWORK platform team (@intowork)
"""

EXAMPLES = r"""
- name: Read the health facts
  intowork.pgops.health_check:
    app_roles: [intowork_app]
    backup_dir: /var/backups/pgops/intowork
  register: health

- name: Show what needs action
  ansible.builtin.debug:
    var: health.findings
"""

RETURN = r"""
taken:
  description: When the facts were read (UTC, ISO 8601).
  returned: always
  type: str
database:
  description: Name, size in bytes and server version.
  returned: always
  type: dict
tables:
  description: User tables, largest first, with total, table and index bytes and live rows.
  returned: always
  type: list
  elements: dict
indexes:
  description: User indexes with their size, scans and whether they enforce uniqueness.
  returned: always
  type: list
  elements: dict
unused_indexes:
  description: Indexes never scanned that enforce nothing, with their size.
  returned: always
  type: list
  elements: dict
slow_queries:
  description: Statements by total time (calls, total_ms, mean_ms, rows, query); empty without pg_stat_statements.
  returned: always
  type: list
  elements: dict
slow_query_source:
  description: Where the slow queries came from, or why there are none.
  returned: always
  type: str
cache_hit_ratio:
  description: Share of the database's block reads served from shared buffers; null before any read.
  returned: always
  type: float
connections:
  description: Client connections now, max_connections, and connections per state.
  returned: always
  type: dict
not_valid_constraints:
  description: Constraints added NOT VALID and never validated.
  returned: always
  type: list
  elements: dict
backup:
  description: The newest verified backup (path, ended, age_hours); null when none or not checked.
  returned: always
  type: dict
disk:
  description: Total and free bytes of the data directory's file system; null when it cannot be read from here.
  returned: always
  type: dict
security:
  description: Security findings, each with a check and a detail.
  returned: always
  type: list
  elements: dict
findings:
  description: One line per finding that needs action.
  returned: always
  type: list
  elements: str
"""

import calendar
import glob
import json
import os
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.intowork.pgops.plugins.module_utils._connection import (
    connect,
    connection_spec,
    psycopg2,
    require_psycopg2,
    run_module,
)

TABLES = """
SELECT c.oid::regclass::text, pg_total_relation_size(c.oid), pg_relation_size(c.oid), pg_indexes_size(c.oid),
       coalesce(s.n_live_tup, 0)
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
 WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg_toast%%'
 ORDER BY 2 DESC
"""

INDEXES = """
SELECT s.indexrelid::regclass::text, s.relid::regclass::text, pg_relation_size(s.indexrelid), s.idx_scan,
       i.indisunique OR i.indisprimary OR EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = s.indexrelid)
  FROM pg_stat_user_indexes s
  JOIN pg_index i ON i.indexrelid = s.indexrelid
 ORDER BY 3 DESC
"""

SERVER = """
SELECT current_database(), pg_database_size(current_database()), current_setting('server_version'),
       current_setting('server_version_num')::int, current_setting('max_connections')::int,
       (SELECT blks_hit::float8 / nullif(blks_hit + blks_read, 0) FROM pg_stat_database
         WHERE datname = current_database()),
       (SELECT coalesce(json_object_agg(state, n), '{}') FROM (
          SELECT coalesce(state, 'unknown') AS state, count(*) AS n FROM pg_stat_activity
           WHERE backend_type = 'client backend' GROUP BY 1) s),
       (SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()),
       has_schema_privilege('public', 'public', 'CREATE'),
       (SELECT setting FROM pg_settings WHERE name = 'data_directory')
"""

NOT_VALID = """
SELECT conrelid::regclass::text, conname, contype FROM pg_constraint
 WHERE NOT convalidated AND connamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
 ORDER BY 1, 2
"""

ROLES = "SELECT rolname, rolsuper, rolcreaterole FROM pg_roles WHERE rolname = ANY(%s) ORDER BY 1"

# pg_authid is readable by superusers only; the others get an empty answer and a note.
MD5_ROLES = """
SELECT rolname FROM pg_authid WHERE rolcanlogin AND rolpassword LIKE 'md5%%' ORDER BY 1
"""

PLAIN_REMOTE = """
SELECT a.usename, host(a.client_addr), count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid
 WHERE a.client_addr IS NOT NULL AND NOT host(a.client_addr) IN ('127.0.0.1', '::1') AND NOT s.ssl
 GROUP BY 1, 2 ORDER BY 3 DESC
"""


def statements_query(version_num, schema):
    """pg_stat_statements by total time; its timing columns were renamed in PostgreSQL 13."""
    total, mean = ("total_exec_time", "mean_exec_time") if version_num >= 130000 else ("total_time", "mean_time")
    return ("SELECT calls, %s, %s, rows, left(regexp_replace(query, '\\s+', ' ', 'g'), 300) "
            "FROM %s.pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid AND d.datname = current_database() "
            "ORDER BY 2 DESC LIMIT %%s" % (total, mean, schema))


def slow_queries(cur, version_num, limit):
    cur.execute("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
                "WHERE e.extname = 'pg_stat_statements'")
    row = cur.fetchone()
    if row is None:
        return [], "pg_stat_statements is not installed in this database (the monitoring role installs it)"
    cur.execute("SAVEPOINT statements")
    try:
        cur.execute(statements_query(version_num, '"%s"' % row[0].replace('"', '""')), (limit,))
    except psycopg2.Error as error:
        cur.execute("ROLLBACK TO SAVEPOINT statements")
        return [], "pg_stat_statements cannot be read: %s" % " ".join(str(error).split())
    return [{"calls": calls, "total_ms": round(total, 1), "mean_ms": round(mean, 2), "rows": rows, "query": query}
            for calls, total, mean, rows, query in cur.fetchall()], "pg_stat_statements"


def newest_backup(backup_dir):
    newest = None
    for path in glob.glob(os.path.join(backup_dir, "*.manifest.json")):
        try:
            with open(path) as handle:
                manifest = json.load(handle)
        except (IOError, OSError, ValueError):
            continue
        if manifest.get("verified") and manifest.get("ended") and (newest is None or manifest["ended"] > newest["ended"]):
            newest = manifest
    if newest is None:
        return None
    ended = calendar.timegm(time.strptime(newest["ended"][:19], "%Y-%m-%dT%H:%M:%S"))
    age = (time.time() - ended) / 3600
    return {"path": newest.get("path"), "ended": newest["ended"], "age_hours": round(age, 1)}


def disk_of(path):
    if not path:
        return None
    try:
        stats = os.statvfs(path)
    except OSError:
        return None  # the server is elsewhere, or this user cannot see its data directory
    return {"path": path, "total_bytes": stats.f_blocks * stats.f_frsize, "free_bytes": stats.f_bavail * stats.f_frsize}


def gather(params, check_mode):
    conn = connect(params)
    try:
        conn.set_session(readonly=True)
        cur = conn.cursor()
        cur.execute(SERVER)
        (name, size, version, version_num, max_connections, hit_ratio, by_state, stats_reset, public_create,
         data_directory) = cur.fetchone()
        cur.execute(TABLES)
        tables = [{"name": t, "total_bytes": total, "table_bytes": heap, "index_bytes": index, "live_rows": rows}
                  for t, total, heap, index, rows in cur.fetchall()]
        cur.execute(INDEXES)
        indexes = [{"name": i, "table": t, "bytes": size_, "scans": scans, "unique": unique}
                   for i, t, size_, scans, unique in cur.fetchall()]
        cur.execute(NOT_VALID)
        not_valid = [{"table": t, "name": n, "type": kind} for t, n, kind in cur.fetchall()]
        statements, source = slow_queries(cur, version_num, params["slow_query_limit"])
        cur.execute(ROLES, (params["app_roles"],))
        roles = cur.fetchall()
        cur.execute("SAVEPOINT authid")
        try:
            cur.execute(MD5_ROLES)
            md5 = [row[0] for row in cur.fetchall()]
        except psycopg2.Error:
            cur.execute("ROLLBACK TO SAVEPOINT authid")
            md5 = None
        cur.execute(PLAIN_REMOTE)
        plain = cur.fetchall()
    finally:
        conn.rollback()
        conn.close()

    findings = []
    security = []
    for role, superuser, createrole in roles:
        for flag, has in (("SUPERUSER", superuser), ("CREATEROLE", createrole)):
            if has:
                security.append({"check": "application role privileges", "detail": "%s has %s" % (role, flag)})
    missing = sorted(set(params["app_roles"]) - set(row[0] for row in roles))
    if missing:
        findings.append("application role(s) %s do not exist: fix app_roles or create them" % ", ".join(missing))
    if md5 is None:
        security.append({"check": "password hashes", "detail": "not checked: reading pg_authid needs a superuser"})
    for role in md5 or []:
        security.append({"check": "password hashes", "detail": "%s has an md5 password hash: set its password again "
                                                               "with password_encryption = scram-sha-256" % role})
    if public_create:
        security.append({"check": "schema public", "detail": "PUBLIC may CREATE in schema public: "
                                                             "REVOKE CREATE ON SCHEMA public FROM PUBLIC"})
    for user, address, count in plain:
        security.append({"check": "SSL", "detail": "%d connection(s) of %s from %s without SSL" % (count, user, address)})
    findings.extend("security: %s" % item["detail"] for item in security if not item["detail"].startswith("not checked"))

    unused = [index for index in indexes if index["scans"] == 0 and not index["unique"]]
    for index in unused:
        if index["bytes"] >= params["unused_index_min_bytes"]:
            findings.append("unused index %s on %s: %d MB never scanned since %s; drop it if no rare job needs it" % (
                index["name"], index["table"], index["bytes"] // 1048576, stats_reset or "the statistics began"))
    for query in statements:
        if query["mean_ms"] > params["slow_query_mean_ms"]:
            findings.append("slow query: %.0f ms on average over %d call(s): %s" % (
                query["mean_ms"], query["calls"], query["query"][:120]))
    if hit_ratio is not None and hit_ratio < params["min_cache_hit_ratio"]:
        findings.append("cache hit ratio %.3f is below %.2f: shared_buffers may be too small for the working set" % (
            hit_ratio, params["min_cache_hit_ratio"]))
    total_connections = sum(by_state.values())
    if total_connections > params["max_connection_ratio"] * max_connections:
        findings.append("%d connections of max_connections %d: check the pools (pool_config.yml)" % (
            total_connections, max_connections))
    for constraint in not_valid:
        findings.append("constraint %s on %s is NOT VALID: VALIDATE CONSTRAINT it once the data is clean" % (
            constraint["name"], constraint["table"]))
    backup = newest_backup(params["backup_dir"]) if params["backup_dir"] else None
    if params["backup_dir"] and backup is None:
        findings.append("no verified backup in %s" % params["backup_dir"])
    elif backup and backup["age_hours"] > params["max_backup_age_hours"]:
        findings.append("newest verified backup is %.0f hours old (over %d): check the backup cron and its log" % (
            backup["age_hours"], params["max_backup_age_hours"]))

    return {
        "changed": False,
        "taken": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "database": {"name": name, "size_bytes": size, "server_version": version, "server_version_num": version_num,
                     "stats_reset": stats_reset.isoformat() if stats_reset else None},
        "tables": tables,
        "indexes": indexes,
        "unused_indexes": unused,
        "slow_queries": statements,
        "slow_query_source": source,
        "cache_hit_ratio": round(hit_ratio, 5) if hit_ratio is not None else None,
        "connections": {"total": total_connections, "max_connections": max_connections, "by_state": by_state},
        "not_valid_constraints": not_valid,
        "backup": backup,
        "disk": disk_of(data_directory),
        "security": security,
        "findings": findings,
    }


def main():
    argument_spec = connection_spec()
    argument_spec.update(
        app_roles=dict(type="list", elements="str", default=[]),
        backup_dir=dict(type="path"),
        max_backup_age_hours=dict(type="int", default=26),
        slow_query_limit=dict(type="int", default=10),
        slow_query_mean_ms=dict(type="float", default=500),
        min_cache_hit_ratio=dict(type="float", default=0.99),
        max_connection_ratio=dict(type="float", default=0.8),
        unused_index_min_bytes=dict(type="int", default=1048576),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    require_psycopg2(module)
    run_module(module, gather)


if __name__ == "__main__":
    main()
