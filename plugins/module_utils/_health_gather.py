# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to intowork.pgops: not a public API, may change without notice.
"""What the health_check module reads from the server and the database, and the findings it makes of it:
its SQL and gather(). The arithmetic (bloat, statement deltas) is in _health."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import calendar
import decimal
import glob
import json
import os
import time

from ansible_collections.intowork.pgops.plugins.module_utils._catalog import INDEX_CATALOG
from ansible_collections.intowork.pgops.plugins.module_utils._connection import connect, psycopg2
from ansible_collections.intowork.pgops.plugins.module_utils._health import (
    marked,
    WRAPAROUND_LIMIT,
    btree_bloat_bytes,
    heap_bloat_bytes,
    is_maintenance,
    statement_delta,
)
from ansible_collections.intowork.pgops.plugins.module_utils._index_spec import load_spec_file, overlaps
from ansible_collections.intowork.pgops.plugins.module_utils._replication import read_slots, read_standbys
from ansible_collections.intowork.pgops.plugins.module_utils._text import duration_text, size_text, without_secrets

SERVER = """
SELECT current_database(), pg_database_size(current_database()), current_setting('server_version'),
       current_setting('server_version_num')::int, current_setting('max_connections')::int,
       (SELECT blks_hit::float8 / nullif(blks_hit + blks_read, 0) FROM pg_stat_database
         WHERE datname = current_database()),
       (SELECT blks_read FROM pg_stat_database WHERE datname = current_database()),
       (SELECT coalesce(json_object_agg(state, n), '{}') FROM (
          SELECT coalesce(state, 'unknown') AS state, count(*) AS n FROM pg_stat_activity
           WHERE backend_type = 'client backend' GROUP BY 1) s),
       (SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()),
       has_schema_privilege('public', 'public', 'CREATE'),
       (SELECT setting FROM pg_settings WHERE name = 'data_directory'),
       current_setting('block_size')::int, pg_is_in_recovery(), current_setting('archive_mode'),
       (SELECT oid FROM pg_database WHERE datname = current_database()),
       (SELECT rolname FROM pg_roles WHERE oid = 10), now(), current_setting('autovacuum')::bool,
       current_setting('track_counts')::bool
"""

# Relation sizes, the statistics' row counts and the average row width (pg_stats, from the last ANALYZE)
# that the bloat estimate needs; the width is null unless every column has statistics.
TABLES = """
SELECT c.oid::regclass::text, c.oid, coalesce(s.n_live_tup, 0), coalesce(s.n_dead_tup, 0), coalesce(s.n_mod_since_analyze, 0),
       greatest(s.last_vacuum, s.last_autovacuum), greatest(s.last_analyze, s.last_autoanalyze),
       CASE WHEN w.columns = (SELECT count(*) FROM pg_attribute a
                               WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
            THEN w.width END,
       coalesce((SELECT option_value FROM pg_options_to_table(c.reloptions) WHERE option_name = 'fillfactor'),
                '100')::int,
       c.relkind,
       coalesce((SELECT option_value FROM pg_options_to_table(c.reloptions) WHERE option_name = 'autovacuum_enabled'),
                'true')::bool
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
  LEFT JOIN LATERAL (SELECT count(*) AS columns, sum(ceil(st.avg_width / al.n::numeric) * al.n)::bigint AS width
                       FROM pg_attribute a
                       JOIN pg_stats st ON st.schemaname = n.nspname AND st.tablename = c.relname
                                       AND st.attname = a.attname AND NOT st.inherited
                      CROSS JOIN LATERAL (SELECT CASE a.attalign WHEN 'd' THEN 8 WHEN 'i' THEN 4
                                                 WHEN 's' THEN 2 ELSE 1 END AS n) al
                      WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) w ON true
 WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg_toast%%'
 ORDER BY c.oid
"""

# Sizes open each relation, so a table locked exclusively (or queued for it) makes them wait: they are read
# in one go with a short lock timeout, and only when that fails one table at a time, the locked ones then
# estimated from the catalog (pg_class.relpages, as of the last vacuum or analyse).
SIZES = """
SELECT c.oid, pg_total_relation_size(c.oid), pg_relation_size(c.oid), pg_indexes_size(c.oid)
  FROM pg_class c WHERE c.oid = ANY(%s::oid[])
"""

ESTIMATED_SIZE = """
SELECT (c.relpages + coalesce(t.relpages, 0) + coalesce(i.pages, 0))::bigint * current_setting('block_size')::int,
       c.relpages::bigint * current_setting('block_size')::int,
       coalesce(i.pages, 0)::bigint * current_setting('block_size')::int
  FROM pg_class c
  LEFT JOIN pg_class t ON t.oid = c.reltoastrelid
  LEFT JOIN LATERAL (SELECT sum(ic.relpages) AS pages FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid
                      WHERE x.indrelid = c.oid) i ON true
 WHERE c.oid = %s
"""

LOCK_NOT_AVAILABLE = "55P03"

# The key width of plain-column B-tree indexes, for their bloat estimate (expressions and partial indexes
# are left out: their entries cannot be sized from pg_stats).
INDEXES = """
SELECT s.indexrelid::regclass::text, s.relid::regclass::text, pg_relation_size(s.indexrelid), s.idx_scan,
       i.indisunique OR i.indisprimary OR EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = s.indexrelid),
       EXISTS (SELECT 1 FROM pg_constraint f WHERE f.contype = 'f' AND f.conrelid = i.indrelid
                  AND (SELECT array_agg(k ORDER BY k) FROM unnest(f.conkey) k)
                    = (SELECT array_agg(k ORDER BY k) FROM unnest((i.indkey::int2[])[0:cardinality(f.conkey) - 1]) k)),
       ic.relname, coalesce(t.n_live_tup, 0),
       CASE WHEN am.amname = 'btree' AND i.indpred IS NULL AND NOT 0 = ANY(i.indkey::int2[])
             AND w.columns = i.indnatts THEN w.width END
  FROM pg_stat_user_indexes s
  JOIN pg_index i ON i.indexrelid = s.indexrelid
  JOIN pg_class ic ON ic.oid = i.indexrelid
  JOIN pg_am am ON am.oid = ic.relam
  LEFT JOIN pg_stat_user_tables t ON t.relid = i.indrelid
  LEFT JOIN LATERAL (SELECT count(*) AS columns, sum(ceil(st.avg_width / al.n::numeric) * al.n)::bigint AS width
                       FROM unnest(i.indkey::int2[]) k(attnum)
                       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                       JOIN pg_stats st ON st.schemaname = s.schemaname AND st.tablename = s.relname
                                       AND st.attname = a.attname AND NOT st.inherited
                      CROSS JOIN LATERAL (SELECT CASE a.attalign WHEN 'd' THEN 8 WHEN 'i' THEN 4
                                                 WHEN 's' THEN 2 ELSE 1 END AS n) al) w ON true
 ORDER BY 3 DESC
