# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to intowork.pgops: not a public API, may change without notice.
"""Alembic migration control: where the database is, where it should go, and the way there."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import inspect
import json
import os
import re
import subprocess
import sys
import time

from ansible_collections.intowork.pgops.plugins.module_utils import _alembic_runner as runner
from ansible_collections.intowork.pgops.plugins.module_utils._connection import (
    PgopsError,
    libpq_environment,
    sql,
    target_label,
)


class NothingRan(PgopsError):
    """Alembic failed before its migrations began (env.py did not load, or did not connect): nothing changed."""


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
    return env


def database_identity(conn):
    """The database this module is connected to, as the runner checks every connection of env.py against."""
    with conn.cursor() as cur:
        cur.execute(runner.IDENTITY_SQL)
        return list(cur.fetchone())


# An option name of alembic.ini's main section: what configparser keeps as one key.
URL_OPTION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class AlembicProject:
    """The project's Alembic, run through the runner in the project's Python, against one database only."""

    def __init__(self, params, expected=None):
        self.params = params
        self.ini_path = os.path.join(params["project_dir"], params["config_file"])
        if not os.path.isfile(self.ini_path):
            raise PgopsError("no Alembic config at %s: set project_dir to the folder holding %s" % (
                self.ini_path, params["config_file"]))
        bad = [name for name in params.get("url_options") or [] if not URL_OPTION.match(name)]
        if bad:
            raise PgopsError("url_options %s: an option name of the config's main section is letters, digits, "
                             "'.', '_' or '-' (for example url or db.url); nothing was run" % ", ".join(
                                 repr(name) for name in bad))
        self.python = params.get("alembic_python") or sys.executable
        if not os.access(self.python, os.X_OK):
            raise PgopsError("alembic_python %s is not an executable Python: give the interpreter of the "
                             "project's virtualenv (for example /srv/app/venv/bin/python)" % self.python)
        self.expected = expected

    def _run(self, request, timeout):
        request = dict(request, ini=self.ini_path, driver=self.params.get("sqlalchemy_driver"),
                       url_options=list(self.params.get("url_options") or []), expected=self.expected)
        # The source goes in on stdin: the project's Python needs nothing of the collection.
        return subprocess.run([self.python, "-", json.dumps(request)], input=runner_source(),
                              env=alembic_environment(self.params), cwd=self.params["project_dir"],
                              capture_output=True, text=True, timeout=timeout, check=False)

    def plan(self, recorded, target, interrupted_plan, offline=()):
        """The runner's full_plan: interrupted, direction, pending, revision, history, heads, from; when the
        direction is one of `offline` (upgrade, downgrade), also `sql` and `sql_unrendered` (see offline_plan_sql)."""
        result = self._run({"command": "plan", "recorded": list(recorded), "target": target,
                            "interrupted_plan": list(interrupted_plan), "offline": list(offline)}, timeout=300)
        if result.returncode != 0:
            raise PgopsError(own_error(result.stderr) or "reading the Alembic project at %s failed: %s" % (
                self.params["project_dir"], failure_reason(result.stderr.splitlines()) or "exit %d" % result.returncode))
        planned = json.loads(result.stdout.strip().splitlines()[-1])
        if "offline" in planned:
            offline = planned.pop("offline")
            if offline.get("env_failed"):
                # No revision could be rendered: each is named with env.py's own error.
                planned["offline_error"] = "env.py failed before any revision (alembic %s --sql %s): %s" % (
                    planned["direction"], offline["span"],
                    failure_reason(offline["error"].splitlines()) or "no reason given")
                planned["sql"] = ""
                planned["sql_unrendered"] = [{"revision": step["revision"], "reason": planned["offline_error"]}
                                             for step in planned["pending"]]
            else:
                planned["sql"], planned["sql_unrendered"] = offline_plan_sql(offline)
        return planned

    def run(self, command, target, timeout, progress=(None, ())):
        """`alembic upgrade|downgrade|stamp target`; the output lines. PgopsError with the database's words,
        NothingRan when it failed before env.py handed over to the migrations (the database is untouched).
        `progress`: (file, the plan's revision ids), for the runner to say which one runs (or no file)."""
        what = "alembic %s to %s on %s" % (command, target, target_label(self.params))
        try:
            result = self._run({"command": command, "target": target, "progress_file": progress[0],
                                "progress_plan": progress[1]}, timeout)
        except subprocess.TimeoutExpired:
            raise PgopsError("%s did not finish within %s s (raise timeout or check for locks)" % (what, timeout))
        began = runner.MIGRATIONS_MARK in result.stderr.splitlines()
        output = [line for line in (result.stdout + result.stderr).splitlines() if line != runner.MIGRATIONS_MARK]
        if began:
            failure, failed, killed = PgopsError, what + " failed: ", what + " was killed"
        else:  # nothing changed: said so, and raised as NothingRan
            failure = NothingRan
            failed = what + " stopped before Alembic's first revision (nothing ran): "
            killed = failed + "killed"
        if result.returncode < 0:
            raise failure("%s (signal %d)" % (killed, -result.returncode))
        if result.returncode != 0:
            reason = own_error(result.stderr) or failure_reason(output) or "exit %d" % result.returncode
            raise failure(failed + reason + missing_module_hint(reason, self.params.get("alembic_python"),
                                                                self.python))
        return output

    def run_with_retries(self, direction, target, timeout, retries, backoff, fence=None, progress=(None, ())):
        """run, again after a lock timeout: each revision commits, so a retry resumes where it stopped.

        `fence(what)` runs before every attempt and raises when this run may no longer write (its deployment lock
        was taken over while it waited): an old run never migrates after a takeover. Returns (output, attempts).
        """
        attempt = 0
        while True:
            attempt += 1
            if fence:
                fence("attempt %d of alembic %s to %s" % (attempt, direction, target))
            try:
                return self.run(direction, target, timeout, progress), attempt
            except PgopsError as error:
                if attempt > retries or not is_lock_timeout(str(error)):
                    if attempt > 1:
                        raise PgopsError("%s (after %d attempts)" % (error, attempt))
                    raise
                time.sleep(backoff * (2 ** (attempt - 1)))


def offline_plan_sql(offline):
    """(sql, unrendered) from the runner's offline_plan: the SQL of the whole upgrade, or that of each revision that
    renders offline, with a comment in place of each that does not, and, for those, the reason."""
    def failed(direction, rendering):
        return "alembic %s --sql %s failed: %s" % (
            direction, rendering["span"], failure_reason(rendering["error"].splitlines()) or "no reason given")

    if "sql" in offline:
        return offline["sql"], []
    if "error" in offline:
        raise PgopsError(failed("downgrade", offline))
    parts, unrendered = [], []
    for step in offline["steps"]:
        if step.get("merge"):
            unrendered.append({"revision": step["revision"], "reason": "a merge revision is rendered only with its span"})
        elif step["error"] is None:
            parts.append(step["sql"])
        else:
            reason = failed("upgrade", step)
            unrendered.append({"revision": step["revision"], "reason": reason})
            parts.append("-- revision %s: no offline SQL (%s)\n" % (step["revision"], reason))
    return "".join(parts), unrendered


_RUNNER_SOURCE = []


def runner_source():
    """The runner's source, read once from wherever the module's files are (a file, or Ansible's zip)."""
    if not _RUNNER_SOURCE:
        _RUNNER_SOURCE.append(inspect.getsource(runner))
    return _RUNNER_SOURCE[0]


def missing_module_hint(reason, alembic_python, python):
    """What to do about an import env.py or a revision could not make: with the modules' own interpreter, point
    at the project's; with the project's, the module is missing there (or is the project's own, misnamed)."""
    missing = re.match(r"No module named '([^']+)'", reason)
    if not missing:
        return ""
    if not alembic_python:
        return "; set alembic_python to the Python of the project's virtualenv"
    return ("; alembic_python %s cannot import %s: install what provides it into that environment, or, if it is "
            "the project's own module, check its name and that it is under project_dir" % (
                python, missing.group(1).split(".")[0]))


def own_error(stderr):
    """The runner's own one-line failure (a plan that cannot be made, a refused database), if it gave one."""
    for line in reversed(stderr.splitlines()):
        if line.startswith(runner.ERROR_MARK):
            return line[len(runner.ERROR_MARK):].strip()
    return ""


def is_lock_timeout(message):
    return "lock timeout" in message or "could not obtain lock" in message


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
