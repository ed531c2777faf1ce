# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to intowork.pgops: not a public API, may change without notice.
"""Maintenance mode: application roles lose write access to one database, and get exactly it back.

The guard's own state lives in the database as the custom setting `pgops.write_guard` of that
database (pg_db_role_setting): no table is added to the application's schema, and any later run, or
rollback.yml alone, can read what the roles had before and restore it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import time

try:
    from ansible_collections.intowork.pgops.plugins.module_utils._connection import PgopsError, sql
except ImportError:
    # The backup program's copy on the database host (its dead-man switch gives writes back), where no
    # collection is installed.
    from psycopg2 import sql

    class PgopsError(Exception):
        """A failure worth one line."""

STATE_SETTING = "pgops.write_guard"
STRATEGIES = ["revoke_writes", "default_transaction_read_only", "connection_limit"]
# What revoke_writes takes away: on tables, views and foreign tables, and on sequences (nextval).
TABLE_WRITES = ("INSERT", "UPDATE", "DELETE", "TRUNCATE")
SEQUENCE_WRITES = ("USAGE", "UPDATE")
COLUMN_WRITES = ("INSERT", "UPDATE")
APPLICATION_RELATIONS = """
       c.relkind IN ('r', 'p', 'v', 'f', 'S')
   AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)'
"""

# The write privileges granted to the roles themselves, relation by relation: what revoke_writes takes
# away, and gives back exactly.
# Column grants too (INSERT and UPDATE of some columns): a table-level REVOKE also takes the column grants of
# the same privilege, so each is recorded on its own (its column last) and given back on its own.
WRITE_GRANTS = """
SELECT n.nspname, c.relname, CASE WHEN c.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, g.rolname,
       a.privilege_type, a.is_grantable, NULL::name
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) a
  JOIN pg_catalog.pg_roles g ON g.oid = a.grantee
 WHERE g.rolname = ANY(%(roles)s) AND""" + APPLICATION_RELATIONS + """
   AND a.privilege_type = ANY(CASE WHEN c.relkind = 'S' THEN %(sequence_writes)s ELSE %(table_writes)s END)
UNION ALL
SELECT n.nspname, c.relname, 'TABLE', g.rolname, a.privilege_type, a.is_grantable, att.attname
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_attribute att ON att.attrelid = c.oid AND att.attnum > 0 AND NOT att.attisdropped
 CROSS JOIN LATERAL pg_catalog.aclexplode(att.attacl) a
  JOIN pg_catalog.pg_roles g ON g.oid = a.grantee
 WHERE g.rolname = ANY(%(roles)s) AND""" + APPLICATION_RELATIONS + """
   AND c.relkind <> 'S' AND a.privilege_type = ANY(%(column_writes)s)
 ORDER BY 1, 2, 4, 5, 7 NULLS FIRST
"""

# An owner (or a member of the owner role) keeps every privilege whatever is revoked.
OWNED = """
SELECT r.rolname, pg_catalog.count(*), pg_catalog.min(pg_catalog.format('%%I.%%I', n.nspname, c.relname))
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_roles r ON r.rolname = ANY(%(roles)s) AND pg_catalog.pg_has_role(r.oid, c.relowner, 'MEMBER')
 WHERE""" + APPLICATION_RELATIONS + """
 GROUP BY r.rolname ORDER BY 1
