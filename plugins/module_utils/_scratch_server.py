# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to intowork.pgops: not a public API, may change without notice.
"""A drill's own PostgreSQL server: a folder with its data, socket, log and hba file, started on a port of its own
with no TCP and a socket only its account reaches, stopped and removed after. The PITR drill recovers into one;
the restore drill (the backup program, on the drill host) restores into one made by initdb. Neither touches the
server whose backup it proves. Plain Python and the standard library: the backup program loads it beside itself."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import pwd
import re
import shutil
import subprocess

try:
    from ansible_collections.intowork.pgops.plugins.module_utils._connection import PgopsError
except ImportError:
    # The backup program's copy on the drill host, where no collection is installed.
    class PgopsError(Exception):
        """A failure worth one line."""

# Written first into a drill's folder: only a folder that holds it is ever removed.
MARKER = "PGOPS_SCRATCH_SERVER"
# A drill's server: no TCP, a socket only its account reaches, one log the drill reads. Its data is thrown away
# after, so nothing is made durable on the way.
SERVER_SETTINGS = (
    ("listen_addresses", ""),
    ("unix_socket_permissions", "0700"),
    ("logging_collector", "off"),
    ("log_destination", "stderr"),
    ("lc_messages", "C"),
    ("ssl", "off"),
    ("external_pid_file", ""),
)
THROWAWAY_SETTINGS = (("fsync", "off"), ("synchronous_commit", "off"), ("full_page_writes", "off"),
                      ("archive_mode", "off"))


class Scratch(object):
    """A drill's folder: data/, socket/, tablespaces/, the server's log and its hba file."""

    def __init__(self, path, marker=MARKER):
        self.path = os.path.abspath(path)
        self.data = os.path.join(self.path, "data")
        self.socket = os.path.join(self.path, "socket")
        self.tablespaces = os.path.join(self.path, "tablespaces")
        self.log = os.path.join(self.path, "server.log")
        self.hba = os.path.join(self.path, "pg_hba.conf")
        self.ident = os.path.join(self.path, "pg_ident.conf")
        self.marker_name = marker
        self.marker = os.path.join(self.path, marker)

    def make(self, description, account=None):
        """The folder and its files; `account` (run as root) owns them, the one its server runs as."""
        os.makedirs(self.path, 0o700)
        with open(self.marker, "w") as marker:
            json.dump(description, marker)
        for folder in (self.data, self.socket, self.tablespaces):
            os.mkdir(folder, 0o700)
        # Only this account reaches the socket (the folder is 0700), so the socket alone is the gate.
        with open(self.hba, "w") as hba:
            hba.write("local all all trust\n")
        open(self.ident, "w").close()
        if account:
            entry = pwd.getpwnam(account)
            for path in (self.path, self.marker, self.data, self.socket, self.tablespaces, self.hba, self.ident):
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def ours(self):
        return os.path.isfile(self.marker)


def free_bytes(path):
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def tail(text, lines=3):
    kept = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return " / ".join(kept[-lines:]) or "no output"


def log_problems(log_file):
    try:
        with open(log_file) as log:
            lines = log.read().splitlines()
    except OSError:
        return "no server log"
    serious = [line for line in lines if re.search(r"\b(FATAL|PANIC|ERROR):", line)]
    return tail("\n".join(serious or lines))


def shell_quote(text):
    return "'" + text.replace("'", "'\"'\"'") + "'"


def server_options(scratch, port, settings=()):
    """pg_ctl's -o for a drill's server: its port and socket, its own hba file, and `settings`."""
    pairs = list(SERVER_SETTINGS) + list(settings) + [
        ("port", str(port)), ("unix_socket_directories", scratch.socket), ("hba_file", scratch.hba),
        ("ident_file", scratch.ident)]
    # pg_ctl hands -o to the shell: every value is quoted.
    return " ".join("-c %s" % shell_quote("%s=%s" % pair) for pair in pairs)


def as_account(argv, account=None):
    """argv run as `account` (the server refuses root; a program run as root starts it as that account)."""
    return ["runuser", "-u", account, "--"] + argv if account else argv


def pg_ctl(bin_dir, *arguments, **options):
    return subprocess.run(as_account([os.path.join(bin_dir, "pg_ctl")] + list(arguments), options.get("account")),
                          capture_output=True, text=True, check=False)


def stop(scratch, bin_dir, account=None):
    """Stop the drill's server if it runs: fast, then immediate (its data is thrown away next)."""
    if not os.path.exists(os.path.join(scratch.data, "postmaster.pid")):
        return False
    for mode in ("fast", "immediate"):
        if pg_ctl(bin_dir, "stop", "-D", scratch.data, "-m", mode, "-w", "-t", "60", account=account).returncode == 0:
            return True
    raise PgopsError("the drill's server in %s does not stop (pg_ctl stop -m immediate failed); stop it, then run "
                     "this again to remove the folder" % scratch.data)


def remove(scratch, bin_dir, account=None):
    """Stop and remove a drill's folder, and only one: one without the marker is refused."""
    if not os.path.lexists(scratch.path):
        return False
    if not scratch.ours():
        raise PgopsError("%s is not a drill's folder (no %s in it): nothing was removed" % (
            scratch.path, scratch.marker_name))
    stop(scratch, bin_dir, account)
    shutil.rmtree(scratch.path)
    return True


def create(scratch, bin_dir, port, description, account=None, timeout_seconds=60):
    """A new, empty cluster in the drill's folder (its superuser: the account it runs as), started; the user to
    connect as. The folder must not exist."""
    user = account or pwd.getpwuid(os.geteuid()).pw_name
    for name in ("initdb", "pg_ctl"):
        if not os.access(os.path.join(bin_dir, name), os.X_OK):
            raise PgopsError("no %s in %s: give the server programs' folder (pgops_pg_bin_dir)" % (name, bin_dir))
    socket_file = os.path.join(scratch.socket, ".s.PGSQL.%d" % port)
    if len(socket_file) > 100:
        raise PgopsError("the drill's socket %s is longer than a Unix socket path may be (100): choose a shorter "
                         "folder" % socket_file)
    scratch.make(description, account)
    made = subprocess.run(as_account([os.path.join(bin_dir, "initdb"), "-D", scratch.data, "-U", user,
                                      "--auth=trust", "--encoding=UTF8", "--no-sync"], account),
                          capture_output=True, text=True, check=False)
    if made.returncode != 0:
        raise PgopsError("initdb of the drill's server in %s failed: %s" % (scratch.data, tail(made.stderr)))
    began = pg_ctl(bin_dir, "start", "-D", scratch.data, "-l", scratch.log, "-w", "-t", str(int(timeout_seconds)),
                   "-o", server_options(scratch, port, THROWAWAY_SETTINGS), account=account)
    if began.returncode != 0:
        raise PgopsError("the drill's server did not start: %s; its log: %s" % (
            tail(began.stderr or began.stdout, 1), log_problems(scratch.log)))
    return user
