# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to intowork.pgops: not a public API, may change without notice.
"""The deployment lease: one JSON value in the custom setting `pgops.deploy_lock` of the database.

Read and written only under a transaction-level advisory lock, so two runs never both take it. The
holder refreshes `heartbeat_at` while it works; a lease is stale when its heartbeat is older than
stale_after, so a long step that keeps the lease alive is never taken over.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import threading
import time

try:
    from ansible_collections.intowork.pgops.plugins.module_utils._connection import PgopsError, connect, sql
except ImportError:
    # The backup program's copy on the database host, where no collection is installed: its dead-man switch
    # reads the lease (lock_and_read, last_beat) and never keeps one alive, so it needs no connect().
    from psycopg2 import sql

    connect = None

    class PgopsError(Exception):
        """A failure worth one line."""

SETTING = "pgops.deploy_lock"
READ_LEASE = """
SELECT substr(s.setting, length(%(prefix)s) + 1)
  FROM pg_catalog.pg_db_role_setting d
  JOIN pg_catalog.pg_database db ON db.oid = d.setdatabase AND db.datname = pg_catalog.current_database()
 CROSS JOIN pg_catalog.unnest(d.setconfig) AS s(setting)
 WHERE d.setrole = 0 AND s.setting LIKE %(like)s
"""


class LeaseLost(PgopsError):
    """This run's deployment lock was taken over or released: it must not write again."""


def lock_settings(cur):
    """Serialise, until the transaction ends, every change of this database's pgops settings (the lease and
    the write guard's record): they share one pg_db_role_setting row, and two ALTER DATABASE SET on it at
    once fail with 'tuple concurrently updated'."""
    cur.execute("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('pgops.deploy_lock:' "
                "|| pg_catalog.current_database()))")


def read(cur):
    """The lease, or None, without serialising anything: for a run that only looks (a backup proving that it
    dumps the database a deployment locked), and must not hold the lock for its length."""
    cur.execute(READ_LEASE, {"prefix": SETTING + "=", "like": SETTING + "=%"})
    row = cur.fetchone()
    return json.loads(row[0]) if row else None


def lock_and_read(cur):
    """Serialise lease changes on this database until the transaction ends; the lease, or None."""
    lock_settings(cur)
    return read(cur)


def last_beat(lease):
    return lease.get("heartbeat_at", lease["taken_at"])


def write_statement(database, lease):
    if lease is None:
        return sql.SQL("ALTER DATABASE {} RESET {}").format(sql.Identifier(database), sql.SQL(SETTING))
    return sql.SQL("ALTER DATABASE {} SET {} = {}").format(
        sql.Identifier(database), sql.SQL(SETTING), sql.Literal(json.dumps(lease, sort_keys=True)))


def heartbeat(params, owner, record=None):
    """Refresh the lease's heartbeat if `owner` still holds it, merging `record` into its deployment record (its
    details); False when it does not (lost or released)."""
    conn = connect(params)
    try:
        cur = conn.cursor()
        lease = lock_and_read(cur)
        if lease is None or lease["owner"] != owner:
            conn.rollback()
            return False
        new = dict(lease, heartbeat_at=time.time())
        if record:
            new["details"] = dict(lease.get("details") or {}, **record)
        cur.execute(write_statement(conn.info.dbname, new))
        conn.commit()
        return True
    finally:
        conn.close()


def assert_holder(cur, database, owner, consequence):
    """Under the lease's lock (until the transaction ends): LeaseLost unless `owner` holds it."""
    lease = lock_and_read(cur)
    if lease is None or lease["owner"] != owner:
        raise LeaseLost("the deployment lock of %s is no longer held by %s (%s): %s" % (
            database, owner, "now held by %s" % lease["owner"] if lease else "released", consequence))


def require_lease(params, owner, what):
    """Refresh `owner`'s lease, or stop before `what`, naming who holds the lock now (a fence for old runs)."""
    if heartbeat(params, owner):
        return
    conn = connect(params)
    try:
        assert_holder(conn.cursor(), conn.info.dbname, owner, "this run stopped before %s" % what)
    finally:
        conn.rollback()
        conn.close()


class LeaseKeeper(object):
    """Keeps `owner`'s lease alive from a thread while a long step runs; notes when it was lost."""

    def __init__(self, params, owner, interval=30.0, beat_at_start=False):
        self.params, self.owner, self.interval = params, owner, interval
        self.beat_at_start = beat_at_start
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pgops-lease-keeper")
        self._thread.daemon = True

    def _run(self):
        if self.beat_at_start and not self._beat():
            return
        while not self._stop.wait(self.interval):
            if not self._beat():
                return

    def _beat(self):
        """One heartbeat; False once the lease is someone else's (or released), when the keeper stops."""
        try:
            if not heartbeat(self.params, self.owner):
                self.lost = True
                return False
        except Exception:  # pylint: disable=broad-except
            pass  # the server may be restarting, or the login may not write the lease; the step reports its own error
        return True

    def __enter__(self):
        if self.owner:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
