# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to intowork.pgops: not a public API, may change without notice.
"""The connection options every module shares, and the one way modules (and the backup program) connect."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

try:
    from ansible.module_utils.basic import env_fallback, missing_required_lib
except ImportError:
    # The backup program's copy on the database host (pgops_connection.py), where Ansible is not installed: it
    # connects and builds libpq's environment, and never makes a module's options.
    env_fallback = missing_required_lib = None

try:
    import psycopg2
    import psycopg2.extensions
    from psycopg2 import sql
    HAS_PSYCOPG2 = True
except ImportError:
    psycopg2 = None
    sql = None
    HAS_PSYCOPG2 = False

APPLICATION_NAME = "pgops"
SSL_MODES = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]

CONNECTION_ARGUMENT_SPEC = dict(
    login_host=dict(type="str", aliases=["host"], fallback=(env_fallback, ["PGHOST"])),
    login_port=dict(type="int", aliases=["port"], default=5432, fallback=(env_fallback, ["PGPORT"])),
    login_unix_socket=dict(type="path", aliases=["unix_socket"]),
    login_db=dict(type="str", aliases=["db", "database"], fallback=(env_fallback, ["PGDATABASE"])),
    login_user=dict(type="str", aliases=["user"], fallback=(env_fallback, ["PGUSER"])),
    login_password=dict(type="str", aliases=["password"], no_log=True, fallback=(env_fallback, ["PGPASSWORD"])),
    ssl_mode=dict(type="str", default="prefer", choices=SSL_MODES, fallback=(env_fallback, ["PGSSLMODE"])),
    ca_cert=dict(type="str", aliases=["ssl_rootcert"], fallback=(env_fallback, ["PGSSLROOTCERT"])),
    ssl_cert=dict(type="path", fallback=(env_fallback, ["PGSSLCERT"])),
    ssl_key=dict(type="path", no_log=False, fallback=(env_fallback, ["PGSSLKEY"])),
    connect_timeout=dict(type="int", default=10),
    session_role=dict(type="str"),
    heartbeat_lease=dict(type="str"),
    heartbeat_lease_interval=dict(type="float", default=30.0),
)


# What a failed connection asks an operator to check, in the modules' option names; the backup program names
# its config's keys instead.
MODULE_SETTINGS = {
    "password": "login_password or PGPASSWORD",
    "database": "login_db or PGDATABASE",
    "user": "login_user or PGUSER",
    "address": "login_host, login_port or PGHOST/PGPORT",
    "tls": "ssl_mode, ca_cert, ssl_cert and ssl_key (PGSSLMODE, PGSSLROOTCERT, PGSSLCERT, PGSSLKEY)",
    "timeout": "connect_timeout",
}


class PgopsError(Exception):
    """A failure an operator can act on; its message is one line that names the cause and the fix."""


def connection_spec():
    """A fresh copy of the shared options, for a module's own spec to update()."""
    return dict((key, dict(value)) for key, value in CONNECTION_ARGUMENT_SPEC.items())


def target_label(params):
    """user@host:port/db, for messages; never includes the password."""
    host = params.get("login_unix_socket") or params.get("login_host") or "local socket"
    return "%s@%s:%s/%s" % (
        params.get("login_user") or "(default user)",
        host,
        params.get("login_port"),
        params.get("login_db") or "(default database)",
    )


# The backup program's config (roles/backup) names its target with these keys; each is the module option beside it.
CONFIG_OPTIONS = (("host", "login_host"), ("port", "login_port"), ("user", "login_user"), ("database", "login_db"),
                  ("ssl_mode", "ssl_mode"), ("ca_cert", "ca_cert"), ("ssl_cert", "ssl_cert"), ("ssl_key", "ssl_key"))


def config_params(config, database=None):
    """The target a backup program config names, as module options: the program and every module that acts
    beside it (the deployment lock's heartbeat, the drill's checks) connect to the same server from it."""
    params = dict((option, config.get(key) or None) for key, option in CONFIG_OPTIONS)
    if database:
        params["login_db"] = database
    return params


def resolved_target(params):
    """Host, port and user as the options and their PG* fallbacks resolved them here, for a config that programs
    started without those variables (cron, another account) read. With neither an option nor PGUSER the user
    stays empty: libpq's default, the account the program runs as, which a socket's peer authentication expects
    (cron runs it as the backup account)."""
    return {"host": params.get("login_unix_socket") or params.get("login_host") or "",
            "port": params.get("login_port") or 5432,
            "user": params.get("login_user") or ""}


def libpq_params(params):
    """Keyword arguments for psycopg2.connect, from module parameters."""
    kwargs = {
        "host": params.get("login_unix_socket") or params.get("login_host"),
        "port": params.get("login_port"),
        "dbname": params.get("login_db"),
        "user": params.get("login_user"),
        "password": params.get("login_password"),
        "sslmode": params.get("ssl_mode"),
        "sslrootcert": params.get("ca_cert"),
        "sslcert": params.get("ssl_cert"),
        "sslkey": params.get("ssl_key"),
        "connect_timeout": params.get("connect_timeout"),
        "application_name": params.get("application_name") or APPLICATION_NAME,
    }
    return dict((key, value) for key, value in kwargs.items() if value not in (None, ""))


