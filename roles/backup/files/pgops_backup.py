# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pgops-backup: the one backup program of intowork.pgops, run by the backup role and by cron.

    python3 pgops_backup.py backup --config /etc/pgops/backup-intowork.json [--from-standby]
    python3 pgops_backup.py drill  --config /etc/pgops/backup-intowork.json [--backup PATH] [--keep]
    python3 pgops_backup.py drop-scratch --config /etc/pgops/backup-intowork.json --scratch-path FOLDER
    python3 pgops_backup.py restore --config /etc/pgops/backup-intowork.json --backup PATH --replace-schema public
        [--discard-writes BACKUP_FILE_NAME | --writes-off-since-backup] [--check]
    python3 pgops_backup.py watch --config /etc/pgops/backup-intowork.json [--stale-after-seconds 180]
    python3 pgops_backup.py job --config /etc/pgops/backup-intowork.json --jobs-file /etc/pgops/jobs-intowork.json --job NAME

backup: pg_dump (custom, or directory format with parallel jobs) of a snapshot exported by a
REPEATABLE READ transaction, so the manifest's row counts describe exactly what the archive holds;
written under a hidden .partial name, fsynced, read back in full by pg_restore, checksummed, then
renamed: a backup with its final name is always complete and verified. Retention runs only after a
successful backup and never removes the newest verified one. One run per database at a time (lock).
With --from-standby the dump is read from the config's standby (standby_host, standby_port), which must be
in recovery and no more than max_standby_lag_seconds behind its primary; the manifest names the source.

