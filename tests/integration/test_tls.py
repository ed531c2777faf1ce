"""A server that takes TLS only, where the deploy account logs in by client certificate and nothing else
(`hostssl ... cert`): every runbook, and the backup its cron line takes, connects that way from the
inventory's pgops_db_ssl_mode, pgops_db_ca_cert, pgops_db_ssl_cert and pgops_db_ssl_key alone; nothing
comes from PGSSL* variables or ~/.postgresql."""

import json
import os
import subprocess
import sys
import uuid

import psycopg2
import pytest

import sandbox
from conftest import (ACCOUNTS_DB, BASELINE, DEPLOY_ROLE, HEAD, PROJECT_DIR, SERVERS, admin_connect, admin_run,
                      create_accounts, database_params, play_recap, run_playbook)
from psycopg2 import sql
from test_backup_account import cron_command, run_as_cron
from test_deploy_playbook import revision

# The distribution's PostgreSQL: the embedded build of 18 has no SSL.
TLS_VERSION = "15"
TLS_VARIABLES = ("PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY")


@pytest.fixture(scope="module")
def tls_server():
    name = f"pytest-tls-{os.getpid()}"
    state = sandbox.up(name, TLS_VERSION, "postgres", tls=True)
    create_accounts(state, ACCOUNTS_DB)
    # The deploy account keeps a password, which this server never asks for: the certificate is all it has.
    state.update(deploy_user=DEPLOY_ROLE, deploy_password="deploy-" + uuid.uuid4().hex[:12])
    conn = admin_connect(state)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("ALTER ROLE {} PASSWORD %s").format(sql.Identifier(DEPLOY_ROLE)), (state["deploy_password"],))
    conn.close()
    state["client"] = sandbox.client_certificate(name, DEPLOY_ROLE)
    SERVERS[state["port"]] = state
    yield state
    SERVERS.pop(state["port"], None)
    sandbox.down(name)


@pytest.fixture
def tls_database(tls_server):
    """A database owned by the deploy account, at the baseline revision with the reference data."""
    name = "t_" + uuid.uuid4().hex[:10]
    create_accounts(tls_server, name)
    params = database_params(tls_server, name)
    as_deploy = dict(params, login_user=DEPLOY_ROLE, login_password=tls_server["deploy_password"])
    env = certificate_env(tls_server, as_deploy)
    for cmd in ([sys.executable, "-m", "alembic", "-c", str(PROJECT_DIR / "alembic.ini"), "upgrade", BASELINE],
                [sys.executable, str(PROJECT_DIR / "generate_data.py"), "--scale", "0.01"]):
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
    yield params
    admin_run(tls_server, "DROP DATABASE {} WITH (FORCE)", name)


def certificate_env(server, params):
    """The test's own way in as the deploy account (the runbooks get the files as inventory variables)."""
    env = dict(os.environ, PGHOST=params["login_host"], PGPORT=str(params["login_port"]), PGUSER=params["login_user"],
               PGDATABASE=params["login_db"], DATABASE_URL="postgresql+psycopg2://")
    env.update(dict(zip(TLS_VARIABLES, (server["client"][key] for key in ("ssl_mode", "ca_cert", "ssl_cert", "ssl_key")))))
    env.pop("PGPASSWORD", None)
    return env


def tls_settings(server, tmp_path, **more):
    files = server["client"]
    return json.dumps(dict({
        "pgops_db_ssl_mode": files["ssl_mode"], "pgops_db_ca_cert": files["ca_cert"],
        "pgops_db_ssl_cert": files["ssl_cert"], "pgops_db_ssl_key": files["ssl_key"],
        "pgops_cron_dir": str(tmp_path / "cron.d"), "pgops_program_dir": str(tmp_path / "lib"),
        "pgops_config_dir": str(tmp_path / "etc")}, **more))


def runbook(name, server, params, tmp_path, *extra, **more):
    assert not set(TLS_VARIABLES) & set(os.environ), "the runbooks must get TLS from the inventory only"
    result = run_playbook(name, server, params, tmp_path, "-e", tls_settings(server, tmp_path, **more), *extra)
    assert result.returncode == 0 and play_recap(result)["failed"] == 0, f"{name}: {result.stdout[-3000:]}"
    return result


def test_the_deploy_account_gets_in_by_certificate_only(tls_server, tls_database):
    as_deploy = dict(tls_database, login_user=DEPLOY_ROLE, login_password=tls_server["deploy_password"])
    for sslmode in ("disable", "require"):
        with pytest.raises(psycopg2.OperationalError) as refused:
            psycopg2.connect(host=as_deploy["login_host"], port=as_deploy["login_port"], user=DEPLOY_ROLE,
                             password=as_deploy["login_password"], dbname=as_deploy["login_db"], sslmode=sslmode)
        assert "no encryption" in str(refused.value) or "certificate" in str(refused.value), str(refused.value)
    files = tls_server["client"]
    conn = psycopg2.connect(host=as_deploy["login_host"], port=as_deploy["login_port"], user=DEPLOY_ROLE,
                            dbname=as_deploy["login_db"], sslmode=files["ssl_mode"], sslrootcert=files["ca_cert"],
                            sslcert=files["ssl_cert"], sslkey=files["ssl_key"])
    with conn.cursor() as cur:
        cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert cur.fetchone()[0] is True
    conn.close()


def test_every_runbook_connects_by_certificate(tls_server, tls_database, tmp_path):
    as_deploy = dict(tls_database, login_user=DEPLOY_ROLE, login_password=tls_server["deploy_password"])
    deployed = runbook("deploy_migration.yml", tls_server, as_deploy, tmp_path)
    assert revision(tls_database) == HEAD, deployed.stdout[-2000:]
    runbook("verify.yml", tls_server, as_deploy, tmp_path)
    runbook("health_report.yml", tls_server, as_deploy, tmp_path)
    runbook("restore_drill.yml", tls_server, as_deploy, tmp_path)
    downgraded = runbook("rollback.yml", tls_server, as_deploy, tmp_path, "-e", f"revision={BASELINE}",
                         "-e", "confirm=yes")
    assert "Rolled back by downgrade" in downgraded.stdout and revision(tls_database) == BASELINE
    runbook("backup.yml", tls_server, as_deploy, tmp_path)
    (report,) = (tmp_path / "reports").glob("deploy-*.json")
    backup = json.loads(report.read_text())["backup"]["path"]
    restored = runbook("rollback.yml", tls_server, as_deploy, tmp_path, "-e", "method=restore",
                       "-e", f"backup={backup}", "-e", "confirm=yes")
    assert "Rolled back by restore" in restored.stdout and revision(tls_database) == BASELINE

    # The scheduled backup, run as cron runs it: its config carries the certificate files.
    runbook("backup_cron.yml", tls_server, as_deploy, tmp_path)
    before = set((tmp_path / "backups").glob("*.dump"))
    account, command = cron_command(tmp_path / "cron.d" / f"pgops-backup-{tls_database['login_db']}")
    scheduled = run_as_cron(account, command)
    assert scheduled.returncode == 0, scheduled.stderr
    assert set((tmp_path / "backups").glob("*.dump")) - before, "the cron line took no backup"
    config = json.loads((tmp_path / "etc" / f"backup-{tls_database['login_db']}.json").read_text())
    assert (config["ssl_mode"], config["ssl_cert"]) == ("verify-full", tls_server["client"]["ssl_cert"])
