#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: backup_install
short_description: Install the backup program with the folders, config, password file and code it needs
version_added: 0.1.0
description:
  - Puts on the database host the backup program and what it (and cron) needs, in one task instead of one task
    per file (each a round trip to the host). That is the program folder with the program (O(program)) and the
    modules' connection, write guard and deployment lease code (the program imports them from beside it, so that
    it connects, reads the lease and ends a guard exactly as the modules do), the config folder with the
    database's config and password file, and the backup folder.
  - Each file is written only when its content, mode or owner differ, atomically (a temporary file in the same
    folder, then renamed), with its mode set before the rename, so no other account ever reads a secret.
  - A backup folder that is a symlink is refused unless O(allow_symlinked_dir), because making it 0700 and owned
    by O(owner) would apply to whatever the link points to.
  - Returns the account the module ran as, so that a caller knows whether the program must run as O(owner).
  - Used by the C(intowork.pgops.backup) role; every role that runs the program includes its install tasks.
options:
  program_dir:
    description: Folder of the program (created 0755).
    type: path
    required: true
  config_dir:
    description: Folder of the per-database configs (created 0755).
    type: path
    required: true
  config_file:
    description: The database's config file, written 0600 and owned by O(owner).
    type: path
    required: true
  config:
    description:
      - The config's content, written as JSON.
      - Its C(drill_folder), where given, is made too, owned by O(owner) (0700; 0711 with a C(drill_server_account),
        which the drill's server runs as and which passes through it).
    type: dict
    required: true
  backup_dir:
    description: Folder of the backups, made 0700 and owned by O(owner).
    type: path
    required: true
  allow_symlinked_dir:
    description: Accept a O(backup_dir) that is a symlink.
    type: bool
    default: false
  owner:
    description: The account that runs the program and owns its config, password file and backups.
    type: str
    required: true
  pgpass_file:
    description: The password file for unattended runs, written 0600 and owned by O(owner). Not written when empty.
    type: path
  pgpass:
    description: The password file's lines. Not logged.
    type: str
    default: ""
  python:
    description:
      - The interpreter the program runs with, as O(owner). Before anything is written it must start as that
        account and import psycopg2 (an interpreter in a folder only another account can reach fails here, in
        one line, instead of in the first backup). Checked when the module runs as root or as O(owner).
    type: path
  program:
    description:
      - The program's source, written 0755 as O(program_path) (the program itself is not secret; it holds no
        password). Not written when not given.
    type: str
  program_path:
    description: Where the program goes, in O(program_dir). Required with O(program).
    type: path
  login_host:
    description:
      - The database server the program connects to, written into the config as C(host) (over any C(host) in
        O(config)). If not set, the E(PGHOST) environment variable is used, else the local socket.
      - Resolved here as every module resolves it, because the program runs without the PG* variables of this
        session (from cron, or as O(owner)); a deployment's backup and its other steps then reach one server.
    type: str
    aliases: [host]
  login_unix_socket:
    description: A socket folder, used as the host instead of O(login_host).
    type: path
    aliases: [unix_socket]
  login_port:
    description: The server's port, written into the config as C(port). If not set, E(PGPORT) is used.
    type: int
    default: 5432
    aliases: [port]
  login_user:
    description:
      - The role the program logs in as, written into the config as C(user). If not set, E(PGUSER) is used,
        else none is written, so libpq's default applies (the account the program runs as, O(owner) from cron), as
        a socket's peer authentication expects.
    type: str
    aliases: [user]
extends_documentation_fragment:
  - intowork.pgops._connection.ATTRIBUTES
attributes:
  check_mode:
    support: full
    details: Says what it would write and writes nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
author:
  - INTOWORK platform team (@intowork)
"""

EXAMPLES = r"""
- name: Install what the backup program of appdb needs
  intowork.pgops.backup_install:
    program_dir: /usr/local/lib/pgops
    config_dir: /etc/pgops
    config_file: /etc/pgops/backup-appdb.json
    config: {database: appdb, backup_dir: /var/backups/pgops/appdb}
    backup_dir: /var/backups/pgops/appdb
    owner: postgres
    pgpass_file: /etc/pgops/pgpass-appdb
    pgpass: "*:5432:*:backup:{{ backup_password }}"
    program: "{{ lookup('ansible.builtin.file', 'pgops_backup.py', rstrip=false) }}"
    program_path: /usr/local/lib/pgops/pgops_backup.py
"""

RETURN = r"""
connected_as:
  description: The account the module ran as on the host.
  returned: always
  type: str
target:
  description: The server and role written into the config, as resolved here.
  returned: always
  type: dict
  sample: {host: 127.0.0.1, port: 5432, user: backup}
written:
  description: The paths created or changed (content, mode or owner), or that would be in check mode.
  returned: always
  type: list
  elements: str
