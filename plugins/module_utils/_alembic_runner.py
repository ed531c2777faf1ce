# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to intowork.pgops: not a public API, may change without notice.
"""The one program that runs Alembic for intowork.pgops, in the project's own Python.

alembic_migration feeds this file's source on stdin to the project's interpreter (alembic_python; the module's
own by default), with one JSON request as its only argument. It needs nothing but Alembic and SQLAlchemy there:
no collection, no psycopg2 unless the project uses it. It answers `plan` with one JSON line on stdout (with the
offline SQL of a pending upgrade when asked: one process for the plan and every revision's rendering); `upgrade`,
`downgrade` and `stamp` run Alembic's own commands, with the project's env.py, against the inventory's database
only:
- the URL is handed over as DATABASE_URL and as the Config's sqlalchemy.url, and under any other option names
  the request lists (url_options; never by editing a file),
  with no host, user or password in it: the driver reads them from the libpq variables the module set;
- every connection any engine opens is checked, before a statement of env.py or of a revision runs, against the
  database the module connected to (name, oid, postmaster start); another database is refused (exit 3).
Its own failures are one line on stderr, starting with ERROR_MARK.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import sys
import threading
import time

ERROR_MARK = "PGOPS-ERROR "
# Said once env.py hands over to Alembic's migrations: a run that fails without it changed nothing.
MIGRATIONS_MARK = "PGOPS-MIGRATIONS-BEGIN"
PLAN_EXIT, REFUSED_EXIT = 2, 3

# What identifies a database across servers: its name, its oid in that cluster, and when that cluster started.
IDENTITY_SQL = ("SELECT current_database(), d.oid::bigint, extract(epoch FROM pg_postmaster_start_time())::text, "
                "coalesce(host(inet_server_addr()), 'local socket'), current_setting('port') "
                "FROM pg_database d WHERE d.datname = current_database()")


class PlanError(Exception):
    """A plan that cannot be made (unknown target, unknown recorded revision): the message says why and what to do."""


class WrongDatabaseError(Exception):
    """env.py connected somewhere else than the inventory's database."""


def load_alembic():
    try:
        from alembic.config import Config
        from alembic.script import ScriptDirectory
        from alembic.script.revision import RevisionError
        from alembic.util import CommandError
    except ImportError as error:
        raise PlanError("%s cannot import Alembic (%s): install alembic and SQLAlchemy in the project's Python, "
                        "or set alembic_python to the interpreter that has them" % (sys.executable, error))
    return Config, ScriptDirectory, (CommandError, RevisionError)


def describe(revision):
    return {
        "revision": revision.revision,
        "down_revision": revision.down_revision,
        "doc": (revision.doc or "").strip().splitlines()[0] if revision.doc else "",
        # A revision file says `irreversible = True` when its downgrade cannot give back what the upgrade
        # took (dropped data): its rollback is a restore of the backup.
        "irreversible": bool(getattr(revision.module, "irreversible", False)),
    }


def load_scripts(ini_path):
    """The project's revision graph, read from its Alembic config."""
    Config, ScriptDirectory, errors = load_alembic()
    if not os.path.isfile(ini_path):
        raise PlanError("no Alembic config at %s: set project_dir to the folder holding %s" % (
            ini_path, os.path.basename(ini_path)))
    try:
        return ScriptDirectory.from_config(Config(ini_path))
    except errors + (OSError,) as error:
        raise PlanError("cannot read the Alembic project at %s: %s" % (os.path.dirname(ini_path), one_line(error)))


def one_line(error):
    return " ".join(str(error).split())


def alembic_errors():
    return load_alembic()[2]


