"""A "database host" reached over SSH, as production is, for the remote tests and the Molecule scenario.

    python tools/ssh_host.py up --name remote      # sshd on a loopback port, an account with key-only login and sudo
    python tools/ssh_host.py status --name remote --json
    python tools/ssh_host.py down --name remote    # stop it and remove everything it made

``up(name, also_allow=[account, ...], session_env={...})`` lets more local accounts in (the database server's,
for a backup host that reaches it over SSH as production's does): each gets a client key, an ssh config and one
``ssh`` wrapper for all (``state["ssh_command"]``, which picks the calling account's config), a login shell if
it had none and an unlocked password field ('*', never a password); every session gets ``session_env``.

The distribution's sshd runs with a configuration of its own under the sandbox folder (never the system's
/etc/ssh/sshd_config), listens on 127.0.0.1 only, and lets one account in: ``pgops-host``, by key only, with
passwordless sudo (as a deployment account on a database host has). The client key and the known_hosts line
are in the 0700 state folder. Needs root (sshd, the account and its sudoers entry).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import sandbox

HOST_USER = "pgops-host"
SUDOERS = Path("/etc/sudoers.d/pgops-host")
SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")
PREFIX = "sshhost-"

SSHD_CONFIG = """\
# sshd for one loopback test host; nothing else of the system's ssh setup applies.
Port {port}
ListenAddress 127.0.0.1
HostKey {root}/ssh_host_ed25519_key
PidFile {root}/sshd.pid
AuthorizedKeysFile {root}/authorized_keys
AllowUsers {user}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UsePAM no
# The state folder lives under /tmp (sticky, world-writable), which StrictModes refuses.
StrictModes no
PrintMotd no
Subsystem sftp internal-sftp
LogLevel ERROR
"""

CLIENT_CONFIG = """\
# The loopback host's ssh client settings for {user}: its own key, the host's key known.
Host *
  IdentityFile {key}
  IdentitiesOnly yes
  UserKnownHostsFile {known_hosts}
  StrictHostKeyChecking yes
  BatchMode yes
"""


class HostError(Exception):
    """A failure worth one line to the user."""


def state_dir(name: str) -> Path:
    return sandbox.state_dir(PREFIX + name)


def load_state(name: str) -> dict | None:
    path = state_dir(name) / "state.json"
    return json.loads(path.read_text()) if path.exists() else None


def listener_pid(state: dict) -> int | None:
    """The pid of the host's listening sshd while it runs, else None."""
    try:
        pid = int(Path(state["pid_file"]).read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid


def is_running(state: dict) -> bool:
    return listener_pid(state) is not None


def ensure_account() -> pwd.struct_passwd:
    """The host account: a login shell, a home of its own, passwordless sudo; no password at all."""
    try:
        account = pwd.getpwnam(HOST_USER)
    except KeyError:
        # '*': no password, yet not locked ('!'), which sshd without PAM would refuse even with a key.
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", "--password", "*", HOST_USER],
                       check=True, capture_output=True)
        account = pwd.getpwnam(HOST_USER)
    if not SUDOERS.exists():
        staging = SUDOERS.with_name(".pgops-host.tmp")
        staging.write_text(f"{HOST_USER} ALL=(ALL) NOPASSWD: ALL\n")
        staging.chmod(0o440)
        check = subprocess.run(["visudo", "-cf", str(staging)], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            staging.unlink()
            raise HostError(f"the sudoers entry was refused: {check.stdout.strip() or check.stderr.strip()}")
        staging.rename(SUDOERS)
    return account


def wait_for_port(port: int, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            if conn.recv(4).startswith(b"SSH"):
                return
        time.sleep(0.1)
    raise HostError(f"sshd did not answer on 127.0.0.1:{port}")


def start_sshd(root: Path, port: int) -> None:
    started = subprocess.run([str(SSHD), "-f", str(root / "sshd_config"), "-E", str(root / "sshd.log")],
                             capture_output=True, text=True, check=False)
    if started.returncode != 0:
        raise HostError(f"sshd did not start: {(started.stderr or started.stdout).strip()}")
    wait_for_port(port)


def parent_pid(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[1])


def sessions(state: dict) -> list[int]:
    """Pids of the sshd processes serving this host's sessions (descendants of its listener, not the listener)."""
    listener = listener_pid(state)
    if listener is None:
        return []
    found = []
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if not handle.read().startswith(b"sshd: "):
                    continue
            ancestor = parent_pid(pid)
            while ancestor > 1 and ancestor != listener:
                ancestor = parent_pid(ancestor)
            if ancestor == listener:
                found.append(pid)
    return found


def cut(state: dict) -> None:
    """The host drops off the network: its sshd and every session it serves are killed (SIGKILL), so new
    connections are refused until `restore`; processes the sessions started (a module's async job) live on."""
    listener = listener_pid(state)
    if listener is None:
        return
    for pid in sessions(state) + [listener]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def restore(state: dict) -> None:
    """The host is back on the network: its sshd listens again on the same port, with the same keys."""
    if not is_running(state):
        start_sshd(Path(state["pid_file"]).parent, state["port"])


def let_in(account: str) -> None:
    """A local account the host also lets in: a shell to run a command in, a password field sshd does not read as
    locked ('*': no password). Both can change while the account's processes run."""
    entry = pwd.getpwnam(account)
    if entry.pw_shell.endswith(("nologin", "false")):
        subprocess.run(["chsh", "--shell", "/bin/sh", account], check=True, capture_output=True)
    subprocess.run(["usermod", "--password", "*", account], check=True, capture_output=True)


def clients(root: Path, users: list[str]) -> dict:
    """A key and an ssh config per account, and the wrapper that runs ssh with the calling account's."""
    made = {}
    for user in users:
        key = root / f"client-{user}"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"pgops-{user}", "-f", str(key)],
                       check=True, capture_output=True)
        entry = pwd.getpwnam(user)
        os.chown(key, entry.pw_uid, entry.pw_gid)
        config = root / f"ssh_config-{user}"
        config.write_text(CLIENT_CONFIG.format(user=user, key=key, known_hosts=root / "known_hosts"))
        config.chmod(0o644)
        made[user] = {"key": str(key), "config": str(config)}
    wrapper = root / "ssh"
    wrapper.write_text(f'#!/bin/sh\nexec /usr/bin/ssh -F {root}/ssh_config-"$(id -un)" "$@"\n')
    wrapper.chmod(0o755)
    return made