"""

# After the revokes, in the same transaction: anything a role can still write, through PUBLIC, a role it
# belongs to, a grant by another grantor or a column grant.
STILL_WRITABLE = """
SELECT r.rolname, pg_catalog.format('%%I.%%I', n.nspname, c.relname)
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 CROSS JOIN pg_catalog.pg_roles r
 WHERE r.rolname = ANY(%(roles)s) AND""" + APPLICATION_RELATIONS + """
   AND CASE WHEN c.relkind = 'S' THEN pg_catalog.has_sequence_privilege(r.oid, c.oid, 'USAGE, UPDATE')
            ELSE pg_catalog.has_table_privilege(r.oid, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')
                 OR pg_catalog.has_any_column_privilege(r.oid, c.oid, 'INSERT, UPDATE') END
 ORDER BY 1, 2
"""

# SECURITY DEFINER routines the roles can run whose owner can write an application relation: they write with
# their owner's rights whatever the roles' own grants say (extensions' own routines left out).
DEFINER_ROUTINES = """
SELECT pn.nspname, p.proname, pg_catalog.oidvectortypes(p.proargtypes), pg_catalog.pg_get_userbyid(p.proowner),
       pg_catalog.array_agg(r.rolname::text ORDER BY r.rolname)
  FROM pg_catalog.pg_proc p
  JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
  JOIN pg_catalog.pg_roles r ON r.rolname = ANY(%(roles)s)
 WHERE p.prosecdef AND pn.nspname NOT IN ('pg_catalog', 'information_schema') AND pn.nspname !~ '^pg_(toast|temp)'
   AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                      AND d.objid = p.oid AND d.deptype = 'e')
   AND pg_catalog.has_function_privilege(r.oid, p.oid, 'EXECUTE')
   AND EXISTS (SELECT FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE""" + APPLICATION_RELATIONS + """
                  AND CASE WHEN c.relkind = 'S' THEN pg_catalog.has_sequence_privilege(p.proowner, c.oid, 'USAGE, UPDATE')
                           ELSE pg_catalog.has_table_privilege(p.proowner, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')
                                OR pg_catalog.has_any_column_privilege(p.proowner, c.oid, 'INSERT, UPDATE') END)
 GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3
"""

# The EXECUTE grants that let them run those routines: to PUBLIC (every routine's default) and to the roles.
ROUTINE_GRANTS = """
SELECT pn.nspname, p.proname, pg_catalog.oidvectortypes(p.proargtypes), coalesce(g.rolname, ''), a.is_grantable
  FROM pg_catalog.pg_proc p
  JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
 CROSS JOIN LATERAL pg_catalog.aclexplode(coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner))) a
  LEFT JOIN pg_catalog.pg_roles g ON g.oid = a.grantee
 WHERE (pn.nspname, p.proname, pg_catalog.oidvectortypes(p.proargtypes)) IN (
         SELECT * FROM unnest(%(schemas)s::text[], %(names)s::text[], %(arguments)s::text[]))
   AND a.privilege_type = 'EXECUTE' AND (a.grantee = 0 OR g.rolname = ANY(%(roles)s))
 ORDER BY 1, 2, 3, 4
"""

# One round trip: the roles, their per-database settings and connection limits, and the guard's state.
GUARD_CATALOG = """
SELECT
  (SELECT oid FROM pg_database WHERE datname = %(database)s) AS database_oid,
  (SELECT coalesce(json_object_agg(r.rolname, json_build_object(
            'connlimit', r.rolconnlimit,
            'superuser', r.rolsuper,
            'read_only', (SELECT substr(s.setting, length('default_transaction_read_only=') + 1)
                            FROM pg_db_role_setting d
                            CROSS JOIN unnest(d.setconfig) AS s(setting)
                           WHERE d.setrole = r.oid
                             AND d.setdatabase = (SELECT oid FROM pg_database WHERE datname = %(database)s)
                             AND s.setting LIKE 'default_transaction_read_only=%%'))), '{}'::json)
     FROM pg_roles r WHERE r.rolname = ANY(%(roles)s)) AS roles,
  (SELECT substr(s.setting, length(%(state_prefix)s) + 1)
     FROM pg_db_role_setting d
     CROSS JOIN unnest(d.setconfig) AS s(setting)
    WHERE d.setrole = 0 AND d.setdatabase = (SELECT oid FROM pg_database WHERE datname = %(database)s)
      AND s.setting LIKE %(state_like)s) AS state
"""

SESSIONS = """
SELECT pid, usename, state, xact_start IS NOT NULL AS in_transaction
  FROM pg_stat_activity
 WHERE datname = %(database)s AND usename = ANY(%(roles)s) AND pid <> pg_backend_pid()