"""

SCHEMAS = """
SELECT nspname FROM pg_namespace
 WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg_toast%%'
   AND nspname NOT LIKE 'pg_temp%%' ORDER BY 1
"""

# Sessions of this database that are over a threshold; the caller's own is left out.
SESSIONS = """
SELECT pid, usename, application_name, state, query_start,
       extract(epoch FROM now() - query_start), extract(epoch FROM now() - state_change),
       extract(epoch FROM now() - xact_start), age(backend_xmin), left(regexp_replace(query, '\\s+', ' ', 'g'), 200)
  FROM pg_stat_activity
 WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()
   AND ((state = 'active' AND now() - query_start > make_interval(secs => %(long_query)s))
        OR (state LIKE 'idle in transaction%%' AND now() - state_change > make_interval(secs => %(idle)s)))
 ORDER BY xact_start NULLS LAST
"""

# Lock waits over the threshold, each with what blocks it; the chain's root is found in Python.
BLOCKING = """
SELECT w.pid, w.usename, extract(epoch FROM now() - w.state_change), left(regexp_replace(w.query, '\\s+', ' ', 'g'), 200),
       pg_blocking_pids(w.pid)
  FROM pg_stat_activity w
 WHERE w.wait_event_type = 'Lock' AND w.datname = current_database()
"""

HOLDERS = """
SELECT pid, usename, state, left(regexp_replace(query, '\\s+', ' ', 'g'), 200), pg_blocking_pids(pid)
  FROM pg_stat_activity WHERE pid = ANY(%s)
"""

# What holds the xmin horizon back, oldest first: VACUUM keeps every row version one of these may still see.
# Sessions of this database (a snapshot or a transaction ID), standbys' feedback, slots, prepared transactions.
HORIZON = """
SELECT 'session', pid::text, usename, application_name, state, greatest(age(backend_xmin), age(backend_xid)),
       extract(epoch FROM now() - xact_start)
  FROM pg_stat_activity
 WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()
   AND (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL)
UNION ALL
SELECT 'standby', application_name, usename, NULL, state, age(backend_xmin), NULL
  FROM pg_stat_replication WHERE backend_xmin IS NOT NULL
UNION ALL
SELECT 'replication slot', slot_name, NULL, slot_type, CASE WHEN active THEN 'active' ELSE 'inactive' END, age(xmin),
       NULL
  FROM pg_replication_slots WHERE xmin IS NOT NULL
UNION ALL
SELECT 'prepared transaction', gid, owner, NULL, NULL, age(transaction), extract(epoch FROM now() - prepared)
  FROM pg_prepared_xacts WHERE database = current_database()
 ORDER BY 6 DESC
"""

WRAPAROUND = """
SELECT datname, age(datfrozenxid), mxid_age(datminmxid) FROM pg_database WHERE datallowconn ORDER BY 2 DESC
"""

# A sequence's limit is the smaller of its own and its column's type (a serial on integer stops at 2^31 - 1
# although its sequence is bigint).
SEQUENCES = """
SELECT s.schemaname || '.' || s.sequencename, s.last_value, s.min_value, s.max_value, s.increment_by,
       col.owner, col.typname
  FROM pg_sequences s
  LEFT JOIN LATERAL (
       SELECT d.refobjid::regclass::text || '.' || a.attname AS owner, t.typname
         FROM pg_depend d
         JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
         JOIN pg_type t ON t.oid = a.atttypid
        WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
          AND d.objid = (quote_ident(s.schemaname) || '.' || quote_ident(s.sequencename))::regclass
          AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0
        LIMIT 1) col ON true
 WHERE s.schemaname NOT IN ('pg_catalog', 'information_schema')
"""

TYPE_LIMITS = {"int2": (-32768, 32767), "int4": (-2147483648, 2147483647)}

ARCHIVER = ("SELECT failed_count, last_failed_wal, last_failed_time, last_archived_time, "
            "extract(epoch FROM pg_catalog.now() - last_archived_time)::float8 FROM pg_stat_archiver")

ARCHIVE_READY = "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%%.ready'"

NOT_VALID = """
SELECT conrelid::regclass::text, conname, contype FROM pg_constraint
 WHERE NOT convalidated AND connamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
 ORDER BY 1, 2
"""

ROLES = "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)"

# Roles whose attributes bypass the privilege system; the predefined pg_* roles have none of these.
PRIVILEGED_ROLES = """
SELECT rolname, rolsuper, rolcreaterole, rolbypassrls FROM pg_roles
 WHERE (rolsuper OR rolcreaterole OR rolbypassrls) AND oid <> 10 AND NOT rolname = ANY(%s) ORDER BY 1
