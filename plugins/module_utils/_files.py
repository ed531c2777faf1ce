# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to intowork.pgops: not a public API, may change without notice.
"""Folders and files written only when they differ, atomically, with their mode (and owner) set before anyone can
read them: the one way the modules install programs, configs, password files and reports."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import stat
import tempfile

from ansible.module_utils.common.text.converters import to_bytes


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


class FileWriter:
    """Writes what differs; `written` lists it (what would be written, in check mode, where nothing is)."""

    def __init__(self, check_mode):
        self.check_mode = check_mode
        self.written = []

    def folder(self, path, mode, ids=None):
        if not needs_change(path, mode, ids[0] if ids else None, directory=True):
            return
        self.written.append(path)
        if self.check_mode:
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
        if self.check_mode:
            return
        # A temporary file in the same folder, its mode set before a byte is written, then renamed: a reader
        # sees the old file or the whole new one, and no other account ever reads a secret.
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