"""


def read_catalog(cur, database, roles):
    cur.execute(GUARD_CATALOG, {"database": database, "roles": list(roles), "state_prefix": STATE_SETTING + "=",
                                "state_like": STATE_SETTING + "=%"})
    database_oid, found, state = cur.fetchone()
    if database_oid is None:
        raise PgopsError("database %r does not exist: check the database option" % database)
    unknown = sorted(set(roles) - set(found))
    if unknown:
        raise PgopsError("application role(s) %s do not exist: check the roles option" % ", ".join(unknown))
    superusers = sorted(role for role, info in found.items() if info["superuser"])
    if superusers:
        raise PgopsError("role(s) %s are superusers, which no guard can stop: give the application an ordinary role"
                         % ", ".join(superusers))
    return found, (json.loads(state) if state else None)


def record_statement(database, state):
    """The statement that records the guard's state in the database."""
    return sql.SQL("ALTER DATABASE {} SET {} = {}").format(
        sql.Identifier(database), sql.SQL(STATE_SETTING), sql.Literal(json.dumps(state, sort_keys=True)))


def describe(state):
    """'writes off for app_web, app_worker since 2026-...Z (revoke_writes), under the write guard of deploy-1'."""
    return "writes off for %s since %s (%s), under the write guard of %s" % (
        ", ".join(state["roles"]), state.get("since", "?"), state["strategy"], state.get("owner") or "nobody")


def hand_over(cur, database, old_owner, new_owner):
    """When the lock of `old_owner` passes to `new_owner`: its write guard passes with it, so the new holder
    (and the dead-man switch, which gives back only the lock holder's guard) can end it. Returns
    (statements, guard after, words); a guard of someone else is left as it is and named."""
    state = read_catalog(cur, database, [])[1]
    if state is None:
        return [], None, None
    if state.get("owner") != old_owner or old_owner is None:
        return [], state, "%s; this lock does not end it" % describe(state)
    handed = dict(state, owner=new_owner, taken_over_from=old_owner)
    if new_owner is None:
        return [], state, "%s, whose lock was released: writes stay off until state=read_write" % describe(state)
    return [record_statement(database, handed)], handed, "%s, now %s's" % (describe(state), new_owner)


