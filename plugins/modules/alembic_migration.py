#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: alembic_migration
short_description: Report and move the Alembic revision of a PostgreSQL database
version_added: 0.1.0
description:
  - Reads the revision recorded in the database and the revision graph of an Alembic project,
    and lists the revisions between them.
  - With O(state=migrated), runs C(alembic upgrade) (or, if allowed, C(alembic downgrade)) to O(target)
    and proves the result by reading the recorded revision again.
  - Credentials reach Alembic through libpq environment variables, never its command line.
  - The project's own env.py runs unchanged, whether it reads C(sqlalchemy.url) (the C(alembic init) templates,
    async ones included) or C(DATABASE_URL). Both are set, through Alembic's Config, to a URL that names only the
    driver, so the driver takes host, database and user from the libpq variables. Every connection env.py opens
    is checked against the database this module connected to, before any statement; a connection anywhere else
    (a URL hard-coded in env.py or read from the application's settings) fails the task, and nothing is run.
  - Alembic runs in O(alembic_python), from O(project_dir) as its working directory.
  - The migration session gets O(lock_timeout) and O(statement_timeout). A migration stopped by a lock
    timeout is retried O(lock_retries) times with exponential backoff; since each revision commits on its
    own, a retry resumes at the revision that could not take its lock.
  - Before migrating, Alembic sessions (application name C(pgops_migration)) left on the database by a run
    that was killed are terminated, since their backends would otherwise go on building or holding locks.
  - Before migrating, indexes left INVALID by an interrupted C(CREATE INDEX CONCURRENTLY) are dropped
    (O(drop_invalid_indexes)), so the migration can build them again.
  - In check mode, also returns the SQL Alembic would run (C(alembic --sql)) in RV(sql).
options:
  project_dir:
    description:
      - Folder holding the Alembic project's configuration file.
    type: path
    required: true
  config_file:
    description:
      - Name of the Alembic configuration file inside O(project_dir).
    type: str
    default: alembic.ini
  target:
    description:
      - Revision the database should be at. V(head), V(base), a revision id or a unique prefix of one.
    type: str
    default: head
  state:
    description:
      - V(migrated) moves the database to O(target).
      - V(status) only reports; it never changes anything.
    type: str
    choices: [migrated, status]
    default: migrated
  allow_downgrade:
    description:
      - Allow moving to a revision older than the current one. Off by default, so a typo in O(target)
        cannot undo migrations.
    type: bool
    default: false
  timeout:
    description:
      - Seconds the whole Alembic run may take before it is stopped and the task fails.
    type: int
    default: 3600
  lock_timeout:
    description:
      - Milliseconds a statement of the migration session waits for a lock; 0 waits forever.
      - A DDL statement waiting for a lock blocks every query queued behind it, so keep this short.
    type: int
    default: 5000
  statement_timeout:
    description: Milliseconds a statement of the migration session may run; 0 is no limit.
    type: int
    default: 0
  lock_retries:
    description: Retries after a lock timeout.
    type: int
    default: 3
  lock_retry_backoff:
    description: Seconds before the first retry; each further retry waits twice as long.
    type: float
    default: 2.0
  drop_invalid_indexes:
    description: Drop indexes left INVALID by an interrupted concurrent build before migrating.
    type: bool
    default: true
  offline_sql:
    description: In check mode, return the SQL of the pending revisions (C(alembic --sql)).
    type: bool
    default: true
  progress_file:
    description:
      - While Alembic runs, keep this JSON file on the host saying which revision of the plan runs and for how long
        (C(revision 2 of 3, a1 -> b2)), for M(intowork.pgops.job_status) to print when the migration runs as a job.
      - Removed when Alembic ends. Not given, none is written.
    type: path
  interrupted_plan:
    description:
      - For a rollback after an upgrade that was cut off (process killed, server restarted, machine lost),
        the revisions that upgrade meant to apply, in order.
      - The first of them after the recorded revision may be half-applied, since Alembic records a revision
        only at its end. It is recorded (C(alembic stamp)) before the downgrade, so that its own downgrade
        removes what it had done. Its downgrade must therefore tolerate objects that do not exist
        (C(DROP ... IF EXISTS)); if it does not, the downgrade fails and the rollback restores the backup,
        unless O(interrupted_proven_by_catalog).
    type: list
    elements: str
    default: []
  interrupted_proven_by_catalog:
    description:
      - The caller compares the catalog afterwards with the one taken before the interrupted upgrade
        (M(intowork.pgops.schema_snapshot)), and acts on any difference.
      - Then a half-applied revision whose downgrade fails is taken as not applied (a revision that raised has
        its transaction rolled back, and its downgrade fails on the objects it never created). It is recorded as
        not applied again and the downgrade goes on from the revision before it; RV(interrupted_downgrade_error)
        says why its downgrade failed, and the caller's comparison proves whether it left anything behind.
    type: bool
    default: false
  lease_owner:
    description:
      - The owner of the deployment lock (M(intowork.pgops.deploy_lock)) this migration runs under. Its lease is
        kept alive while Alembic runs, so a long migration is never taken over as stale, and a migration whose
        lease was taken over fails instead of reporting success.
      - It is also a fence. Before it ends leftover sessions and before every attempt (each retry after a lock
        timeout too) the lease must still be this owner's; a run whose lock was taken over (C(force_unlock)) or
        released stops there, before its next statement, and changes nothing more.
      - An upgrade that fails before Alembic's first revision (env.py does not load or does not connect) changed
        nothing; it clears C(migration_started) in that lease's deployment record and notes why in C(nothing_ran),
        so that no run undoes a migration that never began.
    type: str
  lease_heartbeat_interval:
    description: Seconds between two heartbeats of that lease while Alembic runs.
    type: float
    default: 30
  detect_destructive:
    description:
      - Before an upgrade (and in O(state=status)), render the pending revisions' SQL offline and parse it with
        PostgreSQL's parser (pglast) for statements that destroy data (DROP TABLE, FOREIGN TABLE or SEQUENCE;
        DROP SCHEMA, TYPE or DOMAIN with CASCADE; ALTER TABLE ... DROP COLUMN; TRUNCATE; DELETE without WHERE;
        ALTER COLUMN ... TYPE, unless the column's type before, read from the database, keeps every value, an
        enum whose labels all remain, a longer or unbounded varchar, text and citext between themselves, a wider
        integer, a binary-coercible cast to a type without a length, with no USING other than casts of the
        column). Each one found says why.
      - Each pending revision gets RV(pending[].destructive); the runbooks roll such a revision back by restore,
        never by downgrade, and refuse it in online mode unless allowed.
      - A revision whose SQL cannot be rendered offline is named in RV(destructive_check) as not checked.
    type: bool
    default: true
  alembic_python:
    description:
      - The Python that runs the project's Alembic (its env.py and revisions), for example the interpreter of the
        application's virtualenv. It needs Alembic, SQLAlchemy and the project's database driver, nothing of
        this collection.
      - Default is the module's own interpreter.
    type: path
  sqlalchemy_driver:
    description:
      - SQLAlchemy driver of the URL handed to the project (V(psycopg2), V(psycopg), V(asyncpg), ...).
      - Default is the driver named by C(sqlalchemy.url) in the project's config, else V(psycopg2).
    type: str
  url_options:
    description:
      - More options of the main section of the project's Alembic config to hand the inventory's URL in, besides
        C(sqlalchemy.url), for an env.py that reads its URL under another name (for example
        C(config.get_main_option("url"))). Set on the Config the module builds; the file is never edited.
      - Every connection env.py opens is still proven to be the inventory's database.
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - intowork.pgops._connection
  - intowork.pgops._connection.VERSION_TABLE
  - intowork.pgops._connection.ATTRIBUTES
