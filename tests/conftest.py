"""Shared test set-up: the collection on sys.path, sandbox servers, and a way to run modules for real."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql

ROOT = Path(__file__).resolve().parent.parent
COLLECTIONS = ROOT / ".collections"
sys.path.insert(0, str(COLLECTIONS))
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "examples" / "intowork"))

import sandbox  # noqa: E402

PROJECT_DIR = ROOT / "examples" / "intowork"
BASELINE = "a7f3b2c1d9e8"
INDEX_REVISION = "h8c2d6e5f4g3"
HEAD = "f7a8b9c0d1e2"
VERSIONS = ["15", "18"]


def pytest_collection_modifyitems(config, items):
    """Tests marked one_server_version run against the newest server only (deselected, not skipped, on the others)."""
    dropped = [item for item in items if item.get_closest_marker("one_server_version")
               and getattr(item, "callspec", None) and item.callspec.params.get("server", VERSIONS[-1]) != VERSIONS[-1]]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in dropped]


LEAST_PRIVILEGE_SQL = ROOT / "docs" / "sql" / "least-privilege.sql"
DEPLOY_ROLE, BACKUP_ROLE = "pgops_deploy", "pgops_backup"
ACCOUNTS_DB = "pgops_accounts"
SERVERS = {}  # port -> server state, for helpers given only a database's parameters


@pytest.fixture(scope="session", params=VERSIONS, ids=lambda v: f"pg{v}")
def server(request):
    """A sandbox server per PostgreSQL version, shared by the session, with the documented least-privilege
    deploy and backup accounts (docs/sql/least-privilege.sql, run as a DBA would: psql, as the superuser)."""
    name = f"pytest-{request.param}-{os.getpid()}"
    state = sandbox.up(name, request.param, "postgres")
    create_accounts(state, ACCOUNTS_DB)
    state.update(deploy_user=DEPLOY_ROLE, deploy_password="deploy-" + uuid.uuid4().hex[:12],
                 backup_user=BACKUP_ROLE, backup_password="backup-" + uuid.uuid4().hex[:12])
    conn = admin_connect(state)
    with conn.cursor() as cur:
        for role in ("deploy", "backup"):
            cur.execute(sql.SQL("ALTER ROLE {} PASSWORD %s").format(sql.Identifier(state[role + "_user"])),
                        (state[role + "_password"],))
    conn.close()
    SERVERS[state["port"]] = state
    yield state
    sandbox.down(name)


@pytest.fixture
def host_dirs():
    """Folders the backup account can reach (a test's own tmp_path is private to root)."""
    if os.geteuid() != 0:
        pytest.skip("becoming the backup account needs root, as the production inventory's become does")
    base = Path(tempfile.mkdtemp(prefix="pgops-account-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base)


class Hook(http.server.BaseHTTPRequestHandler):
    """A webhook receiver: every JSON body POSTed to it, in Hook.received."""
    received = []

    def do_POST(self):  # noqa: N802 - the http.server API
        Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def hook():
    """A webhook on loopback for the test (its URL); what it received is in Hook.received."""
    receiver = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    Hook.received.clear()
    yield f"http://127.0.0.1:{receiver.server_port}/hook"
    receiver.shutdown()
    receiver.server_close()


def create_accounts(state, database, *variables):
    """docs/sql/least-privilege.sql for `database` (created owned by the deploy role if it is new); `variables`
    are more psql -v settings, like revoke_public_connect=yes."""
    env = dict(os.environ, PGHOST=state["host"], PGPORT=str(state["port"]), PGUSER=state["user"],
               PGPASSWORD=state["password"], PGDATABASE="postgres")
    settings = [argument for variable in variables for argument in ("-v", variable)]
    result = subprocess.run([str(Path(state["bindir"]) / "psql"), "-X", "-q", "-v", f"database={database}",
                             "-v", f"deploy_role={DEPLOY_ROLE}", "-v", f"backup_role={BACKUP_ROLE}", *settings,
                             "-f", str(LEAST_PRIVILEGE_SQL)], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0 and not result.stderr, result.stderr


def owner_params(server, params):
    """`params` logged in as the database's owner when that is the deploy role (the runbooks' account),
    else unchanged (the server's superuser, or the login a test chose)."""
    if not server or "deploy_user" not in server or params["login_user"] != server["user"]:
        return params
    owner = query(params, "SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_catalog.pg_database"
                          " WHERE datname = pg_catalog.current_database()")[0][0]
    if owner != server["deploy_user"]:
        return params
    return dict(params, login_user=server["deploy_user"], login_password=server["deploy_password"])


def admin_connect(state, dbname="postgres"):
    conn = psycopg2.connect(host=state["host"], port=state["port"], user=state["user"],
                            password=state["password"], dbname=dbname)
    conn.autocommit = True
    return conn


def admin_run(server, statement, *names):
    """One statement on the server's maintenance database, identifiers quoted; a new connection each time
    (a test may have restarted the server)."""
    conn = admin_connect(server)
    with conn.cursor() as cur:
        cur.execute(sql.SQL(statement).format(*map(sql.Identifier, names)))
    conn.close()


def database_params(server, name):
    return {"login_host": server["host"], "login_port": server["port"], "login_user": server["user"],
            "login_password": server["password"], "login_db": name}


@contextlib.contextmanager
def scratch_database(server, prefix="t_"):
    """A new empty database on the server for the block: the module connection parameters for it."""
    name = prefix + uuid.uuid4().hex[:10]
    admin_run(server, "CREATE DATABASE {}", name)
    try:
        yield database_params(server, name)
    finally:
        admin_run(server, "DROP DATABASE {} WITH (FORCE)", name)


@pytest.fixture
def database(server):
    """A new empty database on the server; yields the module connection parameters for it."""
    with scratch_database(server) as params:
        yield params


def connect_as(params, user=None, password=None, application_name=None):
    """A connection to the test database, as the admin user unless told otherwise; in a transaction."""
    return psycopg2.connect(host=params["login_host"], port=params["login_port"],
                            user=user or params["login_user"], password=password or params["login_password"],
                            dbname=params["login_db"], application_name=application_name or "pytest")


def db_connect(params):
    conn = connect_as(params)
    conn.autocommit = True
    return conn


def hold_lock(params, table, mode="ACCESS SHARE", application_name="lock-holder"):
    """Another session holding `mode` on `table` in an open transaction, until the caller rolls it back."""
    conn = connect_as(params, application_name=application_name)
    conn.cursor().execute(f"LOCK TABLE {table} IN {mode} MODE")
    return conn


def query(params, statement, args=None):
    conn = db_connect(params)
    try:
        with conn.cursor() as cur:
            cur.execute(statement, args)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


def libpq_env(params):
    env = dict(os.environ)
    env.update(PGHOST=params["login_host"], PGPORT=str(params["login_port"]), PGUSER=params["login_user"],
               PGPASSWORD=params["login_password"], PGDATABASE=params["login_db"])
    return env


def alembic(params, *args):
    """The Alembic CLI against the reference project, as the database's owner (see owner_params)."""
    env = libpq_env(owner_params(SERVERS.get(params["login_port"]), params))
    env["DATABASE_URL"] = "postgresql+psycopg2://"
    result = subprocess.run([sys.executable, "-m", "alembic", "-c", str(PROJECT_DIR / "alembic.ini"), *args],
                            env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return result


def load_reference_data(params, scale=0.01, defects=0):
    env = libpq_env(owner_params(SERVERS.get(params["login_port"]), params))
    cmd = [sys.executable, str(PROJECT_DIR / "generate_data.py"), "--scale", str(scale)]
    if defects:
        cmd += ["--plant-defects", str(defects)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return result


def run_module(name, args, check_mode=False, diff=False, env=None):
    """Run a module file the way Ansible does (JSON arguments, JSON result) and return the result."""
    payload = dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)
    result = subprocess.run(
        [sys.executable, str(ROOT / "plugins" / "modules" / f"{name}.py")],
        input=json.dumps({"ANSIBLE_MODULE_ARGS": payload}),
        capture_output=True, text=True, check=False,
        env=dict(env or os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [str(COLLECTIONS), (env or {}).get("PYTHONPATH")]))),
    )
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    return json.loads(result.stdout)


def playbook_command(name, server, params, tmp_path, *extra):
    """(argv, environment) of ansible-playbook playbooks/<name> on the local inventory, against `params`,
    as the deploy role when it owns the database (the runbooks' least-privilege account)."""
    env = libpq_env(owner_params(server, params))
    # The set_stats data (a job's artifacts in Automation Platform) are printed after the recap, for artifacts().
    env.update(PGOPS_SANDBOX_BINDIR=server["bindir"], ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_SHOW_CUSTOM_STATS="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), str(ROOT / "playbooks" / name),
           "-e", f"pgops_backup_dir={tmp_path / 'backups'}", "-e", f"pgops_reports_dir={tmp_path / 'reports'}", *extra]
    return cmd, env


def run_playbook(name, server, params, tmp_path, *extra):
    """ansible-playbook playbooks/<name> on the local inventory, against `params`, with files under tmp_path."""
    cmd, env = playbook_command(name, server, params, tmp_path, *extra)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False,
                          stdin=subprocess.DEVNULL)


def start_playbook(name, server, params, tmp_path, *extra):
    """run_playbook in the background, in its own process group (so a test can kill it whole)."""
    cmd, env = playbook_command(name, server, params, tmp_path, *extra)
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def artifacts(result):
    """The run's set_stats data, as Automation Platform keeps them for the job (printed after the recap)."""
    for line in result.stdout.splitlines():
        if line.startswith("\tRUN: "):
            return json.loads(line[len("\tRUN: "):])
    return {}


def play_recap(result):
    """ok, changed, unreachable, failed of the play recap; fails the test when there is none."""
    recap = re.search(r"ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", result.stdout)
    assert recap, result.stdout + result.stderr
    return dict(zip(["ok", "changed", "unreachable", "failed"], map(int, recap.groups())))


APP, PASSWORD = "app_web", "app-secret-2"


@contextlib.contextmanager
def application_role(params):
    """The application's login role, reading and inserting in every table of the database, for the block."""
    query(params, f"DROP ROLE IF EXISTS {APP}")
    query(params, f"CREATE ROLE {APP} LOGIN PASSWORD '{PASSWORD}'")
    query(params, f"GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO {APP}")
    query(params, f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {APP}")
    try:
        yield params
    finally:
        query(params, f"DROP OWNED BY {APP}")
        query(params, f"DROP ROLE {APP}")


@pytest.fixture
def deployable(server, database):
    """Reference data at the baseline revision, owned by the deploy role, and an application role that writes
    to it."""
    create_accounts(server, database["login_db"])  # the deploy role owns it, the backup role reads it
    alembic(database, "upgrade", BASELINE)
    load_reference_data(database, scale=0.01)
    with application_role(database):
        yield database


class LiveWriter:
    """The application writing while a runbook runs: one INSERT ... RETURNING id per write, each in its own
    transaction, as the application's own role, `rate` times a second, on a thread of its own. A write that fails
    (writes off, its session ended, the server gone) is timed and the writer connects again.

    After stop(): `committed` holds the id of every write the server confirmed, `failed` the start time of every
    write that failed; missing() names the committed ids the table no longer has."""

    def __init__(self, params, user=APP, password=PASSWORD, rate=20.0, table="companies"):
        self.params, self.user, self.password, self.table = params, user, password, table
        self.interval = 1.0 / rate
        self.committed, self.failed, self.writes = [], [], 0
        # Each write's own name: ids can be handed out again once a restore puts a sequence back.
        self.committed_names = []
        self.started_at = self.stopped_at = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.started_at = time.time()
        self._thread.start()
        # The first write is in before the runbook starts, so the writer is seen to work.
        deadline = time.time() + 10
        while not self.committed and time.time() < deadline:
            time.sleep(0.05)
        assert self.committed, "the application could not write before the runbook started"
        return self

    def stop(self):
        self._stopping.set()
        self._thread.join(timeout=30)
        self.stopped_at = time.time()
        return self

    def _run(self):
        conn = None
        while not self._stopping.is_set():
            started = time.time()
            self.writes += 1
            try:
                if conn is None or conn.closed:
                    conn = connect_as(self.params, self.user, self.password, application_name="live-writer")
                    conn.autocommit = True
                name = f"written while a runbook ran #{self.writes}"
                with conn.cursor() as cur:
                    cur.execute(f"INSERT INTO {self.table} (name) VALUES (%s) RETURNING id", (name,))
                    self.committed.append(cur.fetchone()[0])
                    self.committed_names.append(name)
            except psycopg2.Error:
                self.failed.append(started)
                if conn is not None and not conn.closed:
                    conn.close()
                conn = None
            self._stopping.wait(max(0.0, self.interval - (time.time() - started)))
        if conn is not None and not conn.closed:
            conn.close()

    def failed_window(self):
        """Seconds from the first failed write to the last one (0 when none failed)."""
        return round(self.failed[-1] - self.failed[0], 1) if self.failed else 0.0

    def missing(self, params=None):
        """The committed ids the table does not hold now."""
        rows = query(params or self.params, f"SELECT id FROM {self.table} WHERE id = ANY(%s)", (self.committed,))
        present = {row[0] for row in rows}
        return sorted(set(self.committed) - present)

    def figures(self):
        return {"writes": self.writes, "committed": len(self.committed), "failed": len(self.failed),
                "failed_window_seconds": self.failed_window()}


@pytest.fixture
def live_writer():
    """A factory of LiveWriters, started at once; each is stopped when the test ends."""
    writers = []

    def start(params, **options):
        writer = LiveWriter(params, **options)
        writers.append(writer)
        return writer.start()

    yield start
    for writer in writers:
        writer.stop()


def record_figures(writer, params, reported_write_off_seconds):
    """With PGOPS_LIVE_WRITER_FIGURES set to a file: one JSON line per runbook test, what the application saw
    beside the runbook's own figure (-1: writes kept off), for the tables in docs and release notes."""
    path = os.environ.get("PGOPS_LIVE_WRITER_FIGURES")
    if not path:
        return
    line = dict(writer.figures(), test=os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0],
                lost=len(writer.missing(params)), reported_write_off_seconds=float(reported_write_off_seconds))
    with open(path, "a", encoding="utf-8") as figures:
        figures.write(json.dumps(line) + "\n")


def assert_writes_kept_off(writer, params):
    """The other end of a runbook that keeps writes off on purpose (its rollback failed, its host was lost): every
    committed write is still there, and writes still fail when it is done."""
    writer.stop()
    record_figures(writer, params, -1)
    assert writer.missing(params) == [], f"committed writes lost: {writer.missing(params)[:10]} ({writer.figures()})"
    assert writer.failed and writer.failed[-1] > writer.stopped_at - 1, f"writes came back ({writer.figures()})"


def assert_application_survived(writer, params, reported_write_off_seconds=0.0, slack=1.0):
    """What every runbook test under a live writer asserts once the runbook is done: every committed write is
    still there, writes failed only inside the write-off window the runbook reported (measured from the guard's
    commit to its commit; `slack` for the writer's own timing), and the application can write again."""
    writer.stop()
    record_figures(writer, params, reported_write_off_seconds)
    assert writer.committed, "the writer wrote nothing"
    assert writer.missing(params) == [], f"committed writes lost: {writer.missing(params)[:10]} ({writer.figures()})"
    assert writer.failed_window() <= float(reported_write_off_seconds) + slack, (
        f"writes failed for {writer.failed_window()} s, the runbook reported {reported_write_off_seconds} s "
        f"({writer.figures()})")
    if not float(reported_write_off_seconds):
        assert not writer.failed, f"writes failed although the runbook reported none off ({writer.figures()})"
    conn = connect_as(params, writer.user, writer.password)
    try:
        with conn.cursor() as cur:
            cur.execute(f"INSERT INTO {writer.table} (name) VALUES ('after the runbook') RETURNING id")
        conn.rollback()
    finally:
        conn.close()


def last_line(result):
    """The message of the play's last debug task: the runbook's summary."""
    return re.findall(r'"msg": "(.*)"', result.stdout)[-1]


def failure_message(result):
    """The message of the last task that failed the play (not of one whose failure was ignored)."""
    messages = []
    lines = result.stdout.splitlines()
    for number, line in enumerate(lines):
        if "FAILED! => " not in line:
            continue
        payload, end = line.split("FAILED! => ", 1)[1], number
        while True:  # the result may span lines
            try:
                parsed = json.loads(payload)
                break
            except ValueError:
                end += 1
                if end >= len(lines):
                    parsed = {"msg": payload}
                    break
                payload += "\n" + lines[end]
        ignored = end + 1 < len(lines) and lines[end + 1].strip() == "...ignoring"
        if not ignored:
            messages.append(parsed.get("msg", payload) if isinstance(parsed, dict) else payload)
    assert messages, result.stdout[-3000:]
    return messages[-1]


@pytest.fixture(scope="session")
def head_template(server):
    """A template database with the reference data migrated to head, owned by the deploy role, copied cheaply
    by each test."""
    name = "tmpl_head"
    admin_run(server, "DROP DATABASE IF EXISTS {} WITH (FORCE)", name)
    create_accounts(server, name)
    params = database_params(server, name)
    alembic(params, "upgrade", BASELINE)
    load_reference_data(params, scale=0.01)
    alembic(params, "upgrade", HEAD)
    query(params, "VACUUM ANALYZE")
    return name


@pytest.fixture
def migrated(server, head_template):
    """A new database at head with the reference data, copied from the template."""
    name = "t_" + uuid.uuid4().hex[:10]
    admin_run(server, "CREATE DATABASE {} TEMPLATE {} OWNER {}", name, head_template, server["deploy_user"])
    yield database_params(server, name)
    admin_run(server, "DROP DATABASE {} WITH (FORCE)", name)


@pytest.fixture
def guarded_db(migrated):
    """A database at head with the reference data, and the application's role writing to it."""
    with application_role(migrated):
        yield migrated


def process_argvs():
    """(pid, argv as a list of bytes) of every process now; processes that end while /proc is read are skipped."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            yield int(pid), Path("/proc", pid, "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