def plan(database, roles, found, state, wanted, strategy, owner=None, grants=None, routines=None):
    """(statements, new_state): what to run to reach `wanted`, and the state to record (None: clear it).

    For revoke_writes, `grants` are the roles' write grants (read_only), or the (schema, relation) pairs that
    exist now (read_write); `routines` likewise the EXECUTE grants on SECURITY DEFINER routines to take away
    (read_only), or the (schema, routine, argument types) that exist now (read_write).
    """
    statements = []
    if wanted == "read_only":
        if state is not None:
            if state["strategy"] != strategy or sorted(state["roles"]) != sorted(roles):
                raise PgopsError("writes are already off with strategy %s for roles %s: set state=read_write first"
                                 % (state["strategy"], ", ".join(sorted(state["roles"]))))
            return [], state
        if strategy == "revoke_writes":
            statements.extend(grant_statement("REVOKE", grant) for grant in grants)
            previous = {"grants": grants}
            if routines:
                statements.extend(routine_statement("REVOKE", grant) for grant in routines)
                previous["routines"] = routines
        else:
            previous = dict((role, {"read_only": found[role]["read_only"], "connlimit": found[role]["connlimit"]})
                            for role in roles)
            for role in roles:
                if strategy == "default_transaction_read_only":
                    statements.append(sql.SQL("ALTER ROLE {} IN DATABASE {} SET default_transaction_read_only = on")
                                      .format(sql.Identifier(role), sql.Identifier(database)))
                else:
                    statements.append(sql.SQL("ALTER ROLE {} CONNECTION LIMIT 0").format(sql.Identifier(role)))
        new_state = {"strategy": strategy, "roles": list(roles), "previous": previous, "owner": owner,
                     "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        statements.append(record_statement(database, new_state))
        return statements, new_state
    if state is None:
        return [], None
    if state["strategy"] == "revoke_writes":
        # Exactly the recorded grants, on the relations that still exist (a migration may have dropped some).
        statements.extend(grant_statement("GRANT", grant) for grant in state["previous"]["grants"]
                          if grant_target(grant) in grants)
        statements.extend(routine_statement("GRANT", grant) for grant in state["previous"].get("routines", [])
                          if tuple(grant[:3]) in (routines or ()))
    else:
        for role, before in sorted(state["previous"].items()):
            if state["strategy"] == "default_transaction_read_only":
                if before["read_only"] is None:
                    statements.append(sql.SQL("ALTER ROLE {} IN DATABASE {} RESET default_transaction_read_only")
                                      .format(sql.Identifier(role), sql.Identifier(database)))
                else:
                    statements.append(sql.SQL("ALTER ROLE {} IN DATABASE {} SET default_transaction_read_only = {}")
                                      .format(sql.Identifier(role), sql.Identifier(database),
                                              sql.Literal(before["read_only"])))
            else:
                statements.append(sql.SQL("ALTER ROLE {} CONNECTION LIMIT {}").format(
                    sql.Identifier(role), sql.Literal(int(before["connlimit"]))))
    statements.append(sql.SQL("ALTER DATABASE {} RESET {}").format(sql.Identifier(database), sql.SQL(STATE_SETTING)))
    return statements, None


def writes_back(cur, database):
    """(statements, guard): what gives the roles of the guard recorded in `database` exactly their writes
    back, as state=read_write does; ([], None) when writes are not off."""
    state = read_catalog(cur, database, [])[1]
    if state is None:
        return [], None
    found = read_catalog(cur, database, state["roles"])[0]
    grants, routines = still_existing(cur, state)
    return plan(database, state["roles"], found, state, "read_write", state["strategy"], grants=grants,
                routines=routines)[0], state


def still_existing(cur, state):
    """(relations, routines) of a revoke_writes guard's record that still exist, for plan() to give back only
    those; (None, None) for the other strategies."""
    if state["strategy"] != "revoke_writes":
        return None, None
    return (existing_relations(cur, state["previous"]["grants"]),
            existing_routines(cur, state["previous"].get("routines", [])))


def drain_sessions(cur, database, roles, grace_seconds, poll=0.2):
    """Wait up to grace_seconds for the roles' open transactions to end, then end their sessions.

    Sessions opened before the guard keep their old settings, so every one of them goes; the wait only
    lets in-flight transactions commit instead of failing. Returns (waited_seconds, terminated pids).
    """
    started = time.time()
    while True:
        cur.execute(SESSIONS, {"database": database, "roles": list(roles)})
        sessions = cur.fetchall()
        busy = [row for row in sessions if row[3]]
        if not busy or time.time() - started >= grace_seconds:
            break
        time.sleep(poll)
    terminated = []
    for pid, _user, _state, _in_transaction in sessions:
        cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
        if cur.fetchone()[0]:
            terminated.append(pid)
    return round(time.time() - started, 3), terminated


def grant_statement(verb, grant):
    """GRANT or REVOKE of one recorded privilege: [schema, relation, TABLE|SEQUENCE, role, privilege, grantable],
    with a seventh item, the column, for a column grant."""
    schema, relation, kind, role, privilege, grantable = grant[:6]
    if verb == "REVOKE":
        template = "REVOKE {} ON {} {} FROM {}"
    else:
        template = "GRANT {} ON {} {} TO {}" + (" WITH GRANT OPTION" if grantable else "")
    what = sql.SQL(privilege)
    if len(grant) > 6:
        what = sql.SQL("{} ({})").format(what, sql.Identifier(grant[6]))
    return sql.SQL(template).format(what, sql.SQL(kind), sql.Identifier(schema, relation), sql.Identifier(role))


def write_grants(cur, roles):
    """The roles' own write grants, refusing roles that own application relations."""
    cur.execute(OWNED, {"roles": list(roles)})
    owners = cur.fetchall()
    if owners:
        raise PgopsError("role(s) %s own application relations (%s): an owner keeps every privilege whatever is "
                         "revoked, so strategy revoke_writes cannot guard them; give the tables to the deploy role "
                         "(ALTER TABLE ... OWNER TO), or use strategy connection_limit, which keeps the role out" % (
                             ", ".join(row[0] for row in owners),
                             ", ".join("%s: %d, e.g. %s" % row for row in owners)))
    cur.execute(WRITE_GRANTS, {"roles": list(roles), "table_writes": list(TABLE_WRITES),
                               "sequence_writes": list(SEQUENCE_WRITES), "column_writes": list(COLUMN_WRITES)})
    # A relation's grant keeps the six items guards have always recorded; a column grant adds its column.
    return [list(row[:6]) if row[6] is None else list(row) for row in cur.fetchall()]


def grant_target(grant):
    """What a recorded grant is on: (schema, relation), or (schema, relation, column) for a column grant."""
    return tuple(grant[:2]) if len(grant) < 7 else (grant[0], grant[1], grant[6])


def existing_relations(cur, grants):
    """The grant_target()s of `grants` that still exist (a migration may have dropped a table or a column)."""
    cur.execute("SELECT g.s, g.r, g.c FROM unnest(%s::text[], %s::text[], %s::text[]) AS g(s, r, c) "
                "WHERE pg_catalog.to_regclass(pg_catalog.format('%%I.%%I', g.s, g.r)) IS NOT NULL "
                "  AND (g.c IS NULL OR EXISTS (SELECT FROM pg_catalog.pg_attribute a WHERE a.attrelid = "
                "       pg_catalog.to_regclass(pg_catalog.format('%%I.%%I', g.s, g.r)) AND a.attname = g.c "
                "       AND a.attnum > 0 AND NOT a.attisdropped))",
                ([g[0] for g in grants], [g[1] for g in grants], [g[6] if len(g) > 6 else None for g in grants]))
    return set((schema, relation) if column is None else (schema, relation, column)
               for schema, relation, column in cur.fetchall())


def definer_routines(cur, roles):
    """[schema, routine, argument types, owner, [roles that can run it]] for each SECURITY DEFINER routine that
    lets the roles write through its owner's rights."""
    cur.execute(DEFINER_ROUTINES, {"roles": list(roles)})
    return [list(row) for row in cur.fetchall()]


def describe_routine(routine):
    """'public.add_job(text, integer) (owned by app_owner)'."""
    return "%s.%s(%s) (owned by %s)" % tuple(routine[:4])


def routine_grants(cur, roles, routines):
    """The EXECUTE grants (to PUBLIC, given as '', and to the roles) on `routines`: what definer_routines=revoke
    takes away for the guard's window, [schema, routine, argument types, grantee, grantable]."""
    cur.execute(ROUTINE_GRANTS, {"roles": list(roles), "schemas": [r[0] for r in routines],
                                 "names": [r[1] for r in routines], "arguments": [r[2] for r in routines]})
    return [list(row) for row in cur.fetchall()]


def routine_statement(verb, grant):
    """GRANT or REVOKE EXECUTE of one recorded routine grant."""
    schema, routine, arguments, grantee, grantable = grant
    # The argument types as the server formatted them (format_type quotes what needs it): they identify the
    # routine among its overloads.
    target = sql.SQL("{}({})").format(sql.Identifier(schema, routine), sql.SQL(arguments))
    who = sql.SQL("PUBLIC") if grantee == "" else sql.Identifier(grantee)
    if verb == "REVOKE":
        return sql.SQL("REVOKE EXECUTE ON ROUTINE {} FROM {}").format(target, who)
    return sql.SQL("GRANT EXECUTE ON ROUTINE {} TO {}" + (" WITH GRANT OPTION" if grantable else "")).format(target, who)


def existing_routines(cur, grants):
    """The (schema, routine, argument types) of `grants` that still exist (a migration may have dropped one)."""
    cur.execute("SELECT g.s, g.r, g.a FROM unnest(%s::text[], %s::text[], %s::text[]) AS g(s, r, a) "
                "WHERE EXISTS (SELECT FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace"
                "              WHERE pn.nspname = g.s AND p.proname = g.r AND pg_catalog.oidvectortypes(p.proargtypes) = g.a)",
                ([g[0] for g in grants], [g[1] for g in grants], [g[2] for g in grants]))
    return set(cur.fetchall())


def still_writable(cur, roles):
    """(role, relation) pairs the roles can still write; run after the revokes, before they commit."""
    cur.execute(STILL_WRITABLE, {"roles": list(roles)})
    return cur.fetchall()
