# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to intowork.pgops: not a public API, may change without notice.
"""A point-in-time recovery drill: the cluster restored from pgBackRest's repository to a chosen time, into a
scratch server of its own (a data folder and a socket no other account can reach, no TCP port, archiving off),
started, proven to have stopped at the target, and measured: RTO from the restore's start to the first answered
query, RPO as the target against the last transaction recovered."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import configparser
import json
import os
import re
import shutil
import subprocess
import time
from datetime import datetime, timedelta, timezone

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:
    psycopg2 = None

from ansible_collections.intowork.pgops.plugins.module_utils._connection import PgopsError
from ansible_collections.intowork.pgops.plugins.module_utils._restore_point import create as create_restore_point
from ansible_collections.intowork.pgops.plugins.module_utils import _scratch_server as scratch_server
from ansible_collections.intowork.pgops.plugins.module_utils._scratch_server import (
    free_bytes,
    log_problems,
    pg_ctl,
    shell_quote,
    tail,
)

# How a module finds pgBackRest: its stanza, config and program (doc fragment intowork.pgops._pgbackrest).
PGBACKREST_SPEC = {"stanza": dict(type="str", default="main"),
                   "config_file": dict(type="path", default="/etc/pgbackrest/pgbackrest.conf"),
                   "pgbackrest_bin": dict(type="path", default="/usr/bin/pgbackrest")}
# Written first into a drill's folder: only a folder that holds it is ever removed.
MARKER = "PGOPS_PITR_DRILL"
TARGET = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?\s*(Z|[+-]\d{2}(?::?\d{2})?)$")
# PostgreSQL's own proof that recovery stopped at the target, not at the end of the archive.
STOPPED = re.compile(r"recovery stopping before (commit|abort) of transaction (\d+), time (.+)$")
# A restored cluster's server: no TCP, a socket only its account reaches, nothing archived into the repository
# it came from, one log the drill reads, and no connection until recovery is over.
SERVER_SETTINGS = (
    ("listen_addresses", ""),
    ("unix_socket_permissions", "0700"),
    ("archive_mode", "off"),
    ("hot_standby", "off"),
    ("logging_collector", "off"),
    ("log_destination", "stderr"),
    ("lc_messages", "C"),
    ("ssl", "off"),
    ("external_pid_file", ""),
    ("cluster_name", "pgops-pitr-drill"),
)


def parse_target(text):
    """A recovery target time with its offset, as an aware UTC datetime; PgopsError naming the value otherwise."""
    match = TARGET.match((text or "").strip())
    if not match:
        raise PgopsError("target_time %r is not a time with its offset (2026-12-07 14:30:00+00): a time without "
                         "its offset would be read in the server's zone" % (text,))
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0),
                          int((fraction or "0").ljust(6, "0")))
    except ValueError as error:
        raise PgopsError("target_time %r is not a valid time: %s" % (text, error))
    if zone != "Z":
        digits = zone[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
        moment = moment - offset if zone[0] == "+" else moment + offset
    return moment.replace(tzinfo=timezone.utc)


def at(seconds):
    return datetime.fromtimestamp(seconds, timezone.utc)


def drill_target(target_time, target_age_seconds, now):
    """The time to recover to: target_time, else now less target_age_seconds, to the microsecond (a target cut to
    the second would leave out what was committed in that second: with age 0, the writes just made)."""
    return parse_target(target_time) if target_time else now - timedelta(seconds=target_age_seconds)


def utc_text(moment):
    return moment.strftime("%Y-%m-%d %H:%M:%S") + (".%06d" % moment.microsecond if moment.microsecond else "") + "+00"


def pgbackrest(params, *arguments):
    command = [params["pgbackrest_bin"], "--config=%s" % params["config_file"], "--stanza=%s" % params["stanza"]]
    try:
        return subprocess.run(command + list(arguments), capture_output=True, text=True, check=False)
    except OSError as error:
        raise PgopsError("cannot run %s: %s (check pgbackrest_bin)" % (params["pgbackrest_bin"], error))


def read_stanza(params):
    """pgBackRest's info of the stanza, parsed; PgopsError in its words when it cannot be read."""
    ran = pgbackrest(params, "--output=json", "info")
    try:
        return json.loads(ran.stdout)[0]
    except (ValueError, IndexError):
        raise PgopsError("pgbackrest info of stanza %s failed: %s" % (params["stanza"], tail(ran.stderr or ran.stdout)))