def resolve_target(scripts, target):
    """The revision ids that `target` names ('head', 'base', an id or a unique prefix)."""
    if target == "base":
        return ()
    try:
        revisions = scripts.get_revisions(target)
    except alembic_errors() as error:
        known = ", ".join(rev.revision for rev in scripts.walk_revisions())
        raise PlanError("unknown target revision %r (%s): choose head, base or one of: %s" % (
            target, one_line(error), known))
    if len(revisions) != 1:
        raise PlanError("target %r names %d revisions (%s): name a single revision" % (
            target, len(revisions), ", ".join(r.revision for r in revisions)))
    return (revisions[0].revision,)


def known_revision(scripts, revision):
    try:
        return scripts.get_revision(revision)
    except alembic_errors():
        return None


def plan(scripts, current, target):
    """(direction, steps): the revisions to apply, in order, to go from current to target."""
    goal = resolve_target(scripts, target)
    if len(current) > 1:
        raise PlanError("the database has %d heads recorded (%s): merge them before migrating" % (
            len(current), ", ".join(current)))
    for rev in current:
        if known_revision(scripts, rev) is None:
            raise PlanError("the database is at revision %s, which this project does not know: "
                            "check project_dir, or deploy the code that has that revision" % rev)
    here = current[0] if current else None
    there = goal[0] if goal else None
    if here == there:
        return "none", []
    try:
        steps = list(scripts.iterate_revisions(there or "base", here or "base"))
        return "upgrade", [describe(rev) for rev in reversed(steps)]
    except alembic_errors():
        pass
    try:
        steps = list(scripts.iterate_revisions(here or "base", there or "base"))
        return "downgrade", [describe(rev) for rev in steps]
    except alembic_errors() as error:
        raise PlanError("no path from %s to %s: %s" % (here or "base", there or "base", one_line(error)))


def history(scripts, revision):
    """Revisions from base up to and including `revision`, oldest first."""
    if not revision:
        return []
    return [rev.revision for rev in reversed(list(scripts.iterate_revisions(revision, "base")))]


def cut_off_revision(scripts, current, planned):
    """The revision of `planned` an interrupted upgrade may have half-applied: the one right after `current`.

    A revision that runs outside a transaction (CREATE INDEX CONCURRENTLY) and is killed keeps what it
    committed, but Alembic records it only at its end.
    """
    here = current[0] if current else None
    applied = set(history(scripts, here))
    for revision in planned:
        script = known_revision(scripts, revision)
        if script is None:
            raise PlanError("interrupted_plan names revision %r, which this project does not know: give the "
                            "revisions of the deployment's plan" % revision)
        if script.revision in applied:
            continue
        return script.revision if script.down_revision == here else None
    return None


def full_plan(scripts, recorded, target, interrupted_plan):
    """Everything the module decides on: where the database is taken to be, the direction, the steps."""
    current = tuple(recorded)
    interrupted = cut_off_revision(scripts, current, interrupted_plan)
    if interrupted:
        current = (interrupted,)
    direction, pending = plan(scripts, current, target)
    if interrupted and direction != "downgrade":
        # Going forward (or staying) at the half-applied revision: nothing to undo.
        interrupted, current = None, tuple(recorded)
        direction, pending = plan(scripts, current, target)
    revision = (pending[-1]["down_revision"] if direction == "downgrade" else
                pending[-1]["revision"] if pending else (current[0] if current else None))
    return {"interrupted": interrupted, "direction": direction, "pending": pending, "revision": revision,
            "history": history(scripts, revision), "heads": list(scripts.get_heads()),
            "from": current[0] if current else None,
            "current_history": history(scripts, recorded[0] if recorded else None)}


def project_url(config, driver):
    """postgresql+<driver>:// with nothing else: host, user, password and database come from libpq's variables.

    The driver is the one asked for, else the one the project's own sqlalchemy.url names, else psycopg2.
    """
    from sqlalchemy.engine import make_url
    if not driver:
        try:
            named = make_url(config.get_main_option("sqlalchemy.url") or "")
            if named.drivername.startswith("postgresql"):
                return "%s://" % named.drivername
        except Exception:  # pylint: disable=broad-except  # a placeholder or an interpolation: no driver named
            pass
        driver = "psycopg2"
    return "postgresql+%s://" % driver


