# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to intowork.pgops: not a public API, may change without notice.
"""Run the installed backup program (roles/backup/files/pgops_backup.py) the one way every role does.

The password reaches the program in its own environment, never on a command line: Ansible's `environment:`
on a command task would put it on the `/bin/sh -c` line that every user of the host can read in ps.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import subprocess
import sys

from ansible_collections.intowork.pgops.plugins.module_utils._connection import PgopsError, config_params
from ansible_collections.intowork.pgops.plugins.module_utils._lease import LeaseKeeper

COMMANDS = ["backup", "restore", "drill", "drop-scratch", "job"]
# The program's own one-line reason on stderr: a failed run, a refused lock, a bad config.
REASON = re.compile(r"(FAILED|refused|pgops-backup):")
# Variables a caller's environment could carry into the program and point it elsewhere.
INHERITED_LIBPQ = ("PGPASSWORD", "PGPASSFILE", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGOPTIONS",
                   "PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY")


def program_argv(params):
    # A deployment's backup proves it dumps the database that deployment locked.
    proof = ["--deployment=" + params["lease_owner"]] if params.get("lease_owner") and params["command"] == "backup" \
        else []
    return [params["python"] or sys.executable, params["program"], params["command"],
            "--config=" + params["config"]] + proof + list(params["args"])


def program_environment(params):
    env = dict((key, value) for key, value in os.environ.items() if key not in INHERITED_LIBPQ)
    if params.get("login_password"):
        env["PGPASSWORD"] = params["login_password"]
    return env


def option(params, name):
    """The value of --name=VALUE among the command's arguments, or ''."""
    values = [arg.split("=", 1)[1] for arg in params["args"] if arg.startswith("--%s=" % name)]
    return values[-1] if values else ""


def config_target(params):
    """The server, database and role the program's config names, with the password given: the deployment lock is
    kept alive where the program works, never at a target resolved a second time. Empty when the config cannot be
    read; the program then fails with its own reason."""
    try:
        with open(params["config"]) as handle:
            config = json.load(handle)
    except (OSError, ValueError):
        return {}
    return dict(config_params(config), login_password=params.get("login_password"))


def failure_headline(params, target):
    """How an operator names what failed: the database, the backup or the job."""
    database = target.get("login_db") or os.path.basename(params["config"])
    return {
        "backup": "Backup of %s failed, nothing was published" % database,
        "restore": "Restore of %s failed" % (option(params, "backup") or "the newest backup"),
        "drill": "Restore drill of %s failed" % database,
        "job": "Maintenance job %s failed" % option(params, "job"),
        "drop-scratch": "Dropping the scratch database %s failed" % option(params, "scratch"),
    }[params["command"]]


def failure_reason(rc, stderr):
    lines = [line for line in stderr.splitlines() if line.strip()]
    reasons = [line for line in lines if REASON.search(line)]
    return (reasons or lines or ["exit status %d" % rc])[-1].strip()


def run_program(params, check_mode):
    argv = program_argv(params)
    if check_mode:
        return {"changed": True, "cmd": argv, "result": {}}
    if not os.path.isfile(params["program"]):
        raise PgopsError("backup program %s is not installed: run the intowork.pgops.backup role's install tasks "
                         "first" % params["program"])
    target = config_target(params)
    try:
        with LeaseKeeper(target, params["lease_owner"], params["lease_heartbeat_interval"]) as keeper:
            proc = subprocess.run(argv, env=program_environment(params), capture_output=True, text=True,
                                  check=False)
    except OSError as error:
        raise PgopsError("cannot start %s with %s: %s (check python)" % (params["program"], argv[0], error))
    if proc.returncode != 0:
        return {"failed": True, "changed": False, "rc": proc.returncode, "cmd": argv,
                "stderr_lines": proc.stderr.splitlines(),
                "msg": "%s: %s" % (failure_headline(params, target), failure_reason(proc.returncode, proc.stderr))}
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        raise PgopsError("%s printed no result (stdout %r): is %s the intowork.pgops backup program?" % (
            params["command"], proc.stdout[:200], params["program"]))
    if keeper.lost:
        raise PgopsError("the deployment lock was taken from %s while the %s ran; it finished (%s), but this run "
                         "no longer holds the database" % (params["lease_owner"], params["command"],
                                                           json.dumps(result, sort_keys=True)[:300]))
    changed = result.get("deleted", 1) > 0 if params["command"] == "job" else True
    return {"changed": changed, "rc": 0, "cmd": argv, "result": result,
            "stderr_lines": proc.stderr.splitlines()}
