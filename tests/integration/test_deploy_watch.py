"""The dead-man switch on the database host: the backup program's `watch`, run by cron as the read-only backup
account, notices a deployment whose lease stopped beating, records it and alerts once; a live one is left alone."""

import http.server
import json
import threading
import time

import pytest
from psycopg2 import sql

from conftest import BASELINE, admin_connect, alembic, query
from test_backup_program import Hook, run_program, write_config

PLAN = ["b1b1b1b1b1b1", "c2c2c2c2c2c2"]


def plant_lease(server, params, heartbeat_age, migration_started=True):
    """A deployment lease as deploy_lock writes it, its last heartbeat `heartbeat_age` seconds ago."""
    beat = time.time() - heartbeat_age
    lease = {"owner": "deploy-dead-1", "taken_at": beat - 60, "heartbeat_at": beat, "host": "db1",
             "since": "2026-12-01T00:00:00Z", "identity": {"user": "alice", "controller": "laptop"},
             "details": {"revision_before": BASELINE, "plan": PLAN, "backup": "/var/backups/x.dump",
                         **({"migration_started": "2026-12-01T00:01:00Z"} if migration_started else {})}}
    conn = admin_connect(server)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("ALTER DATABASE {} SET pgops.deploy_lock = {}").format(
            sql.Identifier(params["login_db"]), sql.Literal(json.dumps(lease))))
    conn.close()


@pytest.fixture
def loaded(database):
    alembic(database, "upgrade", BASELINE)
    return database


@pytest.fixture
def hook():
    receiver = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    Hook.received.clear()
    yield f"http://127.0.0.1:{receiver.server_port}/hook"
    receiver.shutdown()


def watch(server, loaded, tmp_path, hook_url):
    config, backups = write_config(server, loaded, tmp_path, user=server["backup_user"], alert_webhook=hook_url)
    return run_program("watch", config, server["backup_password"], "--stale-after-seconds=600"), backups


def test_an_abandoned_deployment_is_recorded_and_alerted_once(server, loaded, tmp_path, hook):
    plant_lease(server, loaded, heartbeat_age=3600)
    first, backups = watch(server, loaded, tmp_path, hook)
    assert first.returncode == 1, first.stderr
    (line,) = [line for line in first.stderr.splitlines() if "FAILED" in line]
    assert "deployment deploy-dead-1 is abandoned: no heartbeat for 36" in line and "(limit 600 s)" in line
    assert f"the database is at revision {BASELINE} ({PLAN[0]} may be half-applied)" in line, line
    assert "rollback.yml -e force_unlock=yes -e confirm=yes" in line
    record = json.loads((backups / "abandoned-deploy-dead-1.json").read_text())
    assert record["possibly_half_applied"] == PLAN[0] and record["revision"] == BASELINE
    assert record["run_by"] == {"user": "alice", "controller": "laptop"} and record["plan"] == PLAN
    assert len(Hook.received) == 1 and "deploy-dead-1 is abandoned" in Hook.received[0]["message"]

    again, _backups = watch(server, loaded, tmp_path, hook)
    assert again.returncode == 0 and json.loads(again.stdout)["abandoned"] is True
    assert "still abandoned (alerted before)" in again.stderr
    assert len(Hook.received) == 1, "one alert per abandoned deployment, not one per cron run"
    # The watch only reads: the lease is left for rollback.yml -e force_unlock=yes to take over.
    assert query(loaded, "SELECT count(*) FROM pg_db_role_setting WHERE setconfig::text LIKE '%deploy-dead-1%'")[0][0]


def test_a_deployment_whose_lease_beats_is_left_alone(server, loaded, tmp_path, hook):
    plant_lease(server, loaded, heartbeat_age=20)
    result, backups = watch(server, loaded, tmp_path, hook)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["abandoned"] is False and seen["lease"] == "deploy-dead-1" and 20 <= seen["heartbeat_age_seconds"] < 60
    assert not list(backups.glob("abandoned-*")) and Hook.received == []


def test_no_deployment_no_alert(server, loaded, tmp_path, hook):
    result, _backups = watch(server, loaded, tmp_path, hook)
    assert result.returncode == 0 and json.loads(result.stdout)["lease"] is None and Hook.received == []
