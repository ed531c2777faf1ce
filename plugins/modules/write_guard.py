#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: write_guard
short_description: Turn writes off and on for an application's roles in one PostgreSQL database
version_added: 0.1.0
description:
  - Maintenance mode for a deployment. With O(state=read_only) the application roles can no longer write
    to O(login_db), the database the module connects to; with O(state=read_write) they get back exactly the settings they had before.
  - Strategy V(revoke_writes) revokes the roles' own INSERT, UPDATE, DELETE and TRUNCATE grants on every table,
    view and foreign table, their INSERT and UPDATE grants on single columns, and USAGE and UPDATE on every
    sequence, of O(login_db) outside the system schemas, records them, and grants exactly those back afterwards
    (those on a relation or column a migration dropped meanwhile are left out). Before committing it proves from the catalog
    (C(has_table_privilege), column and sequence privileges) that no write privilege is left through any path
    (PUBLIC, a role they belong to, another grantor, a column grant), and otherwise changes nothing and says
    which. The application cannot undo it from its own sessions. Roles that own (or belong to the owner of) an
    application relation are refused, since an owner keeps every privilege. A C(SECURITY DEFINER) routine the
    roles can run, whose owner can write an application relation, writes with its owner's rights; the module
    names each in RV(definer_routines), and with O(definer_routines=revoke) takes EXECUTE away (from PUBLIC
    and the roles) for its window and gives exactly that back. It does not stop temporary tables or large
    objects. The role running the module must be able to grant and revoke them (the tables' and routines'
    owner).
  - Strategy V(default_transaction_read_only) sets C(ALTER ROLE ... IN DATABASE ... SET default_transaction_read_only = on)
    for each role, so the application can still read. It only changes a default, and a session of the role can
    turn it off again (C(SET default_transaction_read_only = off), C(BEGIN READ WRITE), C(PGOPTIONS)), and even
    C(ALTER ROLE) its own setting away. Strategy V(connection_limit) sets C(CONNECTION LIMIT 0) on each role
    (cluster-wide, so in every database), so it cannot even connect.
  - Sessions opened before the change keep their old settings, so after letting open transactions finish for
    up to O(grace_period) seconds the module ends every session of those roles in O(login_db).
  - The previous settings are kept in the database itself (the custom setting C(pgops.write_guard) of
    O(login_db)), so a later run, from any machine, restores them; no table is added to the schema.
  - With O(probe_user), the module proves the effect with a new connection as that role; a write (a
    temporary table, rolled back) must fail after O(state=read_only) and succeed after O(state=read_write).
  - Roles that are not named, such as the migration role, keep working.
