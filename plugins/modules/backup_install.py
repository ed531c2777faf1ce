#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: backup_install
short_description: Install the folders, config, password file and collection code the backup program needs
version_added: 0.1.0
description:
  - Puts on the database host what the backup program (and cron) needs besides the program itself, in one task
    instead of one task per file (each a round trip to the host). That is the program folder with the write guard's
    and the deployment lease's code (the dead-man switch imports them from beside the program, so that it reads
    the lease and ends a guard exactly as the modules do), the config folder with the
    database's config and password file, and the backup folder. The role copies the program into the program
    folder.
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
    description: The config's content, written as JSON.
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
"""

RETURN = r"""
connected_as:
  description: The account the module ran as on the host.
  returned: always
  type: str
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
import stat
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes

from ansible_collections.intowork.pgops.plugins.module_utils import _lease, _write_guard

# The collection's code the dead-man switch imports from beside the program (which runs without the
# collection): the write guard, to give writes back, and the lease, to read the deployment lock.
BESIDE_PROGRAM = {"pgops_write_guard.py": _write_guard, "pgops_lease.py": _lease}


def owner_ids(owner):
    try:
        entry = pwd.getpwnam(owner)
    except KeyError:
        raise ValueError("owner %s is not an account on this host: create it, or set backup_os_user to the account "
                         "that runs the backups" % owner)
    return entry.pw_uid, entry.pw_gid


def needs_change(path, mode, uid, directory=False):
    """What differs at `path` from a folder or file of that mode and owner (uid None: any owner)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return True
    kind_ok = stat.S_ISDIR(info.st_mode) if directory else stat.S_ISREG(info.st_mode)
    return not kind_ok or stat.S_IMODE(info.st_mode) != mode or (uid is not None and info.st_uid != uid)


def read_bytes(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except (FileNotFoundError, IsADirectoryError):
        return None


class Installer:
    def __init__(self, module):
        self.module = module
        self.written = []

    def folder(self, path, mode, ids=None):
        if not needs_change(path, mode, ids[0] if ids else None, directory=True):
            return
        self.written.append(path)
        if self.module.check_mode:
            return
        if not os.path.isdir(path):
            os.makedirs(path, mode)
        os.chmod(path, mode)
        if ids:
            os.chown(path, *ids)

    def file(self, path, content, mode, ids=None):
        content = to_bytes(content)
        if read_bytes(path) == content and not needs_change(path, mode, ids[0] if ids else None):
            return
        self.written.append(path)
        if self.module.check_mode:
            return
        fd, temporary = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=os.path.dirname(path))
        try:
            os.fchmod(fd, mode)
            if ids:
                os.fchown(fd, *ids)
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
            os.replace(temporary, path)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise


def install(module):
    params = module.params
    ids = owner_ids(params["owner"])
    if os.path.islink(params["backup_dir"]) and not params["allow_symlinked_dir"]:
        raise ValueError("backup_dir %s is a symlink (to %s): the role would re-own and chmod its target. Point "
                         "backup_dir at the real folder, or set backup_allow_symlinked_dir=true to mean it. Nothing "
                         "was written" % (params["backup_dir"], os.path.realpath(params["backup_dir"])))
    installer = Installer(module)
    installer.folder(params["program_dir"], 0o755)
    installer.folder(params["config_dir"], 0o755)
    for name, code in sorted(BESIDE_PROGRAM.items()):
        installer.file(os.path.join(params["program_dir"], name), inspect.getsource(code), 0o644)
    # A symlink that is allowed is followed: its target is made the backup folder.
    installer.folder(os.path.realpath(params["backup_dir"]), 0o700, ids)
    if params["pgpass_file"] and params["pgpass"]:
        installer.file(params["pgpass_file"], params["pgpass"], 0o600, ids)
    installer.file(params["config_file"], json.dumps(params["config"], indent=4, sort_keys=True) + "\n", 0o600, ids)
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
        ),
        supports_check_mode=True,
    )
    connected_as = pwd.getpwuid(os.geteuid()).pw_name
    try:
        written = install(module)
    except (ValueError, OSError) as error:
        module.fail_json(msg=str(error) if isinstance(error, ValueError) else
                         "installing the backup program as %s failed: %s" % (connected_as, error),
                         connected_as=connected_as)
    module.exit_json(changed=bool(written), connected_as=connected_as, written=written)


if __name__ == "__main__":
    main()
