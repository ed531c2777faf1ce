# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to intowork.pgops: not a public API, may change without notice.
"""Alembic migration control: where the database is, where it should go, and the way there."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import subprocess
import sys
import time

from ansible_collections.intowork.pgops.plugins.module_utils._connection import (
    PgopsError,
    libpq_environment,
    one_line,
    sql,
    target_label,
)

try:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError
    ALEMBIC_ERRORS = (CommandError, RevisionError)
    HAS_ALEMBIC = True
except ImportError:
    ALEMBIC_ERRORS = ()
    HAS_ALEMBIC = False


def load_scripts(project_dir, config_file):
    """The project's revision graph, read from its alembic.ini; PgopsError when it cannot be read."""
    ini_path = os.path.join(project_dir, config_file)
    if not os.path.isfile(ini_path):
        raise PgopsError("no Alembic config at %s: set project_dir to the folder holding %s" % (ini_path, config_file))
    try:
        return ScriptDirectory.from_config(Config(ini_path)), ini_path
    except ALEMBIC_ERRORS + (OSError,) as error:
        raise PgopsError("cannot read the Alembic project at %s: %s" % (project_dir, one_line(error)))


def current_revisions(conn, version_table, version_table_schema):
    """Revisions recorded in the database; an empty tuple when Alembic never ran there."""
    qualified = "%s.%s" % (version_table_schema, version_table) if version_table_schema else version_table
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (qualified,))
        if not cur.fetchone()[0]:
            return ()
        table = sql.Identifier(version_table_schema, version_table) if version_table_schema else sql.Identifier(version_table)
        cur.execute(sql.SQL("SELECT version_num FROM {} ORDER BY version_num").format(table))
        return tuple(row[0] for row in cur.fetchall())


def describe(revision):
    return {
        "revision": revision.revision,
        "down_revision": revision.down_revision,
        "doc": (revision.doc or "").strip().splitlines()[0] if revision.doc else "",
        # A revision file says `irreversible = True` when its downgrade cannot give back what the upgrade
        # took (dropped data): its rollback is a restore of the backup.
        "irreversible": bool(getattr(revision.module, "irreversible", False)),
    }


def resolve_target(scripts, target):
    """The revision ids that `target` names ('head', 'base', an id or a unique prefix)."""
    if target == "base":
        return ()
    try:
        revisions = scripts.get_revisions(target)
    except ALEMBIC_ERRORS as error:
        known = ", ".join(rev.revision for rev in scripts.walk_revisions())
        raise PgopsError("unknown target revision %r (%s): choose head, base or one of: %s" % (
            target, one_line(error), known))
    if len(revisions) != 1:
        raise PgopsError("target %r names %d revisions (%s): name a single revision" % (
            target, len(revisions), ", ".join(r.revision for r in revisions)))
    return (revisions[0].revision,)


def plan(scripts, current, target):
    """(direction, steps): the revisions to apply, in order, to go from current to target."""
    goal = resolve_target(scripts, target)
    if len(current) > 1:
        raise PgopsError("the database has %d heads recorded (%s): merge them before migrating" % (
            len(current), ", ".join(current)))
    for rev in current:
        try:
            known = scripts.get_revision(rev) is not None
        except ALEMBIC_ERRORS:
            known = False
        if not known:
            raise PgopsError("the database is at revision %s, which this project does not know: "
                             "check project_dir, or deploy the code that has that revision" % rev)
    here = current[0] if current else None
    there = goal[0] if goal else None
    if here == there:
        return "none", []
    try:
        steps = list(scripts.iterate_revisions(there or "base", here or "base"))
        return "upgrade", [describe(rev) for rev in reversed(steps)]
    except ALEMBIC_ERRORS:
        pass
    try:
        steps = list(scripts.iterate_revisions(here or "base", there or "base"))
        return "downgrade", [describe(rev) for rev in steps]
    except ALEMBIC_ERRORS as error:
        raise PgopsError("no path from %s to %s: %s" % (here or "base", there or "base", one_line(error)))


