#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: preflight_check
short_description: Gate a deployment on the state of a PostgreSQL server
version_added: 0.1.0
description:
  - Reads, in one query, whether the server is a primary, its version, the database size, the
    transactions open longer than O(max_transaction_seconds), and the sessions holding or waiting for locks
    on O(tables).
  - On a primary, reads its standbys (C(pg_stat_replication)) and replication slots. A standby not streaming or
    further behind than O(max_replica_lag_bytes) or O(max_replica_lag_seconds), fewer standbys than
    O(min_standbys), or an inactive slot (it keeps WAL without bound) fails the preflight.
  - With O(backup_dir), compares the free space there with the database size times O(space_factor).
  - Runs each of O(client_programs) with C(--version) on the managed host. A program missing, or of an older major
    version than the server (its dumps would be refused or incomplete), fails the preflight.
  - Fails with one line per failed gate; read-only.
options:
  tables:
    description: Tables the migration changes; other sessions' locks on them are gates. Empty means every table.
    type: list
    elements: str
    default: []
  max_transaction_seconds:
    description: A transaction open longer than this blocks the deployment (DDL would queue behind it).
    type: int
    default: 60
  max_lock_seconds:
    description:
      - A session holding or awaiting a lock on O(tables) in a transaction open longer than this blocks the
        deployment. The application's short writes hold locks for milliseconds and pass.
    type: int
    default: 5
  require_primary:
    description: Fail on a server in recovery (a replica).
    type: bool
    default: true
  max_replica_lag_bytes:
    description: A standby further behind than this much WAL fails the preflight.
    type: int
    default: 67108864
  max_replica_lag_seconds:
    description: A standby replaying further behind than this (C(replay_lag)) fails the preflight.
    type: float
    default: 60
  min_standbys:
    description: Fewer standbys streaming than this fails the preflight (0 checks only those present).
    type: int
    default: 0
  fail_on_inactive_slots:
    description: Fail when a replication slot has no consumer connected.
    type: bool
    default: true
  backup_dir:
    description:
      - Folder the pre-deployment backup goes to, on the managed host; the free space of its filesystem is
        checked (of its nearest existing parent, before the first backup).
    type: path
  space_factor:
    description: Free space needed in O(backup_dir), as a multiple of the database size.
    type: float
    default: 1.0
  client_programs:
    description: Client programs that must run on the managed host, at least as new as the server.
    type: list
    elements: str
    default: []
  client_bin_dir:
    description: Folder of O(client_programs); unset, they are looked up on the C(PATH).
    type: path
  app_roles:
    description:
      - The application's login roles (the write guard's). RV(definer_routines) names the C(SECURITY DEFINER)
        routines they can run whose owner can write an application relation, which a guard that revokes the
        roles' grants leaves open unless told to revoke EXECUTE on them too. Not a gate.
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - intowork.pgops._connection
  - intowork.pgops._connection.ATTRIBUTES
attributes:
  check_mode:
    support: full
    details: Read-only, so check mode runs the same checks.
  diff_mode:
    support: none
  idempotent:
    support: full
author:
  - INTOWORK platform team (@intowork)
"""

EXAMPLES = r"""
- name: Is the server ready for a deployment?
  intowork.pgops.preflight_check:
    tables: [jobs, job_applications]
    max_transaction_seconds: 30
    backup_dir: /var/backups/pgops/intowork
"""

RETURN = r"""
in_recovery:
  description: Whether the server is a replica.
  returned: always
  type: bool
server_version:
  description: C(server_version_num).
  returned: always
  type: int
database_size_bytes:
  description: Size of the database.
  returned: always
  type: int
backup_free_bytes:
  description: Free space in O(backup_dir).
  returned: when O(backup_dir) is set
  type: int
long_transactions:
  description: Transactions open longer than O(max_transaction_seconds) (pid, user, application, seconds, state).
  returned: always
  type: list
  elements: dict
lock_holders:
  description: Other sessions holding or awaiting locks on O(tables) for longer than O(max_lock_seconds).
  returned: always
  type: list
  elements: dict
standbys:
  description:
    - The standbys streaming from the server (name, client, state, sync_state, lag_bytes, replay_lag_seconds);
      empty on a standby.
  returned: always
  type: list
  elements: dict
replication_slots:
  description: The server's replication slots (name, type, active, database, retained_bytes).
  returned: always
  type: list
  elements: dict
definer_routines:
  description:
    - The C(SECURITY DEFINER) routines O(app_roles) can run whose owner can write an application relation, as
      C(schema.name(argument types) (owned by role)).
  returned: always
  type: list
  elements: str
client_versions:
  description: The major version of each of O(client_programs) that ran (C(null) for one that would not run).
  returned: always
  type: dict
  sample: {pg_dump: 15, pg_restore: 15}
failed_gates:
  description: One line per gate that failed.
  returned: always
  type: list
  elements: str