def stanza_info(params):
    """The stanza's info, once it is one a backup can be restored from."""
    info = read_stanza(params)
    if info["status"]["code"] not in (0, 2):
        raise PgopsError("stanza %s cannot be restored from: %s (run playbooks/pgbackrest.yml)" % (
            params["stanza"], info["status"]["message"]))
    return info


def choose_backup(info, target, stanza):
    """The newest backup that ended before the target: recovery replays the archive from it to the target."""
    before = [backup for backup in info.get("backup", []) if backup["timestamp"]["stop"] <= target.timestamp()]
    if not before:
        earliest = min((backup["timestamp"]["stop"] for backup in info.get("backup", [])), default=None)
        raise PgopsError("no backup of stanza %s ended before the target %s: %s; choose a later target or "
                         "take a backup first (pgbackrest backup)" % (
                             stanza, utc_text(target), "the earliest ended at %s" % utc_text(at(earliest)) if earliest else "the repository holds none"))
    return max(before, key=lambda backup: backup["timestamp"]["stop"])


def repository_paths(params):
    """The primary's data folder and the repository, as the stanza's config names them: a drill's folder may be
    inside neither, nor hold them."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    try:
        with open(params["config_file"]) as config:
            parser.read_file(config)
    except (OSError, configparser.Error) as error:
        raise PgopsError("cannot read pgBackRest's config %s: %s (check config_file)" % (params["config_file"], error))
    paths = {}
    for section in ("global", params["stanza"]):
        if parser.has_section(section):
            for key in ("repo1-path", "pg1-path", "spool-path"):
                if parser.has_option(section, key):
                    paths[key] = parser.get(section, key)
    return paths


def overlaps(one, other):
    one, other = os.path.realpath(one), os.path.realpath(other)
    return one == other or one.startswith(other.rstrip("/") + "/") or other.startswith(one.rstrip("/") + "/")


def scratch_of(path):
    """A PITR drill's folder (its marker is the PITR drill's own)."""
    return scratch_server.Scratch(path, MARKER)


def pg_bin_dir(params, scratch):
    if params["pg_bin_dir"]:
        bin_dir = params["pg_bin_dir"]
    else:
        with open(os.path.join(scratch.data, "PG_VERSION")) as version:
            bin_dir = "/usr/lib/postgresql/%s/bin" % version.read().strip()
    if not os.access(os.path.join(bin_dir, "pg_ctl"), os.X_OK):
        raise PgopsError("no pg_ctl in %s, the server programs of the restored cluster's version: set pg_bin_dir "
                         "(pgops_pg_bin_dir)" % bin_dir)
    return bin_dir


def server_options(params, scratch):
    settings = list(SERVER_SETTINGS) + [
        ("port", str(params["scratch_port"])), ("unix_socket_directories", scratch.socket), ("hba_file", scratch.hba),
        ("ident_file", scratch.ident), ("shared_buffers", params["shared_buffers"])]
    # pg_ctl hands -o to the shell: every value is quoted.
    return " ".join("-c %s" % shell_quote("%s=%s" % pair) for pair in settings)


def stop(scratch, bin_dir=None):
    """Stop the drill's server if it runs, with the server programs of its own version by default."""
    if not os.path.exists(os.path.join(scratch.data, "postmaster.pid")):
        return False
    try:
        bin_dir = bin_dir or pg_bin_dir({"pg_bin_dir": ""}, scratch)
    except (OSError, PgopsError):
        return False
    return scratch_server.stop(scratch, bin_dir)


def first_answer(params, scratch, bin_dir, deadline):
    """Connect to the scratch server until it answers (hot_standby is off: only once recovery is over)."""
    target = {"host": scratch.socket, "port": params["scratch_port"], "user": params["scratch_user"],
              "dbname": params["scratch_database"], "connect_timeout": 5, "application_name": "pgops-pitr-drill"}
    while True:
        try:
            conn = psycopg2.connect(**target)
        except psycopg2.OperationalError as error:
            if pg_ctl(bin_dir, "status", "-D", scratch.data).returncode == 3:
                raise PgopsError("the restored server stopped during recovery: %s" % log_problems(scratch.log))
            if time.monotonic() >= deadline:
                raise PgopsError("the restored server did not answer within %s s (%s); its log: %s" % (
                    params["timeout_seconds"], " ".join(str(error).split()), log_problems(scratch.log)))
            time.sleep(0.2)
            continue
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT pg_catalog.pg_is_in_recovery(), pg_catalog.pg_last_xact_replay_timestamp(), "
                            "(SELECT timeline_id FROM pg_catalog.pg_control_checkpoint())")
                return cur.fetchone()
        finally:
            conn.close()