"""

# pg_authid is readable by superusers only; the others get an empty answer and a note.
MD5_ROLES = """
SELECT rolname FROM pg_authid WHERE rolcanlogin AND rolpassword LIKE 'md5%%' ORDER BY 1
"""

PLAIN_REMOTE = """
SELECT a.usename, host(a.client_addr), count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid
 WHERE a.client_addr IS NOT NULL AND NOT host(a.client_addr) IN ('127.0.0.1', '::1') AND NOT s.ssl
 GROUP BY 1, 2 ORDER BY 3 DESC
"""

# When the database's statistics began, if they were never reset: its creation, from its PG_VERSION file.
DATABASE_CREATED = "SELECT (pg_stat_file('base/' || %s || '/PG_VERSION')).modification"


def statements_query(version_num, schema):
    """pg_stat_statements by total time; its timing columns were renamed in PostgreSQL 13."""
    total = "total_exec_time" if version_num >= 130000 else "total_time"
    return ("SELECT s.queryid::text, pg_get_userbyid(s.userid), calls, %s, rows, "
            "left(regexp_replace(query, '\\s+', ' ', 'g'), 300) "
            "FROM %s.pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid AND d.datname = current_database() "
            "ORDER BY 4 DESC LIMIT %%s" % (total, schema))


def _plain(value):
    """numeric (extract(epoch ...), WAL distances) as int or float, which JSON and arithmetic take."""
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


class MarkedCursor(object):
    """A cursor whose every statement carries the health check's mark."""

    def __init__(self, cur):
        self.cur = cur

    def execute(self, statement, args=None):
        return self.cur.execute(marked(statement), args)

    def __getattr__(self, name):
        return getattr(self.cur, name)


class Reader(object):
    """Runs the read-only queries; one that this login may not run becomes a note, not a failure."""

    def __init__(self, cur):
        self.cur = cur
        self.notes = []

    def all(self, statement, args=None, what=None, quiet_codes=()):
        """The rows, or None (with a note unless the error's code is in quiet_codes) when `what` may fail."""
        def rows(cur):
            cur.execute(statement, args)
            return [tuple(_plain(value) for value in row) for row in cur.fetchall()]
        return self.call(rows, what, quiet_codes)

    def call(self, function, what=None, quiet_codes=()):
        """function(cursor), or None with a note when this login may not read `what`; with no `what`, the
        error is raised."""
        self.cur.execute("SAVEPOINT fact")
        try:
            value = function(MarkedCursor(self.cur))
        except psycopg2.Error as error:
            self.cur.execute("ROLLBACK TO SAVEPOINT fact")
            if what is None:
                raise
            if error.pgcode not in quiet_codes:
                self.notes.append("%s not checked: %s" % (what, " ".join(str(error).split())))
            return None
        self.cur.execute("RELEASE SAVEPOINT fact")
        return value


def read_statements(reader, version_num, limit):
    rows = reader.all("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
                      "WHERE e.extname = 'pg_stat_statements'")
    if not rows:
        return None, None, "pg_stat_statements is not installed in this database (the monitoring role installs it)"
    schema = '"%s"' % rows[0][0].replace('"', '""')
    reader.cur.execute("SAVEPOINT statements")
    try:
        reader.cur.execute(marked(statements_query(version_num, schema)), (limit,))
        statements = [{"queryid": queryid, "role": role, "calls": calls, "total_ms": round(total, 1), "rows": rows_,
                       "query": without_secrets(query), "maintenance": is_maintenance(query, rows_, calls)}
                      for queryid, role, calls, total, rows_, query in reader.cur.fetchall()]
    except psycopg2.Error as error:
        reader.cur.execute("ROLLBACK TO SAVEPOINT statements")
        return None, None, "pg_stat_statements cannot be read: %s" % " ".join(str(error).split())
    reset = None
    if version_num >= 140000:
        info = reader.all("SELECT stats_reset FROM %s.pg_stat_statements_info" % schema, what="pg_stat_statements_info")
        reset = info[0][0].isoformat() if info and info[0][0] else None
    return statements, reset, "pg_stat_statements"


def relation_sizes(reader, oids):
    """oid -> (total, heap, indexes, estimated) bytes."""
    cur = reader.cur
    cur.execute("SET LOCAL lock_timeout = '1s'")
    rows = reader.all(SIZES, (oids,), what="sizes", quiet_codes=(LOCK_NOT_AVAILABLE,))
    if rows is None:
        cur.execute("SET LOCAL lock_timeout = '100ms'")
        rows = []
        for oid in oids:
            found = reader.all(SIZES, ([oid],), what="sizes", quiet_codes=(LOCK_NOT_AVAILABLE,))
            if found is None:
                found = [(oid,) + tuple(estimate) + (True,) for estimate in reader.all(ESTIMATED_SIZE, (oid,))]
            rows.extend(found)
    cur.execute("SET LOCAL lock_timeout = 0")
    return dict((row[0], tuple(row[1:4]) + (len(row) > 4,)) for row in rows)


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


def strategy_index_names(path):
    if not path:
        return set()
    return set(entry.get("name") for entry in load_spec_file(path)[1] if isinstance(entry, dict))


def milliseconds_text(milliseconds):
    return "%.0f ms" % milliseconds if milliseconds < 10000 else duration_text(milliseconds / 1000.0)


def _days(seconds):
    return seconds / 86400.0


def _iso(stamp):
    return stamp.isoformat() if stamp is not None else None


class Findings(object):
    def __init__(self):
        self.problems = []

    def add(self, check, severity, subject, detail, threshold):
        self.problems.append({"check": check, "severity": severity, "subject": subject, "detail": detail,
                              "threshold": threshold})

    def lines(self):
        return ["%s (threshold: %s)" % (p["detail"], p["threshold"]) if p["threshold"] else p["detail"]
                for p in self.problems]