options:
  roles:
    description:
      - The application's login roles. Superusers are refused, since no guard can stop them.
      - Required unless O(state=status).
    type: list
    elements: str
  state:
    description:
      - V(read_only) turns writes off; V(read_write) restores what was there before.
      - V(status) only reads the recorded guard (RV(guard)), for example to find out, after a failure, whether
        this run's guard is still on.
    type: str
    choices: [read_only, read_write, status]
    required: true
  owner:
    description:
      - Who turns writes off, for example the deployment id; kept in the recorded guard, so that a clean-up
        path can tell its own guard from someone else's.
    type: str
  only_own:
    description:
      - With O(state=read_write), end the guard only when O(owner) recorded it (decided from the guard's record
        as the module reads it, not from an earlier read); a guard of another run, or none, is left as it is and
        the task reports no change. For a clean-up path that must give back its own writes and nobody else's.
      - With O(lease_owner), a lock no longer held by it also leaves the guard as it is, with no failure
        (RV(left_as_is) says so); the run that took the lock over ends it.
    type: bool
    default: false
  lease_owner:
    description:
      - Change the guard only while this owner holds the deployment lock (M(intowork.pgops.deploy_lock)). The
        lease is checked under its lock in the same transaction as the guard's statements, so a run whose lock
        was taken over changes nothing, and a takeover cannot slip in between the check and the change.
    type: str
  strategy:
    description: How writes are turned off (see the description).
    type: str
    choices: [revoke_writes, default_transaction_read_only, connection_limit]
    default: revoke_writes
  grace_period:
    description: Seconds to let open transactions of the roles finish before their sessions are ended.
    type: int
    default: 10
  terminate_sessions:
    description: End the roles' existing sessions after the grace period (they would keep writing otherwise).
    type: bool
    default: true
  definer_routines:
    description:
      - What V(revoke_writes) does with the C(SECURITY DEFINER) routines the roles can run and whose owner can
        write an application relation (RV(definer_routines)).
      - V(allow) leaves them runnable, and names them; V(revoke) revokes EXECUTE from PUBLIC and from the roles
        on each for the guard's window (every role that is not the owner loses it meanwhile), proves from the
        catalog that the roles cannot run any of them any more, records the grants with the guard, and gives
        exactly those back with O(state=read_write).
    type: str
    choices: [allow, revoke]
    default: allow
  probe_user:
    description:
      - An application role to prove the effect with; no probe without it (V(revoke_writes) proves it from the
        catalog for the guarded roles anyway).
      - With V(revoke_writes), the catalog must show that this role too has no write privilege left; no password
        is needed. With the other strategies it logs in with O(probe_password) and tries a write.
    type: str
  probe_password:
    description: Password of O(probe_user), for the strategies that probe by logging in.
    type: str
extends_documentation_fragment:
  - intowork.pgops._connection
  - intowork.pgops._connection.ATTRIBUTES
attributes:
  check_mode:
    support: full
    details: Returns the statements it would run in RV(executed_queries) and changes nothing.
  diff_mode:
    support: full
  idempotent:
    support: full
author:
  - INTOWORK platform team (@intowork)
"""

EXAMPLES = r"""
- name: Writes off for the application during the migration
  intowork.pgops.write_guard:
    login_db: intowork
    roles: [intowork_app, intowork_worker]
    state: read_only
    grace_period: 15
    probe_user: intowork_app
    probe_password: "{{ vault_intowork_app_password }}"

- name: Writes back on, exactly as before
  intowork.pgops.write_guard:
    login_db: intowork
    roles: [intowork_app, intowork_worker]
    state: read_write
"""

RETURN = r"""
state:
  description: The guard's state after the task.
  returned: always
  type: str
  sample: read_only
guard:
  description: The recorded guard (strategy, roles, their previous settings, since when); null when writes are on.
  returned: always
  type: dict
executed_queries:
  description: Statements run (in check mode, that would run).
  returned: always
  type: list
  elements: str
terminated:
  description: Backend pids of the sessions ended.
  returned: always
  type: list
  elements: int
waited_seconds:
  description: How long the module waited for open transactions.
  returned: always
  type: float
probe:
  description: The probe's result, C(write_allowed) and C(detail); null without O(probe_user) or in check mode.
  returned: always
  type: dict
definer_routines:
  description:
    - The C(SECURITY DEFINER) routines the roles can run (with V(revoke), could run before the guard) whose
      owner can write an application relation, as C(schema.name(argument types) (owned by role)).
  returned: with O(strategy=revoke_writes) and O(state=read_only), and with O(state=status) when O(roles) are given
  type: list
  elements: str
  sample: ["public.add_job(text, integer) (owned by app_owner)"]