def prove_each_connection(expected):
    """Refuse any connection, from any engine env.py makes, to a database that is not the expected one."""
    from sqlalchemy import event
    from sqlalchemy.pool import Pool

    def check(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(IDENTITY_SQL)
            found = list(cursor.fetchone())
        finally:
            cursor.close()
        dbapi_connection.rollback()
        if [str(value) for value in found[:3]] != [str(value) for value in expected[:3]]:
            raise WrongDatabaseError(
                "Alembic's env.py connected to database %s on %s port %s, not to the inventory's %s on %s port %s: "
                "nothing was run; make env.py take its URL from sqlalchemy.url or DATABASE_URL, or name the option it "
                "reads in url_options (pgops_alembic_url_options)" % (
                    found[0], found[3], found[4], expected[0], expected[3], expected[4]))
    event.listen(Pool, "connect", check)


def project_config(request, output_buffer=None):
    """The project's Config, pointed at the inventory's database (DATABASE_URL and sqlalchemy.url)."""
    Config = load_alembic()[0]
    config = Config(request["ini"], output_buffer=output_buffer)
    url = project_url(config, request.get("driver"))
    os.environ["DATABASE_URL"] = url
    # Also under the names an env.py may read instead (url_options).
    for option in ["sqlalchemy.url"] + list(request.get("url_options") or []):
        config.set_main_option(option, url.replace("%", "%%"))
    return config


def offline_sql(request, direction, span):
    """The SQL `alembic <direction> --sql <span>` prints, or the exception's last lines when it cannot render."""
    import io
    import traceback
    from alembic import command
    buffer = io.StringIO()
    try:
        getattr(command, direction)(project_config(request, buffer), span, sql=True)
    except Exception as error:  # pylint: disable=broad-except  # any failure of env.py or a revision is a reason
        return None, "".join(traceback.format_exception_only(type(error), error))
    return buffer.getvalue(), None


def offline_plan(request, planned):
    """{sql} of the whole span; when that cannot be rendered offline (a revision that reads the database through
    op.get_bind()), for an upgrade {steps}: each revision's sql, or the error that stopped it, and for a downgrade
    {error}. All in this one process: each rendering is its own offline run of env.py."""
    start, direction = planned["from"], planned["direction"]
    span = "%s:%s" % (start, request["target"]) if start else request["target"]
    mark_migrations_begin()
    del MIGRATIONS_BEGAN[:]
    sql, error = offline_sql(request, direction, span)
    if error is None:
        return {"sql": sql}
    if not MIGRATIONS_BEGAN:
        # env.py itself failed (an import, its configuration): every revision would fail the same way.
        return {"error": error, "span": span, "env_failed": True}
    if direction != "upgrade":
        return {"error": error, "span": span}
    steps = []
    for step in planned["pending"]:
        down = step["down_revision"]
        if isinstance(down, (list, tuple)):
            steps.append({"revision": step["revision"], "merge": True})
            continue
        span = "%s:%s" % (down, step["revision"]) if down else step["revision"]
        sql, error = offline_sql(request, "upgrade", span)
        steps.append({"revision": step["revision"], "span": span, "sql": sql, "error": error})
    return {"steps": steps}


class RevisionProgress(object):
    """Which revision of the plan runs, and for how long, in the progress file (rewritten at each revision and every
    2 s), for the controller's polls to print. Counted by Alembic's on_version_apply, which env.py cannot turn off:
    the runner adds it to whatever env.py passes to configure()."""

    def __init__(self, path, plan):
        self.path, self.plan, self.started = path, plan, time.monotonic()
        self.applied, self.running = 0, True
        self.guard = threading.Lock()
        threading.Thread(target=self.tick, daemon=True).start()

    def step(self):
        if self.applied >= len(self.plan):
            return "%d of %d revisions applied, recording" % (self.applied, len(self.plan))
        return "revision %d of %d (%s)" % (self.applied + 1, len(self.plan), self.plan[self.applied])

    def on_version_apply(self, **_kwargs):
        with self.guard:
            self.applied += 1
        self.write()

    def tick(self):
        while self.running:
            self.write()
            time.sleep(2)

    def write(self):
        with self.guard:
            if not self.running:
                return
            partial = "%s.%d.partial" % (self.path, os.getpid())
            try:
                with open(partial, "w") as handle:
                    json.dump({"phase": self.step(), "elapsed_seconds": round(time.monotonic() - self.started, 1)},
                              handle)
                os.rename(partial, self.path)
            except OSError:
                self.running = False  # progress is for people watching; it never fails the migration

    def close(self):
        with self.guard:
            self.running = False
        try:
            os.unlink(self.path)
        except OSError:
            pass


def count_revisions(progress):
    """Every EnvironmentContext.configure() env.py makes also calls progress.on_version_apply."""
    from alembic.runtime.environment import EnvironmentContext
    configure = EnvironmentContext.configure

    def configure_counting(self, *args, **kwargs):
        callbacks = kwargs.get("on_version_apply") or []
        kwargs["on_version_apply"] = ([callbacks] if callable(callbacks) else list(callbacks)) + [progress.on_version_apply]
        return configure(self, *args, **kwargs)

    EnvironmentContext.configure = configure_counting


MIGRATIONS_BEGAN = []


def mark_migrations_begin():
    """When env.py calls run_migrations() (before Alembic touches the database, or renders a revision offline):
    MIGRATIONS_MARK on stderr, and a note in MIGRATIONS_BEGAN. An error before it is env.py's own."""
    from alembic.runtime.migration import MigrationContext
    run_migrations = MigrationContext.run_migrations
    if getattr(run_migrations, "pgops_marked", False):
        return

    def run_migrations_marked(self, *args, **kwargs):
        MIGRATIONS_BEGAN.append(True)
        sys.stderr.write(MIGRATIONS_MARK + "\n")
        sys.stderr.flush()
        return run_migrations(self, *args, **kwargs)

    run_migrations_marked.pgops_marked = True
    MigrationContext.run_migrations = run_migrations_marked


def run_command(request):
    from alembic import command
    config = project_config(request)
    prove_each_connection(request["expected"])
    mark_migrations_begin()
    progress = None
    if request.get("progress_file") and request["command"] in ("upgrade", "downgrade"):
        progress = RevisionProgress(request["progress_file"], request.get("progress_plan") or [])
        count_revisions(progress)
    try:
        getattr(command, request["command"])(config, request["target"])
    finally:
        if progress:
            progress.close()


def refusal(error):
    """The WrongDatabaseError behind an exception, however SQLAlchemy or Alembic wrapped it."""
    seen = 0
    while error is not None and seen < 20:
        if isinstance(error, WrongDatabaseError):
            return error
        error = error.__cause__ or error.__context__
        seen += 1
    return None


def main(argv):
    request = json.loads(argv[0])
    try:
        if request["command"] == "plan":
            scripts = load_scripts(request["ini"])
            planned = full_plan(scripts, request["recorded"], request["target"], request["interrupted_plan"])
            if planned["direction"] in request.get("offline", []):
                planned["offline"] = offline_plan(request, planned)
            sys.stdout.write(json.dumps(planned) + "\n")
            return 0
        run_command(request)
        return 0
    except PlanError as error:
        sys.stderr.write("%s%s\n" % (ERROR_MARK, error))
        return PLAN_EXIT
    except Exception as error:  # pylint: disable=broad-except  # the traceback is the module's to read
        refused = refusal(error)
        if refused is None:
            raise
        sys.stderr.write("%s%s\n" % (ERROR_MARK, refused))
        return REFUSED_EXIT


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