def cut_off_revision(scripts, current, planned):
    """The revision of `planned` an interrupted upgrade may have half-applied: the one right after `current`.

    A revision that runs outside a transaction (CREATE INDEX CONCURRENTLY) and is killed keeps what it
    committed, but Alembic records it only at its end.
    """
    here = current[0] if current else None
    applied = set(history(scripts, here))
    for revision in planned:
        try:
            script = scripts.get_revision(revision)
        except ALEMBIC_ERRORS:
            script = None
        if script is None:
            raise PgopsError("interrupted_plan names revision %r, which this project does not know: give the "
                             "revisions of the deployment's plan" % revision)
        if script.revision in applied:
            continue
        return script.revision if script.down_revision == here else None
    return None


def history(scripts, revision):
    """Revisions from base up to and including `revision`, oldest first."""
    if not revision:
        return []
    return [rev.revision for rev in reversed(list(scripts.iterate_revisions(revision, "base")))]


INVALID_INDEXES = """
SELECT n.nspname, c.relname
  FROM pg_index i
  JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE NOT i.indisvalid
   AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
   -- An index being built right now is invalid too: leave those alone.
   AND NOT EXISTS (SELECT 1 FROM pg_stat_progress_create_index p WHERE p.index_relid = i.indexrelid)
 ORDER BY 1, 2
"""


def invalid_indexes(conn):
    """Indexes left INVALID by an interrupted CREATE INDEX CONCURRENTLY, as (schema, name)."""
    with conn.cursor() as cur:
        cur.execute(INVALID_INDEXES)
        return cur.fetchall()


def drop_invalid_indexes(conn, indexes):
    with conn.cursor() as cur:
        for schema, name in indexes:
            cur.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(schema, name)))
    return ["%s.%s" % (schema, name) for schema, name in indexes]


# Alembic's own sessions carry this name, so a later run can find the ones a killed run left behind.
MIGRATION_APPLICATION_NAME = "pgops_migration"

# Any client can call itself pgops_migration: only sessions of the deploy role itself (the session user this
# run logs in as, which the application cannot) count as migration sessions.
LEFTOVER_SESSIONS = """
SELECT a.pid, t.terminate
  FROM pg_catalog.pg_stat_activity a, LATERAL (SELECT pg_catalog.pg_terminate_backend(a.pid) AS terminate) t
 WHERE a.datname = pg_catalog.current_database() AND a.application_name = %(name)s
   AND a.usename = session_user AND a.pid <> pg_catalog.pg_backend_pid()
"""


def terminate_leftover_sessions(conn, wait_seconds=30):
    """End migration sessions of a run that died (a killed client's backend keeps building or waiting) and
    wait until they are gone: their pids. PgopsError when one outlives wait_seconds, as nothing may go on then."""
    with conn.cursor() as cur:
        cur.execute(LEFTOVER_SESSIONS, {"name": MIGRATION_APPLICATION_NAME})
        pids = [row[0] for row in cur.fetchall()]
        deadline = time.monotonic() + wait_seconds
        alive = pids
        while alive:
            # pg_stat_activity is read once per transaction unless the snapshot is cleared.
            cur.execute("SELECT pg_catalog.pg_stat_clear_snapshot()")
            cur.execute("SELECT pid FROM pg_catalog.pg_stat_activity WHERE pid = ANY(%s)", (pids,))
            alive = sorted(row[0] for row in cur.fetchall())
            if alive and time.monotonic() >= deadline:
                raise PgopsError("migration session(s) of an earlier run (pid %s) were told to end %d s ago and are "
                                 "still there: nothing else was done; find out what holds them on the server "
                                 "(pg_stat_activity), end them, and run again" % (
                                     ", ".join(map(str, alive)), wait_seconds))
            if alive:
                time.sleep(0.2)
    return pids


def alembic_environment(params):
    """The child's environment: credentials and session settings as libpq variables, never argv."""
    env = dict(os.environ)
    env.update(libpq_environment(params))
    options = [env["PGOPTIONS"]] if env.get("PGOPTIONS") else []
    if params.get("lock_timeout"):
        options.append("-c lock_timeout=%dms" % params["lock_timeout"])
    if params.get("statement_timeout"):
        options.append("-c statement_timeout=%dms" % params["statement_timeout"])
    if options:
        env["PGOPTIONS"] = " ".join(options)
    env["PGAPPNAME"] = MIGRATION_APPLICATION_NAME
    # An empty URL makes SQLAlchemy hand over to libpq, which reads the PG* variables above.
    env["DATABASE_URL"] = "postgresql+psycopg2://"
    return env