attributes:
  check_mode:
    support: full
    details: Lists the revisions that would run and changes nothing.
  diff_mode:
    support: full
  idempotent:
    support: full
author:
  - INTOWORK platform team (@intowork)
"""

EXAMPLES = r"""
- name: List pending revisions without changing anything
  intowork.pgops.alembic_migration:
    project_dir: /srv/intowork/current
    state: status
  register: migration_status

- name: Upgrade to the newest revision
  intowork.pgops.alembic_migration:
    project_dir: /srv/intowork/current
    login_host: db1.internal
    login_db: intowork
    login_user: intowork_migrator
    login_password: "{{ vault_migrator_password }}"

- name: Roll back to a recorded revision
  intowork.pgops.alembic_migration:
    project_dir: /srv/intowork/current
    target: h8c2d6e5f4g3
    allow_downgrade: true
"""

RETURN = r"""
current:
  description: Revision recorded in the database before the task; null when Alembic never ran there.
  returned: always
  type: str
  sample: a7f3b2c1d9e8
revision:
  description: Revision recorded in the database after the task (the predicted one in check mode).
  returned: always
  type: str
  sample: h8c2d6e5f4g3
server_version:
  description: Server version number, as in C(server_version_num).
  returned: always
  type: int
  sample: 150018
history:
  description: Revisions applied to the database after the task (predicted in check mode), oldest first.
  returned: always
  type: list
  elements: str
  sample: [a7f3b2c1d9e8, h8c2d6e5f4g3]
