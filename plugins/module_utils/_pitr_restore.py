# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to intowork.pgops: not a public API, may change without notice.
"""A rollback by point-in-time recovery: the whole cluster back to a deployment's restore point, in place.

Its steps, each its own run, for the runbook puts the server's stop and start between them:
- backup: the backup a recovery starts from (as the account that reads the repository);
- check: what recovering there would discard, and what else it would take back, before anything changes;
- restore: with the server stopped, pgBackRest's delta restore of the backup before the point, to stop there;
- promoted: the server answers again, out of recovery, analyzed;
and repository: what a recovery can reach now, for the health report (reads the repository only).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import pwd
import shutil
import time

from ansible_collections.intowork.pgops.plugins.module_utils._connection import (
    PgopsError,
    connect,
    debian_unit,
    one_line,
    sql,
)
from ansible_collections.intowork.pgops.plugins.module_utils._pgbackrest_info import summary
from ansible_collections.intowork.pgops.plugins.module_utils._pitr_drill import (
    pgbackrest,
    read_stanza,
    repository_paths,
    stanza_info,
    tail,
)

OTHER_DATABASES = """
SELECT datname FROM pg_catalog.pg_database
 WHERE datallowconn AND NOT datistemplate AND datname NOT IN (pg_catalog.current_database(), 'postgres')
 ORDER BY 1
"""
# Bytes of WAL written since the point: everything in them is undone, in every database of the cluster.
SINCE_POINT = """
SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), %s::pg_lsn)::bigint,
       ('x' || substr(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 1, 8))::bit(32)::int