# Every table that holds rows (partitions, not their parents), outside the system's schemas.
COUNTED_TABLES = """
SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
 ORDER BY 1, 2
"""


def row_counts(params, scratch):
    """{schema.table: rows} of the restored database: what the copy holds, for the report."""
    conn = psycopg2.connect(host=scratch.socket, port=params["scratch_port"], user=params["scratch_user"],
                            dbname=params["scratch_database"], application_name="pgops-pitr-drill")
    try:
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cur.execute(COUNTED_TABLES)
            counts = {}
            for schema, table in cur.fetchall():
                cur.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))
                counts["%s.%s" % (schema, table)] = cur.fetchone()[0]
            return counts
    finally:
        conn.close()


def recovery_stop(log_file):
    """PostgreSQL's line for where recovery stopped, or None."""
    try:
        with open(log_file) as log:
            for line in log:
                found = STOPPED.search(line.strip())
                if found:
                    return found
    except OSError:
        return None
    return None


def drill(params, check_mode):
    if psycopg2 is None:
        raise PgopsError("psycopg2 is missing on the drill host (pip install psycopg2-binary)")
    scratch = scratch_of(params["path"])
    if params["state"] == "absent":
        return remove(scratch, check_mode)
    now = datetime.now(timezone.utc)
    target = drill_target(params["target_time"], params["target_age_seconds"], now)
    if target > now:
        raise PgopsError("target_time %s is in the future (now %s): recovery can stop only at a time already "
                         "archived" % (utc_text(target), utc_text(now)))
    if os.path.lexists(scratch.path):
        raise PgopsError("%s exists: another drill is running or one was left there; remove it (state=absent) or "
                         "choose another path" % scratch.path)
    for key, path in sorted(repository_paths(params).items()):
        if overlaps(scratch.path, path):
            raise PgopsError("the drill's folder %s overlaps the stanza's %s %s: choose a folder of its own" % (
                scratch.path, key, path))
    socket_file = os.path.join(scratch.socket, ".s.PGSQL.%d" % params["scratch_port"])
    if len(socket_file) > 100:
        raise PgopsError("the drill's socket %s is longer than a Unix socket path may be (100): choose a shorter "
                         "folder" % socket_file)
    info = stanza_info(params)
    backup = choose_backup(info, target, params["stanza"])
    parent = os.path.dirname(scratch.path)
    if not os.path.isdir(parent) and not check_mode:
        raise PgopsError("the drills' folder %s does not exist (the pitr_drill role makes it)" % parent)
    size = backup["info"]["size"]
    # The restored files, a quarter more for the WAL replayed and the server's own, and the reserve left free.
    needed = size + max(size // 4, 64 << 20) + params["reserve_mb"] * (1 << 20)
    # In check mode the role has not made the drills' folder: the file system it would be made on.
    existing = parent
    while not os.path.isdir(existing):
        existing = os.path.dirname(existing)
    free = free_bytes(existing)
    if free < needed:
        raise PgopsError("not enough free space in %s for the drill: %d MB free, %d MB needed (the backup's %d MB, "
                         "a quarter more for WAL, and reserve_mb %d left free); free space or choose another "
                         "folder" % (parent, free >> 20, needed >> 20, size >> 20, params["reserve_mb"]))
    result = {"changed": True, "folder": scratch.path, "target_time": utc_text(target), "backup": {
        "label": backup["label"], "type": backup["type"], "size": size,
        "stopped_at": utc_text(at(backup["timestamp"]["stop"]))},
        "free_bytes": free, "needed_bytes": needed, "mark": None}
    if check_mode:
        return result
    if params["mark"]:
        # A commit after the target, archived: recovery finds where to stop even when nothing was written since.
        result["mark"] = create_restore_point(
            dict(params, name="pgops-drill-%s" % now.strftime("%Y%m%dT%H%M%SZ")), False, commit_first=True,
            consequence="nothing was restored", archive_off_advice="drill with mark=false")
    scratch.make({"stanza": params["stanza"], "target_time": utc_text(target), "backup": backup["label"]})
    bin_dir = None
    try:
        started = time.monotonic()
        restored = pgbackrest(params, "--pg1-path=%s" % scratch.data, "--set=%s" % backup["label"], "--type=time",
                              "--target=%s" % utc_text(target), "--target-action=promote", "--archive-mode=off",
                              "--tablespace-map-all=%s" % scratch.tablespaces, "restore")
        if restored.returncode != 0:
            raise PgopsError("pgbackrest restore of backup %s failed: %s" % (backup["label"], tail(restored.stderr)))
        result["restore_seconds"] = round(time.monotonic() - started, 3)
        bin_dir = pg_bin_dir(params, scratch)
        # A cluster whose config lives outside its data folder (Debian's) still needs the file to start.
        conf = os.path.join(scratch.data, "postgresql.conf")
        if not os.path.exists(conf):
            open(conf, "w").close()
        # With hot_standby off the server is ready only once recovery is over: pg_ctl waits for exactly that,
        # and sees at once a server that dies on the way.
        remaining = max(1, int(started + params["timeout_seconds"] - time.monotonic()))
        began = pg_ctl(bin_dir, "start", "-D", scratch.data, "-l", scratch.log, "-w", "-t", str(remaining), "-o",
                       server_options(params, scratch))
        if began.returncode != 0:
            raise PgopsError("the restored server did not come up within %s s of the restore's start: %s; its "
                             "log: %s" % (params["timeout_seconds"], tail(began.stderr or began.stdout, 1),
                                          log_problems(scratch.log)))
        in_recovery, last_transaction, timeline = first_answer(
            params, scratch, bin_dir, started + params["timeout_seconds"])
        result["rto_seconds"] = round(time.monotonic() - started, 3)
        result["recovery_seconds"] = round(result["rto_seconds"] - result["restore_seconds"], 3)
        stopped = recovery_stop(scratch.log)
        if in_recovery or stopped is None:
            raise PgopsError("recovery did not stop at the target %s (%s): %s" % (
                utc_text(target), "still in recovery" if in_recovery else "no 'recovery stopping before' in the log",
                log_problems(scratch.log)))
        result["row_counts"] = row_counts(params, scratch)
    except Exception:
        stop(scratch, bin_dir)
        shutil.rmtree(scratch.path, ignore_errors=True)
        raise
    result.update({
        "socket_directory": scratch.socket, "scratch_port": params["scratch_port"], "timeline": timeline,
        "recovery_stop": stopped.group(0),
        "last_transaction_time": utc_text(last_transaction.astimezone(timezone.utc)) if last_transaction else None,
        # What the copy lacks that the target asked for: nothing committed between the last transaction it holds
        # and the target is in it (on a quiet database that gap is only time without writes).
        "rpo_seconds": round(target.timestamp() - last_transaction.timestamp(), 3) if last_transaction else None,
    })
    if params.get("rto_target_seconds") is not None:
        result["summary"] = report_line(result, params["rto_target_seconds"])
    return result


def report_line(report, rto_target_seconds):
    """A drill in one line, the same from the playbook and from cron: the backup, the recovery, RTO against its
    target, the RPO achieved, the rows."""
    rpo = ("RPO achieved %s s (the last transaction recovered committed at %s)" % (
        report["rpo_seconds"], report["last_transaction_time"]) if report["rpo_seconds"] is not None else
        "RPO not measured (no transaction between the backup and the target)")
    return ("backup %s (%s) restored in %s s and recovered to %s in %s s (%s); RTO %s s against a %s s target; %s; "
            "%d tables, %d rows" % (
                report["backup"]["label"], report["backup"]["type"], report["restore_seconds"], report["target_time"],
                report["recovery_seconds"], report["recovery_stop"], report["rto_seconds"],
                "%g" % rto_target_seconds, rpo, len(report["row_counts"]), sum(report["row_counts"].values())))


def remove(scratch, check_mode):
    if not os.path.lexists(scratch.path):
        return {"changed": False, "folder": scratch.path, "stopped": False}
    if not scratch.ours():
        raise PgopsError("%s is not a drill's folder (no %s in it): nothing was removed" % (scratch.path, MARKER))
    if check_mode:
        return {"changed": True, "folder": scratch.path, "stopped": False}
    stopped = stop(scratch)
    shutil.rmtree(scratch.path)
    return {"changed": True, "folder": scratch.path, "stopped": stopped}