current_history:
  description:
    - Revisions from base up to and including the recorded one (before this run), oldest first; empty at base.
    - For checks that expect only what the applied revisions made, for example O(intowork.pgops.index_verify#module:revisions).
  returned: always
  type: list
  elements: str
heads:
  description: Head revisions of the project.
  returned: always
  type: list
  elements: str
direction:
  description: V(upgrade), V(downgrade) or V(none).
  returned: always
  type: str
pending:
  description: Revisions between RV(current) and O(target), in the order they run.
  returned: always
  type: list
  elements: dict
  contains:
    revision:
      description: Revision id.
      type: str
    down_revision:
      description: Parent revision id.
      type: str
    doc:
      description: First line of the revision's message.
      type: str
    irreversible:
      description: The revision file declares C(irreversible = True); its rollback is a restore.
      type: bool
    destructive:
      description: Its statements that destroy data, as written in its offline SQL (see O(detect_destructive)).
      type: list
      elements: str
    destructive_checked:
      description: Its offline SQL was rendered and parsed; false when it could not be.
      type: bool
destructive_check:
  description: One line on how the pending revisions were checked for statements that destroy data.
  returned: when an upgrade is pending and O(detect_destructive)
  type: str
interrupted:
  description: The revision of O(interrupted_plan) taken as half-applied and undone; null when none.
  returned: always
  type: str
interrupted_downgrade_error:
  description:
    - Why the downgrade of the half-applied revision failed, when O(interrupted_proven_by_catalog) let the
      downgrade go on without it (the revision taken as not applied).
  returned: when that happened
  type: str
terminated_sessions:
  description: Process ids of migration sessions left by a killed run, terminated before migrating.
  returned: when a migration ran
  type: list
  elements: int
alembic_output:
  description: What Alembic printed while migrating.
  returned: when a migration ran
  type: list
  elements: str
attempts:
  description: Alembic runs it took (more than one after lock timeouts).
  returned: when a migration ran
  type: int
standbys_streaming:
  description:
    - How many standbys streamed from the server once the migration had committed. A caller that waits for the
      standbys to replay it (M(intowork.pgops.replication_wait)) has nothing to wait for when there are none.
  returned: when the migration ran
  type: int
invalid_indexes:
  description: Indexes left INVALID by an interrupted concurrent build, dropped (or, in check mode, to drop).
  returned: always
  type: list
  elements: str
sql:
  description: The SQL the pending revisions would run.
  returned: in check mode with pending revisions and O(offline_sql)
  type: str
sql_unrendered:
  description:
    - Revisions whose SQL cannot be rendered offline (they read the database, for example through
      C(op.get_bind())), each with the reason; RV(sql) holds the others.
  returned: in check mode with pending revisions and O(offline_sql)
  type: list
  elements: dict
diff:
  description: The recorded revision before and after.
  returned: when changed and diff mode is on
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.intowork.pgops.plugins.module_utils._alembic import (
    AlembicProject,
    NothingRan,
    current_revisions,
    database_identity,
    drop_invalid_indexes,
    invalid_indexes,
    terminate_leftover_sessions,
)
from ansible_collections.intowork.pgops.plugins.module_utils._connection import (
    PgopsError,
    connect,
    connection_spec,
    require_psycopg2,
    run_module,
    target_label,
)
from ansible_collections.intowork.pgops.plugins.module_utils._destructive import (
    HAS_PGLAST,
    ColumnCatalog,
    destructive_statements,
    split_by_revision,
)
from ansible_collections.intowork.pgops.plugins.module_utils._lease import (
    LeaseKeeper,
    LeaseLost,
    heartbeat,
    require_lease,
)
from ansible_collections.intowork.pgops.plugins.module_utils._replication import in_recovery, read_standbys


def lease_fence(params):
    """The check every write of this run passes first, when it runs under a deployment lock; else None."""
    if not params["lease_owner"]:
        return None

    def fence(what):
        require_lease(params, params["lease_owner"], what)
    return fence


def mark_destructive(pending, offline_sql, unrendered, catalog=None):
    """Give each pending revision the statements of its offline SQL that destroy data (`destructive`), and
    whether its SQL could be read at all (`destructive_checked`); the check's one-line summary."""
    reasons = dict((item["revision"], item["reason"]) for item in unrendered)
    if not HAS_PGLAST:
        for step in pending:
            step["destructive"], step["destructive_checked"] = [], False
        return ("not checked before running: pglast is not installed for the modules' Python (ansible-playbook "
                "playbooks/host_python.yml installs it); the catalog comparison after the migration still is")
    by_revision = split_by_revision(offline_sql)
    for step in pending:
        step["destructive"], step["destructive_checked"] = [], False
        if step["revision"] in reasons or step["revision"] not in by_revision:
            continue
        try:
            step["destructive"] = destructive_statements(by_revision[step["revision"]], catalog)
            step["destructive_checked"] = True
        except Exception as error:  # pylint: disable=broad-except  # pglast's ParseError, and only for the note
            reasons[step["revision"]] = "its offline SQL does not parse (%s)" % " ".join(str(error).split())
    unchecked = [step["revision"] for step in pending if not step["destructive_checked"]]
    if not unchecked:
        return "checked from the offline SQL of every pending revision"
    return "not checked before running for %s (%s): the catalog comparison after the migration still is" % (
        ", ".join(unchecked), "; ".join("%s: %s" % (rev, reasons.get(rev, "no offline SQL")) for rev in unchecked))


def migrate(params, check_mode):
    """Plan, and unless in check mode run, the move to the target; returns the module result."""
    project = AlembicProject(params)  # a missing project or interpreter is said before any connection
    conn = connect(params, autocommit=True)
    try:
        project.expected = database_identity(conn)
        current = current_revisions(conn, params["version_table"], params["version_table_schema"])
        recorded_before = current[0] if current else None
        # The offline SQL comes with the plan (one run of the project's Python): for the destructive check, and for
        # check mode to show.
        planned = project.plan(current, params["target"], params["interrupted_plan"],
                               offline=(["upgrade", "downgrade"] if check_mode and params["offline_sql"]
                                        and params["state"] != "status" else
                                        ["upgrade"] if params["detect_destructive"] else []))
        interrupted, direction, pending = planned["interrupted"], planned["direction"], planned["pending"]
        result = {
            "current": recorded_before,
            "interrupted": interrupted,
            "server_version": conn.server_version,
            "heads": planned["heads"],
            "direction": direction,
            "pending": pending,
            "revision": planned["revision"],
            "history": planned["history"],
            "current_history": planned["current_history"],
            "changed": False,
        }
        if direction == "downgrade" and not params["allow_downgrade"]:
            raise PgopsError("target %s is older than the current revision %s: set allow_downgrade=true "
                             "to roll back %d revision(s)" % (params["target"], result["current"], len(pending)))
        leftovers = invalid_indexes(conn) if params["drop_invalid_indexes"] else []
        result["invalid_indexes"] = ["%s.%s" % pair for pair in leftovers]
        if direction == "upgrade" and params["detect_destructive"]:
            result["destructive_check"] = mark_destructive(pending, planned["sql"], planned["sql_unrendered"],
                                                           ColumnCatalog(conn))
        if direction == "none" or params["state"] == "status":
            return result
        result["changed"] = True
        result["diff"] = {"before": {"revision": result["current"]}, "after": {"revision": result["revision"]}}
        if in_recovery(conn.cursor()):
            raise PgopsError("%s is a standby (in recovery): migrations run on the primary only; point login_host "
                             "at the primary. Nothing was run" % target_label(params))
        if check_mode:
            if params["offline_sql"]:
                if planned.get("offline_error"):
                    raise PgopsError("check mode cannot show what %d revision(s) would do: %s" % (
                        len(pending), planned["offline_error"]))
                result["sql"], result["sql_unrendered"] = planned["sql"], planned["sql_unrendered"]
            return result
        fence = lease_fence(params)
        if fence:
            fence("ending leftover migration sessions")
        # No other migration can be running (the deployment lock): these belong to a run that was killed.
        result["terminated_sessions"] = terminate_leftover_sessions(conn)
        if result["terminated_sessions"] and params["drop_invalid_indexes"]:
            leftovers = invalid_indexes(conn)
            result["invalid_indexes"] = ["%s.%s" % pair for pair in leftovers]
        drop_invalid_indexes(conn, leftovers)
        if interrupted:
            try:
                project.run("stamp", interrupted, params["timeout"])
            except PgopsError as error:
                # Said as what it is: the half-applied revision could not be marked for its downgrade, so
                # nothing was downgraded (it is not the downgrade that failed).
                raise PgopsError("marking the half-applied revision %s as applied, for its downgrade to run, "
                                 "failed (%s); nothing was downgraded, the database still records revision %s" % (
                                     interrupted, error, recorded_before or "base"))

        def run_alembic(steps):
            with LeaseKeeper(params, params["lease_owner"], params["lease_heartbeat_interval"]) as keeper:
                result["alembic_output"], result["attempts"] = project.run_with_retries(
                    direction, params["target"], params["timeout"], params["lock_retries"],
                    params["lock_retry_backoff"], fence, progress=(params["progress_file"], steps))
            if keeper.lost:
                raise PgopsError("the deployment lock of %s was taken from %s while Alembic ran" % (
                    conn.info.dbname, params["lease_owner"]))

        def now_at(error):
            now = current_revisions(conn, params["version_table"], params["version_table_schema"])
            return PgopsError("%s; the database is now at revision %s" % (error, now[0] if now else "base"))

        try:
            run_alembic([step["revision"] for step in pending])
        except PgopsError as error:
            if isinstance(error, NothingRan) and not interrupted and params["lease_owner"]:
                # The deployment's record says its migration started: it did not, and there is nothing to undo.
                heartbeat(params, params["lease_owner"], record={"migration_started": None, "nothing_ran": str(error)})
            now = current_revisions(conn, params["version_table"], params["version_table_schema"])
            if not (interrupted and now == (interrupted,) and not isinstance(error, LeaseLost)):
                raise now_at(error)
            # Its downgrade could not undo the half-applied revision: record what is really applied again,
            # so the database is no worse off than before this task.
            project.run("stamp", recorded_before or "base", params["timeout"])
            if not params["interrupted_proven_by_catalog"]:
                raise PgopsError("%s; the half-applied revision %s could not be undone by its downgrade (it must "
                                 "tolerate missing objects); the database is still at revision %s" % (
                                     error, interrupted, recorded_before or "base"))
            # Most often nothing of it is there (it raised, and its transaction rolled back): go on without it.
            # The caller's catalog comparison proves whether it left anything behind.
            result["interrupted_downgrade_error"] = " ".join(str(error).split())
            if recorded_before != result["revision"]:
                try:
                    run_alembic([step["revision"] for step in pending if step["revision"] != interrupted])
                except PgopsError as later:
                    raise now_at(later)
        after = current_revisions(conn, params["version_table"], params["version_table_schema"])
        recorded = after[0] if after else None
        if recorded != result["revision"]:
            raise PgopsError("alembic %s reported success but the database records revision %s, not %s: what ran "
                             "after it was rolled back (a revision that commits, op.get_bind().commit(), needs "
                             "transaction_per_migration=True in env.py's context.configure)" % (
                                 direction, recorded or "base", result["revision"] or "base"))
        result["standbys_streaming"] = len(read_standbys(conn.cursor()))
        return result
    finally:
        conn.close()


def main():
    argument_spec = connection_spec()
    argument_spec.update(
        project_dir=dict(type="path", required=True),
        config_file=dict(type="str", default="alembic.ini"),
        target=dict(type="str", default="head"),
        state=dict(type="str", default="migrated", choices=["migrated", "status"]),
        allow_downgrade=dict(type="bool", default=False),
        version_table=dict(type="str", default="alembic_version"),
        version_table_schema=dict(type="str"),
        timeout=dict(type="int", default=3600),
        lock_timeout=dict(type="int", default=5000),
        statement_timeout=dict(type="int", default=0),
        lock_retries=dict(type="int", default=3),
        lock_retry_backoff=dict(type="float", default=2.0),
        drop_invalid_indexes=dict(type="bool", default=True),
        offline_sql=dict(type="bool", default=True),
        progress_file=dict(type="path"),
        interrupted_plan=dict(type="list", elements="str", default=[]),
        interrupted_proven_by_catalog=dict(type="bool", default=False),
        lease_owner=dict(type="str"),
        lease_heartbeat_interval=dict(type="float", default=30.0),
        alembic_python=dict(type="path"),
        detect_destructive=dict(type="bool", default=True),
        sqlalchemy_driver=dict(type="str"),
        url_options=dict(type="list", elements="str", default=[]),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    require_psycopg2(module)
    run_module(module, migrate)


if __name__ == "__main__":
    main()
