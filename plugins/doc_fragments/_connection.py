# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to intowork.pgops: not a public API, may change without notice.

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # The options of plugins/module_utils/_connection.py, documented once.
    DOCUMENTATION = r"""
options:
  login_host:
    description:
      - Host name or address of the PostgreSQL server.
      - A value starting with C(/) is taken as a Unix socket directory.
      - If not set, the E(PGHOST) environment variable is used, then libpq's default.
    type: str
    aliases: [host]
  login_port:
    description:
      - Port of the PostgreSQL server.
      - If not set, the E(PGPORT) environment variable is used.
    type: int
    default: 5432
    aliases: [port]
  login_unix_socket:
    description:
      - Directory of the server's Unix socket. Takes precedence over O(login_host).
    type: path
    aliases: [unix_socket]
  login_db:
    description:
      - Database to connect to.
      - If not set, the E(PGDATABASE) environment variable is used.
    type: str
    aliases: [db, database]
  login_user:
    description:
      - Role to log in as.
      - If not set, the E(PGUSER) environment variable is used.
    type: str
    aliases: [user]
  login_password:
    description:
      - Password of O(login_user). Never logged.
      - If not set, the E(PGPASSWORD) environment variable is used, then C(~/.pgpass).
    type: str
    aliases: [password]
  ssl_mode:
    description:
      - libpq sslmode for the connection.
      - If not set, the E(PGSSLMODE) environment variable is used.
    type: str
    default: prefer
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
  ca_cert:
    description:
      - File of the certificate authorities the server's certificate must be signed by (libpq C(sslrootcert)).
      - Checked with O(ssl_mode=verify-ca) or O(ssl_mode=verify-full).
      - If not set, the E(PGSSLROOTCERT) environment variable is used, then C(~/.postgresql/root.crt).
    type: str
    aliases: [ssl_rootcert]
  ssl_cert:
    description:
      - Client certificate presented to the server (libpq C(sslcert)), for C(hostssl ... cert) authentication.
      - If not set, the E(PGSSLCERT) environment variable is used, then C(~/.postgresql/postgresql.crt).
    type: path
  ssl_key:
    description:
      - Private key of O(ssl_cert) (libpq C(sslkey)); libpq refuses a key file others can read (mode 0600).
      - If not set, the E(PGSSLKEY) environment variable is used, then C(~/.postgresql/postgresql.key).
    type: path
  connect_timeout:
    description:
      - Seconds to wait for the server to answer before failing.
    type: int
    default: 10
  session_role:
    description:
      - Role to switch to with C(SET ROLE) after logging in; the work runs with its privileges.
    type: str
  heartbeat_lease:
    description:
      - Owner of a deployment lease (intowork.pgops.deploy_lock) to keep alive while this module runs, a heartbeat at
        its start and every O(heartbeat_lease_interval) seconds, so the dead-man switch only ever sees a lease go
        stale when no step of the run is working.
      - Nothing is written when that owner does not hold the lease, or when the login may not write it.
    type: str
  heartbeat_lease_interval:
    description:
      - Seconds between two heartbeats of O(heartbeat_lease).
    type: float
    default: 30
notes:
  - Every connection sets C(application_name) to C(pgops), so its sessions are easy to find in C(pg_stat_activity).
  - A failure to connect ends the task with one line naming the target (never the password) and the cause.
requirements:
  - psycopg2 (C(psycopg2-binary)) on the managed host's Python.
"""

    # Shared attributes, declared the same way in every module.
    ATTRIBUTES = r"""
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
  idempotent:
    description: When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
"""

    # Where Alembic records the revision: the modules that read it name the table the same way.
    VERSION_TABLE = r"""
options:
  version_table:
    description:
      - Table in which Alembic records the revision.
    type: str
    default: alembic_version
  version_table_schema:
    description:
      - Schema of O(version_table); the search path decides when not set.
    type: str
"""