drill: restores a backup (the newest verified one by default) into a server of its own (initdb in a new
folder under the config's drill_folder, after a free-space check; never the server it proves) with parallel
pg_restore, compares row counts with the manifest, analyses it, reports the time taken (the RTO) against the
target, and stops and removes that server (unless --keep, for further checks; drop-scratch --scratch-path then
removes it).

watch: the dead-man switch of deployments, from cron every few minutes: a deployment lease (the
deploy_lock module's) whose heartbeat stopped longer ago than --stale-after-seconds is recorded as
abandoned (abandoned-<owner>.json in the backup folder: its plan, the revision the database is at, the one
that may be half-applied) and alerted, once; the rollback runbook then takes it over. By the config's choice
(watch_writes_on: never, before_migration, always) the abandoned deployment's write guard is ended too, as
guard_user (the deploy account, its password in the passfile), with the guard's own code installed beside
this program (pgops_write_guard.py), as are the lease's (pgops_lease.py), the deployment record's (how far a
plan got: pgops_deployment_record.py) and the connection's every command uses (pgops_connection.py).

job: runs one named maintenance job of a jobs file (JSON, written by the maintenance_jobs role) with the
same lock, log and alerts as the backups, one lock per job: `delete` removes the rows of a table that
match a condition in batches, each its own short transaction (no long locks, SKIP LOCKED rows wait for the
next run); `refresh` refreshes a materialized view, concurrently by default.

restore: puts a backup back into the live database, atomically: in one transaction the schema is
renamed aside, recreated, the archive loaded into it, and the old one dropped. If anything fails,
nothing has changed. For the rollback of a deployment whose downgrade failed. First it measures what it
would discard (per table, rows written and rows deleted or updated since the backup's snapshot, and the
window): a restore that discards committed writes is refused unless --discard-writes names the backup file,
and then a verified backup of the current state is taken before anything changes. Afterwards the restored
tables are analysed, so the planner has statistics before the application's queries return.

Passwords come from a .pgpass file (config `passfile`, else ~/.pgpass) or PGPASSWORD, never from the
command line or the config file.
Exit status: 0 success, 1 failure (alerted), 75 another run holds the lock.
"""

from __future__ import annotations

import argparse
import datetime
import email.message
import email.policy
import errno
import fcntl
import hashlib
import importlib.util
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

try:
    import psycopg2
    DatabaseError = psycopg2.Error
except ImportError:  # reported by connect(), where it matters
    psycopg2 = None
    DatabaseError = ()

EXIT_FAILED = 1
EXIT_LOCKED = 75
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
CONFIG_KEYS = {
    "database": str, "host": str, "port": int, "user": str, "backup_dir": str, "bin_dir": str,
    "format": str, "jobs": int, "compression": str, "retention_count": int, "retention_days": int,
    "row_count_tables": list, "alert_mail": str, "alert_webhook": str, "lock_wait_seconds": int,
    "label": str, "passfile": str, "metrics_dir": str,
    "standby_host": str, "standby_port": int, "max_standby_lag_seconds": int,
    "watch_writes_on": str, "guard_user": str,
    "ssl_mode": str, "ca_cert": str, "ssl_cert": str, "ssl_key": str,
    "drill_folder": str, "drill_port": int, "drill_server_account": str,
}
DEFAULTS = {
    "host": "", "port": 5432, "user": "", "bin_dir": "", "format": "custom", "jobs": 2, "compression": "auto",
    "retention_count": 7, "retention_days": 14, "row_count_tables": [], "alert_mail": "", "alert_webhook": "",
    "lock_wait_seconds": 0, "label": "", "passfile": "", "metrics_dir": "",
    "standby_host": "", "standby_port": 0, "max_standby_lag_seconds": 300,
    "watch_writes_on": "never", "guard_user": "",
    "ssl_mode": "", "ca_cert": "", "ssl_cert": "", "ssl_key": "",
    "drill_folder": "", "drill_port": 55432, "drill_server_account": "",
}
CONNECT_TIMEOUT_SECONDS = 10
# What a failed connection asks to check, in this config's keys (the modules name their options).
CONNECTION_SETTINGS = {
    "password": "the password file (passfile in the config, else ~/.pgpass) or PGPASSWORD",
    "database": "database in the config",
    "user": "user in the config",
    "address": "host and port in the config",
    "tls": "ssl_mode, ca_cert, ssl_cert and ssl_key in the config",
    "timeout": "%d s" % CONNECT_TIMEOUT_SECONDS,
}
WATCH_WRITES_ON = ("never", "before_migration", "always")
FORMATS = {"custom": ".dump", "directory": ".dir"}
# How often a long step rewrites its progress file.
PROGRESS_SECONDS = 2


class BackupError(Exception):
    """A failure worth one line in the log, the alert and the exit message."""


class Abandoned(BackupError):
    """The watch found an abandoned deployment: alerted as its own event, not as the watch failing."""

    event = "deployment_abandoned"


class Locked(Exception):
    """Another run for the same database holds the lock."""


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


# ---------------------------------------------------------------- configuration

def read_json(path, what):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as error:
        raise BackupError("cannot read %s %s: %s" % (what, path, error.strerror))
    except ValueError as error:
        raise BackupError("%s %s is not valid JSON: %s" % (what, path, error))


# One address, as the backup role's settings check (setting_problems, kind mail) accepts it.
ALERT_MAIL = r"[A-Za-z0-9.!#$&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?"
ALERT_WEBHOOK = r"https?://[^\s/?#]+[^\s]*"
# A database name that can name a file (backups, locks, logs) safely.
DATABASE_NAME = r"[A-Za-z0-9_.-]+"


def load_config(path):
    raw = read_json(path, "config")
    unknown = sorted(set(raw) - set(CONFIG_KEYS))
    if unknown:
        raise BackupError("config %s has unknown key(s) %s" % (path, ", ".join(unknown)))
    config = dict(DEFAULTS, **raw)
    for key in ("database", "backup_dir"):
        if not config.get(key):
            raise BackupError("config %s needs %s" % (path, key))
    for key, kind in CONFIG_KEYS.items():
        if not isinstance(config[key], kind):
            raise BackupError("config %s: %s must be %s, got %r" % (path, key, kind.__name__, config[key]))
    if config["format"] not in FORMATS:
        raise BackupError("config %s: format %r, choose custom or directory" % (path, config["format"]))
    if not re.match(r"^(auto|none|gzip(:[0-9])?|lz4(:[0-9]+)?|zstd(:[0-9]+)?)$", config["compression"]):
        raise BackupError("config %s: compression %r, choose auto, none, gzip:N, lz4 or zstd:N" % (
            path, config["compression"]))
    if config["watch_writes_on"] not in WATCH_WRITES_ON:
        raise BackupError("config %s: watch_writes_on %r, choose %s" % (
            path, config["watch_writes_on"], ", ".join(WATCH_WRITES_ON)))
    ssl_modes = load_connection().SSL_MODES
    if config["ssl_mode"] and config["ssl_mode"] not in ssl_modes:
        raise BackupError("config %s: ssl_mode %r is not one of %s" % (path, config["ssl_mode"], ", ".join(ssl_modes)))
    if config["retention_count"] < 1:
        raise BackupError("config %s: retention_count must keep at least 1 backup" % path)
    # fullmatch: `$` would let a trailing line break into a file name or a header.
    if not re.fullmatch(DATABASE_NAME, config["database"]):
        raise BackupError("config %s: database name %r cannot name a file safely" % (path, config["database"]))
    if config["alert_mail"] and not re.fullmatch(ALERT_MAIL, config["alert_mail"]):
        raise BackupError("config %s: alert_mail %s is not one mail address: give one like ops@example.com" % (
            path, json.dumps(config["alert_mail"])))
    if config["alert_webhook"] and not re.fullmatch(ALERT_WEBHOOK, config["alert_webhook"]):
        raise BackupError("config %s: alert_webhook %s is not an http or https URL" % (
            path, json.dumps(config["alert_webhook"])))
    if config["passfile"]:
        # libpq (pg_dump, pg_restore and psycopg2 alike) reads the password from here.
        os.environ["PGPASSFILE"] = config["passfile"]
    return config


def program(config, name):
    return os.path.join(config["bin_dir"], name) if config["bin_dir"] else name


def connection_params(config, database=None):
    """The config's target in the collection's connection options (the password is libpq's to find)."""
    return dict(load_connection().config_params(config, database), connect_timeout=CONNECT_TIMEOUT_SECONDS,
                application_name="pgops-backup")


def libpq_env(config, database=None):
    """This environment with the config's target as PG* variables, for pg_dump and pg_restore."""
    return dict(os.environ, **load_connection().libpq_environment(connection_params(config, database)))


def connect(config, database=None):
    if psycopg2 is None:
        raise BackupError("psycopg2 is not installed for %s: install python3-psycopg2" % sys.executable)
    connection = load_connection()
    try:
        return connection.connect(connection_params(config, database), settings=CONNECTION_SETTINGS)
    except connection.PgopsError as error:
        raise BackupError(str(error))


# ---------------------------------------------------------------- small helpers

def run(cmd, env, what):
    """Run a client program; BackupError with its last error line on failure (never its environment)."""
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        if result.returncode < 0:
            reason = "killed by signal %s" % signal.Signals(-result.returncode).name
            if lines:
                reason += ": " + lines[-1]
        else:
            reason = lines[-1] if lines else "exit status %d" % result.returncode
        raise BackupError("%s failed: %s" % (what, reason))
    return result.stdout


def client_major(config):
    output = run([program(config, "pg_dump"), "--version"], os.environ, "pg_dump --version")
    match = re.search(r"(\d+)(?:\.\d+)?", output)
    return int(match.group(1)) if match else 0


def compression_methods(config, major):
    """Methods this pg_dump can write: gzip always; lz4 and zstd from 16 on, if its build has them."""
    methods = {"gzip"}
    if major < 16:
        return methods
    pg_dump = shutil.which(program(config, "pg_dump"))
    pg_config = os.path.join(os.path.dirname(os.path.realpath(pg_dump)), "pg_config") if pg_dump else ""
    try:
        flags = subprocess.run([pg_config, "--configure"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return methods
    return methods | set(name for name in ("lz4", "zstd") if "--with-%s" % name in flags)


def compression_option(config, major):
    wanted = config["compression"]
    methods = compression_methods(config, major)
    if wanted == "auto":
        # Fast by default: lz4 where this pg_dump has it, else gzip level 2, the fastest level whose
        # archive stays within 1.2x of `pg_dump | gzip` on the reference data (benchmarks/backup_restore.py).
        wanted = "lz4" if "lz4" in methods else "gzip:2"
    if wanted == "none":
        return "--compress=0"
    method = wanted.split(":")[0]
    if method not in methods:
        raise BackupError("compression %s is not supported by this pg_dump %d (it has: %s): choose one of those"
                          % (wanted, major, ", ".join(sorted(methods))))
    if major < 16:
        return "--compress=%s" % (wanted.split(":")[1] if ":" in wanted else "6")
    return "--compress=%s" % wanted


def fsync_directory(path):
    """Make a rename or a new file in `path` durable: the directory alone, never the files in it (some of them
    may belong to another account and be unreadable to this one)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_path(path):
    """A dump made by this run, file or directory archive, every file of it."""
    if os.path.isdir(path):
        for entry in sorted(os.listdir(path)):
            fsync_path(os.path.join(path, entry))
    fsync_directory(path)


def checksum(path):
    """sha256 of a file, or of a directory archive's files in name order."""
    digest = hashlib.sha256()
    files = [path] if os.path.isfile(path) else [os.path.join(path, name) for name in sorted(os.listdir(path))]
    for name in files:
        if len(files) > 1:
            digest.update(os.path.basename(name).encode() + b"\0")
        with open(name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def size_of(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(path, name)) for name in os.listdir(path))


def size_so_far(path):
    """size_of a file still being written: 0 before it exists."""
    try:
        return size_of(path)
    except OSError:
        return 0


class Progress(object):
    """What a run is doing, in a small JSON file (--progress-file) that the controller's polls read and print:
    {"phase", "bytes", "bytes_are", "elapsed_seconds"}, rewritten at each step and every PROGRESS_SECONDS
    meanwhile (the bytes from the step's `measure`). Without a file it does nothing."""

    def __init__(self, path):
        self.path = path
        self.active = bool(path)
        self.started = time.monotonic()
        self.step = None
        self.lock = threading.Lock()
        if self.active:
            threading.Thread(target=self._tick, daemon=True).start()

    def __call__(self, phase, measure=None, measured_are="written"):
        with self.lock:
            self.step = (phase, measure, measured_are)
        self._write()

    def _tick(self):
        while self.active:
            time.sleep(PROGRESS_SECONDS)
            self._write()

    def _write(self):
        with self.lock:
            if not self.active or self.step is None:
                return
            phase, measure, measured_are = self.step
            try:
                measured = measure() if measure else None
                write_json_atomically(self.path, {"phase": phase, "bytes": measured, "bytes_are": measured_are,
                                                  "elapsed_seconds": round(time.monotonic() - self.started, 1)})
            except (OSError, DatabaseError):
                self.active = False  # progress is for people watching; it never fails the run

    def close(self):
        with self.lock:
            self.active = False
        if self.path:
            remove(self.path)


def remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def run_partial(path):
    """This run's own temporary name for `path`: two runs never write the same half-done file."""
    return "%s.%d.partial" % (path, os.getpid())


def write_json_atomically(path, data):
    partial = run_partial(path)
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(partial, path)
    finally:
        if os.path.lexists(partial):
            os.unlink(partial)


class Log(object):
    """One line per event, to stderr and to the backup folder's log."""

    def __init__(self, config, action):
        self.path = os.path.join(config["backup_dir"], "pgops-backup.log")
        self.prefix = "%s %s[%d]" % (config["database"], action, os.getpid())

    def append(self, line):
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as handle:
            handle.write(line)

    def check(self):
        """Fail before any work when the log cannot be written (another user's file, a read-only folder)."""
        self.append("")

    def __call__(self, message):
        line = "%s %s %s" % (utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"), self.prefix, message)
        print(line, file=sys.stderr)
        try:
            self.append(line + "\n")
        except OSError as error:
            # Said on stderr (cron mails it) rather than raised: a full disk must not hide the original failure.
            print("%s %s could not write the log %s: %s" % (
                utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"), self.prefix, self.path, error.strerror), file=sys.stderr)


def run_as():
    return pwd.getpwuid(os.geteuid()).pw_name


class Lock(object):
    """flock on the backup folder's lock file: one run per database, released even if killed."""

    def __init__(self, config, name="pgops-backup"):
        self.name = name
        self.path = os.path.join(config["backup_dir"], ".%s.lock" % name)
        self.wait = config["lock_wait_seconds"]
        self.handle = None

    def __enter__(self):
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise BackupError("cannot open the lock file %s: %s; the backup folder and its files must belong to "
                              "the user that runs the program (here %s)" % (self.path, error.strerror, run_as()))
        self.handle = os.fdopen(fd, "r+")
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    self.handle.seek(0)
                    holder = self.handle.read().strip() or "unknown"
                    self.handle.close()
                    raise Locked("another %s run holds %s (%s)" % (self.name, self.path, holder))
                time.sleep(0.5)
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write("pid %d on %s since %s" % (os.getpid(), socket.gethostname(), utcnow().isoformat()))
        self.handle.flush()
        return self

    def __exit__(self, *exc):
        self.handle.close()


# ---------------------------------------------------------------- backups on disk

NAME_PATTERN = re.compile(r"^(?P<db>.+)-(?P<stamp>\d{8}T\d{6}Z)(?P<ext>\.dump|\.dir)$")


def list_backups(config):
    """Backups of this database with a final name, newest first, each with its manifest (or None)."""
    backups = []
    for name in os.listdir(config["backup_dir"]):
        match = NAME_PATTERN.match(name)
        if not match or match.group("db") != config["database"]:
            continue
        path = os.path.join(config["backup_dir"], name)
        manifest = None
        try:
            with open(path + ".manifest.json", encoding="utf-8") as handle:
                manifest = json.load(handle)
        except (OSError, ValueError):
            pass
        taken = datetime.datetime.strptime(match.group("stamp"), STAMP_FORMAT).replace(tzinfo=datetime.timezone.utc)
        backups.append({"path": path, "taken": taken, "manifest": manifest,
                        "verified": bool(manifest and manifest.get("verified"))})
    return sorted(backups, key=lambda b: b["taken"], reverse=True)


def retention_plan(backups, keep_count, keep_days, now):
    """The backups to remove: beyond the newest keep_count AND older than keep_days.

    The newest verified backup is always kept, whatever its age: if backups stopped working weeks
    ago, the last good one is all there is.
    """
    verified = [b for b in backups if b["verified"]]
    newest_verified = verified[0]["path"] if verified else None
    cutoff = now - datetime.timedelta(days=keep_days)
    remove_list = []
    for position, backup in enumerate(backups):
        if position < keep_count or backup["taken"] >= cutoff or backup["path"] == newest_verified:
            continue
        remove_list.append(backup)
    return remove_list


def unpublished_manifest(config, name):
    """Whether `name` is the manifest of one of this database's dumps that is not there."""
    dump = name[:-len(".manifest.json")] if name.endswith(".manifest.json") else None
    match = NAME_PATTERN.match(dump) if dump else None
    return bool(match and match.group("db") == config["database"]
                and not os.path.lexists(os.path.join(config["backup_dir"], dump)))


def clean_partials(config, log):
    """Leftovers of killed runs: safe to remove, since this run holds the lock."""
    for name in os.listdir(config["backup_dir"]):
        if name.startswith(".%s-" % config["database"]) and name.endswith(".partial"):
            log("removing leftover %s of an interrupted run" % name)
            remove(os.path.join(config["backup_dir"], name))
        elif unpublished_manifest(config, name):
            # publish() writes the manifest before the dump gets its name: a run stopped in between.
            log("removing %s, the manifest of a dump an interrupted run never published" % name)
            remove(os.path.join(config["backup_dir"], name))


# ---------------------------------------------------------------- backup

# Every table the dump holds (extensions' own tables aside), for the exact counts a restore later measures
# what it would discard against.
DUMPED_TABLES = """
SELECT n.nspname, c.relname
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg\\_%'
   AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::regclass
                     AND d.objid = c.oid AND d.deptype = 'e')
 ORDER BY 1, 2
"""


def snapshot_facts(cur, tables):
    """Server version, Alembic revision, row counts and the snapshot itself, all inside the exported snapshot.

    `table_rows` counts every table exactly and `snapshot` is the transaction snapshot the dump reads: a restore
    tells from them which rows were written or deleted after the backup (see writes_since)."""
    cur.execute("SELECT current_setting('server_version'), current_setting('server_version_num')::int")
    version, version_num = cur.fetchone()
    revision = alembic_revision(cur)
    counts = {}
    for table in tables:
        cur.execute("SELECT pg_catalog.to_regclass(%s) IS NOT NULL", (qualified(table),))
        if not cur.fetchone()[0]:
            raise BackupError("row_count_tables names %s, which the database does not have" % qualified(table))
        cur.execute("SELECT count(*) FROM %s" % quote_ident(qualified(table)))
        counts[table] = cur.fetchone()[0]
    cur.execute(DUMPED_TABLES)
    table_rows = {}
    for schema, table in cur.fetchall():
        cur.execute("SELECT count(*) FROM %s" % quote_ident_parts(schema, table))
        table_rows["%s.%s" % (schema, table)] = cur.fetchone()[0]
    snapshot = None
    if version_num >= 130000:
        cur.execute("SELECT pg_catalog.pg_current_snapshot()::text")
        snapshot = cur.fetchone()[0]
    return version, version_num, revision, counts, table_rows, snapshot


def alembic_revision(cur):
    """The recorded Alembic revision(s), or None before the first migration."""
    cur.execute("SELECT to_regclass('alembic_version') IS NOT NULL")
    if not cur.fetchone()[0]:
        return None
    cur.execute("SELECT string_agg(version_num, ',' ORDER BY version_num) FROM alembic_version")
    return cur.fetchone()[0]


def qualified(table):
    """schema.table; a bare name means public, whatever the session's search_path would find first."""
    return table if "." in table else "public." + table


def quote_ident(name):
    return quote_ident_parts(*name.split("."))


def quote_ident_parts(*parts):
    """A qualified name from its parts, each quoted (a part may itself hold a dot)."""
    return ".".join('"%s"' % part.replace('"', '""') for part in parts)


# On a standby: is replay caught up with what it received, and how old is the last transaction it replayed.
STANDBY_LAG = """
SELECT pg_catalog.pg_is_in_recovery(),
       pg_catalog.pg_last_wal_receive_lsn() IS NOT NULL
         AND pg_catalog.pg_last_wal_receive_lsn() = pg_catalog.pg_last_wal_replay_lsn(),
       extract(epoch FROM pg_catalog.now() - pg_catalog.pg_last_xact_replay_timestamp())
"""


def standby_source(config):
    """The config to dump from the standby with (same database, user and password file), or a refusal."""
    if not config["standby_host"]:
        raise BackupError("--from-standby needs standby_host in the config (the backup role's backup_standby_host)")
    source = dict(config, host=config["standby_host"], port=config["standby_port"] or config["port"])
    conn = connect(source)
    try:
        with conn.cursor() as cur:
            cur.execute(STANDBY_LAG)
            in_recovery, caught_up, age = cur.fetchone()
    finally:
        conn.rollback()
        conn.close()
    where = "%s:%s" % (source["host"], source["port"])
    if not in_recovery:
        # Promoted, or the wrong server: its data may not be the primary's any more.
        raise BackupError("standby %s is not in recovery (promoted, or not a standby): nothing was dumped; back up "
                          "the primary, or point standby_host at a standby" % where)
    lag = 0.0 if caught_up or age is None else max(0.0, float(age))
    if lag > config["max_standby_lag_seconds"]:
        raise BackupError("standby %s is %.0f s behind its primary (limit max_standby_lag_seconds %d s): nothing was "
                          "dumped; wait until it has caught up, or back up the primary" % (
                              where, lag, config["max_standby_lag_seconds"]))
    return source, {"source": "standby %s" % where, "standby_replay_lag_seconds": round(lag, 1)}


def prove_locked_by(cur, config, deployment):
    """Refuse unless this database holds `deployment`'s lock: a backup that reached another server (a port or host
    the deployment's other steps resolve differently) must not pass for the deployment's."""
    lease = load_lease().read(cur)
    if lease is None or lease.get("owner") != deployment:
        raise BackupError(
            "refused, nothing was backed up: database %s on %s holds %s, not the lock of %s, so it is not the "
            "database the deployment locked (another server on that port?): give pgops_db_host and pgops_db_port, "
            "so that every step reaches the same server" % (
                config["database"], server_label(config),
                "no deployment lock" if lease is None else "the lock of %s" % lease.get("owner"), deployment))


def server_label(config):
    return "%s port %s" % (config.get("host") or "the local socket", config.get("port") or 5432)


def backup(config, log, from_standby, progress, deployment=None):
    source_facts = {"source": "primary"}
    if from_standby:
        config, source_facts = standby_source(config)
        log("dumping from %s (replay lag %.1f s)" % (source_facts["source"], source_facts["standby_replay_lag_seconds"]))
    started = utcnow()
    stamp = started.strftime(STAMP_FORMAT)
    extension = FORMATS[config["format"]]
    final = os.path.join(config["backup_dir"], "%s-%s%s" % (config["database"], stamp, extension))
    partial = os.path.join(config["backup_dir"], ".%s-%s%s.partial" % (config["database"], stamp, extension))
    if os.path.exists(final):
        raise BackupError("%s already exists: one backup per second at most" % final)
    major = client_major(config)
    compress = compression_option(config, major)
    progress("reading the database's revision and row counts")

    conn = connect(config)
    try:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        cur = conn.cursor()
        try:
            cur.execute("SELECT pg_export_snapshot()")
            snapshot = cur.fetchone()[0]
            if deployment:
                prove_locked_by(cur, config, deployment)
            version, version_num, revision, counts, table_rows, snapshot_text = snapshot_facts(
                cur, config["row_count_tables"])
        except DatabaseError as error:
            raise BackupError("cannot read %s before the dump: %s" % (config["database"], " ".join(str(error).split())))
        if version_num // 10000 > major:
            raise BackupError("pg_dump %d cannot dump server %s: set bin_dir to a newer client" % (major, version))
        log("dumping to %s (%s, %s)" % (os.path.basename(final), config["format"], compress))
        cmd = [program(config, "pg_dump"), "--format=%s" % config["format"], compress, "--snapshot=%s" % snapshot,
               "--no-password", "--file=%s" % partial]
        if config["format"] == "directory":
            cmd.append("--jobs=%d" % config["jobs"])
        dump_started = time.monotonic()
        progress("dumping", lambda: size_so_far(partial))
        run(cmd, libpq_env(config), "pg_dump")
        dump_seconds = time.monotonic() - dump_started
    finally:
        conn.rollback()
        conn.close()

    fsync_path(partial)
    verify_started = time.monotonic()
    listing = run([program(config, "pg_restore"), "--list", partial], os.environ, "pg_restore --list")
    # --list reads only the table of contents; restoring to /dev/null reads and decompresses every byte.
    dumped = size_so_far(partial)
    progress("reading the dump back", lambda: dumped, "dumped")
    run([program(config, "pg_restore"), "--file=/dev/null", partial], os.environ, "pg_restore read-back")
    progress("checksumming", lambda: dumped, "dumped")
    digest = checksum(partial)
    verify_seconds = time.monotonic() - verify_started
    ended = utcnow()
    manifest = {
        "database": config["database"], "label": config["label"], "path": final, "format": config["format"],
        "compression": compress.split("=", 1)[1], "server_version": version, "pg_dump_major": major,
        "alembic_revision": revision, "started": started.isoformat(), "ended": ended.isoformat(),
        "duration_seconds": round((ended - started).total_seconds(), 3), "dump_seconds": round(dump_seconds, 3),
        "verify_seconds": round(verify_seconds, 3), "size_bytes": size_of(partial), "sha256": digest,
        "archive_entries": sum(1 for line in listing.splitlines() if line and not line.startswith(";")),
        "row_counts": counts, "table_rows": table_rows, "snapshot": snapshot_text, "verified": True,
        "host": socket.gethostname(), "made_by": run_as(), **source_facts,
    }
    publish(partial, final, manifest)
    log("verified %s: %d bytes, sha256 %s, %.1f s" % (
        os.path.basename(final), manifest["size_bytes"], digest[:12], manifest["duration_seconds"]))
    return manifest


def publish(partial, final, manifest):
    """Give the verified dump its final name together with its manifest, or neither.

    The manifest is written first: a backup is listed by its final name, so a run that stops here leaves a
    partial (removed by the next run) and at most a manifest without its dump, never a dump without its manifest.
    """
    write_json_atomically(final + ".manifest.json", manifest)
    try:
        os.rename(partial, final)
    except OSError:
        remove(final + ".manifest.json")
        raise
    fsync_directory(os.path.dirname(final))


def write_metrics(config, manifest):
    """The newest verified backup for Prometheus (node_exporter's textfile collector), replaced atomically."""
    if not config["metrics_dir"]:
        return
    labels = '{database="%s"}' % config["database"]
    ended = datetime.datetime.fromisoformat(manifest["ended"]).timestamp()
    lines = []
    for name, help_text, value in (
            ("last_success_timestamp_seconds", "End of the newest verified backup.", ended),
            ("last_size_bytes", "Size of the newest verified backup.", manifest["size_bytes"]),
            ("last_duration_seconds", "Time the newest verified backup took.", manifest["duration_seconds"])):
        lines += ["# HELP pgops_backup_%s %s" % (name, help_text), "# TYPE pgops_backup_%s gauge" % name,
                  "pgops_backup_%s%s %s" % (name, labels, value)]
    path = os.path.join(config["metrics_dir"], "pgops_backup_%s.prom" % config["database"])
    partial = run_partial(path)
    with open(partial, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    os.chmod(partial, 0o644)
    os.rename(partial, path)


def apply_retention(config, log):
    removed = []
    for old in retention_plan(list_backups(config), config["retention_count"], config["retention_days"], utcnow()):
        log("retention: removing %s (taken %s)" % (os.path.basename(old["path"]), old["taken"].isoformat()))
        remove(old["path"])
        remove(old["path"] + ".manifest.json")
        removed.append(old["path"])
    return removed


# ---------------------------------------------------------------- restore drill

def choose_backup(config, chosen):
    if chosen:
        path = os.path.abspath(chosen)
        try:
            with open(path + ".manifest.json", encoding="utf-8") as handle:
                return path, json.load(handle)
        except (OSError, ValueError):
            raise BackupError("%s has no readable manifest (%s.manifest.json)" % (path, path))
    for candidate in list_backups(config):
        if candidate["verified"]:
            return candidate["path"], candidate["manifest"]
    raise BackupError("no verified backup of %s in %s" % (config["database"], config["backup_dir"]))


# A restored database is several times its compressed dump (its indexes are built anew), and the drill's
# server needs room of its own.
DRILL_SPACE_FACTOR = 4
DRILL_SERVER_BYTES = 256 << 20


def drill_server(config, log, path, stamp, progress):
    """A server of the drill's own in a new folder under the config's drill_folder, after a free-space check: the
    drill never restores into the server it proves. (its Scratch, the config's target pointed at it)."""
    servers = load_scratch_server()
    parent = config["drill_folder"]
    if not parent:
        raise BackupError("the config names no drill_folder (pgops_restore_drill_folder): a drill restores into a "
                          "server of its own, never the one it proves; run the backup role again")
    if not os.path.isdir(parent):
        raise BackupError("the drills' folder %s does not exist (the restore_drill role makes it)" % parent)
    needed = os.path.getsize(path) * DRILL_SPACE_FACTOR + DRILL_SERVER_BYTES
    free = servers.free_bytes(parent)
    if free < needed:
        raise BackupError("not enough free space in %s for the drill's server: %d MB free, %d MB needed (%d times "
                          "the backup's %d MB, and %d MB for the server); nothing was restored: free space or give "
                          "another folder (pgops_restore_drill_folder)" % (
                              parent, free >> 20, needed >> 20, DRILL_SPACE_FACTOR, os.path.getsize(path) >> 20,
                              DRILL_SERVER_BYTES >> 20))
    scratch = servers.Scratch(os.path.join(parent, "drill-%s-%d" % (stamp, os.getpid())))
    if os.path.lexists(scratch.path):
        raise BackupError("%s exists: another drill is running or one was left there" % scratch.path)
    account = config["drill_server_account"] or None
    if account is None and os.geteuid() == 0:
        raise BackupError("PostgreSQL refuses to run as root: give the drill server's account "
                          "(pgops_restore_drill_server_account)")
    progress("starting the drill's server in %s" % scratch.path)
    try:
        user = servers.create(scratch, config["bin_dir"], config["drill_port"],
                              {"database": config["database"], "backup": os.path.basename(path)}, account)
    except servers.PgopsError as error:
        if scratch.ours():
            remove_drill_server(config, scratch.path)
        raise BackupError(str(error))
    log("drill: started a server of its own in %s (socket only, port %d)" % (scratch.path, config["drill_port"]))
    return scratch, dict(config, host=scratch.socket, port=config["drill_port"], user=user, ssl_mode="",
                         ca_cert="", ssl_cert="", ssl_key="", passfile="")


def remove_drill_server(config, folder):
    """Stop a drill's server and remove its folder (only a drill's: the marker says so)."""
    servers = load_scratch_server()
    try:
        return servers.remove(servers.Scratch(folder), config["bin_dir"], config["drill_server_account"] or None)
    except servers.PgopsError as error:
        raise BackupError(str(error))


def drill(config, log, options, chosen, keep, progress):
    path, manifest = choose_backup(config, chosen)
    started = time.monotonic()
    log("drill: checking %s" % os.path.basename(path))
    progress("checking the checksum of %s" % os.path.basename(path))
    digest = checksum(path)
    if digest != manifest.get("sha256"):
        raise BackupError("%s is corrupt: sha256 %s, manifest says %s" % (path, digest[:12], str(manifest.get("sha256"))[:12]))
    stamp = utcnow().strftime("%Y%m%d%H%M%S")
    scratch = "%s_drill_%s" % (config["database"][:40], stamp)
    server, target = drill_server(config, log, path, stamp, progress)
    try:
        admin = connect(target, database="postgres")
    except BackupError:
        remove_drill_server(config, server.path)
        raise
    admin.autocommit = True
    report = None
    try:
        admin.cursor().execute("CREATE DATABASE %s" % quote_ident(scratch))
        listing = archive_listing(config, path)
        left_out = extensions_beyond_reach(admin, archive_extensions(listing))
        others_defaults = default_acls_beyond_reach(admin, listing)
        env = libpq_env(target, scratch)
        # The restore session's settings decide how fast the indexes build.
        env["PGOPTIONS"] = "-c maintenance_work_mem=%s -c synchronous_commit=off" % options.maintenance_work_mem
        restore_started = time.monotonic()

        def restored_so_far():
            try:
                with admin.cursor() as cur:
                    cur.execute("SELECT pg_database_size(%s)", (scratch,))
                    return cur.fetchone()[0]
            except DatabaseError:
                return None

        progress("restoring into %s" % scratch, restored_so_far)
        with tempfile.NamedTemporaryFile("w", suffix=".list") as use_list:
            use_list.write(listing_without(listing, left_out, others_defaults))
            use_list.flush()
            # The drill's own server has none of the source's roles to grant to.
            run([program(config, "pg_restore"), "--dbname=%s" % scratch, "--jobs=%d" % options.jobs,
                 "--no-owner", "--exit-on-error", "--no-password", "--use-list=%s" % use_list.name]
                + ["--no-privileges", path], env, "pg_restore into %s" % scratch)
        if left_out:
            log("drill: left out extension(s) %s: only a superuser can create them (no table of the backup may "
                "use them, or the restore fails)" % ", ".join(left_out))
        if others_defaults:
            log("drill: left out the default privileges of %s: only that role can set them (they hold no data)"
                % ", ".join(others_defaults))
        progress("counting rows in %s" % scratch)
        restore_seconds = time.monotonic() - restore_started
        conn = connect(target, database=scratch)
        try:
            cur = conn.cursor()
            counts = dict((table, None) for table in manifest.get("row_counts", {}))
            for table in counts:
                cur.execute("SELECT count(*) FROM %s" % quote_ident(qualified(table)))
                counts[table] = cur.fetchone()[0]
            # A restored database answers at its usual speed only once its statistics are there: part of the RTO.
            progress("analysing %s" % scratch)
            conn.commit()
            conn.autocommit = True
            analyse_started = time.monotonic()
            cur.execute("ANALYZE")
            analyse_seconds = time.monotonic() - analyse_started
        except DatabaseError as error:
            raise BackupError("cannot count rows in %s: %s" % (scratch, " ".join(str(error).split())))
        finally:
            conn.close()
        mismatched = dict((t, {"manifest": manifest["row_counts"][t], "restored": n})
                          for t, n in counts.items() if n != manifest["row_counts"][t])
        rto = time.monotonic() - started
        report = {
            "database": config["database"], "backup": path, "backup_taken": manifest.get("started"),
            "scratch_database": scratch, "restore_seconds": round(restore_seconds, 3),
            "analyse_seconds": round(analyse_seconds, 3),
            # Where the copy is: a server of the drill's own (folder, socket, port, user), or the configured one.
            "scratch_server": {"folder": server.path, "socket": server.socket, "port": config["drill_port"],
                               "user": target["user"]},
            "rto_seconds": round(rto, 3), "rto_target_seconds": options.rto_target_seconds,
            "within_target": rto <= options.rto_target_seconds, "row_counts": counts,
            "row_count_mismatches": mismatched, "extensions_left_out": left_out,
            "passed": not mismatched and rto <= options.rto_target_seconds,
        }
        # --keep is for checking a good copy further; a failed drill's copy is only a full-size leftover.
        report["kept"] = keep and report["passed"]
    finally:
        admin.close()
        if report is None or not report["kept"]:
            remove_drill_server(config, server.path)
    if mismatched:
        raise BackupError("drill restored %s but row counts differ from the manifest: %s" % (
            os.path.basename(path), ", ".join("%s %d != %d" % (t, v["restored"], v["manifest"]) for t, v in mismatched.items())))
    log("drill: restored %s in %.1f s, RTO %.1f s (target %d s)%s" % (
        os.path.basename(path), restore_seconds, rto, options.rto_target_seconds,
        "" if report["within_target"] else " OVER TARGET"))
    if not report["within_target"]:
        raise BackupError("drill RTO %.0f s is over the %d s target" % (rto, options.rto_target_seconds))
    return report


def drop_scratch(config, log, scratch, folder=None):
    """Stop and remove a kept drill's own server (its folder holds the drill's marker); without one, drop a
    database an older drill kept on the configured server, and nothing else."""
    if folder:
        removed = remove_drill_server(config, folder)
        log("drill: %s %s" % ("removed the drill's server in" if removed else "nothing to remove at", folder))
        return {"dropped": scratch, "removed": folder if removed else None}
    if not re.match(r"^%s_drill_\d{14}$" % re.escape(config["database"][:40]), scratch or ""):
        raise BackupError("%r is not a drill database of %s: refusing to drop it" % (scratch, config["database"]))
    admin = connect(config, database="postgres")
    admin.autocommit = True
    try:
        admin.cursor().execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % quote_ident(scratch))
    finally:
        admin.close()
    log("drill: dropped %s" % scratch)
    return {"dropped": scratch}


# ---------------------------------------------------------------- restore in place

ARCHIVE_EXTENSION = re.compile(r"^\d+; \d+ \d+ EXTENSION - (\S+)")

# Objects in other schemas that a schema replacement would take with it: views over its tables, and
# foreign keys into them.
OUTSIDE_DEPENDENTS = """
SELECT DISTINCT format('view %%I.%%I', vn.nspname, v.relname)
  FROM pg_catalog.pg_depend d
  JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
  JOIN pg_catalog.pg_class v ON v.oid = r.ev_class
  JOIN pg_catalog.pg_namespace vn ON vn.oid = v.relnamespace
  JOIN pg_catalog.pg_class t ON t.oid = d.refobjid
  JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
 WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass
   AND tn.nspname = %(schema)s AND vn.nspname <> %(schema)s
UNION
SELECT format('foreign key %%I on %%I.%%I', c.conname, cn.nspname, ct.relname)
  FROM pg_catalog.pg_constraint c
  JOIN pg_catalog.pg_class ct ON ct.oid = c.conrelid
  JOIN pg_catalog.pg_namespace cn ON cn.oid = ct.relnamespace
  JOIN pg_catalog.pg_class rt ON rt.oid = c.confrelid
  JOIN pg_catalog.pg_namespace rn ON rn.oid = rt.relnamespace
 WHERE c.contype = 'f' AND rn.nspname = %(schema)s AND cn.nspname <> %(schema)s
ORDER BY 1
"""


# The schema's own objects (extensions' members stay where they are), each as the statement that moves it into
# the schema %(aside)s. Indexes, constraints, triggers, owned sequences and array types go with their table or
# type; a range type's multirange does not, so it has its own statement.
SET_ASIDE = """
SELECT format('ALTER %%s %%I.%%I SET SCHEMA %%I;', CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
              WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, n.nspname, c.relname, %(aside)s)
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
   AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::regclass
                     AND d.objid = c.oid AND (d.deptype = 'e' OR (c.relkind = 'S' AND d.deptype IN ('a', 'i')
                                                                 AND d.refclassid = 'pg_catalog.pg_class'::regclass)))
UNION ALL
SELECT format('ALTER ROUTINE %%I.%%I(%%s) SET SCHEMA %%I;', n.nspname, p.proname,
              pg_catalog.pg_get_function_identity_arguments(p.oid), %(aside)s)
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = %(schema)s
   AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_proc'::regclass
                     AND d.objid = p.oid AND d.deptype = 'e')
UNION ALL
SELECT format('ALTER %%s %%I.%%I SET SCHEMA %%I;', CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END,
              n.nspname, t.typname, %(aside)s)
  FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
 WHERE n.nspname = %(schema)s AND t.typtype IN ('c', 'd', 'e', 'r', 'm')
   AND (t.typrelid = 0 OR (SELECT r.relkind FROM pg_catalog.pg_class r WHERE r.oid = t.typrelid) = 'c')
   AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_type'::regclass
                     AND d.objid = t.oid AND d.deptype = 'e')
UNION ALL
SELECT format('ALTER %%s %%I.%%I SET SCHEMA %%I;', o.kind, n.nspname, o.name, %(aside)s)
  FROM (SELECT 'COLLATION', collname, collnamespace, 'pg_catalog.pg_collation'::regclass, oid
          FROM pg_catalog.pg_collation
        UNION ALL SELECT 'CONVERSION', conname, connamespace, 'pg_catalog.pg_conversion'::regclass, oid
          FROM pg_catalog.pg_conversion
        UNION ALL SELECT 'STATISTICS', stxname, stxnamespace, 'pg_catalog.pg_statistic_ext'::regclass, oid
          FROM pg_catalog.pg_statistic_ext
        UNION ALL SELECT 'TEXT SEARCH CONFIGURATION', cfgname, cfgnamespace, 'pg_catalog.pg_ts_config'::regclass, oid
          FROM pg_catalog.pg_ts_config
        UNION ALL SELECT 'TEXT SEARCH DICTIONARY', dictname, dictnamespace, 'pg_catalog.pg_ts_dict'::regclass, oid
          FROM pg_catalog.pg_ts_dict) o (kind, name, namespace, catalog, oid)
  JOIN pg_catalog.pg_namespace n ON n.oid = o.namespace
 WHERE n.nspname = %(schema)s
   AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d WHERE d.classid = o.catalog AND d.objid = o.oid
                     AND d.deptype = 'e')
"""

# What a schema can hold that SET_ASIDE does not move (operators and their classes, base types, text search
# parsers and templates, routines of another owner: a superuser's, or an extension's, objects): a restore
# refuses while one is there.
NOT_SET_ASIDE = """
SELECT o.kind || ' ' || o.name
  FROM (SELECT 'operator', oprname::text, oprnamespace, 'pg_catalog.pg_operator'::regclass, oid FROM pg_catalog.pg_operator
        UNION ALL SELECT 'operator class', opcname, opcnamespace, 'pg_catalog.pg_opclass'::regclass, oid
          FROM pg_catalog.pg_opclass
        UNION ALL SELECT 'operator family', opfname, opfnamespace, 'pg_catalog.pg_opfamily'::regclass, oid
          FROM pg_catalog.pg_opfamily
        UNION ALL SELECT 'type', typname, typnamespace, 'pg_catalog.pg_type'::regclass, oid FROM pg_catalog.pg_type
         WHERE typtype IN ('b', 'p') AND typcategory <> 'A'
        UNION ALL SELECT 'text search parser', prsname, prsnamespace, 'pg_catalog.pg_ts_parser'::regclass, oid
          FROM pg_catalog.pg_ts_parser
        UNION ALL SELECT 'text search template', tmplname, tmplnamespace, 'pg_catalog.pg_ts_template'::regclass, oid
          FROM pg_catalog.pg_ts_template
        -- Only its owner may move a routine; a range type's constructors belong to the bootstrap superuser,
        -- whoever made the type.
        UNION ALL SELECT 'function', proname || ' (owned by ' || proowner::regrole::text || ')',
               pronamespace, 'pg_catalog.pg_proc'::regclass, oid
          FROM pg_catalog.pg_proc WHERE NOT pg_catalog.pg_has_role(proowner, 'USAGE')) o (kind, name, namespace, catalog, oid)
  JOIN pg_catalog.pg_namespace n ON n.oid = o.namespace
 WHERE n.nspname = %(schema)s
   AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d WHERE d.classid = o.catalog AND d.objid = o.oid
                     AND d.deptype = 'e')
 ORDER BY 1
"""


def archive_listing(config, path):
    """The archive's table of contents, as pg_restore --list prints it (and --use-list reads it)."""
    return run([program(config, "pg_restore"), "--list", path], os.environ, "pg_restore --list")


def archive_schema_comment(config, path, listing, schema):
    """The statement that gives `schema` the comment it has in the archive, or None when the archive has none (pg_dump
    leaves out public's default comment): a restore keeps the schema itself, and pg_restore --schema leaves the
    schema's own comment out."""
    entry = re.compile(r"^\d+; \d+ \d+ COMMENT - SCHEMA %s( |$)" % re.escape(schema))
    entries = [line for line in listing.splitlines() if entry.match(line)]
    if not entries:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".list") as chosen:
        chosen.write("\n".join(entries) + "\n")
        chosen.flush()
        return run([program(config, "pg_restore"), "--file=-", "--use-list=" + chosen.name, path], os.environ,
                   "pg_restore --use-list")


def archive_extensions(listing):
    """Names of the extensions the archive creates, from its table of contents."""
    return sorted(set(match.group(1) for match in map(ARCHIVE_EXTENSION.match, listing.splitlines()) if match))


# "4242; 826 16385 DEFAULT ACL - DEFAULT PRIVILEGES FOR TABLES pgops_deploy": its role is the last word.
ARCHIVE_DEFAULT_ACL = re.compile(r"^\d+; \d+ \d+ DEFAULT ACL .* (\S+)$")


def listing_without(listing, extensions, default_acl_roles=()):
    """The table of contents without the entries that create or comment on `extensions`, nor the default
    privileges of `default_acl_roles`."""
    def left_out(line):
        default_acl = ARCHIVE_DEFAULT_ACL.match(line)
        return (default_acl is not None and default_acl.group(1) in default_acl_roles) or any(
            re.match(r"^\d+; \d+ \d+ (EXTENSION|COMMENT) - (EXTENSION )?%s( |$)" % re.escape(ext), line)
            for ext in extensions)
    return "\n".join(line for line in listing.splitlines() if not left_out(line)) + "\n"


def default_acls_beyond_reach(conn, listing):
    """The roles whose default privileges the archive sets and this account cannot (only a member of the role
    can: the backup role restoring the deploy role's)."""
    roles = sorted(set(match.group(1) for match in map(ARCHIVE_DEFAULT_ACL.match, listing.splitlines()) if match))
    with conn.cursor() as cur:
        cur.execute("SELECT r FROM unnest(%s::text[]) AS r WHERE pg_catalog.to_regrole(r) IS NULL "
                    "OR NOT pg_catalog.pg_has_role(current_user, pg_catalog.to_regrole(r), 'MEMBER')", (roles,))
        return [row[0] for row in cur.fetchall()]


def extensions_beyond_reach(conn, extensions):
    """Those of `extensions` this account cannot create: all untrusted ones, unless it is a superuser."""
    with conn.cursor() as cur:
        cur.execute("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user")
        if cur.fetchone()[0]:
            return []
        cur.execute("SELECT DISTINCT name FROM pg_catalog.pg_available_extension_versions WHERE trusted")
        trusted = set(row[0] for row in cur.fetchall())
    return [ext for ext in extensions if ext not in trusted]


def first_error(handle, fallback):
    """The first line of a program's error output that says something, or the fallback."""
    handle.seek(0)
    lines = [line.strip() for line in handle.read().decode(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower() or "fatal" in line.lower()]
    return (errors or lines or [fallback])[0]


# psql prints this once the statements of a hold are done: the transaction then holds what they took.
HELD = "pgops-restore: held"


def stream_restore(config, path, schema, before, after, progress, hold=None):
    """pg_restore's SQL for `schema`, between `before` and `after`, into psql, in one explicit transaction that
    commits only when pg_restore read the whole archive; returns nothing or raises with the reason.

    With `hold` (statements, function): the statements run first in that transaction and the function runs once
    they are done, while the transaction holds the locks they took; its exception rolls everything back.

    Error output goes to files, never to pipes nobody reads; a psql that stopped on an error ends pg_restore
    too, so neither waits for the other.
    """
    with tempfile.TemporaryFile() as dump_errors, tempfile.TemporaryFile() as load_errors:
        load = subprocess.Popen([program(config, "psql"), "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1",
                                 "--output=/dev/null", "--no-password"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE if hold else subprocess.DEVNULL,
                                stderr=load_errors, env=libpq_env(config))
        try:
            load.stdin.write(b"BEGIN;\n")
            if hold:
                statements, while_held = hold
                load.stdin.write(("\n".join(statements) + "\n\\echo %s\n" % HELD).encode())
                load.stdin.flush()
                if load.stdout.readline().decode(errors="replace").strip() != HELD:
                    load.stdin.close()
                    load.wait()
                    reason = first_error(load_errors, "psql exit status %s" % load.returncode)
                    raise BackupError("restore refused, nothing changed: the writes to schema %s could not be "
                                      "held: %s (a session kept a write open on one of its tables; retry once it "
                                      "ends, or guard the application's roles with pgops_app_roles)" % (schema, reason))
                try:
                    while_held()
                except BaseException:
                    # Its own reason, even when psql is gone too (nothing was committed either way).
                    try:
                        load.stdin.write(b"ROLLBACK;\n")
                        load.stdin.close()
                    except BrokenPipeError:
                        pass
                    load.wait()
                    raise
            load.stdin.write(("\n".join(before) + "\n").encode())
        except BrokenPipeError:
            pass  # psql stopped at an error: the status below says so
        dump = subprocess.Popen([program(config, "pg_restore"), "--file=-", "--schema=%s" % schema, path],
                                stdout=subprocess.PIPE, stderr=dump_errors)
        psql_stopped = load.poll() is not None
        try:
            loaded = [0]
            progress("restoring schema %s" % schema, lambda: loaded[0], "of SQL loaded")
            for block in iter(lambda: dump.stdout.read(1 << 20), b""):
                if psql_stopped:
                    break
                load.stdin.write(block)
                loaded[0] += len(block)
        except BrokenPipeError:
            psql_stopped = True  # it stopped at an error; its message says why
        if psql_stopped:
            dump.kill()
        dump.stdout.close()
        dump_status = dump.wait()
        try:
            if not psql_stopped:
                # Only a complete archive commits; otherwise the transaction is rolled back, nothing changed.
                finish = "\n".join(after) + "\nCOMMIT;\n" if dump_status == 0 else "ROLLBACK;\n"
                load.stdin.write(finish.encode())
            load.stdin.close()
        except BrokenPipeError:
            psql_stopped = True
        load_status = load.wait()
        if load.stdout:
            load.stdout.close()
        if load_status != 0:
            raise BackupError("restore rolled back, nothing changed: %s" % first_error(
                load_errors, "psql exit status %d" % load_status))
        if dump_status != 0:
            raise BackupError("restore rolled back, nothing changed: pg_restore could not read %s: %s" % (
                path, first_error(dump_errors, "exit status %d" % dump_status)))


ALEMBIC_VERSION_TABLE = "alembic_version"

# A row written (inserted, or updated: a new row version) after the backup's snapshot. Its xmin is widened to a
# full transaction ID by its age from this transaction's own ID; a frozen or wrapped xmin (age past the 32-bit
# range) counts as old.
WRITTEN_SINCE = ("pg_catalog.age(xmin) >= 0 AND NOT pg_catalog.pg_visible_in_snapshot("
                 "GREATEST(%(now)s - pg_catalog.age(xmin), 3)::text::xid8, %(snapshot)s::pg_snapshot)")
ROWS_WRITTEN_SINCE = "SELECT count(*), count(*) FILTER (WHERE " + WRITTEN_SINCE + ") FROM {table}"
KEYS_WRITTEN_SINCE = "SELECT {key} FROM {table} WHERE " + WRITTEN_SINCE
PRIMARY_KEY = """
SELECT a.attname
  FROM pg_catalog.pg_index i
  JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
 WHERE i.indrelid = %s::regclass AND i.indisprimary
 ORDER BY pg_catalog.array_position(i.indkey::int2[], a.attnum)
"""
# Beyond this many rows written since, a table's inserts and updates are not told apart (the keys are held in
# memory): a migration that rewrote the whole table makes every row count as written anyway.
MAX_KEYS_TOLD_APART = 1000000
COPY_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}
COPY_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{1,2}|[0-7]{1,3}|.)")


def copy_field(text):
    """A field of COPY's text format as the type's output function wrote it (escapes undone)."""
    def undo(match):
        code = match.group(1)
        if code[0] == "x" and len(code) > 1:
            return chr(int(code[1:], 16))
        if code[0] in "01234567":
            return chr(int(code, 8))
        return COPY_ESCAPES.get(code, code)
    return COPY_ESCAPE.sub(undo, text)


def copy_columns(header):
    """The column names of a pg_restore COPY line ('COPY s.t (a, "B c") FROM stdin;'), unquoted; None if not one."""
    match = re.match(r'^COPY .+? \((.*)\) FROM stdin;$', header)
    if not match:
        return None
    names = re.findall(r'"((?:[^"]|"")*)"|([^,\s]+)', match.group(1))
    return [quoted.replace('""', '"') if quoted else plain for quoted, plain in names]


def keys_in_archive(config, path, schema, table, key, wanted):
    """How many of the `wanted` key tuples (as text) the archive's data of schema.table holds: read from its COPY
    data through pg_restore, one table's data only."""
    dump = subprocess.Popen([program(config, "pg_restore"), "--data-only", "--schema=%s" % schema,
                             "--table=%s" % table, "--file=-", path],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, errors="surrogateescape")
    found, positions = 0, None
    try:
        for line in dump.stdout:
            line = line.rstrip("\n")
            if positions is None:
                columns = copy_columns(line)
                if columns is not None:
                    if not set(key) <= set(columns):
                        return None  # the key is not the backup's: nothing to tell apart by
                    positions = [columns.index(name) for name in key]
                continue
            if line == "\\.":
                break
            fields = line.split("\t")
            if tuple(copy_field(fields[i]) for i in positions) in wanted:
                found += 1
    finally:
        dump.stdout.close()
        dump.wait()
    return found if positions is not None else None


def updated_since(config, cur, path, schema, table, now, snapshot, written):
    """Of the rows written since the backup, how many are updates: their primary key is in the backup. None when
    that cannot be told (no primary key, too many rows, no archive to read)."""
    if not written:
        return 0
    if not path or written > MAX_KEYS_TOLD_APART:
        return None
    cur.execute(PRIMARY_KEY, (quote_ident_parts(schema, table),))
    key = [row[0] for row in cur.fetchall()]
    if not key:
        return None
    cur.execute(KEYS_WRITTEN_SINCE.replace("{key}", ", ".join("%s::text" % quote_ident_parts(column) for column in key))
                .replace("{table}", quote_ident_parts(schema, table)), {"now": now, "snapshot": snapshot})
    wanted = set(cur.fetchall())
    return keys_in_archive(config, path, schema, table, key, wanted)


def writes_since(config, manifest, schema, path=None):
    """What replacing `schema` with the backup would discard: per table, the rows written (inserted or updated)
    since the backup's snapshot and the backup's rows deleted or updated since, with the time window.

    Counted against the manifest's exact counts and snapshot (table_rows, snapshot); a table created after the
    backup loses all its rows. Read in one REPEATABLE READ snapshot, so the figures agree with each other.
    """
    window = {"since": manifest.get("started"), "until": utcnow().isoformat()}
    if not manifest.get("snapshot") or "table_rows" not in manifest:
        return {"measured": False, "tables": [], "window": window,
                "reason": "the backup's manifest has no snapshot to measure against (taken by an older release, or "
                          "from a server older than PostgreSQL 13)"}
    before = manifest["table_rows"]
    conn = connect(config)
    tables = []
    try:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=False)
        with conn.cursor() as cur:
            cur.execute("SET LOCAL statement_timeout = 0")
            # This transaction's own ID: the age() of every row below is measured from it.
            cur.execute("SELECT pg_catalog.pg_current_xact_id()::text::bigint")
            now = cur.fetchone()[0]
            cur.execute(DUMPED_TABLES)
            for table_schema, table in cur.fetchall():
                # Alembic's version table changes with every migration the restore is there to undo.
                if table_schema != schema or table == ALEMBIC_VERSION_TABLE:
                    continue
                name = "%s.%s" % (table_schema, table)
                cur.execute(ROWS_WRITTEN_SINCE.replace("{table}", quote_ident_parts(table_schema, table)),
                            {"now": now, "snapshot": manifest["snapshot"]})
                rows, written = cur.fetchone()
                if name not in before:
                    if rows:
                        tables.append({"table": name, "rows_now": rows, "rows_at_backup": None,
                                       "written_since": rows, "gone_since": 0, "updated_since": None})
                    continue
                # The backup's rows still there unchanged; the others were deleted, or updated (a new version).
                gone = before[name] - (rows - written)
                if written or gone:
                    tables.append({"table": name, "rows_now": rows, "rows_at_backup": before[name],
                                   "written_since": written, "gone_since": max(gone, 0),
                                   "updated_since": updated_since(config, cur, path, table_schema, table, now,
                                                                  manifest["snapshot"], written)})
    finally:
        conn.rollback()
        conn.close()
    return {"measured": True, "tables": tables, "window": window}


def describe_discard(discard):
    """One clause naming what a restore would discard: tables, counts and the window."""
    if not discard["measured"]:
        return "what it would discard cannot be measured: %s" % discard["reason"]
    parts = []
    for item in discard["tables"]:
        updated = item.get("updated_since")
        clause = "%s: %d row(s) written since the backup" % (item["table"], item["written_since"])
        if item["rows_at_backup"] is None:
            clause = "%s (created after the backup): %d row(s)" % (item["table"], item["written_since"])
        elif updated is not None:
            # Told apart by primary key: an updated row is a written row whose key the backup has.
            if item["written_since"]:
                clause += " (%d inserted, %d updated)" % (item["written_since"] - updated, updated)
            if item["gone_since"] - updated > 0:
                clause += " and %d of its row(s) deleted since" % (item["gone_since"] - updated)
        elif item["gone_since"]:
            clause += " and %d of its row(s) deleted or updated since" % item["gone_since"]
        parts.append(clause)
    return "the writes committed between %s and %s: %s" % (
        discard["window"]["since"], discard["window"]["until"], "; ".join(parts))


def analyze_schema(config, schema):
    """ANALYZE every table of `schema`: a restored table has no statistics, and the planner's guesses without them
    turn the next verification's index scans into sequential ones."""
    conn = connect(config)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'm') ORDER BY 1",
                        (schema,))
            tables = [row[0] for row in cur.fetchall()]
            for table in tables:
                cur.execute("ANALYZE %s" % quote_ident_parts(schema, table))
    finally:
        conn.close()
    return len(tables)


def hold_writes_statements(config, schema):
    """LOCK TABLE for the tables of `schema` a restore replaces: EXCLUSIVE lets reads (and pg_dump) through and
    makes writes wait."""
    conn = connect(config)
    try:
        cur = conn.cursor()
        cur.execute("SELECT pg_catalog.format('%%I.%%I', n.nspname, c.relname) FROM pg_catalog.pg_class c "
                    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s "
                    "AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND NOT EXISTS (SELECT FROM "
                    "pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid "
                    "AND d.deptype = 'e') ORDER BY 1", (schema,))
        tables = [row[0] for row in cur.fetchall()]
    finally:
        conn.rollback()
        conn.close()
    return ["LOCK TABLE %s IN EXCLUSIVE MODE;" % ", ".join(tables)] if tables else []


def restore_plan(config, chosen, schema, progress, discard_writes=None, writes_off=False):
    """(path, manifest, discard, refusal) of a restore of `chosen` into `schema`, changing nothing: the backup is
    read back against its checksum, what the restore would discard measured, and `refusal` is the reason it would
    be refused (None when it may run)."""
    if not chosen:
        raise BackupError("restore needs --backup: the file to put back")
    if not re.match(r"^[a-z_][a-z0-9_]*$", schema):
        raise BackupError("schema %r: give a plain schema name such as public" % schema)
    path, manifest = choose_backup(config, chosen)
    progress("checksumming %s" % os.path.basename(path))
    digest = checksum(path)
    if digest != manifest.get("sha256"):
        raise BackupError("%s is corrupt: sha256 %s, manifest says %s" % (path, digest[:12], str(manifest.get("sha256"))[:12]))
    progress("measuring what the restore would discard")
    discard = writes_since(config, manifest, schema, path)
    refusal = None if writes_off else discard_refusal(discard, os.path.basename(path), discard_writes)
    return path, manifest, discard, refusal


def discard_refusal(discard, name, discard_writes):
    """Why a restore that would discard `discard` is refused, or None when nothing would be discarded or the
    backup `name` was named to acknowledge it."""
    if (discard["measured"] and not discard["tables"]) or discard_writes == name:
        return None
    return ("restore refused, nothing changed: it would discard %s. A restore puts the backup's rows back and these "
            "writes would be gone. Prefer a downgrade where one can undo the change (it keeps them); to restore anyway, "
            "acknowledge by naming the backup (rollback.yml -e discard_writes=%s; the program's --discard-writes %s): "
            "a backup of the current state is taken first, so they can still be recovered" % (
                describe_discard(discard), name, name))


def restore_in_place(config, log, chosen, schema, progress, discard_writes=None, writes_off=False):
    """Replace the objects of `schema` in the live database with the backup's, in one transaction; all or nothing.

    The schema itself stays (its owner and privileges; its comment is set to the backup's), and so do the
    extensions in it: the schema's own objects are moved aside, the backup's are restored in their place, and
    the moved ones dropped. No
    extension is moved or recreated, so none needs a superuser (pg_stat_statements in public, installed by
    one, stays as it is). Extensions the backup has and the database lost are created again; those created
    after the backup are dropped. Other schemas are left as they are.

    What the restore would discard (writes committed since the backup) is measured first: unless writes were
    off since the backup (`writes_off`, the deployment's own rollback), a restore that discards anything runs
    only when `discard_writes` names the backup file, and only after a verified backup of the current state
    (the safety copy) was taken. With writes on, the application's writes to the schema wait from that measure
    until the restore commits: the measure is final and the copy holds every write the restore discards.
    """
    path, manifest, discard, refusal = restore_plan(config, chosen, schema, progress, discard_writes, writes_off)
    if refusal:
        raise BackupError(refusal)
    listing = archive_listing(config, path)
    in_archive = archive_extensions(listing)
    aside = "pgops_replaced_%s" % utcnow().strftime("%Y%m%d%H%M%S")
    conn = connect(config)
    try:
        cur = conn.cursor()
        cur.execute(OUTSIDE_DEPENDENTS, {"schema": schema})
        dependents = [row[0] for row in cur.fetchall()]
        if dependents:
            raise BackupError("restore refused, nothing changed: %s in other schemas depend(s) on schema %s and "
                              "would be dropped with it; drop or move them first" % (", ".join(dependents), schema))
        cur.execute(NOT_SET_ASIDE, {"schema": schema})
        unmovable = [row[0] for row in cur.fetchall()]
        if unmovable:
            raise BackupError("restore refused, nothing changed: schema %s holds %s, which the restore cannot set "
                              "aside; move them to a schema of their own (or make them part of an extension) "
                              "first" % (schema, ", ".join(unmovable[:5])))
        cur.execute(SET_ASIDE, {"schema": schema, "aside": aside})
        set_aside = [row[0] for row in cur.fetchall()]
        cur.execute("SELECT e.extname FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n "
                    "ON n.oid = e.extnamespace WHERE n.nspname = %s ORDER BY 1", (schema,))
        extensions = [row[0] for row in cur.fetchall()]
        cur.execute("SELECT extname FROM pg_catalog.pg_extension")
        installed = set(row[0] for row in cur.fetchall())
        # Only the schema's owner (or a member of it) may set its comment.
        cur.execute("SELECT pg_catalog.pg_has_role(current_user, n.nspowner, 'MEMBER') FROM pg_catalog.pg_namespace n "
                    "WHERE n.nspname = %s", (schema,))
        may_comment = (cur.fetchone() or (False,))[0]
    finally:
        conn.close()
    schema_comment = archive_schema_comment(config, path, listing, schema) if may_comment else None
    dropped = [ext for ext in extensions if ext not in in_archive]
    missing = [ext for ext in in_archive if ext not in installed]
    before = ["SET lock_timeout = '30s';", "CREATE SCHEMA %s;" % quote_ident(aside)] + set_aside
    before += ["CREATE EXTENSION IF NOT EXISTS %s WITH SCHEMA %s;" % (quote_ident(ext), quote_ident(schema))
               for ext in missing]
    # Without CASCADE: whatever else was built on an extension created after the backup keeps it (the restore
    # then fails and changes nothing, naming it).
    after = ["DROP SCHEMA %s CASCADE;" % quote_ident(aside)]
    after += ["DROP EXTENSION IF EXISTS %s;" % quote_ident(ext) for ext in dropped]
    if schema_comment:
        after.append(schema_comment)
    kept = {"safety": None, "discard": discard, "held_at": None}
    hold = None
    if not writes_off:
        # Writes are on: the application's writes to the schema wait (not fail) from here until the restore
        # commits, so that what it discards is measured again with nothing more to come, and the copy of the
        # current state holds every one of them (a write between the copy and the restore would be gone unnamed).
        def measure_and_keep():
            kept["held_at"] = time.monotonic()
            kept["discard"] = writes_since(config, manifest, schema, path)
            refusal = discard_refusal(kept["discard"], os.path.basename(path), discard_writes)
            if refusal:
                raise BackupError(refusal)
            if kept["discard"]["measured"] and not kept["discard"]["tables"]:
                return
            log("restore: discarding %s; keeping a copy of the current state first" % describe_discard(kept["discard"]))
            # Backups are named by the second: the copy waits for a second no backup has (the restored one may be new).
            while os.path.exists(os.path.join(config["backup_dir"], "%s-%s%s" % (
                    config["database"], utcnow().strftime(STAMP_FORMAT), FORMATS[config["format"]]))):
                time.sleep(0.2)
            kept["safety"] = backup(config, log, False, progress)["path"]
        hold = (["SET lock_timeout = '30s';"] + hold_writes_statements(config, schema), measure_and_keep)
    log("restore: replacing schema %s of %s with %s" % (schema, config["database"], os.path.basename(path)))
    started = time.monotonic()
    stream_restore(config, path, schema, before, after, progress, hold)
    held = round(time.monotonic() - kept["held_at"], 3) if kept["held_at"] else 0.0
    discard, safety = kept["discard"], kept["safety"]
    discards = not discard["measured"] or discard["tables"]
    progress("analysing the restored tables")
    analyzed = analyze_schema(config, schema)
    seconds = time.monotonic() - started
    log("restore: %s restored into %s in %.1f s%s" % (
        os.path.basename(path), config["database"], seconds,
        "; removed extension(s) created after the backup: %s" % ", ".join(dropped) if dropped else ""))
    return {"restored": path, "database": config["database"], "schema": schema, "seconds": round(seconds, 3),
            "alembic_revision": manifest.get("alembic_revision"), "row_counts": manifest.get("row_counts", {}),
            "extensions_removed": dropped, "extensions_recreated": missing, "tables_analyzed": analyzed,
            "discarded": discard, "discarded_text": describe_discard(discard) if discards else "",
            "safety_backup": safety, "writes_held_seconds": held}


# ---------------------------------------------------------------- maintenance jobs

JOB_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
RELATION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


def load_job(path, name):
    """The job `name` of the jobs file, checked; BackupError names what is wrong and where."""
    jobs = read_json(path, "jobs file")
    if not isinstance(jobs, dict) or name not in jobs:
        raise BackupError("jobs file %s has no job %r (it has: %s)" % (
            path, name, ", ".join(sorted(jobs)) if isinstance(jobs, dict) else "nothing"))
    job = dict({"params": {}, "batch_size": 5000, "pause_seconds": 0.1, "max_batches": 0, "concurrently": True,
                "lock_timeout_ms": 5000, "statement_timeout_ms": 60000}, **jobs[name])
    relation = job.get("table") if job.get("kind") == "delete" else job.get("view")
    if job.get("kind") not in ("delete", "refresh"):
        raise BackupError("job %s: kind %r, choose delete or refresh" % (name, job.get("kind")))
    if not isinstance(relation, str) or not RELATION_NAME.match(relation):
        raise BackupError("job %s: %s %r is not a table or view name (schema.name or name)" % (
            name, "table" if job["kind"] == "delete" else "view", relation))
    if job["kind"] == "delete" and not (isinstance(job.get("where"), str) and job["where"].strip()):
        raise BackupError("job %s: a delete job needs a where condition (it never deletes everything)" % name)
    if not isinstance(job["batch_size"], int) or job["batch_size"] < 1:
        raise BackupError("job %s: batch_size %r must be a positive number of rows" % (name, job["batch_size"]))
    return job


def check_job(config, log, name, job):
    """What would stop the job when cron runs it, found without running it: a delete is planned (EXPLAIN: its
    table, columns, parameters and privileges), a refresh's view must be a materialized view (with a unique
    index for CONCURRENTLY)."""
    conn = connect(config)
    try:
        cur = conn.cursor()
        if job["kind"] == "refresh":
            cur.execute("SELECT c.relkind, EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid "
                        "AND i.indisunique AND i.indpred IS NULL) FROM pg_catalog.pg_class c WHERE c.oid = to_regclass(%s)",
                        (job["view"],))
            row = cur.fetchone()
            if not row or row[0] != "m":
                raise BackupError("job %s: %s is not a materialized view of %s" % (name, job["view"], config["database"]))
            if job["concurrently"] and not row[1]:
                raise BackupError("job %s: REFRESH ... CONCURRENTLY needs a unique index on %s without a WHERE clause; "
                                  "add one or set concurrently: false" % (name, job["view"]))
        else:
            table = quote_ident(job["table"])
            try:
                cur.execute("EXPLAIN DELETE FROM %s WHERE ctid = ANY(ARRAY(SELECT ctid FROM %s WHERE %s LIMIT "
                            "%%(pgops_batch)s FOR UPDATE SKIP LOCKED))" % (table, table, job["where"]),
                            dict(job["params"], pgops_batch=job["batch_size"]))
            except KeyError as error:
                raise BackupError("job %s: its where condition names the parameter %s, which params does not give" % (
                    name, error))
    except DatabaseError as error:
        # The first line: the database's reason; the rest is the statement with a caret.
        raise BackupError("job %s would fail: %s" % (name, str(error).strip().splitlines()[0]))
    finally:
        conn.rollback()
        conn.close()
    log("job %s: checked (not run)" % name)
    return {"job": name, "database": config["database"], "checked": True}


def run_job(config, log, name, job):
    conn = connect(config)
    started = time.monotonic()
    try:
        cur = conn.cursor()
        if job["kind"] == "refresh":
            cur.execute("SELECT set_config('lock_timeout', %s, true), set_config('statement_timeout', '0', true)",
                        (str(job["lock_timeout_ms"]),))
            cur.execute("REFRESH MATERIALIZED VIEW %s%s" % (
                "CONCURRENTLY " if job["concurrently"] else "", quote_ident(job["view"])))
            conn.commit()
            result = {"refreshed": job["view"]}
        else:
            table = quote_ident(job["table"])
            # Each batch is its own transaction: short row locks, and SKIP LOCKED leaves rows the
            # application holds for the next run.
            statement = ("DELETE FROM %s WHERE ctid = ANY(ARRAY(SELECT ctid FROM %s WHERE %s LIMIT %%(pgops_batch)s "
                         "FOR UPDATE SKIP LOCKED))" % (table, table, job["where"]))
            values = dict(job["params"], pgops_batch=job["batch_size"])
            deleted = batches = 0
            while True:
                cur.execute("SELECT set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true)",
                            (str(job["lock_timeout_ms"]), str(job["statement_timeout_ms"])))
                cur.execute(statement, values)
                count = cur.rowcount
                conn.commit()
                deleted += count
                batches += 1
                if count < job["batch_size"] or (job["max_batches"] and batches >= job["max_batches"]):
                    break
                time.sleep(job["pause_seconds"])
            result = {"table": job["table"], "deleted": deleted, "batches": batches}
    finally:
        conn.rollback()
        conn.close()
    result.update(job=name, database=config["database"], seconds=round(time.monotonic() - started, 3))
    log("job %s: %s in %.1f s" % (name, ("refreshed %s" % job["view"]) if job["kind"] == "refresh" else
                                  "deleted %d row(s) of %s in %d batch(es)" % (
                                      result["deleted"], job["table"], result["batches"]), result["seconds"]))
    return result


# ---------------------------------------------------------------- the dead-man switch

def load_beside(name, collection_name):
    """The collection's own code (the write guard, the lease): installed beside this program by the backup
    role, or in the collection this program is part of."""
    here = os.path.dirname(os.path.abspath(__file__))
    for path in (os.path.join(here, name),
                 os.path.join(here, "..", "..", "..", "plugins", "module_utils", collection_name)):
        if os.path.isfile(path):
            spec = importlib.util.spec_from_file_location(name[:-len(".py")], path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    raise BackupError("%s is missing: run the backup role again to install it" % os.path.join(here, name))


def load_write_guard():
    return load_beside("pgops_write_guard.py", "_write_guard.py")


_CONNECTION = []


def load_connection():
    """The modules' connection code: how to connect, and libpq's environment for the client programs."""
    if not _CONNECTION:
        _CONNECTION.append(load_beside("pgops_connection.py", "_connection.py"))
    return _CONNECTION[0]


def load_lease():
    """The deploy_lock module's lease code: its setting, its lock, how it is read."""
    return load_beside("pgops_lease.py", "_lease.py")


def load_scratch_server():
    """The drills' own server: made, started, stopped and removed as the PITR drill's is."""
    return load_beside("pgops_scratch_server.py", "_scratch_server.py")


def load_deployment_record():
    """What a deployment keeps in its lease, and how far its plan got: as every runbook reads it."""
    return load_beside("pgops_deployment_record.py", "_deployment_record.py")


def give_writes_back(config, lease):
    """End the abandoned deployment's write guard, exactly as the write_guard module's read_write would, in
    one transaction that first proves, under the lease's lock, that the lease is still the abandoned one.
    Returns what became of the writes, for the record and the alert."""
    guard = load_write_guard()
    user = config["guard_user"] or config["user"]
    conn = connect(dict(config, user=user))
    try:
        with conn.cursor() as cur:
            if load_lease().lock_and_read(cur) != lease:
                conn.rollback()
                return "left as they are: the deployment lock changed meanwhile"
            statements, state = guard.writes_back(cur, config["database"])
            if state is None:
                conn.rollback()
                return "on: no write guard was set"
            if state.get("owner") != lease["owner"]:
                conn.rollback()
                return "kept off: the write guard belongs to %s, not to this deployment" % (state.get("owner") or "nobody")
            for statement in statements:
                cur.execute(statement)
        conn.commit()
    except (DatabaseError, guard.PgopsError) as error:
        conn.rollback()
        return "kept off: turning them back on as %s failed (%s)" % (user, " ".join(str(error).split()))
    finally:
        conn.close()
    return "turned back on by the watch, for %s" % ", ".join(state["roles"])


def watch(config, log, stale_after):
    """Notice a deployment whose lease has had no heartbeat for stale_after seconds (its controller and module
    are gone): record it with the revision it left the database at, and alert once."""
    lease_code = load_lease()
    conn = connect(config)
    try:
        with conn.cursor() as cur:
            lease = lease_code.lock_and_read(cur)
            revision = alembic_revision(cur)
        conn.rollback()
    finally:
        conn.close()
    if lease is None:
        return {"lease": None, "abandoned": False, "revision": revision}
    age = int(time.time() - lease_code.last_beat(lease))
    result = {"lease": lease["owner"], "heartbeat_age_seconds": age, "abandoned": age > stale_after,
              "revision": revision}
    if not result["abandoned"]:
        return result
    records = load_deployment_record()
    details = records.record_of(lease)
    progress = records.progress(details, revision)
    # A revision of the plan beyond the recorded one may be half-applied when the migration had started.
    result.update(plan=progress["plan"], revision_before=details.get("revision_before"), backup=details.get("backup"),
                  migration_started=details.get("migration_started"),
                  possibly_half_applied=progress["possibly_half_applied"],
                  taken_on=lease.get("host"), run_by=lease.get("by"))
    record = os.path.join(config["backup_dir"], "abandoned-%s.json" % re.sub(r"[^A-Za-z0-9_.-]", "_", lease["owner"]))
    first_notice = not os.path.exists(record)
    result["record"] = record
    if first_notice:
        choice = config["watch_writes_on"]
        if choice == "always" or (choice == "before_migration" and not progress["migration_started"]):
            result["writes"] = give_writes_back(config, lease)
        else:
            result["writes"] = "left as they are (watch_writes_on: %s%s)" % (
                choice, ", and the migration had started" if choice == "before_migration" else "")
        write_json_atomically(record, dict(result, noticed=utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")))
    else:
        noticed = read_json(record, "abandoned deployment record")
        result["writes"] = noticed.get("writes", "?")
        write_json_atomically(record, dict(noticed, last_seen_heartbeat_age=age))
    rollback = "ansible-playbook playbooks/rollback.yml -e force_unlock=yes -e confirm=yes"
    # A plan the database records whole only missed its checks: finishing it keeps the migration.
    remedy = ("Its migration completed: finish it (its checks, then writes on): ansible-playbook "
              "playbooks/finish_deployment.yml -e force_unlock=yes -e confirm=yes; or roll it back: " + rollback
              if progress["completed"] else "Roll it back: " + rollback)
    message = ("deployment %s is abandoned: no heartbeat for %d s (limit %d s); the database is at revision %s%s, "
               "its plan was %s; writes %s. %s. Record: %s" % (
                   lease["owner"], age, stale_after, revision or "base",
                   " (%s may be half-applied)" % result["possibly_half_applied"] if result["possibly_half_applied"]
                   else "", ", ".join(progress["plan"]) or "empty", result["writes"], remedy, record))
    if first_notice:
        raise Abandoned(message)
    log("still abandoned (alerted before): " + message)
    return result


# ---------------------------------------------------------------- alerts

def alert(config, log, action, message, event=None):
    """Mail and webhook; `event` names what happened when it is not the action failing."""
    subject = ("pgops-backup %s FAILED for %s on %s" % (action, config["database"], socket.gethostname()) if not event
               else "pgops %s for %s on %s" % (event.replace("_", " "), config["database"], socket.gethostname()))
    if config["alert_webhook"]:
        body = json.dumps({"event": event or "%s_failed" % action, "database": config["database"], "label": config["label"],
                           "host": socket.gethostname(), "message": message}).encode()
        request = urllib.request.Request(config["alert_webhook"], data=body, headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(request, timeout=10).close()
        except OSError as error:
            log("alert: webhook failed: %s" % error)
    if config["alert_mail"]:
        # Python's email package refuses a header value with a line break: no value can add a header.
        mail = email.message.EmailMessage(policy=email.policy.SMTP.clone(linesep="\n"))
        try:
            mail["To"] = config["alert_mail"]
            mail["Subject"] = " ".join(subject.split())
            mail.set_content(message)
            subprocess.run(["/usr/sbin/sendmail", "-t", "-oi"], input=mail.as_string(), text=True, check=True,
                           capture_output=True, timeout=30)
        except (ValueError, TypeError) as error:
            log("alert: mail not sent: alert_mail %s cannot be a mail header (%s)" % (json.dumps(config["alert_mail"]), error))
        except (OSError, subprocess.SubprocessError) as error:
            log("alert: mail failed: %s" % error)


def alert_routes(path):
    """The alert routes of a config that cannot be loaded, those that are valid on their own: a run cron starts
    (its MAILTO may be empty) still says that it failed. Defaults (no route) when the file cannot be read."""
    config = dict(DEFAULTS, database="(unknown database)")
    try:
        raw = read_json(path, "config")
    except BackupError:
        return config
    if not isinstance(raw, dict):
        return config
    checks = (("database", DATABASE_NAME), ("alert_mail", ALERT_MAIL), ("alert_webhook", ALERT_WEBHOOK))
    config.update((key, raw[key]) for key, pattern in checks
                  if isinstance(raw.get(key), str) and re.fullmatch(pattern, raw[key]))
    return config


def refuse_before_logging(config, action, message):
    """A failure before the run has its log: stderr and the alert routes, exit status 1."""
    print("pgops-backup: %s" % message, file=sys.stderr)
    alert(config, lambda line: print("pgops-backup: %s" % line, file=sys.stderr), action, message)
    return EXIT_FAILED


# ---------------------------------------------------------------- entry point

def main(argv=None):
    parser = argparse.ArgumentParser(description="intowork.pgops backup program")
    parser.add_argument("action", choices=["backup", "drill", "drop-scratch", "restore", "job", "watch"])
    parser.add_argument("--config", required=True)
    parser.add_argument("--from-standby", action="store_true",
                        help="backup: dump the config's standby (standby_host), not the primary")
    parser.add_argument("--deployment", help="backup: refuse unless the database holds this deployment's lock")
    parser.add_argument("--backup", help="drill: the backup to restore (default: the newest verified one)")
    parser.add_argument("--keep", action="store_true", help="drill: keep the scratch database")
    parser.add_argument("--jobs", type=int, default=2, help="drill: parallel pg_restore jobs")
    parser.add_argument("--rto-target-seconds", type=int, default=900, help="drill: the RTO target")
    parser.add_argument("--maintenance-work-mem", default="512MB", help="drill: for the index builds")
    parser.add_argument("--scratch", help="drop-scratch: the drill database to drop")
    parser.add_argument("--scratch-path", help="drop-scratch: the kept drill's server folder to stop and remove")
    parser.add_argument("--replace-schema", help="restore: the schema to replace with the backup's (say it to mean it)")
    parser.add_argument("--discard-writes", metavar="BACKUP_FILE_NAME",
                        help="restore: the backup's file name, to acknowledge that the writes committed since it are "
                        "discarded (a verified backup of the current state is taken first)")
    parser.add_argument("--writes-off-since-backup", action="store_true",
                        help="restore: the application's writes were off since the backup (a deployment's own "
                        "rollback): what it discards is the deployment's alone, measured and reported, not refused")
    parser.add_argument("--stale-after-seconds", type=int, default=180,
                        help="watch: a deployment lease with no heartbeat for this long is abandoned")
    parser.add_argument("--jobs-file", help="job: the maintenance jobs file (JSON)")
    parser.add_argument("--job", help="job: the name of the job to run")
    parser.add_argument("--check", action="store_true",
                        help="job: find what would stop the job (EXPLAIN, the view's kind and index), running nothing; "
                        "restore: verify the backup and measure what it would discard, changing nothing")
    parser.add_argument("--progress-file", help="backup, drill, restore: rewrite this JSON file with the step and its "
                        "bytes every %d s, for a poll to print" % PROGRESS_SECONDS)
    args = parser.parse_args(argv)
    os.umask(0o077)
    try:
        config = load_config(args.config)
    except BackupError as error:
        return refuse_before_logging(alert_routes(args.config), args.action, str(error))
    if not os.path.isdir(config["backup_dir"]):
        return refuse_before_logging(config, args.action, "backup_dir %s does not exist: run the backup role to create it"
                                     % config["backup_dir"])
    if args.action == "job":
        if not (args.jobs_file and args.job and JOB_NAME.match(args.job)):
            print("pgops-backup: job needs --jobs-file and --job NAME (letters, digits, - and _)", file=sys.stderr)
            return EXIT_FAILED
        action, lock_name = "job:%s" % args.job, "pgops-job-%s" % args.job
    elif args.action == "watch":
        # Never waits behind a long backup: a watch has a lock of its own.
        action, lock_name = "watch", "pgops-watch"
    else:
        action, lock_name = args.action, "pgops-backup"
    log = Log(config, action)
    try:
        log.check()
    except OSError as error:
        return refuse_before_logging(config, action, "cannot write the log %s: %s; the backup folder and its files "
                                     "must belong to the user that runs the program (here %s), as cron runs it"
                                     % (log.path, error.strerror, run_as()))
    progress = Progress(args.progress_file)
    try:
        with Lock(config, lock_name):
            if args.action == "backup":
                clean_partials(config, log)
                try:
                    result = backup(config, log, args.from_standby, progress, args.deployment)
                finally:
                    clean_partials(config, log)
                result["retention_removed"] = apply_retention(config, log)
                write_metrics(config, result)
            elif args.action == "drill":
                result = drill(config, log, args, args.backup, args.keep, progress)
            elif args.action == "job":
                job = load_job(args.jobs_file, args.job)
                result = (check_job if args.check else run_job)(config, log, args.job, job)
            elif args.action == "watch":
                result = watch(config, log, args.stale_after_seconds)
            elif args.action == "restore":
                if not args.replace_schema:
                    raise BackupError("restore replaces live data: add --replace-schema public to mean it")
                if args.check:
                    path, _manifest, discard, refusal = restore_plan(
                        config, args.backup, args.replace_schema, progress, args.discard_writes,
                        args.writes_off_since_backup)
                    result = {"backup": path, "verified": True, "discarded": discard, "refusal": refusal}
                else:
                    result = restore_in_place(config, log, args.backup, args.replace_schema, progress,
                                              args.discard_writes, args.writes_off_since_backup)
            else:
                result = drop_scratch(config, log, args.scratch, args.scratch_path)
    except Locked as error:
        log("refused: %s" % error)
        return EXIT_LOCKED
    except BackupError as error:
        log("FAILED: %s" % error)
        alert(config, log, action, str(error), getattr(error, "event", None))
        return EXIT_FAILED
    except DatabaseError as error:
        message = "database error: %s" % " ".join(str(error).split())
        log("FAILED: %s" % message)
        alert(config, log, action, message)
        return EXIT_FAILED
    except Exception as error:  # pylint: disable=broad-except
        # Unexpected, but still one line, an alert and a failing exit status for cron.
        message = "unexpected %s: %s" % (type(error).__name__, error)
        log("FAILED: %s" % message)
        alert(config, log, action, message)
        return EXIT_FAILED
    finally:
        progress.close()
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
