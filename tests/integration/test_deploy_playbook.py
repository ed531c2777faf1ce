"""deploy_migration.yml end to end on a sandbox database: check mode, real run, second run, evidence."""

import hashlib
import json
import os
import re
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql

import sandbox
from conftest import BASELINE, HEAD, alembic, failure_message, load_reference_data, play_recap, query, run_playbook


def playbook(server, params, tmp_path, *extra):
    result = run_playbook("deploy_migration.yml", server, params, tmp_path, *extra)
    return result, play_recap(result)


def revision(params):
    return query(params, "SELECT version_num FROM alembic_version")[0][0]


def assert_quiet(result):
    """An operator reads no warning and no traceback as a fault."""
    output = result.stdout + result.stderr
    noise = re.compile(r"\[WARNING\]|Traceback|\w+Warning: ")
    assert not noise.search(output), [line for line in output.splitlines() if noise.search(line)]


def test_deploy_check_then_real_then_nothing(server, database, tmp_path):
    alembic(database, "upgrade", BASELINE)
    load_reference_data(database, scale=0.01)
    rows_before = query(database, "SELECT count(*) FROM job_applications")[0][0]

    result, recap = playbook(server, database, tmp_path, "--check")
    assert recap["failed"] == 0, result.stdout
    assert_quiet(result)
    assert revision(database) == BASELINE
    assert not (tmp_path / "backups").exists() or not any((tmp_path / "backups").iterdir())
    (plan_sql,) = (tmp_path / "reports").glob("deploy-*.plan.sql")
    assert "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS uq_users_email ON users (email)" in plan_sql.read_text()
    assert f"the SQL of 5 of 5 revision(s) is in {plan_sql}" in result.stdout

    result, recap = playbook(server, database, tmp_path)
    assert recap["failed"] == 0 and recap["changed"] > 0, result.stdout
    assert_quiet(result)
    assert revision(database) == HEAD
    assert query(database, "SELECT count(*) FROM job_applications")[0][0] == rows_before

    (dump,) = (tmp_path / "backups").glob("*.dump")
    assert dump.stat().st_mode & 0o077 == 0
    assert (tmp_path / "backups").stat().st_mode & 0o777 == 0o700
    manifest = json.loads(Path(f"{dump}.manifest.json").read_text())
    assert manifest["sha256"] == hashlib.sha256(dump.read_bytes()).hexdigest()
    assert int(manifest["size_bytes"]) == dump.stat().st_size
    assert not list((tmp_path / "backups").glob(".*.partial"))
    (report,) = (tmp_path / "reports").glob("deploy-*.json")
    record = json.loads(report.read_text())
    assert record["revision_before"] == BASELINE and record["revision_after"] == HEAD
    assert int(record["indexes_ok"]) == int(record["indexes_expected"]) == 23
    assert database["login_password"] not in result.stdout
    # The catalog the deployment proved is what verify.yml finds drift from, with no spec file.
    baseline = json.loads((tmp_path / "backups" / f"{database['login_db']}.catalog-baseline.json").read_text())
    assert baseline["label"] == f"the catalog deployment {record['deployment']} proved"
    query(database, "ALTER TABLE users ALTER COLUMN role DROP DEFAULT")
    drifted = run_playbook("verify.yml", server, database, tmp_path)
    assert drifted.returncode != 0
    assert ("table public.users: column role was role text NOT NULL DEFAULT 'candidate'::text, is role text NOT NULL "
            "(column_changed)") in failure_message(drifted)
    assert f"since the catalog deployment {record['deployment']} proved (" in failure_message(drifted)
    query(database, "ALTER TABLE users ALTER COLUMN role SET DEFAULT 'candidate'")

    result, recap = playbook(server, database, tmp_path)
    assert recap["failed"] == 0 and recap["changed"] == 0, result.stdout
    assert len(list((tmp_path / "backups").glob("*.dump"))) == 1, "nothing pending: no new backup"
    assert f"nothing to deploy: at {HEAD} (head)" in result.stdout, result.stdout[-2000:]


