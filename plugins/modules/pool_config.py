#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: pool_config
short_description: Size an application's connection pools against the server, and set its roles' timeouts
version_added: 0.1.0
description:
  - Computes the peak number of connections the application can open, O(instances) x O(workers) x
    (O(pool_size) + O(max_overflow)), and compares it with what the server can give it, which is
    C(max_connections) minus C(superuser_reserved_connections), C(reserved_connections) (PostgreSQL 16 and
    later), the most connections other clients held over O(sample_seconds) and O(reserve_connections) kept
    for operators and jobs.
  - The peak must also fit under the C(CONNECTION LIMIT) of each of O(roles) that can log in, and under the
    database's own, less what other clients (not superusers) hold in it.
  - Fails with the sizing arithmetic, naming the limit the peak does not fit under, before anything is written.
  - With O(apply=true), sets C(statement_timeout) and C(idle_in_transaction_session_timeout) on each of
    O(roles) in O(login_db) (C(ALTER ROLE ... IN DATABASE ... SET)), idempotently, with diff and check mode.
  - Reports the live connections per user, application name and state (C(pg_stat_activity)), and the
    values of the application's environment file.
options:
  pool_size:
    description: Connections each process keeps open (SQLAlchemy C(pool_size)).
    type: int
    default: 20
  max_overflow:
    description: Extra connections each process may open at peak (SQLAlchemy C(max_overflow)).
    type: int
    default: 40
  pool_timeout:
    description: Seconds a request waits for a free connection before it fails.
    type: int
    default: 30
  pool_recycle:
    description: Seconds after which a connection is replaced.
    type: int
    default: 3600
  pre_ping:
    description: Test each connection before use.
    type: bool
    default: true
  database_timeout:
    description: Seconds the application waits to connect (its DATABASE_TIMEOUT).
    type: int
    default: 10
  statement_timeout:
    description: Milliseconds a statement of the application may run; set on the roles with O(apply).
    type: int
    default: 30000
  idle_in_transaction_session_timeout:
    description: Milliseconds a session may sit idle inside a transaction before the server ends it; 0 is off.
    type: int
    default: 60000
  instances:
    description: Application hosts (or containers) that hold pools.
    type: int
    default: 1
  workers:
    description: Processes per instance that each hold a pool (for example gunicorn workers).
    type: int
    default: 1
  reserve_connections:
    description: Connections kept free for operators, monitoring, backups and cron jobs.
    type: int
    default: 5
  sample_seconds:
    description:
      - Seconds over which other clients' connections are counted, about twice a second; the most seen counts
        (a cron job or a report holds connections for moments, never in a single look). 0 looks once.
    type: float
    default: 5
  roles:
    description:
      - The application's roles; their live connections are not counted as other clients.
      - The peak must fit under the C(CONNECTION LIMIT) of each that can log in (the application may log in as
        any of them).
    type: list
    elements: str
    default: []
  apply:
    description: Set the timeouts on O(roles) in O(login_db).
    type: bool
    default: false
extends_documentation_fragment:
  - intowork.pgops._connection
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
- name: Check two hosts of four workers fit, and set the application role's timeouts
  intowork.pgops.pool_config:
    instances: 2
    workers: 4
    pool_size: 20
    max_overflow: 40
    roles: [intowork_app]
    apply: true
  register: pool

- name: Show the arithmetic
  ansible.builtin.debug:
    msg: "{{ pool.demand.peak }} of {{ pool.capacity.available }} connections at peak"
"""

RETURN = r"""
demand:
  description: The application's connections, per process (C(per_process)), in total at rest (C(steady)) and at peak.
  returned: always
  type: dict
  sample: {per_process: 60, processes: 8, steady: 160, peak: 480}
capacity:
  description: >-
    The server's connection budget - max_connections, superuser_reserved, reserved, other_clients (the most
    held by others over O(sample_seconds), in C(samples) looks), reserve (O(reserve_connections)) - what is
    left for the application (C(available)), and C(summary), that sum in words, every term named; C(limits),
    each limit the peak must fit under (C(name), C(available)), the server's first.
  returned: always
  type: dict
headroom:
  description: The smallest of the C(limits) minus the peak; negative fails the task.
  returned: always
  type: int
usage:
  description: Live client connections per user, application name and state, across the server.
  returned: always
  type: list
  elements: dict
role_settings:
  description: The timeouts each role has in O(login_db) after the task (predicted in check mode).
  returned: always
  type: dict
environment:
  description: Values for the application's environment file.
  returned: always
  type: dict
  sample: {DATABASE_TIMEOUT: "10", STATEMENT_TIMEOUT: "30000", POOL_SIZE: "20", MAX_OVERFLOW: "40"}
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.intowork.pgops.plugins.module_utils._connection import (
    PgopsError,
    connect,
    connection_spec,
    require_psycopg2,
    run_module,
    sql,
)

