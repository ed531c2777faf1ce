#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: server_config
short_description: Set PostgreSQL server settings with ALTER SYSTEM, add preload libraries, and say when a restart is due
version_added: 0.1.0
description:
  - Sets each of O(settings) with C(ALTER SYSTEM) when the configured value differs, then reloads the
    configuration.
  - Adds O(preload_libraries) to C(shared_preload_libraries), keeping the libraries already there.
  - Creates O(extensions) in O(login_db).
  - Never restarts the server. Settings that take effect only after a restart are returned in
    RV(restart_pending), and RV(restart_required) says whether a restart is due.
  - Needs a superuser (or, for the settings, the ALTER SYSTEM privilege of PostgreSQL 15 and later).
options:
  settings:
    description: Setting names and values, as you would write them in postgresql.conf (C(500ms), C(on)).
    type: dict
    default: {}
  preload_libraries:
    description: Libraries that must be in C(shared_preload_libraries).
    type: list
    elements: str
    default: []
  extensions:
    description: Extensions to create in O(login_db) if missing.
    type: list
    elements: str
    default: []
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
- name: Slow query log, I/O timing and pg_stat_statements
  intowork.pgops.server_config:
    settings:
      log_min_duration_statement: 500ms
      track_io_timing: "on"
    preload_libraries: [pg_stat_statements]
    extensions: [pg_stat_statements]
  register: monitoring_config

- name: Say a restart is due
  ansible.builtin.debug:
    msg: "restart needed for {{ monitoring_config.restart_pending | join(', ') }}"
  when: monitoring_config.restart_required
"""

RETURN = r"""
configured:
  description: The configured value of each managed setting after the task (predicted in check mode).
  returned: always
  type: dict
cluster:
  description:
    - The server's C(cluster_name) and major version, and C(debian_unit), the systemd unit that restarts this
      cluster alone on Debian and Ubuntu (C(postgresql@15-main)), when C(cluster_name) has Debian's
      C(<version>/<cluster>) form; null otherwise.
    - Also where the server is, as it says itself, for the tools that reach it on its host (pgBackRest) -
      C(port), C(data_directory) (null without the privilege to read it) and C(socket_directory) (the first of
      C(unix_socket_directories); null when there is none).
  returned: always
  type: dict
restart_pending:
  description: Settings whose configured value waits for a server restart.
  returned: always
  type: list
  elements: str
restart_required:
  description: Whether the server must restart for the configuration to take full effect.
  returned: always
  type: bool
extensions_created:
  description: Extensions created by this task.
  returned: always
  type: list
  elements: str
"""


from ansible.module_utils.basic import AnsibleModule

from ansible_collections.intowork.pgops.plugins.module_utils._connection import (
    PgopsError,
    connect,
    connection_spec,
    debian_unit,
    require_psycopg2,
    run_module,
    sql,
)

# What each setting is configured to: the last applicable line of the configuration files (ALTER SYSTEM's
# postgresql.auto.conf is read last), else the running value. Also whether it waits for a restart.
CONFIGURED = """
SELECT s.name, coalesce(f.setting, s.setting), s.context, s.pending_restart
  FROM pg_settings s
  LEFT JOIN LATERAL (SELECT setting FROM pg_file_settings f
                      WHERE f.name = s.name ORDER BY f.seqno DESC LIMIT 1) f ON true
 WHERE s.name = ANY(%s)
"""


# Settings that hold a list: ALTER SYSTEM takes their items as separate literals (one literal 'a,b' would
# be a single item named "a,b"), and their values compare item by item.
LIST_SETTINGS = ("shared_preload_libraries", "session_preload_libraries", "local_preload_libraries")


def libraries(value):
    return [item.strip().strip('"') for item in (value or "").split(",") if item.strip().strip('"')]


def canonical(name, value):
    return ",".join(libraries(value)) if name in LIST_SETTINGS else value


def value_sql(name, value):
    if name in LIST_SETTINGS:
        return sql.SQL(", ").join(sql.Literal(item) for item in libraries(value)) if libraries(value) else sql.Literal("")
    return sql.Literal(value)


def read(cur, names):
    cur.execute(CONFIGURED, (names,))
    return dict((name, {"value": value, "context": context, "pending": pending})
                for name, value, context, pending in cur.fetchall())


def configure(params, check_mode):
    conn = connect(params, autocommit=True)  # ALTER SYSTEM cannot run inside a transaction block
    try:
        cur = conn.cursor()
        wanted = dict((name, str(value)) for name, value in params["settings"].items())
        if params["preload_libraries"]:
            wanted.pop("shared_preload_libraries", None)
        names = sorted(set(wanted) | ({"shared_preload_libraries"} if params["preload_libraries"] else set()))
        before = read(cur, names)
        unknown = [name for name in names if name not in before]
        if unknown:
            raise PgopsError("unknown setting(s) %s: check the names against pg_settings" % ", ".join(unknown))
        if params["preload_libraries"]:
            current = libraries(before["shared_preload_libraries"]["value"])
            missing = [lib for lib in params["preload_libraries"] if lib not in current]
            wanted["shared_preload_libraries"] = ",".join(current + missing)
        changes = dict((name, value) for name, value in wanted.items()
                       if canonical(name, before[name]["value"]) != canonical(name, value))
        cur.execute("SELECT current_setting('cluster_name'), current_setting('server_version_num')::int / 10000, "
                    "current_setting('port')::int, current_setting('unix_socket_directories'), "
                    # Hidden from pg_settings without the privilege, instead of an error.
                    "(SELECT setting FROM pg_catalog.pg_settings WHERE name = 'data_directory')")
        cluster_name, major, port, sockets, data_directory = cur.fetchone()
        cur.execute("SELECT extname FROM pg_extension WHERE extname = ANY(%s)", (params["extensions"],))
        present = set(row[0] for row in cur.fetchall())
        create = [ext for ext in params["extensions"] if ext not in present]
        if not check_mode:
            for name, value in sorted(changes.items()):
                cur.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), value_sql(name, value)))
            if changes:
                cur.execute("SELECT pg_reload_conf()")
            for ext in create:
                cur.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(ext)))
        after = read(cur, names) if changes and not check_mode else before
        configured = dict((name, canonical(name, wanted.get(name, before[name]["value"]))) for name in names)
        # Postmaster settings changed now wait for a restart; pg_reload_conf has not been seen yet by
        # pg_settings in this session for the others, so predict from the context as well.
        pending = sorted(name for name in names if after[name]["pending"] or
                         (name in changes and before[name]["context"] == "postmaster"))
    finally:
        conn.close()
    return {
        "changed": bool(changes or create),
        "cluster": {"name": cluster_name, "major_version": major,
                    "debian_unit": debian_unit(cluster_name),
                    "port": port, "data_directory": data_directory,
                    "socket_directory": next((item.strip() for item in (sockets or "").split(",") if item.strip()),
                                             None)},
        "configured": configured,
        "restart_pending": pending,
        "restart_required": bool(pending),
        "extensions_created": create,
        "diff": {"before": dict((name, canonical(name, before[name]["value"])) for name in names), "after": configured},
    }


def main():
    argument_spec = connection_spec()
    argument_spec.update(
        settings=dict(type="dict", default={}),
        preload_libraries=dict(type="list", elements="str", default=[]),
        extensions=dict(type="list", elements="str", default=[]),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    require_psycopg2(module)
    run_module(module, configure)


if __name__ == "__main__":
    main()
