#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: backup_program
short_description: Run the intowork.pgops backup program on the database host
version_added: 0.1.0
description:
  - Runs the program that the M(intowork.pgops.backup) role installs (the same one cron runs) for one of its
    commands, and returns its JSON result, or fails with the program's own one-line reason.
  - The password reaches the program through its environment, never a command line; Ansible's C(environment)
    keyword on a command task would put it on the C(/bin/sh -c) line that every user of the host can read.
  - With O(lease_owner), the deployment lock is kept alive while the program runs, so a long backup or restore
    inside a deployment is never taken over as stale; if it was taken over anyway, the task fails. The lock is
    kept on the server and database the program's O(config) names (host, port, user, database, TLS), the ones
    the program works on; the M(intowork.pgops.backup_install) module resolved them once, as every module does.
options:
  program:
    description: Path of the installed program on the host.
    type: path
    required: true
  python:
    description: The interpreter that runs it (with psycopg2); default the one running this module.
    type: path
  config:
    description: The program's per-database config file (written by the backup role).
    type: path
    required: true
  command:
    description: What the program does.
    type: str
    required: true
    choices: [backup, restore, drill, drop-scratch, job]
  args:
    description: Further arguments of the command, for example C(--backup=PATH). Never a secret.
    type: list
    elements: str
    default: []
  lease_owner:
    description: The owner of the deployment lock (M(intowork.pgops.deploy_lock)) this run works under.
    type: str
  lease_heartbeat_interval:
    description: Seconds between two heartbeats of the lease while the program runs.
    type: float
    default: 30
  login_password:
    description:
      - The password of the config's user, given to the program in its environment (never on a command line).
      - If not set, the E(PGPASSWORD) environment variable is used, else the config's password file.
    type: str
    aliases: [password]
extends_documentation_fragment:
  - intowork.pgops._connection.ATTRIBUTES
attributes:
  check_mode:
    support: full
    details: Returns the command it would run and runs nothing.
  diff_mode:
    support: none
  idempotent:
    support: none
    details: Every backup is a new one; a maintenance job reports a change only when it deleted rows.
author:
  - INTOWORK platform team (@intowork)
"""

EXAMPLES = r"""
- name: Take a verified backup, keeping the deployment's lease alive meanwhile
  intowork.pgops.backup_program:
    program: /usr/local/lib/pgops/pgops_backup.py
    config: /etc/pgops/backup-appdb.json
    command: backup
    login_password: "{{ db_password }}"
    lease_owner: "{{ deployment_id }}"
  register: backup

- name: Restore a backup in place
  intowork.pgops.backup_program:
    program: /usr/local/lib/pgops/pgops_backup.py
    config: /etc/pgops/backup-appdb.json
    command: restore
    args: ["--backup=/var/backups/pgops/appdb/appdb-20260101T000000Z.dump", "--replace-schema=public"]
"""

RETURN = r"""
result:
  description: The program's JSON result (for a backup, its manifest).
  returned: success
  type: dict
rc:
  description: The program's exit status.
  returned: when it ran
  type: int
cmd:
  description: The command line (no secret is ever on it).
  returned: always
  type: list
  elements: str
stderr_lines:
  description: The program's log lines.
  returned: when it ran
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.intowork.pgops.plugins.module_utils._backup_program import COMMANDS, run_program
from ansible_collections.intowork.pgops.plugins.module_utils._connection import (
    connection_spec,
    require_psycopg2,
    run_module,
)


def main():
    argument_spec = dict(login_password=connection_spec()["login_password"])
    argument_spec.update(
        program=dict(type="path", required=True),
        python=dict(type="path"),
        config=dict(type="path", required=True),
        command=dict(type="str", required=True, choices=COMMANDS),
        args=dict(type="list", elements="str", default=[]),
        lease_owner=dict(type="str"),
        lease_heartbeat_interval=dict(type="float", default=30.0),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    require_psycopg2(module)
    run_module(module, run_program)


if __name__ == "__main__":
    main()
