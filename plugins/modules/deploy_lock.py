#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: deploy_lock
short_description: Take or release the deployment lock of a PostgreSQL database
version_added: 0.1.0
description:
  - Two deployments of one database must never overlap. A session-level advisory lock would die with the
    short-lived module process, so the lock is a lease recorded in the database itself (the custom setting
    C(pgops.deploy_lock) of O(login_db)), taken and released under a transaction-level advisory lock so two
    runs cannot both take it.
  - The lease names its owner and start. A lease older than O(stale_after) seconds is considered abandoned
    (the machine running Ansible died) and may be taken over; O(force=true) releases any lease.
  - Taking over or force-releasing another run's lease fences that run (every write it makes checks the lease
    first) and ends its migration sessions, waiting until they are gone, so a statement it had already sent
    cannot finish after the takeover.
  - A takeover hands that run's write guard, if writes are off under it, to the new holder in the same
    transaction (RV(write_guard)); writes stay off, and the new holder ends the guard when it is done.
options:
  state:
    description:
      - V(acquired) takes the lock (already holding it is no change); V(released) gives it back.
      - V(status) only reads the lease, for example to find the plan of a deployment that died, with the
        deployment record it keeps (RV(record)), how far its plan got (RV(progress)) and how to undo it (RV(undo)).
    type: str
    choices: [acquired, released, status]
    required: true
  owner:
    description:
      - Who holds the lock, for example the deployment id; a different owner cannot release it.
      - Required unless O(state=status). With O(state=status), whose deployment record to read; RV(record) is
        empty when someone else holds the lock (without it, the holder's).
    type: str
  details:
    description:
      - What the holder is doing, kept in the lease so a later run can finish or undo it after the holder
        died (deploy_migration.yml keeps its revision before, its plan and its backup here).
      - Acquiring a lock already held with other details updates them.
      - Keep secrets out of it; any database user can read it.
    type: dict
  merge:
    description:
      - With O(state=acquired) by the holder, add O(details) to the details already kept instead of replacing
        them, so each step of a deployment can record itself.
    type: bool
    default: false
  stale_after:
    description:
      - Seconds without a heartbeat after which someone else's lease counts as abandoned. Every acquired call
        by the holder is a heartbeat, and long steps (the migration) keep the lease alive while they run.
    type: int
    default: 7200
  heartbeat_interval:
    description:
      - Seconds between two heartbeats of a holder that is alive (the runbooks' C(pgops_lease_heartbeat_seconds)).
      - O(stale_after) may not be shorter than four of them, so a live run's lock is never taken as abandoned;
        a shorter one is refused before anything is read or written. Taking a live run's lock needs O(force).
    type: float
    default: 30
  identity:
    description:
      - Who runs the holder, kept in the lease as C(by) when the lock is taken and named to anyone refused,
        for example the controller's host name, the operator's OS user and the job id (deploy_migration.yml and
        rollback.yml pass C(controller), C(user) and C(run_id)).
      - The lease's C(host) is where the module ran, which is the database host over SSH, not the operator's.
    type: dict
  force:
    description: Release or take over the lock whoever holds it. For an operator who knows the holder is gone.
    type: bool
    default: false
  only_own:
    description:
      - With O(state=released), release the lock only when O(owner) holds it; a lock someone else holds now (it
        was taken over) is left as it is, with no failure. RV(previous_holder) says who held it. For a run's
        clean-up, which must give back its own lock and never another's.
    type: bool
    default: false
extends_documentation_fragment:
  - intowork.pgops._connection
  - intowork.pgops._connection.VERSION_TABLE
  - intowork.pgops._connection.ATTRIBUTES
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: full
author:
  - INTOWORK platform team (@intowork)
"""

EXAMPLES = r"""
- name: Take the deployment lock
  intowork.pgops.deploy_lock:
    state: acquired
    owner: "deploy-{{ deployment_id }}"
    identity:
      controller: "{{ lookup('ansible.builtin.pipe', 'uname -n') }}"
      user: "{{ lookup('ansible.builtin.pipe', 'id -un') }}"

- name: Read the lease of a deployment that may have died, and its plan
  intowork.pgops.deploy_lock:
    state: status
  register: lock_status

- name: Release it, whatever happened
  intowork.pgops.deploy_lock:
    state: released
    owner: "deploy-{{ deployment_id }}"
"""

RETURN = r"""
holder:
  description: The lease after the task (owner, since, host, by, details); null when free.
  returned: always
  type: dict
holder_text:
  description: The lease's holder in words, as the lock's refusals name it; null when free.
  returned: always
  type: str
  sample: "run by alice on laptop-7, job 42, lease taken on db1"
previous_holder:
  description: The lease before the task; null when it was free.
  returned: always
  type: dict
write_guard:
  description:
    - The write guard found when another run's lock was taken over or released. Its owner is now the new holder
      when it was the old holder's (C(taken_over_from) names the old one), so the new holder's clean-up and the
      dead-man switch can end it; a guard of anyone else is left as it is.
    - With O(state=status), the write guard's record as it is, read in the same transaction as the lease (its
      C(owner) is the run whose guard it is); null when writes are not off.
  returned: when another run's lock was taken over or released, and when O(state=status)
  type: dict
write_guard_text:
  description: That guard in words, for the runbook to say; null when writes were not off.
  returned: when another run's lock was taken over or released
  type: str
  sample: "writes off for app_web since 2026-12-06T03:00:00Z (revoke_writes), under the write guard of deploy-1, now deploy-2's"
recorded_revisions:
  description:
    - The revisions Alembic records in the database (O(version_table)), read with the lease; empty when Alembic
      never ran there. For a clean-up that cannot reach the Alembic project (the controller's, when the database
      host is lost) to say how far a deployment's plan got.
  returned: when O(state=status)
  type: list
  elements: str
record:
  description:
    - The deployment record kept in the lease (its C(details)), with the revision before, target, plan, mode,
      irreversible revisions, backup, row counts and catalog before, and when the migration started. Empty when the lock is free, or
      held by someone other than O(owner).
  returned: when O(state=status)
  type: dict
progress:
  description:
    - How far the record's plan got, from the revision the database records; C(text) says it in words.
  returned: when O(state=status)
  type: dict
  contains:
    applied:
      description: The plan's revisions the database records as applied.
      type: list
      elements: str
    completed:
      description: The migration started and the database records the plan's last revision.
      type: bool
    possibly_half_applied:
      description: The plan's revision after the last applied one, when the migration had started; else null.
      type: str
    text:
      description: The above in words, for a runbook's message.
      type: str
undo:
  description:
    - How the deployment's rescue undoes it, decided from the record and the write guard (read in the same
      transaction); null when its migration never started. C(method) is V(downgrade) when writes were on since
      the backup (a restore would drop the application's writes), V(restore) when a revision cannot be downgraded
      and writes were off, V(pitr) when such a revision has no backup to restore but a restore point with writes
      off since it, else V(auto) (downgrade, then the backup, or else the restore point, if that fails);
      C(reason) says why.
    - Also C(target), C(backup), C(restore_point) (the point a recovery may go back to on its own, or empty),
      C(interrupted_plan), C(row_counts), C(catalog), C(writes_off_since_backup) and C(row_count_policy)
      (V(equal) with writes off since the backup, else V(no_loss)).
  returned: when O(state=status)
  type: dict
ended_sessions:
  description: Process ids of the previous holder's migration sessions ended after a takeover or forced release.
  returned: when another run's lease was taken over or released
  type: list
  elements: int
"""

import socket
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.intowork.pgops.plugins.module_utils._alembic import (
    current_revisions,
    terminate_leftover_sessions,
)
from ansible_collections.intowork.pgops.plugins.module_utils._connection import (
    PgopsError,
    connect,
    connection_spec,
    require_psycopg2,
    run_module,
)
from ansible_collections.intowork.pgops.plugins.module_utils._deployment_record import progress, record_of, undo_plan
from ansible_collections.intowork.pgops.plugins.module_utils._lease import last_beat, lock_and_read, write_statement
from ansible_collections.intowork.pgops.plugins.module_utils._write_guard import hand_over, read_catalog


def describe_holder(lease):
    """'run by alice on laptop-7, job 42, lease taken on db1', as much as the lease knows."""
    by = lease.get("by") or {}
    words = []
    if by.get("user") or by.get("controller"):
        words.append("run by %s on %s" % (by.get("user") or "?", by.get("controller") or "?"))
    if by.get("run_id"):
        words.append("job %s" % by["run_id"])
    words.append("lease taken on %s" % lease.get("host", "?"))
    return ", ".join(words)


# A holder that is alive beats every heartbeat_interval, but a step between two beats can take a while: only this
# many missed beats make a lease abandoned.
STALE_FLOOR_HEARTBEATS = 4


def lock(params, check_mode):
    floor = STALE_FLOOR_HEARTBEATS * params["heartbeat_interval"]
    if params["state"] == "acquired" and params["stale_after"] < floor:
        raise PgopsError("stale_after %s is below its floor of %g s (%d heartbeat intervals of %g s): a lock whose "
                         "holder is alive would be taken over. Give at least %g, or force=true to take a lock that "
                         "may still be in use. Nothing was changed" % (
                             params["stale_after"], floor, STALE_FLOOR_HEARTBEATS, params["heartbeat_interval"], floor))
    conn = connect(params)
    try:
        cur = conn.cursor()
        lease = lock_and_read(cur)
        now = time.time()
        mine = lease is not None and lease["owner"] == params["owner"]
        stale = lease is not None and now - last_beat(lease) > params["stale_after"]
        result = {"changed": False, "previous_holder": lease, "holder": lease,
                  "holder_text": describe_holder(lease) if lease else None}
        if params["state"] == "status":
            recorded = list(current_revisions(conn, params["version_table"], params["version_table_schema"]))
            record = record_of(lease, params["owner"])
            guard = read_catalog(cur, conn.info.dbname, [])[1]
            result.update(recorded_revisions=recorded, record=record, write_guard=guard,
                          progress=progress(record, recorded[0] if recorded else None),
                          undo=undo_plan(record, guard, (lease or {}).get("owner") if record else None))
            conn.rollback()
            return result
        if params["state"] == "acquired":
            if lease is not None and not mine and not stale and not params["force"]:
                raise PgopsError("deployment lock of %s is held by %s since %s (%s): wait for it to finish, or "
                                 "if that run is gone, release it with force=true" % (
                                     conn.info.dbname, lease["owner"], lease["since"], describe_holder(lease)))
            details = params["details"] if params["details"] is not None else (lease or {}).get("details")
            if mine and params["merge"] and params["details"] is not None:
                details = dict(lease.get("details") or {}, **params["details"])
            if mine and lease.get("details") == details:
                # Holding it already: only the heartbeat moves, which is bookkeeping, not a change.
                if not check_mode:
                    cur.execute(write_statement(conn.info.dbname, dict(lease, heartbeat_at=now)))
                    conn.commit()
                return result
            if mine:
                new = dict(lease, details=details, heartbeat_at=now)
            else:
                new = {"owner": params["owner"], "host": socket.gethostname(), "taken_at": now, "heartbeat_at": now,
                       "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}
                if params["details"] is not None:
                    new["details"] = params["details"]
                if params["identity"]:
                    new["by"] = params["identity"]
            statement = write_statement(conn.info.dbname, new)
            result.update(changed=True, holder=new)
        else:
            if lease is None:
                conn.rollback()
                return result
            if not mine and params["only_own"]:
                conn.rollback()
                return result
            if not mine and not params["force"]:
                raise PgopsError("deployment lock of %s is held by %s, not %s: release it with force=true only if "
                                 "that run is gone" % (conn.info.dbname, lease["owner"], params["owner"]))
            statement = write_statement(conn.info.dbname, None)
            result.update(changed=True, holder=None)
        statements = [statement]
        if lease is not None and not mine:
            # Same transaction: the old run's write guard is never left with nobody who can end it.
            handed, result["write_guard"], result["write_guard_text"] = hand_over(
                cur, conn.info.dbname, lease["owner"], result["holder"]["owner"] if result["holder"] else None)
            statements.extend(handed)
        result["diff"] = {"before": {"deploy_lock": lease}, "after": {"deploy_lock": result["holder"]}}
        if check_mode:
            conn.rollback()
            return result
        for statement in statements:
            cur.execute(statement)
        conn.commit()
        if lease is not None and not mine:
            # Committed first: the old run's next fence check fails, so it cannot start a session after these.
            try:
                result["ended_sessions"] = terminate_leftover_sessions(conn)
            except PgopsError as error:
                raise PgopsError("the lock was taken from %s, but %s" % (lease["owner"], error)) from error
        return result
    finally:
        conn.close()


def main():
    argument_spec = connection_spec()
    argument_spec.update(
        state=dict(type="str", required=True, choices=["acquired", "released", "status"]),
        owner=dict(type="str"),
        details=dict(type="dict"),
        stale_after=dict(type="int", default=7200),
        heartbeat_interval=dict(type="float", default=30.0),
        identity=dict(type="dict"),
        force=dict(type="bool", default=False),
        merge=dict(type="bool", default=False),
        only_own=dict(type="bool", default=False),
        version_table=dict(type="str", default="alembic_version"),
        version_table_schema=dict(type="str"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_if=[("state", "acquired", ["owner"]), ("state", "released", ["owner"])])
    require_psycopg2(module)
    run_module(module, lock)


if __name__ == "__main__":
    main()