def pgbackrest_findings(read, limits, found, archive_lag_seconds):
    """pgBackRest's view of the cluster (pitr_restore state=repository: `repository`, `problem`) as the report's facts,
    and its findings: not readable, a stanza that cannot be recovered from, a newest backup past the age limit."""
    repository = read.get("repository")
    if not repository:
        found.add("physical backup", "critical", "pgBackRest",
                  "pgBackRest's repository could not be read: %s" % (read.get("problem") or "no answer"), None)
        return None
    stanza = repository["stanza"]
    if repository["status_code"] != 0:
        found.add("physical backup", "critical", stanza,
                  "stanza %s: %s (status %d): nothing can be recovered from it; run playbooks/pgbackrest.yml and a "
                  "full backup" % (stanza, repository["status"], repository["status_code"]), None)
    newest = repository["newest"].get("incr")
    if newest and newest["age_seconds"] > limits["max_backup_age_hours"] * 3600:
        found.add("physical backup", "critical", stanza,
                  "the newest backup of stanza %s (%s) is %.0f hours old (over %d): check the pgBackRest cron and "
                  "its log" % (stanza, newest["label"], newest["age_seconds"] / 3600.0, limits["max_backup_age_hours"]),
                  "max_backup_age_hours %d" % limits["max_backup_age_hours"])
    return dict(repository, rows=physical_rows(repository, archive_lag_seconds))


def physical_rows(repository, archive_lag_seconds):
    """The report's pgBackRest section, (label, text) per row, the same in the Markdown and the HTML."""
    def utc(seconds):
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))

    rows = []
    for kind, words in (("full", "full"), ("diff", "differential"), ("incr", "incremental")):
        newest = repository["newest"].get(kind)
        rows.append(["newest %s (or fuller)" % words, "%s (%s), ended %s, %.1f h ago, %s" % (
            newest["label"], newest["type"], utc(newest["stop"]), newest["age_seconds"] / 3600.0,
            size_text(newest["bytes"])) if newest else "none"])
    rows.append(["recoverable since", utc(repository["recoverable_since"]) if repository["recoverable_since"]
                 else "nothing: no backup"])
    rows.append(["repository", "%d backup(s), %s (stanza %s: %s)" % (
        repository["backups"], size_text(repository["repository_bytes"]), repository["stanza"], repository["status"])])
    rows.append(["archived WAL", "%s to %s" % (repository["archive_min"], repository["archive_max"])
                 if repository["archive_max"] else "none"])
    rows.append(["archive lag", "%d s since a WAL segment last reached the archive" % archive_lag_seconds
                 if archive_lag_seconds is not None else "nothing archived yet"])
    return rows


def horizon_holder(rows, session_min_seconds):
    """The oldest of what holds the xmin horizon back (HORIZON's rows, oldest first), in words; None when nothing
    does: a session only once its transaction is older than `session_min_seconds` (a busy database always has
    young ones), a standby's feedback, a slot or a prepared transaction always."""
    for kind, name, user, detail, state, xid_age, seconds in rows:
        if xid_age is None or (kind == "session" and (seconds is None or seconds < session_min_seconds)):
            continue
        if kind == "session":
            return "pid %s (%s, %s, %s, its transaction open %s, %d transactions old)" % (
                name, user, detail or "no application_name", state, duration_text(seconds), xid_age)
        if kind == "prepared transaction":
            return ("prepared transaction %s (%s, prepared %s ago, %d transactions old: COMMIT PREPARED or ROLLBACK "
                    "PREPARED it)" % (json.dumps(name), user, duration_text(seconds), xid_age))
        if kind == "standby":
            return "standby %s's feedback (hot_standby_feedback, %d transactions old)" % (name, xid_age)
        return "replication slot %s (%s, %s, %d transactions old)" % (name, detail, state, xid_age)
    return None


def chain_root(pid, blockers_of, seen=None):
    """The session at the head of a lock chain: follow the blockers until one is not itself blocked."""
    seen = seen or set()
    seen.add(pid)
    for blocker in blockers_of.get(pid, []):
        if blocker not in seen:
            return chain_root(blocker, blockers_of, seen)
    return pid