left_as_is:
  description: Why O(only_own) left the guard as it is (another run's guard or lock, or writes were not off).
  returned: when O(only_own) changed nothing
  type: str
  sample: "writes off for app_web since 2026-12-06T03:00:00Z (revoke_writes), under the write guard of deploy-1; only deploy-2's own guard ends here"
committed_at:
  description:
    - When the change committed, in seconds since the epoch on the database host's clock. That is the instant
      writes went off or came back, before sessions were ended and before the probe; a runbook measures its
      write-off window from one such instant to the next.
  returned: when the guard changed
  type: float
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.intowork.pgops.plugins.module_utils._connection import (
    PgopsError,
    connect,
    connection_spec,
    libpq_params,
    one_line,
    psycopg2,
    require_psycopg2,
    run_module,
)
from ansible_collections.intowork.pgops.plugins.module_utils._lease import LeaseLost, assert_holder, lock_settings
from ansible_collections.intowork.pgops.plugins.module_utils._write_guard import (
    STRATEGIES,
    definer_routines,
    describe,
    describe_routine,
    drain_sessions,
    plan,
    read_catalog,
    routine_grants,
    still_existing,
    still_writable,
    write_grants,
)


def probe_writes(params, database):
    """Can the probe role write? A temporary table in a rolled-back transaction touches no data."""
    kwargs = libpq_params(dict(params, login_user=params["probe_user"], login_password=params["probe_password"],
                               login_db=database, session_role=None))
    try:
        conn = psycopg2.connect(**kwargs)
    except psycopg2.OperationalError as error:
        return {"write_allowed": False, "detail": "cannot connect: %s" % one_line(error)}
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TEMPORARY TABLE pgops_write_probe (x int)")
        return {"write_allowed": True, "detail": "a write succeeded"}
    except psycopg2.Error as error:
        return {"write_allowed": False, "detail": one_line(error)}
    finally:
        conn.rollback()
        conn.close()


def guard(params, check_mode):
    database = params["login_db"]
    if not database:
        raise PgopsError("no database to guard: set login_db or PGDATABASE")
    roles = sorted(set(params["roles"] or []))
    if not roles and params["state"] != "status":
        raise PgopsError("roles is empty: name the application's login roles")
    conn = connect(params, autocommit=True)
    try:
        cur = conn.cursor()
        found, state = read_catalog(cur, database, roles)
        # What the guard is, unchanged: the status, and a clean-up's answer when the guard is not its own.
        unchanged = {"changed": False, "state": "read_only" if state else "read_write", "guard": state,
                     "executed_queries": [], "terminated": [], "waited_seconds": 0.0, "probe": None}
        if params["state"] == "status":
            status = dict(unchanged)
            if roles:
                status["definer_routines"] = [describe_routine(routine) for routine in definer_routines(cur, roles)]
            return status
        if params["only_own"] and params["state"] == "read_write" and (state or {}).get("owner") != params["owner"]:
            return dict(unchanged, left_as_is="%s; only %s's own guard ends here" % (describe(state), params["owner"])
                        if state else "writes were not off")
        strategy_in_force = state["strategy"] if state else params["strategy"]
        grants = routines = definers = None
        if strategy_in_force == "revoke_writes":
            if params["state"] == "read_only":
                definers = definer_routines(cur, roles)
            if params["state"] == "read_only" and state is None:
                grants = write_grants(cur, roles)
                if params["definer_routines"] == "revoke":
                    routines = routine_grants(cur, roles, definers)
            elif state:
                grants, routines = still_existing(cur, state)
        statements, new_state = plan(database, roles, found, state, params["state"], params["strategy"],
                                     params["owner"], grants, routines)
        result = {
            "changed": bool(statements), "state": params["state"], "guard": new_state,
            "executed_queries": [statement.as_string(conn) for statement in statements],
            "terminated": [], "waited_seconds": 0.0, "probe": None,
            "diff": {"before": {"write_guard": state}, "after": {"write_guard": new_state}},
        }
        if definers is not None:
            result["definer_routines"] = [describe_routine(routine) for routine in definers]
        if check_mode:
            return result
        # The role changes and the record of them commit together: a failure leaves nothing half-set.
        conn.autocommit = False
        lock_settings(cur)
        if params["lease_owner"]:
            try:
                assert_holder(cur, database, params["lease_owner"], "the write guard was left as it is")
            except LeaseLost as lost:
                conn.rollback()
                if params["only_own"] and params["state"] == "read_write":
                    # A clean-up whose lock was taken over: the guard is the new holder's to end.
                    return dict(result, changed=False, state="read_only", guard=state, executed_queries=[],
                                left_as_is=str(lost), diff={})
                raise
        for statement in statements:
            cur.execute(statement)
        if params["state"] == "read_only" and strategy_in_force == "revoke_writes":
            # Proof from the catalog, before anything commits: no write privilege left by any path, for the
            # guarded roles and for the probe role (which proves the same thing without its password).
            probe = params["probe_user"]
            left = still_writable(cur, roles + ([probe] if probe and probe not in roles else []))
            if left:
                conn.rollback()
                named = ", ".join("%s on %s" % row for row in left[:5]) + (
                    " and %d more" % (len(left) - 5) if len(left) > 5 else "")
                if probe and probe not in roles and any(role == probe for role, _relation in left):
                    raise PgopsError("write guard set read_only but %s still writes: %s (it is not one of the guarded "
                                     "roles %s); nothing was changed" % (probe, named, ", ".join(roles)))
                raise PgopsError("nothing was changed: after revoking their own grants the roles can still write "
                                 "(%s), through PUBLIC, a role they belong to, another grantor's grant or a column "
                                 "grant; revoke those, or use strategy connection_limit" % named)
            runnable = definer_routines(cur, roles) if params["definer_routines"] == "revoke" else []
            if runnable:
                conn.rollback()
                raise PgopsError("nothing was changed: after revoking EXECUTE the roles can still run SECURITY DEFINER "
                                 "routine(s) that write: %s, through a role they belong to or a grant this login "
                                 "cannot revoke; run the guard as the routines' owner, or revoke those by hand"
                                 % ", ".join("%s for %s" % (describe_routine(row), ", ".join(row[4]))
                                             for row in runnable))
            result["probe"] = {"write_allowed": False, "detail": "no write privilege left on any relation (catalog)"}
        conn.commit()
        if statements:
            result["committed_at"] = time.time()
        conn.autocommit = True
        if params["state"] == "read_only" and params["terminate_sessions"]:
            # Also on a re-run: a session that slipped in before the first run still writes.
            drained = drain_sessions(cur, database, roles, params["grace_period"])
            result["waited_seconds"], result["terminated"] = drained
            result["changed"] = result["changed"] or bool(result["terminated"])
    finally:
        conn.close()
    # A temporary table is no write to the application's data, and revoke_writes leaves TEMP alone: its
    # proof, for the probe role too, is the catalog check above.
    if params["probe_user"] and strategy_in_force != "revoke_writes":
        result["probe"] = probe_writes(params, database)
        expected = params["state"] == "read_write"
        if result["probe"]["write_allowed"] != expected:
            raise PgopsError("write guard set %s but %s %s: %s" % (
                params["state"], params["probe_user"], "still writes" if not expected else "cannot write",
                result["probe"]["detail"]))
    return result


def main():
    argument_spec = connection_spec()
    argument_spec.update(
        roles=dict(type="list", elements="str"),
        state=dict(type="str", required=True, choices=["read_only", "read_write", "status"]),
        owner=dict(type="str"),
        lease_owner=dict(type="str"),
        strategy=dict(type="str", default="revoke_writes", choices=STRATEGIES),
        grace_period=dict(type="int", default=10),
        terminate_sessions=dict(type="bool", default=True),
        definer_routines=dict(type="str", default="allow", choices=["allow", "revoke"]),
        probe_user=dict(type="str"),
        probe_password=dict(type="str", no_log=True),
        only_own=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_if=[("state", "read_only", ["roles"]), ("state", "read_write", ["roles"]),
                                        ("only_own", True, ["owner"])])
    require_psycopg2(module)
    run_module(module, guard)


if __name__ == "__main__":
    main()