"""

import os
import re
import subprocess

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.intowork.pgops.plugins.module_utils._connection import (
    PgopsError,
    connect,
    connection_spec,
    require_psycopg2,
    run_module,
)
from ansible_collections.intowork.pgops.plugins.module_utils._replication import (
    read_slots,
    read_standbys,
    standby_gates,
)
from ansible_collections.intowork.pgops.plugins.module_utils._write_guard import definer_routines, describe_routine

GATES = """
SELECT pg_is_in_recovery(),
       current_setting('server_version_num')::int,
       pg_database_size(current_database()),
       (SELECT coalesce(json_agg(json_build_object(
                  'pid', a.pid, 'user', a.usename, 'application', a.application_name, 'state', a.state,
                  'seconds', round(extract(epoch FROM now() - a.xact_start))::int) ORDER BY a.xact_start), '[]')
          FROM pg_stat_activity a
         WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() AND a.xact_start IS NOT NULL
           AND now() - a.xact_start > make_interval(secs => %(max_seconds)s)),
       (SELECT coalesce(json_agg(json_build_object(
                  'pid', l.pid, 'user', a.usename, 'application', a.application_name, 'table', c.relname,
                  'mode', l.mode, 'granted', l.granted) ORDER BY l.pid), '[]')
          FROM pg_locks l
          JOIN pg_class c ON c.oid = l.relation
          JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND l.pid <> pg_backend_pid() AND c.relkind IN ('r', 'p', 'm')
           AND now() - coalesce(a.xact_start, a.query_start) >= make_interval(secs => %(max_lock_seconds)s)
           AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND (cardinality(%(tables)s::text[]) = 0 OR c.relname = ANY(%(tables)s::text[])))
"""


def client_gates(programs, bin_dir, server_version):
    """({program: major version or None}, gates) for each program run with --version on this host."""
    server_major = server_version // 10000
    versions, gates = {}, []
    for name in programs:
        path = os.path.join(bin_dir, name) if bin_dir else name
        versions[name], problem = None, None
        try:
            ran = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            problem = str(error)
        else:
            found = re.search(r"\d+", ran.stdout)
            if ran.returncode == 0 and found:
                versions[name] = int(found.group())
            else:
                problem = (ran.stderr or ran.stdout).strip() or "exit status %d" % ran.returncode
        if problem:
            gates.append("%s %s does not run (%s): install the PostgreSQL %d client programs and set the bin folder "
                         "(pgops_pg_bin_dir) to theirs" % (name, "in " + bin_dir if bin_dir else "on the PATH",
                                                           problem, server_major))
        elif versions[name] < server_major:
            gates.append("%s is version %d but the server is %d: install clients of that major version and set the "
                         "bin folder (pgops_pg_bin_dir) to theirs" % (name, versions[name], server_major))
    return versions, gates


def check(params, check_mode):
    if params["backup_dir"] and not os.path.isabs(params["backup_dir"]):
        raise PgopsError("backup_dir %r must be an absolute path on the database host, for example "
                         "/var/backups/pgops/<db>; nothing was checked" % params["backup_dir"])
    conn = connect(params)
    try:
        with conn.cursor() as cur:
            cur.execute(GATES, {"max_seconds": params["max_transaction_seconds"], "tables": params["tables"],
                                "max_lock_seconds": params["max_lock_seconds"]})
            in_recovery, version, size, long_transactions, holders = cur.fetchone()
            # A standby's own view of replication is not the primary's (pg_current_wal_lsn() refuses there).
            standbys, slots = ([], []) if in_recovery else (read_standbys(cur), read_slots(cur))
            definers = [describe_routine(row) for row in definer_routines(cur, params["app_roles"])] if params[
                "app_roles"] else []
        conn.rollback()
    finally:
        conn.close()
    result = {"changed": False, "in_recovery": in_recovery, "server_version": version, "database_size_bytes": size,
              "long_transactions": long_transactions, "lock_holders": holders, "standbys": standbys,
              "replication_slots": slots, "definer_routines": definers}
    result["client_versions"], gates = client_gates(params["client_programs"], params["client_bin_dir"], version)
    if params["require_primary"] and in_recovery:
        gates.append("the server is in recovery (a replica): deploy to the primary")
    gates.extend(standby_gates(standbys, slots, params["max_replica_lag_bytes"], params["max_replica_lag_seconds"],
                               params["min_standbys"], params["fail_on_inactive_slots"]))
    for tx in long_transactions:
        gates.append("pid %s (%s, %s) has had a transaction open for %s s: end it or wait" % (
            tx["pid"], tx["user"], tx["application"] or "no application_name", tx["seconds"]))
    for lock in holders:
        gates.append("pid %s (%s, %s) %s %s on %s" % (
            lock["pid"], lock["user"], lock["application"] or "no application_name",
            "holds" if lock["granted"] else "waits for", lock["mode"], lock["table"]))
    if params["backup_dir"]:
        # Before the first backup the folder may not exist yet: measure the filesystem it will be on.
        existing = params["backup_dir"]
        while not os.path.isdir(existing):
            existing = os.path.dirname(existing)
        stats = os.statvfs(existing)
        free = stats.f_bavail * stats.f_frsize
        result["backup_free_bytes"] = free
        needed = int(size * params["space_factor"])
        if free < needed:
            gates.append("%s has %d MB free, the backup needs about %d MB (database size x %s)" % (
                params["backup_dir"], free // 2 ** 20, needed // 2 ** 20, params["space_factor"]))
    result["failed_gates"] = gates
    if gates:
        result["failed"] = True
        result["msg"] = "preflight failed: " + "; ".join(gates)
    return result


def main():
    argument_spec = connection_spec()
    argument_spec.update(
        tables=dict(type="list", elements="str", default=[]),
        max_transaction_seconds=dict(type="int", default=60),
        max_lock_seconds=dict(type="int", default=5),
        require_primary=dict(type="bool", default=True),
        max_replica_lag_bytes=dict(type="int", default=64 * 2 ** 20),
        max_replica_lag_seconds=dict(type="float", default=60),
        min_standbys=dict(type="int", default=0),
        fail_on_inactive_slots=dict(type="bool", default=True),
        backup_dir=dict(type="path"),
        space_factor=dict(type="float", default=1.0),
        client_programs=dict(type="list", elements="str", default=[]),
        client_bin_dir=dict(type="path"),
        app_roles=dict(type="list", elements="str", default=[]),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    require_psycopg2(module)
    run_module(module, check)


if __name__ == "__main__":
    main()