def offline_sql(params, ini_path, direction, current, target):
    """The SQL Alembic would run (--sql), for check mode."""
    span = "%s:%s" % (current, target) if current else target
    cmd = [sys.executable, "-m", "alembic", "-c", ini_path, direction, "--sql", span]
    result = subprocess.run(cmd, env=alembic_environment(params), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise PgopsError("alembic %s --sql %s failed: %s" % (
            direction, span, failure_reason(result.stderr.splitlines()) or "exit %d" % result.returncode))
    return result.stdout


def offline_plan_sql(params, ini_path, direction, current, target, pending):
    """(sql, unrendered): the SQL of the whole span, or, when that cannot be rendered offline (a revision that
    reads the database through op.get_bind()), of each revision that can, and the reason for each that cannot."""
    try:
        return offline_sql(params, ini_path, direction, current, target), []
    except PgopsError:
        if direction != "upgrade":
            raise
    parts, unrendered = [], []
    for step in pending:
        if isinstance(step["down_revision"], (list, tuple)):
            unrendered.append({"revision": step["revision"], "reason": "a merge revision is rendered only with its span"})
            continue
        try:
            parts.append(offline_sql(params, ini_path, direction, step["down_revision"], step["revision"]))
        except PgopsError as error:
            unrendered.append({"revision": step["revision"], "reason": str(error)})
            parts.append("-- revision %s: no offline SQL (%s)\n" % (step["revision"], error))
    return "".join(parts), unrendered


def is_lock_timeout(message):
    return "lock timeout" in message or "could not obtain lock" in message


def run_alembic(params, ini_path, direction, target, timeout):
    """Run `alembic upgrade|downgrade target` as a child process, credentials in its environment only."""
    env = alembic_environment(params)
    cmd = [sys.executable, "-m", "alembic", "-c", ini_path, direction, target]
    try:
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise PgopsError("alembic %s to %s on %s did not finish within %s s (raise timeout or check for locks)" % (
            direction, target, target_label(params), timeout))
    output = (result.stdout + result.stderr).splitlines()
    if result.returncode < 0:
        raise PgopsError("alembic %s to %s on %s was killed (signal %d)" % (
            direction, target, target_label(params), -result.returncode))
    if result.returncode != 0:
        raise PgopsError("alembic %s to %s on %s failed: %s" % (
            direction, target, target_label(params), failure_reason(output) or "exit %d" % result.returncode))
    return output


EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Violation)\w*: (.*)$")
DRIVER_PREFIX = re.compile(r"^\([\w.]+\) ")


def failure_reason(lines):
    """The database's own words from a failed Alembic run: the last exception line, not the traceback."""
    for line in reversed(lines):
        match = EXCEPTION_LINE.match(line.strip())
        if match:
            return DRIVER_PREFIX.sub("", match.group(2)).strip()
    meaningful = [line.strip() for line in lines if line.strip() and not line.strip().startswith("(Background")]
    return meaningful[-1] if meaningful else ""


def run_with_retries(params, ini_path, direction, target, timeout, retries, backoff, fence=None):
    """run_alembic, again after a lock timeout: each revision commits, so a retry resumes where it stopped.

    `fence(what)` runs before every attempt and raises when this run may no longer write (its deployment lock
    was taken over while it waited): an old run never migrates after a takeover. Returns (output, attempts).
    """
    attempt = 0
    while True:
        attempt += 1
        if fence:
            fence("attempt %d of alembic %s to %s" % (attempt, direction, target))
        try:
            return run_alembic(params, ini_path, direction, target, timeout), attempt
        except PgopsError as error:
            if attempt > retries or not is_lock_timeout(str(error)):
                if attempt > 1:
                    raise PgopsError("%s (after %d attempts)" % (error, attempt))
                raise
            time.sleep(backoff * (2 ** (attempt - 1)))