@pytest.mark.one_server_version
def test_backup_failure_publishes_nothing(server, database, tmp_path):
    alembic(database, "upgrade", BASELINE)
    # pg_dump cannot read the tables as a role without privileges: the dump fails, nothing is published.
    query(database, "CREATE ROLE pgops_noread LOGIN PASSWORD 'noread-pw'")
    query(database, f"GRANT CONNECT ON DATABASE {database['login_db']} TO pgops_noread")
    result, recap = playbook(server, database, tmp_path, "-e", "backup_db_user=pgops_noread",
                             "-e", "backup_db_password=noread-pw")
    query(database, "DROP OWNED BY pgops_noread")
    query(database, "DROP ROLE pgops_noread")
    assert recap["failed"] == 1
    assert "Backup of" in result.stdout and "nothing was published" in result.stdout
    assert "permission denied" in result.stdout
    assert not [p.name for p in (tmp_path / "backups").iterdir() if ".dump" in p.name]
    assert "FAILED: cannot read" in (tmp_path / "backups" / "pgops-backup.log").read_text()
    assert revision(database) == BASELINE, "no migration without a backup"


@pytest.fixture(scope="module")
def newer_server():
    """A PostgreSQL 18 server, newer than the distribution's version 15 client programs."""
    name = f"pytest-preflight-{os.getpid()}"
    state = sandbox.up(name, "18", "intowork")
    yield state
    sandbox.down(name)


def test_preflight_refuses_a_client_older_than_the_server(newer_server, tmp_path):
    params = {"login_host": newer_server["host"], "login_port": newer_server["port"],
              "login_user": newer_server["user"], "login_password": newer_server["password"], "login_db": "intowork"}
    alembic(params, "upgrade", BASELINE)
    result, recap = playbook(newer_server, params, tmp_path, "-e", "pgops_pg_bin_dir=/usr/lib/postgresql/15/bin")
    assert recap["failed"] == 1
    assert "pg_dump is version 15" in result.stdout and "the server is 18" in result.stdout
    assert revision(params) == BASELINE


@pytest.mark.one_server_version  # the runbook's proof, not the server's
def test_a_backup_that_reaches_another_server_is_refused(server, database, tmp_path):
    """The backup's connection resolves to another server (a port the other steps do not use) holding a database of
    the same name, reachable with the same login: the backup proves it is not the database the deployment locked,
    and nothing is backed up or migrated."""
    alembic(database, "upgrade", BASELINE)
    name = f"pytest-decoy-{os.getpid()}"
    decoy = sandbox.up(name, server["version"], database["login_db"])
    try:
        conn = psycopg2.connect(host=decoy["host"], port=decoy["port"], user=decoy["user"],
                                password=decoy["password"], dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("ALTER ROLE {} PASSWORD %s").format(sql.Identifier(server["user"])),
                        (server["password"],))
        conn.close()
        assert decoy["user"] == server["user"]
        result, recap = playbook(server, database, tmp_path, "-e", f"backup_db_port={decoy['port']}")
        assert recap["failed"] == 1 and result.returncode != 0
        message = failure_message(result)
        assert (f"refused, nothing was backed up: database {database['login_db']} on 127.0.0.1 port {decoy['port']} "
                f"holds no deployment lock, not the lock of deploy-") in message, message
        assert "give pgops_db_host and pgops_db_port, so that every step reaches the same server" in message
        assert "Nothing was migrated" in message, message
        assert revision(database) == BASELINE
        decoy_db = dict(database, login_port=decoy["port"], login_password=server["password"])
        assert query(decoy_db, "SELECT to_regclass('alembic_version')")[0][0] is None
        assert not [path.name for path in (tmp_path / "backups").iterdir() if ".dump" in path.name]
    finally:
        sandbox.down(name)