def up(name: str, also_allow: list[str] | tuple = (), session_env: dict | None = None) -> dict:
    if os.geteuid() != 0:
        raise HostError("the SSH test host needs root (sshd, its account and sudo): run as root")
    if not SSHD.exists():
        raise HostError(f"{SSHD} is missing: run 'make setup' (it installs openssh-server)")
    existing = load_state(name)
    if existing and is_running(existing):
        return existing
    if existing:
        down(name)
    with sandbox.sandboxes_locked():
        sandbox.BASE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        account = ensure_account()
        root = state_dir(name)
        root.mkdir(mode=0o700)
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    for key in ("ssh_host_ed25519_key", "id_ed25519"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"pgops-{name}", "-f", str(root / key)],
                       check=True, capture_output=True)
    users = [HOST_USER] + [user for user in also_allow if user != HOST_USER]
    for user in users[1:]:
        let_in(user)
    made = clients(root, users) if also_allow else {}
    keys = [(root / "id_ed25519.pub").read_text()] + [Path(client["key"] + ".pub").read_text() for client in made.values()]
    (root / "authorized_keys").write_text("".join(keys))
    os.chmod(root / "authorized_keys", 0o644)
    # sshd drops to the account to read its keys: let it through the folder, nothing more.
    os.chmod(root, 0o711)
    port = sandbox.free_port()
    config = SSHD_CONFIG.format(port=port, root=root, user=" ".join(users))
    if session_env:
        config += "SetEnv " + " ".join(f"{key}={value}" for key, value in session_env.items()) + "\n"
    (root / "sshd_config").write_text(config)
    host_key = (root / "ssh_host_ed25519_key.pub").read_text().split()
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    os.chmod(root / "known_hosts", 0o644)
    start_sshd(root, port)
    state = {
        "name": name, "host": "127.0.0.1", "port": port, "user": HOST_USER, "home": account.pw_dir,
        "private_key": str(root / "id_ed25519"), "known_hosts": str(root / "known_hosts"),
        "pid_file": str(root / "sshd.pid"), "log": str(root / "sshd.log"),
        "ssh_args": f"-o UserKnownHostsFile={root / 'known_hosts'} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes",
        "clients": made, "ssh_command": str(root / "ssh") if made else "",
    }
    sandbox.write_private(root / "state.json", json.dumps(state, indent=2))
    return state


def down(name: str) -> bool:
    root = state_dir(name)
    if not root.exists():
        return False
    state = load_state(name)
    pid = listener_pid(state) if state else None
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        for _attempt in range(100):  # it removes its pid file as it goes: wait, then remove the folder
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.05)
    with sandbox.sandboxes_locked():
        shutil.rmtree(root)
        others = list(sandbox.BASE_DIR.glob(PREFIX + "*")) if sandbox.BASE_DIR.exists() else []
        if not others:
            SUDOERS.unlink(missing_ok=True)
            with contextlib.suppress(KeyError):
                pwd.getpwnam(HOST_USER)
                # Its sessions (a test may have left one) end with it.
                subprocess.run(["pkill", "-KILL", "-u", HOST_USER], check=False, capture_output=True)
                subprocess.run(["userdel", "--remove", HOST_USER], check=False, capture_output=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A loopback SSH host for the remote tests.")
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--name", default="remote")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--also-allow", action="append", default=[], metavar="ACCOUNT",
                        help="another local account the host lets in, with a client key and config of its own")
    parser.add_argument("--session-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable every session gets")
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            state = up(args.name, also_allow=args.also_allow,
                       session_env=dict(item.split("=", 1) for item in args.session_env))
        elif args.action == "down":
            print(f"ssh host {args.name}: " + ("removed" if down(args.name) else "nothing to remove"))
            return 0
        else:
            state = load_state(args.name)
            if state is None or not is_running(state):
                raise HostError(f"ssh host {args.name!r} is not running: run 'up --name {args.name}' first")
        print(json.dumps(state) if args.json else
              f"ssh host {args.name}: {state['user']}@{state['host']} port {state['port']} (key {state['private_key']})")
    except (HostError, sandbox.SandboxError) as exc:
        print(f"ssh_host: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