def libpq_environment(params):
    """The same target as PG* variables, for child programs (pg_dump, alembic): no password on argv."""
    names = {"host": "PGHOST", "port": "PGPORT", "dbname": "PGDATABASE", "user": "PGUSER",
             "password": "PGPASSWORD", "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT",
             "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY", "connect_timeout": "PGCONNECT_TIMEOUT",
             "application_name": "PGAPPNAME"}
    env = dict((names[key], str(value)) for key, value in libpq_params(params).items())
    if params.get("session_role"):
        env["PGOPTIONS"] = "-c role=%s" % params["session_role"]
    return env


def explain_connect_error(params, error, settings=None):
    """Turn a libpq failure into one line: the target, the cause, what to check (named as in `settings`)."""
    settings = settings or MODULE_SETTINGS
    text = " ".join(str(error).split())
    lower = text.lower()
    if "password authentication failed" in lower or "no password supplied" in lower:
        hint = "check " + settings["password"]
    elif "does not exist" in lower and "database" in lower:
        hint = "check " + settings["database"]
    elif "role" in lower and "does not exist" in lower:
        hint = "check " + settings["user"]
    elif "connection refused" in lower or "no such file or directory" in lower or "could not translate" in lower:
        hint = "is the server running and listening there? check " + settings["address"]
    elif "ssl" in lower or "certificate" in lower or "hostssl" in lower:
        hint = "check " + settings["tls"]
    elif "timeout" in lower:
        hint = "the server did not answer within %s; check the network path" % settings["timeout"]
    else:
        hint = "check the connection options"
    return "cannot connect to %s: %s (%s)" % (target_label(params), text, hint)


def require_psycopg2(module):
    if not HAS_PSYCOPG2:
        module.fail_json(msg=missing_required_lib("psycopg2 (pip install psycopg2-binary)"))


def connect(params, autocommit=False, settings=None):
    """Open a connection with application_name pgops and the session role set; PgopsError on failure, whose hint
    names the settings as `settings` does (the modules' options by default)."""
    try:
        conn = psycopg2.connect(**libpq_params(params))
    except psycopg2.Error as error:
        raise PgopsError(explain_connect_error(params, error, settings))
    conn.autocommit = autocommit
    if params.get("session_role"):
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(params["session_role"])))
        except psycopg2.Error as error:
            conn.close()
            raise PgopsError("cannot SET ROLE %s on %s: %s (check session_role)" % (
                params["session_role"], target_label(params), " ".join(str(error).split())))
    return conn


def debian_unit(cluster_name):
    """The systemd unit of a Debian cluster (postgresql@15-main for cluster_name 15/main), or None."""
    found = re.match(r"^(\d+)/([A-Za-z0-9_.-]+)$", cluster_name or "")
    return "postgresql@%s-%s" % found.groups() if found else None


def one_line(error):
    """The first meaningful line of a database error."""
    return " ".join(str(error).split()) or error.__class__.__name__


def forget_arguments_on_disk():
    """Remove the file an async job was started from, once its arguments are read. Pipelining sends a module
    over stdin, but an async job always runs from a file on the host that holds every argument, passwords
    included, until the job ends (hours, for a large backup) or for good if the job is killed. Returns the
    file removed, or None (not an async job, or the file is not found)."""
    if "ANSIBLE_ASYNC_DIR" not in os.environ:
        return None
    try:
        # The async wrapper that started this module: python async_wrapper.py JID LIMIT /.../AnsiballZ_x.py ...
        with open("/proc/%d/cmdline" % os.getppid(), "rb") as cmdline:
            arguments = cmdline.read().decode("utf-8", "replace").split("\0")
    except OSError:
        return None
    for argument in arguments:
        name = os.path.basename(argument)
        if name.startswith("AnsiballZ_") and name.endswith(".py") and os.path.basename(
                os.path.dirname(argument)).startswith("ansible-tmp-"):
            try:
                os.unlink(argument)
            except OSError:
                return None
            return argument
    return None


def run_module(module, core):
    """Run core(params, check_mode) and exit; every failure becomes one line, never a traceback. With
    heartbeat_lease, that deployment lease is kept alive while the core runs."""
    # Imported here: _lease connects through this file.
    from ansible_collections.intowork.pgops.plugins.module_utils._lease import LeaseKeeper

    forget_arguments_on_disk()
    try:
        with LeaseKeeper(module.params, module.params.get("heartbeat_lease"),
                         module.params.get("heartbeat_lease_interval") or 30.0, beat_at_start=True):
            result = core(module.params, module.check_mode)
    except PgopsError as error:
        module.fail_json(msg=str(error))
    except psycopg2.Error as error:
        module.fail_json(msg="database error on %s: %s" % (target_label(module.params), one_line(error)))
    except Exception as error:  # pylint: disable=broad-except
        # Last resort: an operator gets one line, never a traceback.
        module.fail_json(msg="unexpected %s on %s: %s" % (type(error).__name__, target_label(module.params), one_line(error)))
    if not module._diff:
        result.pop("diff", None)
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)