def gather(params, check_mode):
    limits = params["thresholds"]
    strategy = strategy_index_names(params["index_spec_file"])
    allowed = list(params["privileged_roles_allowed"])
    conn = connect(params)
    try:
        conn.set_session(readonly=True)
        cur = conn.cursor()
        reader = Reader(cur)
        cur.execute(marked(SERVER))
        (name, size, version, version_num, max_connections, hit_ratio, blocks_read, by_state, stats_reset,
         public_create, data_directory, block_size, in_recovery, archive_mode, database_oid, bootstrap_role,
         now, autovacuum, track_counts) = cur.fetchone()
        stats_since = stats_reset
        if stats_since is None:
            created = reader.all(DATABASE_CREATED, (str(database_oid),), what="the age of the statistics")
            stats_since = created[0][0] if created else None
        tables = []
        maintained = {}
        table_rows = reader.all(TABLES)
        sizes = relation_sizes(reader, [row[1] for row in table_rows])
        for (table, oid, live, dead, changes, vacuumed, analysed, width, fillfactor, kind,
             table_autovacuum) in table_rows:
            if oid not in sizes:
                continue  # dropped while the report read
            total, heap, index_bytes, estimated = sizes[oid]
            tables.append({"name": table, "total_bytes": total, "table_bytes": heap, "index_bytes": index_bytes,
                           "live_rows": live, "dead_rows": dead, "changes_since_analyze": changes,
                           "last_vacuum": _iso(vacuumed), "last_analyze": _iso(analysed),
                           "bloat_bytes": heap_bloat_bytes(heap, live, width, fillfactor, block_size)
                           if kind != "p" else None, "size_estimated": estimated,
                           "autovacuum": table_autovacuum})
            maintained[table] = (vacuumed, analysed)
        tables.sort(key=lambda item: -item["total_bytes"])
        locked = [item["name"] for item in tables if item["size_estimated"]]
        if locked:
            reader.notes.append("sizes of %s estimated from the catalog: locked by another session" % ", ".join(locked))
        indexes = []
        for (index, table, index_size, scans, unique, backs_fk, short_name, rows, key_width) in reader.all(INDEXES):
            indexes.append({"name": index, "table": table, "bytes": index_size, "scans": scans, "unique": unique,
                            "foreign_key": backs_fk, "strategy": short_name in strategy or index in strategy,
                            "bloat_bytes": btree_bloat_bytes(index_size, rows, key_width, block_size)})
        catalogs = []
        # pg_get_expr opens each table: behind an exclusive lock, that schema's index checks are skipped.
        cur.execute("SET LOCAL lock_timeout = '1s'")
        for (schema,) in reader.all(SCHEMAS):
            row = reader.all(INDEX_CATALOG, {"schema": schema}, what="invalid and duplicate indexes of schema %s"
                             % schema)
            if row:
                catalogs.append((schema, {"indexes": row[0][1]}))
        cur.execute("SET LOCAL lock_timeout = 0")
        sessions = reader.all(SESSIONS, {"long_query": limits["long_query_seconds"],
                                         "idle": limits["idle_in_transaction_seconds"]}) or []
        waits = reader.all(BLOCKING) or []
        blocker_pids = sorted(set(pid for row in waits for pid in row[4]))
        holders = reader.all(HOLDERS, (blocker_pids,)) if blocker_pids else []
        # Every statement text the report keeps or prints, without its passwords and connection strings.
        sessions = [row[:9] + (without_secrets(row[9]),) + row[10:] for row in sessions]
        waits = [row[:3] + (without_secrets(row[3]),) + row[4:] for row in waits]
        holders = [row[:3] + (without_secrets(row[3]),) + row[4:] for row in holders]
        horizon = reader.all(HORIZON, what="what holds the xmin horizon") or []
        wraparound = reader.all(WRAPAROUND)
        sequences = reader.all(SEQUENCES, what="sequences") or []
        # On a standby the WAL positions of the primary are not there to compare with.
        standbys = [] if in_recovery else reader.call(read_standbys, "replication") or []
        replay_delay = None
        if in_recovery:
            delay = reader.all("SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp())")
            replay_delay = delay[0][0] if delay else None
        slots = [] if in_recovery else reader.call(read_slots, "replication slots") or []
        archiver = reader.all(ARCHIVER, what="WAL archiving")
        ready = reader.all(ARCHIVE_READY, what="the WAL archive backlog") if archive_mode != "off" else None
        not_valid = [{"table": t, "name": n, "type": kind} for t, n, kind in reader.all(NOT_VALID)]
        snapshot, statements_reset, source = read_statements(reader, version_num, params["statement_snapshot_limit"])
        existing = set(row[0] for row in reader.all(ROLES, (params["app_roles"],)))
        privileged = reader.all(PRIVILEGED_ROLES, (allowed,))
        md5 = reader.all(MD5_ROLES, what="password hashes (reading pg_authid needs a superuser)")
        plain = reader.all(PLAIN_REMOTE)
    finally:
        conn.rollback()
        conn.close()

    found = Findings()
    notes = list(reader.notes)
    stats_age_days = _days((now - stats_since).total_seconds()) if stats_since else None

    # Sessions, and the lock chains among them.
    session_facts = []
    for pid, user, application, state, query_start, running, in_state, in_transaction, xmin_age, query in sessions:
        session_facts.append({"pid": pid, "user": user, "application": application, "state": state,
                              "query_start": _iso(query_start), "query": query,
                              "seconds": round(running if state == "active" else in_state, 1)})
        holds_back = " and holds back vacuum (xmin %d transactions old)" % xmin_age if xmin_age else ""
        if state == "active":
            found.add("long-running query", "warning", "pid %d" % pid,
                      "pid %d (%s, %s) has run one statement for %s since %s%s: %s" % (
                          pid, user, application or "no application_name", duration_text(running),
                          _iso(query_start), holds_back, query),
                      "long_query_seconds %d" % limits["long_query_seconds"])
        else:
            found.add("idle in transaction", "warning", "pid %d" % pid,
                      "pid %d (%s, %s) has been %s for %s%s; its last statement: %s" % (
                          pid, user, application or "no application_name", state, duration_text(in_state),
                          holds_back, query),
                      "idle_in_transaction_seconds %d" % limits["idle_in_transaction_seconds"])
    blockers_of = dict((row[0], list(row[4])) for row in waits)
    blockers_of.update((row[0], list(row[4])) for row in holders)
    holder_facts = dict((row[0], {"pid": row[0], "user": row[1], "state": row[2], "query": row[3]}) for row in holders)
    blocking = []
    for pid, user, waited, query, blocked_by in waits:
        root = chain_root(pid, blockers_of)
        blocking.append({"pid": pid, "user": user, "seconds": round(waited, 1), "query": query,
                         "blocked_by": list(blocked_by), "root": root})
        if waited is None or waited < limits["lock_wait_seconds"]:
            continue
        head = holder_facts.get(root, {"user": "?", "state": "?", "query": "?"})
        found.add("blocking lock chain", "warning", "pid %d" % pid,
                  "pid %d (%s) has waited %s for a lock held by pid %s; the chain starts at pid %d (%s, %s): %s; "
                  "waiting: %s" % (pid, user, duration_text(waited), ", ".join(str(b) for b in blocked_by), root,
                                   head["user"], head["state"], head["query"], query),
                  "lock_wait_seconds %d" % limits["lock_wait_seconds"])

    # Autovacuum off, for the server or a table: nothing else is vacuumed or analysed without someone's hand.
    if not autovacuum or not track_counts:
        found.add("autovacuum off", "critical", "server",
                  "autovacuum is off on the server (%s): no table is vacuumed or analysed unless someone runs it, "
                  "and only vacuums against wraparound start on their own; turn it on (ALTER SYSTEM SET %s = on; "
                  "SELECT pg_reload_conf())" % (
                      "autovacuum = off" if not autovacuum else "track_counts = off, so it cannot see what changed",
                      "autovacuum" if not autovacuum else "track_counts"), None)
    for table in tables:
        if not table["autovacuum"]:
            found.add("autovacuum off", "warning", table["name"],
                      "table %s has autovacuum off (autovacuum_enabled = false): its dead rows and statistics wait for "
                      "a hand-run VACUUM and ANALYZE; ALTER TABLE %s RESET (autovacuum_enabled)" % (
                          table["name"], table["name"]), None)

    # Dead rows, bloat, and vacuum and analyse that are overdue.
    holder = horizon_holder(horizon, min(limits["long_query_seconds"], limits["idle_in_transaction_seconds"]))
    for table in tables:
        rows = table["live_rows"] + table["dead_rows"]
        if table["dead_rows"] >= limits["dead_tuple_min_rows"] and table["dead_rows"] > limits["dead_tuple_ratio"] * rows:
            found.add("dead rows", "warning", table["name"],
                      "table %s has %d dead rows, %.0f%% of its %d rows (last vacuum %s%s): %s" % (
                          table["name"], table["dead_rows"], 100.0 * table["dead_rows"] / rows, rows,
                          table["last_vacuum"] or "never", "" if table["autovacuum"] else ", autovacuum off on it",
                          ("the xmin horizon is held back by %s: end it if it is stuck, then VACUUM" % holder)
                          if holder else "nothing holds the xmin horizon back: VACUUM it"),
                      "dead_tuple_ratio %s with at least %d dead rows" % (
                          limits["dead_tuple_ratio"], limits["dead_tuple_min_rows"]))
        vacuumed, analysed = maintained[table["name"]]
        for kind, last, count, measure in (("vacuum", vacuumed, table["dead_rows"], "dead rows"),
                                           ("analyse", analysed, table["changes_since_analyze"],
                                            "rows changed since")):
            since = last or stats_since
            if count < limits["maintenance_min_changes"] or since is None:
                continue
            age_days = _days((now - since).total_seconds())
            if age_days >= limits["maintenance_max_age_days"]:
                found.add("%s overdue" % kind, "warning", table["name"],
                          "table %s: %s, with %d %s: check autovacuum on it (or run %s)" % (
                              table["name"], ("last %s %.0f days ago" % (kind, age_days)) if last
                              else "no %s in %.0f days of statistics" % (kind, age_days),
                              count, measure, "VACUUM" if kind == "vacuum" else "ANALYZE"),
                          "maintenance_max_age_days %d with at least %d %s" % (
                              limits["maintenance_max_age_days"], limits["maintenance_min_changes"], measure))
    for kind, items, size_key in (("table", tables, "table_bytes"), ("index", indexes, "bytes")):
        for item in items:
            bloat = item["bloat_bytes"]
            if bloat is None or not item[size_key]:
                continue
            if bloat >= limits["bloat_min_bytes"] and bloat > limits["bloat_ratio"] * item[size_key]:
                found.add("bloat", "warning", item["name"],
                          "%s %s: about %s of its %s is bloat (estimated): %s" % (
                              kind, item["name"], size_text(bloat), size_text(item[size_key]),
                              "VACUUM FULL or pg_repack in a quiet hour" if kind == "table"
                              else "REINDEX INDEX CONCURRENTLY %s" % item["name"]),
                          "bloat_ratio %s with at least %s" % (limits["bloat_ratio"], size_text(limits["bloat_min_bytes"])))

    # Wraparound headroom of every database on the server.
    wraparound_facts = []
    for database, xid_age, mxid_age in wraparound:
        facts = {"database": database, "xid_age": xid_age, "mxid_age": mxid_age,
                 "xid_ratio": round(xid_age / float(WRAPAROUND_LIMIT), 6),
                 "mxid_ratio": round(mxid_age / float(WRAPAROUND_LIMIT), 6)}
        wraparound_facts.append(facts)
        for label, age, ratio in (("transaction ID", xid_age, facts["xid_ratio"]),
                                  ("multixact", mxid_age, facts["mxid_ratio"])):
            if age > limits["wraparound_max_ratio"] * WRAPAROUND_LIMIT:
                found.add("wraparound", "critical", database,
                          "database %s: oldest %s is %d old, %.1f%% of the way to wraparound: VACUUM (FREEZE) its "
                          "oldest tables, and look for what holds vacuum back" % (database, label, age, 100 * ratio),
                          "wraparound_max_ratio %s" % limits["wraparound_max_ratio"])

    # Sequences near the end of their range, or of their column's type.
    sequence_facts = []
    for sequence, last, low, high, step, owner, typname in sequences:
        type_low, type_high = TYPE_LIMITS.get(typname, (low, high))
        low, high = max(low, type_low), min(high, type_high)
        if last is None or high == low:
            ratio = 0.0
        else:
            ratio = (last - low) / float(high - low) if step > 0 else (high - last) / float(high - low)
        sequence_facts.append({"name": sequence, "last_value": last, "limit": high if step > 0 else low,
                               "column": owner, "ratio": round(ratio, 6)})
        if ratio > limits["sequence_max_ratio"]:
            found.add("sequence exhaustion", "critical", sequence,
                      "sequence %s%s has used %.1f%% of its range (at %d of %d): widen %s to bigint before it runs out" % (
                          sequence, " (%s, %s)" % (owner, typname) if owner else "", 100 * ratio, last,
                          high if step > 0 else low, owner or "its column"),
                      "sequence_max_ratio %s" % limits["sequence_max_ratio"])

    # Replication, where there is any.
    for standby in standbys:
        name_ = standby["name"] or standby["client"]
        if (standby["replay_lag_seconds"] > limits["replication_lag_seconds"]
                or standby["lag_bytes"] > limits["replication_lag_bytes"]):
            found.add("replication lag", "warning", name_,
                      "standby %s (%s, %s) is %s and %s of WAL behind" % (
                          name_, standby["client"], standby["state"], duration_text(standby["replay_lag_seconds"]),
                          size_text(max(0, standby["lag_bytes"]))),
                      "replication_lag_seconds %d or replication_lag_bytes %s" % (
                          limits["replication_lag_seconds"], size_text(limits["replication_lag_bytes"])))
    if replay_delay is not None and replay_delay > limits["replication_lag_seconds"]:
        found.add("replication lag", "warning", name,
                  "this standby last replayed a transaction %s ago (the primary may simply be idle)" %
                  duration_text(replay_delay), "replication_lag_seconds %d" % limits["replication_lag_seconds"])
    for slot in slots:
        if not slot["active"] and slot["retained_bytes"] >= limits["inactive_slot_min_bytes"]:
            found.add("inactive replication slot", "critical", slot["name"],
                      "replication slot %s (%s) is inactive and holds back %s of WAL, which grows until the disk is "
                      "full: reconnect its consumer or drop it (pg_drop_replication_slot)" % (
                          slot["name"], slot["type"], size_text(slot["retained_bytes"])),
                      "inactive_slot_min_bytes %d" % limits["inactive_slot_min_bytes"])

    # WAL archiving.
    archiving = {"archive_mode": archive_mode, "failed_count": None, "last_failed_wal": None,
                 "last_failed_time": None, "last_archived_time": None, "archive_lag_seconds": None,
                 "ready_segments": ready[0][0] if ready else None}
    if archiver:
        failed_count, failed_wal, failed_time, archived_time, lag = archiver[0]
        # The archive's lag: how long since a segment last reached it (writes since then are only in pg_wal).
        archiving.update(failed_count=failed_count, last_failed_wal=failed_wal, last_failed_time=_iso(failed_time),
                         last_archived_time=_iso(archived_time),
                         archive_lag_seconds=round(lag) if lag is not None else None)
        if archive_mode != "off" and failed_time and (archived_time is None or failed_time > archived_time):
            found.add("WAL archiving", "critical", name,
                      "WAL archiving is failing: the last attempt, on %s at %s, failed (%d failures so far, last "
                      "success %s); WAL piles up in pg_wal until archive_command works" % (
                          failed_wal, _iso(failed_time), failed_count, _iso(archived_time) or "never"),
                      "the last attempt failed")
    if archiving["ready_segments"] is not None and archiving["ready_segments"] > limits["archive_ready_max_files"]:
        found.add("WAL archiving", "critical", name,
                  "%d WAL segments are waiting to be archived" % archiving["ready_segments"],
                  "archive_ready_max_files %d" % limits["archive_ready_max_files"])

    # Indexes: invalid, duplicate, redundant, unused.
    for schema, catalog in catalogs:
        prefix = "" if schema == "public" else schema + "."
        for index in catalog["indexes"]:
            if not index["valid"]:
                found.add("invalid index", "warning", prefix + index["name"],
                          "index %s%s on %s is invalid (a CREATE INDEX CONCURRENTLY or REINDEX that failed): "
                          "DROP INDEX CONCURRENTLY it and build it again" % (prefix, index["name"], index["table"]),
                          "any invalid index")
        duplicate, redundant = overlaps(catalog, strategy)
        for item in duplicate:
            found.add("duplicate index", "warning", prefix + item["name"],
                      "index %s%s on %s (%s) has the same keys as %s: drop %s" % (
                          prefix, item["name"], item["table"], size_text(item["size_bytes"]), item["duplicate_of"],
                          item["name"]), "any duplicate")
        for item in redundant:
            found.add("duplicate index", "warning", prefix + item["name"],
                      "index %s%s on %s (%s) is covered by %s, whose keys start with its own: drop %s unless a "
                      "query needs it small" % (prefix, item["name"], item["table"], size_text(item["size_bytes"]),
                                                item["covered_by"], item["name"]), "any redundant index")
    unused = [index for index in indexes if index["scans"] == 0 and not index["unique"]
              and not index["foreign_key"] and not index["strategy"]]
    since_text = ("since %s (%.0f days)" % (_iso(stats_since), stats_age_days)) if stats_since else None
    young = stats_age_days is None or stats_age_days < limits["unused_index_min_stats_days"]
    large_unused = [index for index in unused if index["bytes"] >= limits["unused_index_min_bytes"]]
    if large_unused and young:
        notes.append("unused indexes: too early to tell - the statistics count %s, and an index is called unused "
                     "after %d days (%s never scanned so far)" % (
                         since_text or "from an unknown time", limits["unused_index_min_stats_days"],
                         ", ".join(index["name"] for index in large_unused)))
    elif large_unused:
        for index in large_unused:
            found.add("unused index", "warning", index["name"],
                      "unused index %s on %s: %s never scanned %s; drop it if no rare job needs it" % (
                          index["name"], index["table"], size_text(index["bytes"]), since_text),
                      "unused_index_min_bytes %s after %d days of statistics" % (
                          size_text(limits["unused_index_min_bytes"]), limits["unused_index_min_stats_days"]))

    # Statements over the period since the previous report.
    previous = params["previous"] or {}
    slow, by_mean = [], []
    if snapshot is not None:
        period = statement_delta(snapshot, previous.get("statements"), previous.get("statements_reset"),
                                 statements_reset)
        if not params["include_maintenance_statements"]:
            period = [s for s in period if not s["maintenance"]]
        slow = sorted(period, key=lambda s: -s["total_ms"])[:limits["slow_query_limit"]]
        by_mean = sorted(period, key=lambda s: -s["mean_ms"])[:limits["slow_query_limit"]]
        if previous.get("statements") is not None and statements_reset == previous.get("statements_reset"):
            source = "pg_stat_statements, from the report of %s to now" % previous.get("taken")
        elif statements_reset:
            source = "pg_stat_statements, since its reset at %s" % statements_reset
        else:
            source = "pg_stat_statements, since it was last reset (no earlier report to compare with)"
        for statement in period:
            reasons = []
            if statement["mean_ms"] > limits["slow_query_mean_ms"]:
                reasons.append(("mean", "slow_query_mean_ms %s" % limits["slow_query_mean_ms"]))
            if statement["total_ms"] > limits["slow_query_total_seconds"] * 1000:
                reasons.append(("total", "slow_query_total_seconds %s" % limits["slow_query_total_seconds"]))
            if reasons:
                found.add("slow query", "warning", statement["queryid"],
                          "slow query: %d call(s), %s in all, %.0f ms on average (%s): %s" % (
                              statement["calls"], milliseconds_text(statement["total_ms"]),
                              statement["mean_ms"], statement["role"], statement["query"][:160]),
                          " and ".join(reason[1] for reason in reasons))

    # Capacity.
    if (hit_ratio is not None and hit_ratio < limits["min_cache_hit_ratio"]
            and (blocks_read or 0) >= limits["min_cache_reads"]):
        found.add("cache hit ratio", "warning", name,
                  "cache hit ratio %.3f over %d block reads: shared_buffers may be too small for the working set" % (
                      hit_ratio, blocks_read),
                  "min_cache_hit_ratio %s after %d block reads" % (limits["min_cache_hit_ratio"], limits["min_cache_reads"]))
    total_connections = sum(by_state.values())
    if total_connections > limits["max_connection_ratio"] * max_connections:
        found.add("connections", "warning", name,
                  "%d connections of max_connections %d: check the pools (pool_config.yml)" % (
                      total_connections, max_connections), "max_connection_ratio %s" % limits["max_connection_ratio"])
    for constraint in not_valid:
        found.add("NOT VALID constraint", "warning", constraint["name"],
                  "constraint %s on %s is NOT VALID: VALIDATE CONSTRAINT it once the data is clean" % (
                      constraint["name"], constraint["table"]), None)
    backup = newest_backup(params["backup_dir"]) if params["backup_dir"] else None
    if params["backup_dir"] and backup is None:
        found.add("backup", "critical", params["backup_dir"], "no verified backup in %s" % params["backup_dir"], None)
    elif backup and backup["age_hours"] > limits["max_backup_age_hours"]:
        found.add("backup", "critical", backup["path"],
                  "newest verified backup is %.0f hours old (over %d): check the backup cron and its log" % (
                      backup["age_hours"], limits["max_backup_age_hours"]),
                  "max_backup_age_hours %d" % limits["max_backup_age_hours"])
    physical = (pgbackrest_findings(params["pgbackrest"], limits, found, archiving["archive_lag_seconds"])
                if params["pgbackrest"] else None)

    # Security.
    security = []
    missing = sorted(set(params["app_roles"]) - existing)
    if missing:
        found.add("application roles", "warning", ", ".join(missing),
                  "application role(s) %s do not exist: fix app_roles or create them" % ", ".join(missing), None)
    for role, superuser, createrole, bypassrls in privileged or []:
        flags = [flag for flag, has in (("SUPERUSER", superuser), ("CREATEROLE", createrole),
                                        ("BYPASSRLS", bypassrls)) if has]
        security.append({"check": "privileged roles", "detail": "%s has %s" % (role, ", ".join(flags))})
    for role in md5 or []:
        security.append({"check": "password hashes", "detail": "%s has an md5 password hash: set its password again "
                                                               "with password_encryption = scram-sha-256" % role})
    if public_create:
        security.append({"check": "schema public", "detail": "PUBLIC may CREATE in schema public: "
                                                             "REVOKE CREATE ON SCHEMA public FROM PUBLIC"})
    for user, address, count in plain:
        security.append({"check": "SSL", "detail": "%d connection(s) of %s from %s without SSL" % (count, user, address)})
    allow_text = "allowed: %s" % ", ".join([bootstrap_role + " (bootstrap superuser)"] + allowed)
    for item in security:
        found.add("security: " + item["check"], "critical" if item["check"] == "privileged roles" else "warning",
                  item["detail"].split(" ")[0], "security: " + item["detail"],
                  "privileged_roles_allowed (%s)" % allow_text if item["check"] == "privileged roles" else None)

    return {
        "changed": False,
        "taken": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "thresholds": limits,
        "database": {"name": name, "size_bytes": size, "server_version": version, "server_version_num": version_num,
                     "stats_reset": _iso(stats_reset), "stats_since": _iso(stats_since),
                     "stats_age_days": None if stats_age_days is None else round(stats_age_days, 2),
                     "in_recovery": in_recovery},
        "tables": tables,
        "indexes": indexes,
        # Listed only once the statistics are old enough to tell (the note says so before).
        "unused_indexes": [] if young else large_unused,
        "unused_indexes_too_early": young,
        "statements": snapshot or [],
        "statements_reset": statements_reset,
        "slow_queries": slow,
        "slow_queries_by_mean": by_mean,
        "slow_query_source": source,
        "cache_hit_ratio": round(hit_ratio, 5) if hit_ratio is not None else None,
        "connections": {"total": total_connections, "max_connections": max_connections, "by_state": by_state},
        "sessions": session_facts,
        "blocking": blocking,
        "wraparound": wraparound_facts,
        "sequences": sequence_facts,
        "replication": {"standbys": standbys, "slots": slots, "replay_delay_seconds": replay_delay},
        "archiving": archiving,
        "not_valid_constraints": not_valid,
        "backup": backup,
        "pgbackrest": physical,
        "disk": disk_of(data_directory),
        "security": security,
        "problems": found.problems,
        "findings": found.lines(),
        "notes": notes,
    }