"""
TIMELINE = """
SELECT ('x' || substr(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 1, 8))::bit(32)::int
"""
TABLES = """
SELECT n.nspname, c.relname
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
"""


def lsn_value(text):
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def backup_before(info, point, stanza):
    """The newest backup whose WAL ends at or before the restore point: recovery replays from it to the point."""
    before = [backup for backup in info.get("backup", [])
              if backup.get("lsn") and lsn_value(backup["lsn"]["stop"]) <= lsn_value(point["lsn"])]
    if not before:
        raise PgopsError("no backup of stanza %s ended before restore point %s (LSN %s): a recovery to it needs one "
                         "taken before the deployment; nothing was changed" % (stanza, point["name"], point["lsn"]))
    return max(before, key=lambda backup: lsn_value(backup["lsn"]["stop"]))


def count_rows(cur, tables):
    """Exact rows now of each table named (schema.table or table as the record names them) that still exists."""
    cur.execute(TABLES)
    existing = {}
    for schema, table in cur.fetchall():
        existing["%s.%s" % (schema, table)] = (schema, table)
        existing.setdefault(table, (schema, table))
    counts = {}
    for name in tables:
        if name in existing:
            cur.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(*map(sql.Identifier, existing[name])))
            counts[name] = cur.fetchone()[0]
    return counts


def discards_text(changes, wal_bytes):
    parts = ["%s %+d rows" % (table, change) for table, change in sorted(changes.items())]
    return "%s of WAL since the point%s" % (
        "%.1f MB" % (wal_bytes / 1e6) if wal_bytes >= 1e5 else "%d bytes" % wal_bytes,
        (" (row counts against the deployment's: " + ", ".join(parts) + "; updates and deletes that left a count "
         "as it was are undone too)") if parts else " (no table's row count changed; updates and deletes are undone "
        "too)")


def backup(params, check_mode):
    """The backup a recovery to the point starts from (read from the repository, as its account)."""
    info = stanza_info(params)
    chosen = backup_before(info, params["restore_point"], params["stanza"])
    return {"changed": False, "backup": {"label": chosen["label"], "type": chosen["type"],
                                         "lsn_stop": chosen["lsn"]["stop"]}}


def info(params, check_mode):
    """The stanza as pgBackRest reports it, summarized; a repository that cannot be read is the report's finding,
    said in its words, not a failure."""
    try:
        stanza = read_stanza(params)
    except PgopsError as error:
        return {"changed": False, "repository": None, "problem": str(error)}
    return {"changed": False, "repository": summary(stanza, time.time()), "problem": ""}


def rows_before(params):
    """The deployment's row counts: its record's, and the exact ones of its catalog snapshot (file), by table."""
    before = dict(params["row_counts_before"] or {})
    if params["catalog_file"]:
        try:
            with open(params["catalog_file"]) as snapshot:
                rows = json.load(snapshot).get("rows", {})
        except (OSError, ValueError) as error:
            raise PgopsError("cannot read the deployment's catalog snapshot %s: %s" % (params["catalog_file"], error))
        for table, count in rows.items():
            if count.get("exact"):
                before.setdefault(table, count["rows"])
    return before


def check(params, check_mode):
    """What a recovery to the point discards and takes back, measured; its refusal unless acknowledged."""
    point = params["restore_point"]
    before = rows_before(params)
    conn = connect(params, autocommit=True)
    try:
        cur = conn.cursor()
        cur.execute(OTHER_DATABASES)
        others = [row[0] for row in cur.fetchall()]
        cur.execute(SINCE_POINT, (point["lsn"],))
        wal_bytes, timeline = cur.fetchone()
        cur.execute("SELECT pg_catalog.current_setting('cluster_name')")
        unit = debian_unit(cur.fetchone()[0])
        now = count_rows(cur, list(before))
    finally:
        conn.close()
    changes = dict((table, now[table] - before[table]) for table in now if now[table] != before[table])
    for table in sorted(set(before) - set(now)):
        changes[table] = -before[table]
    text = discards_text(changes, max(wal_bytes, 0))
    refusals = []
    unnamed = sorted(set(others) - set(params["other_databases"]))
    if unnamed:
        refusals.append("the cluster also holds the database(s) %s, which a point-in-time recovery takes back to "
                        "the restore point too: name them with -e pitr_other_databases=%s to mean it" % (
                            ", ".join(unnamed), ",".join(others)))
    if params["discard_writes"] != point["name"]:
        refusals.append("recovering to restore point %s discards every write since it, in every database of the "
                        "cluster: %s. To mean it, run again with -e discard_writes=%s" % (point["name"], text,
                                                                                          point["name"]))
    return {"changed": False, "other_databases": others, "wal_bytes_since": wal_bytes, "timeline": timeline,
            "debian_unit": unit,
            "row_changes": changes, "discarded_text": text, "refusal": "; ".join(refusals)}


def keep_wal(data_directory, name):
    """A copy of the stopped server's pg_wal beside its data folder: the writes of its last segment, which no
    archive holds yet, survive the restore that replaces them. Returns (folder, bytes)."""
    source = os.path.join(data_directory, "pg_wal")
    copy = os.path.join(os.path.dirname(os.path.abspath(data_directory)), "pgops-wal-%s" % name)
    if os.path.lexists(copy):
        raise PgopsError("%s exists: a rollback named %s ran before; nothing was restored" % (copy, name))
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("archive_status"))
    size = sum(os.path.getsize(os.path.join(root, entry)) for root, _dirs, files in os.walk(copy) for entry in files)
    return copy, size


def restore(params, check_mode):
    """With the server stopped: its pg_wal kept, then the data folder made the backup's (delta: only files that
    differ are written), recovery set to stop at the restore point and promote."""
    if check_mode:
        return {"changed": True}
    point = params["restore_point"]
    data_directory = repository_paths(params).get("pg1-path")
    if not data_directory or os.path.exists(os.path.join(data_directory, "postmaster.pid")):
        raise PgopsError("the server's data folder %s is not that of a stopped server (postmaster.pid is there): "
                         "nothing was restored" % data_directory)
    wal_copy, wal_bytes = keep_wal(data_directory, params["keep_wal_as"])
    command = ["--delta", "--set=%s" % params["backup_label"], "--type=name", "--target=%s" % point["name"],
               "--target-action=promote", "restore"]
    started = time.monotonic()
    ran = pgbackrest(params, *command)
    if ran.returncode != 0:
        raise PgopsError("pgbackrest restore of backup %s to restore point %s failed: %s. The server is stopped, its "
                         "data folder may be half-restored and its WAL is kept in %s: as %s, run pgbackrest "
                         "--config=%s --stanza=%s %s, then start the server" % (
                             params["backup_label"], point["name"], tail(ran.stderr), wal_copy,
                             pwd.getpwuid(os.geteuid()).pw_name, params["config_file"], params["stanza"],
                             " ".join(command)))
    return {"changed": True, "restore_seconds": round(time.monotonic() - started, 3), "wal_copy": wal_copy,
            "wal_copy_bytes": wal_bytes}


def promoted(params, check_mode):
    """Wait until the restarted server answers out of recovery (it replays to the point, then promotes); analyze
    the database, whose statistics are the point's."""
    if check_mode:
        return {"changed": False}
    started = time.monotonic()
    deadline = started + params["timeout_seconds"]
    last = "no answer yet"
    while True:
        try:
            conn = connect(params, autocommit=True)
        except PgopsError as error:
            conn, last = None, str(error)
        if conn is not None:
            try:
                cur = conn.cursor()
                cur.execute("SELECT pg_catalog.pg_is_in_recovery()")
                in_recovery = cur.fetchone()[0]
                if not in_recovery:
                    # The timeline is the first part of a WAL file's name (pg_control_* are not everyone's to read).
                    cur.execute(TIMELINE)
                    timeline = cur.fetchone()[0]
                    recovered = round(time.monotonic() - started, 3)
                    cur.execute("ANALYZE")
                    return {"changed": True, "recovery_seconds": recovered, "timeline": timeline,
                            "analyzed_seconds": round(time.monotonic() - started - recovered, 3)}
                last = "still in recovery"
            except Exception as error:  # pylint: disable=broad-except
                last = one_line(error)
            finally:
                conn.close()
        if time.monotonic() >= deadline:
            raise PgopsError("the server did not come back out of recovery within %s s (%s): read its log; the "
                             "restore point may not be in the archive" % (params["timeout_seconds"], last))
        time.sleep(0.5)