TIMEOUTS = ("statement_timeout", "idle_in_transaction_session_timeout")

# One round trip: the budget, the roles' and the database's connection limits, the roles' settings in this database.
STATE = """
SELECT current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int,
       coalesce((SELECT setting::int FROM pg_settings WHERE name = 'reserved_connections'), 0),
       (SELECT coalesce(json_object_agg(r.rolname, json_build_object(
                 'setconfig', (SELECT s.setconfig FROM pg_db_role_setting s
                                 JOIN pg_database d ON d.oid = s.setdatabase
                                WHERE s.setrole = r.oid AND d.datname = current_database()),
                 'connection_limit', CASE WHEN r.rolcanlogin AND NOT r.rolsuper THEN r.rolconnlimit ELSE -1 END)),
                        '{}')
          FROM pg_roles r WHERE r.rolname = ANY(%(roles)s)),
       (SELECT datconnlimit FROM pg_database WHERE datname = current_database())
"""

# Live client connections per user, application and state, with whether they count against the database's
# own limit (in it, and not a superuser's).
USAGE = """
SELECT coalesce(json_agg(u ORDER BY u.connections DESC, u.usename, u.application_name), '[]')
  FROM (SELECT a.usename, a.application_name, coalesce(a.state, 'unknown') AS state,
               a.datname IS NOT DISTINCT FROM current_database() AND NOT coalesce(r.rolsuper, false) AS in_database,
               count(*) AS connections
          FROM pg_stat_activity a LEFT JOIN pg_roles r ON r.oid = a.usesysid
         WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()
         GROUP BY 1, 2, 3, 4) u
"""
SAMPLE_EVERY_SECONDS = 0.5


def validate(params):
    if params["sample_seconds"] < 0 or params["sample_seconds"] > 600:
        raise PgopsError("sample_seconds=%s is out of range: give 0 (one look) to 600" % params["sample_seconds"])
    for name, low in (("pool_size", 1), ("max_overflow", 0), ("pool_timeout", 1), ("pool_recycle", 1),
                      ("database_timeout", 1), ("statement_timeout", 0), ("idle_in_transaction_session_timeout", 0),
                      ("instances", 1), ("workers", 1), ("reserve_connections", 0)):
        if params[name] < low:
            raise PgopsError("%s=%d is out of range: it must be at least %d" % (name, params[name], low))
    if params["apply"] and not params["roles"]:
        raise PgopsError("apply=true needs roles: the application's roles to set the timeouts on")


def settings_of(setconfig):
    """{name: value} of the timeouts in a pg_db_role_setting.setconfig array."""
    found = {}
    for entry in setconfig or []:
        name, _sep, value = entry.partition("=")
        if name in TIMEOUTS:
            found[name] = value
    return found


def others(usage, roles):
    """(connections of other clients on the server, those of them the database's own limit counts)."""
    rows = [row for row in usage if row["usename"] not in roles]
    return sum(row["connections"] for row in rows), sum(row["connections"] for row in rows if row["in_database"])


def sample_others(cur, roles, seconds):
    """The usage of the first look, and the most connections other clients held at any look over `seconds`."""
    def look():
        cur.execute(USAGE)
        found = cur.fetchone()[0]
        # pg_stat_activity is read once per transaction: each look is a transaction of its own.
        cur.connection.commit()
        return found

    deadline = time.monotonic() + seconds
    usage = look()
    most_server, most_database = others(usage, roles)
    looks = 1
    while time.monotonic() + SAMPLE_EVERY_SECONDS <= deadline:
        time.sleep(SAMPLE_EVERY_SECONDS)
        server, database = others(look(), roles)
        most_server, most_database, looks = max(most_server, server), max(most_database, database), looks + 1
    return usage, most_server, most_database, looks