"""

import inspect
import json
import os
import pwd
import subprocess

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.intowork.pgops.plugins.module_utils import (
    _connection,
    _deployment_record,
    _lease,
    _scratch_server,
    _write_guard,
)
from ansible_collections.intowork.pgops.plugins.module_utils._files import FileWriter

# The collection's code the program imports from beside it (it runs without the collection): the connection,
# for every command; the write guard, to give writes back, the lease, to read the deployment lock, and the
# deployment record, to say how far an abandoned plan got (the dead-man switch); the drills' own server.
BESIDE_PROGRAM = {"pgops_connection.py": _connection, "pgops_write_guard.py": _write_guard,
                  "pgops_lease.py": _lease, "pgops_deployment_record.py": _deployment_record,
                  "pgops_scratch_server.py": _scratch_server}


def owner_ids(owner):
    try:
        entry = pwd.getpwnam(owner)
    except KeyError:
        raise ValueError("owner %s is not an account on this host: create it, or set backup_os_user to the account "
                         "that runs the backups" % owner)
    return entry.pw_uid, entry.pw_gid


def python_problem(python, owner, ids):
    """Why `owner` cannot run `python` with psycopg2, or None (also when this account cannot tell)."""
    me = os.geteuid()
    if me != 0 and me != ids[0]:
        return None

    def become_owner():
        os.initgroups(owner, ids[1])
        os.setgid(ids[1])
        os.setuid(ids[0])

    try:
        result = subprocess.run(  # pylint: disable=subprocess-popen-preexec-fn  # the account's own groups
            [python, "-c", "import psycopg2"], capture_output=True, text=True, timeout=120, cwd="/",
            preexec_fn=become_owner if me == 0 and ids[0] != 0 else None, check=False)
    except (OSError, subprocess.SubprocessError) as error:
        reason = getattr(error, "strerror", None) or str(error)
    else:
        if result.returncode == 0:
            return None
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else "exit status %d" % result.returncode
    return ("the backup account %s cannot run %s with psycopg2 (%s): set pgops_backup_python to an interpreter that "
            "account can run and that has psycopg2 (ansible-playbook playbooks/host_python.yml installs one). Nothing "
            "was written" % (owner, python, " ".join(reason.split())))


def install(module):
    params = module.params
    ids = owner_ids(params["owner"])
    problem = python_problem(params["python"], params["owner"], ids) if params["python"] else None
    if problem:
        raise ValueError(problem)
    if os.path.islink(params["backup_dir"]) and not params["allow_symlinked_dir"]:
        raise ValueError("backup_dir %s is a symlink (to %s): the role would re-own and chmod its target. Point "
                         "backup_dir at the real folder, or set backup_allow_symlinked_dir=true to mean it. Nothing "
                         "was written" % (params["backup_dir"], os.path.realpath(params["backup_dir"])))
    installer = FileWriter(module.check_mode)
    installer.folder(params["program_dir"], 0o755)
    installer.folder(params["config_dir"], 0o755)
    for name, code in sorted(BESIDE_PROGRAM.items()):
        installer.file(os.path.join(params["program_dir"], name), inspect.getsource(code), 0o644)
    # A symlink that is allowed is followed: its target is made the backup folder.
    installer.folder(os.path.realpath(params["backup_dir"]), 0o700, ids)
    # The drills' folder: a drill's server runs in a folder of its own under it, as another account when the
    # program runs as root (which then needs to pass through).
    if params["config"].get("drill_folder"):
        installer.folder(params["config"]["drill_folder"], 0o711 if params["config"].get("drill_server_account")
                         else 0o700, ids)
    if params["pgpass_file"] and params["pgpass"]:
        installer.file(params["pgpass_file"], params["pgpass"], 0o600, ids)
    config = dict(params["config"], **_connection.resolved_target(params))
    installer.file(params["config_file"], json.dumps(config, indent=4, sort_keys=True) + "\n", 0o600, ids)
    # Last, so that cron never runs a new program with an old config.
    if params["program"]:
        installer.file(params["program_path"], params["program"], 0o755)
    return installer.written


def main():
    module = AnsibleModule(
        argument_spec=dict(
            program_dir=dict(type="path", required=True),
            config_dir=dict(type="path", required=True),
            config_file=dict(type="path", required=True),
            config=dict(type="dict", required=True),
            backup_dir=dict(type="path", required=True),
            allow_symlinked_dir=dict(type="bool", default=False),
            owner=dict(type="str", required=True),
            pgpass_file=dict(type="path"),
            pgpass=dict(type="str", default="", no_log=True),
            program=dict(type="str"),
            program_path=dict(type="path"),
            python=dict(type="path"),
            **dict((name, _connection.connection_spec()[name])
                   for name in ("login_host", "login_unix_socket", "login_port", "login_user"))
        ),
        required_by={"program": "program_path"},
        supports_check_mode=True,
    )
    connected_as = pwd.getpwuid(os.geteuid()).pw_name
    try:
        written = install(module)
    except (ValueError, OSError) as error:
        module.fail_json(msg=str(error) if isinstance(error, ValueError) else
                         "installing the backup program as %s failed: %s" % (connected_as, error),
                         connected_as=connected_as)
    module.exit_json(changed=bool(written), connected_as=connected_as, written=written,
                     target=_connection.resolved_target(module.params))


if __name__ == "__main__":
    main()