def size(params, check_mode):
    validate(params)
    conn = connect(params)
    try:
        cur = conn.cursor()
        cur.execute(STATE, {"roles": params["roles"]})
        max_connections, superuser_reserved, reserved, role_state, database_limit = cur.fetchone()
        conn.commit()
        role_config = dict((role, state["setconfig"]) for role, state in role_state.items())
        unknown = [role for role in params["roles"] if role not in role_config]
        if unknown:
            raise PgopsError("application role(s) %s do not exist on %s: create them, or fix roles" % (
                ", ".join(unknown), conn.info.host))
        per_process = params["pool_size"] + params["max_overflow"]
        processes = params["instances"] * params["workers"]
        demand = {"per_process": per_process, "processes": processes, "steady": processes * params["pool_size"],
                  "peak": processes * per_process}
        usage, others_on_server, others_in_database, looks = sample_others(cur, params["roles"], params["sample_seconds"])
        capacity = {"max_connections": max_connections, "superuser_reserved": superuser_reserved,
                    "reserved": reserved, "other_clients": others_on_server, "reserve": params["reserve_connections"],
                    "samples": looks}
        capacity["available"] = (max_connections - superuser_reserved - reserved - others_on_server
                                 - params["reserve_connections"])
        # Every term of the sum on screen, so the figures an operator reads add up.
        capacity["summary"] = (
            "%(available)d available (max_connections %(max_connections)d - superuser_reserved %(superuser_reserved)d "
            "- reserved %(reserved)d - %(other_clients)d held by other clients - %(reserve)d kept for operators)"
            % capacity)
        limits = [{"name": "the server has " + capacity["summary"], "available": capacity["available"],
                   "fix": "raise max_connections"}]
        for role in params["roles"]:
            if role_state[role]["connection_limit"] >= 0:
                limits.append({"name": "role %s has CONNECTION LIMIT %d" % (role, role_state[role]["connection_limit"]),
                               "available": role_state[role]["connection_limit"],
                               "fix": "raise it (ALTER ROLE %s CONNECTION LIMIT %d)" % (role, demand["peak"])})
        if database_limit >= 0:
            limits.append({
                "name": "database %s has CONNECTION LIMIT %d, %d of it held by other clients" % (
                    conn.info.dbname, database_limit, others_in_database),
                "available": database_limit - others_in_database,
                "fix": "raise it (ALTER DATABASE %s CONNECTION LIMIT %d)" % (
                    conn.info.dbname, demand["peak"] + others_in_database)})
        capacity["limits"] = [{"name": limit["name"], "available": limit["available"]} for limit in limits]
        headroom = min(limit["available"] for limit in limits) - demand["peak"]
        short = [limit for limit in limits if limit["available"] < demand["peak"]]
        if short:
            raise PgopsError(
                "pool oversubscribed: peak demand %(instances)d instance(s) x %(workers)d worker(s) x (pool_size %(pool)d "
                "+ max_overflow %(overflow)d) = %(peak)d connections, but %(limits)s: lower pool_size, max_overflow or "
                "workers, %(fixes)s, or put PgBouncer in front. Nothing was changed." % {
                    "instances": params["instances"], "workers": params["workers"], "pool": params["pool_size"],
                    "overflow": params["max_overflow"], "peak": demand["peak"],
                    "limits": "; ".join(limit["name"] for limit in short),
                    "fixes": ", ".join(limit["fix"] for limit in short)})
        wanted = {"statement_timeout": str(params["statement_timeout"]),
                  "idle_in_transaction_session_timeout": str(params["idle_in_transaction_session_timeout"])}
        before = dict((role, settings_of(role_config[role])) for role in params["roles"])
        after = dict((role, dict(before[role], **wanted)) if params["apply"] else (role, before[role])
                     for role in params["roles"])
        changed = after != before
        if changed and not check_mode:
            database = sql.Identifier(conn.info.dbname)
            for role in params["roles"]:
                for name, value in wanted.items():
                    if before[role].get(name) != value:
                        cur.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} SET {} = {}").format(
                            sql.Identifier(role), database, sql.Identifier(name), sql.Literal(value)))
            conn.commit()
        else:
            conn.rollback()
    finally:
        conn.close()
    return {
        "changed": changed,
        "demand": demand,
        "capacity": capacity,
        "headroom": headroom,
        "usage": usage,
        "role_settings": after,
        "diff": {"before": {"role_settings": before}, "after": {"role_settings": after}},
        "environment": {
            "DATABASE_TIMEOUT": str(params["database_timeout"]),
            "STATEMENT_TIMEOUT": str(params["statement_timeout"]),
            "POOL_SIZE": str(params["pool_size"]),
            "MAX_OVERFLOW": str(params["max_overflow"]),
            "POOL_TIMEOUT": str(params["pool_timeout"]),
            "POOL_RECYCLE": str(params["pool_recycle"]),
            "POOL_PRE_PING": "true" if params["pre_ping"] else "false",
        },
    }


def main():
    argument_spec = connection_spec()
    argument_spec.update(
        pool_size=dict(type="int", default=20),
        max_overflow=dict(type="int", default=40),
        pool_timeout=dict(type="int", default=30),
        pool_recycle=dict(type="int", default=3600),
        pre_ping=dict(type="bool", default=True),
        database_timeout=dict(type="int", default=10),
        statement_timeout=dict(type="int", default=30000),
        idle_in_transaction_session_timeout=dict(type="int", default=60000),
        instances=dict(type="int", default=1),
        workers=dict(type="int", default=1),
        reserve_connections=dict(type="int", default=5),
        sample_seconds=dict(type="float", default=5),
        roles=dict(type="list", elements="str", default=[]),
        apply=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    require_psycopg2(module)
    run_module(module, size)


if __name__ == "__main__":
    main()
