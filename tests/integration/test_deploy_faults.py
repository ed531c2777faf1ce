"""Fault injection: each deployment that goes wrong ends with writes back on, the database at the old or
the new revision, and the row counts of the snapshot."""

import json
import shutil
import time
from pathlib import Path

import psycopg2
import pytest

from conftest import (APP, BASELINE, HEAD, PASSWORD, PROJECT_DIR, alembic, assert_application_survived, connect_as,
                      failure_message, hold_lock, query, run_module)
from test_deploy_playbook import playbook, revision


def guarded(server, params, tmp_path, *extra):
    settings = {"pgops_app_roles": [APP], "pgops_app_probe_user": APP, "pgops_app_probe_password": PASSWORD}
    return playbook(server, params, tmp_path, "-e", json.dumps(settings), *extra)


def app_can_write(params):
    conn = connect_as(params, APP, PASSWORD)
    try:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO companies (name) VALUES ('after the deployment')")
        conn.rollback()
        return True
    except psycopg2.Error:
        return False
    finally:
        conn.close()


def counts(params):
    return dict(query(params, "SELECT 'jobs', count(*) FROM jobs UNION ALL SELECT 'job_applications', count(*) "
                              "FROM job_applications UNION ALL SELECT 'users', count(*) FROM users"))


@pytest.mark.parametrize("mode", ["maintenance", "online"])
def test_revision_failing_mid_chain_is_rolled_back_by_downgrade(server, deployable, tmp_path, mode, live_writer):
    """With the application writing all along: the correct downgrade is never declared failed (the counts it is
    held to were taken once writes were off), and no committed write is lost."""
    query(deployable, "UPDATE jobs SET salary_min = salary_max + 1 WHERE id = 1")  # d5e6f7a8b9c0 cannot validate
    before = counts(deployable)
    writer = live_writer(deployable)
    result, recap = guarded(server, deployable, tmp_path, "-e", f"pgops_deploy_mode={mode}")
    assert recap["failed"] == 1 and result.returncode != 0
    last = failure_message(result)
    # Online, the application wrote all along: only fewer rows than before would be a loss.
    rows = "no table with fewer rows" if mode == "online" else "with the same row counts"
    assert f"Rolled back by downgrade: the database is at revision a7f3b2c1d9e8, as before the deployment, {rows}, " \
           "its catalog and rows as before (" in last, last
    assert revision(deployable) == BASELINE
    assert counts(deployable) == before
    assert query(deployable, "SELECT count(*) FROM pg_indexes WHERE indexname LIKE 'ix\\_%'")[0][0] == 0
    (record,) = (tmp_path / "reports").glob("deploy-*.json")
    record = json.loads(record.read_text())
    assert_application_survived(writer, deployable, record["write_off_seconds"])
    assert len(writer.committed) > 20, writer.figures()
    assert record["outcome"] == "rolled_back"
    assert record["backup_taken"] == ("with writes on (online mode)" if mode == "online" else "with writes off")
    # The record says how the undo was chosen, and why.
    decided = record["rollback_decided"]
    assert (decided["method"], decided["target"]) == ("downgrade" if mode == "online" else "auto", BASELINE), decided
    assert decided["reason"].startswith("online mode, writes stayed on: a restore would drop" if mode == "online"
                                        else f"a downgrade to {BASELINE}, and the backup "), decided
    # What the operator reads: no deprecation warning, and checks that never ran say so (not "0/None").
    assert "[DEPRECATION WARNING]" not in result.stdout + result.stderr, result.stderr[-2000:]
    assert "indexes: not checked" in result.stdout and "0/None" not in result.stdout, result.stdout[-3000:]
    (markdown,) = (tmp_path / "reports").glob("deploy-*.md")
    assert "| verification | not run; indexes not checked |" in markdown.read_text(), markdown.read_text()
    lock = run_module("deploy_lock", dict(deployable, state="acquired", owner="next-deploy"))
    assert lock["changed"] is True, "the failed deployment released its lock"


@pytest.mark.one_server_version
def test_lock_holder_on_a_migrated_table_stops_the_deploy_before_anything(server, deployable, tmp_path):
    holder = hold_lock(deployable, "jobs", application_name="report-job")
    try:
        result, recap = guarded(server, deployable, tmp_path, "-e",
                                '{"pgops_migrated_tables": ["jobs"], "preflight_max_lock_seconds": 0}')
    finally:
        holder.rollback()
        holder.close()
    assert recap["failed"] == 1
    assert "report-job) holds AccessShareLock on jobs" in result.stdout
    assert "Nothing was migrated: the database is at revision a7f3b2c1d9e8" in result.stdout
    assert revision(deployable) == BASELINE and app_can_write(deployable)
    assert not (tmp_path / "backups").exists() or not list((tmp_path / "backups").glob("*.dump"))


@pytest.mark.one_server_version  # runbook behaviour (the lease, the settings), not the server's
def test_second_deploy_is_refused_while_one_runs(server, deployable, tmp_path):
    taken = run_module("deploy_lock", dict(deployable, state="acquired", owner="deploy-already-running"))
    assert taken["changed"] is True
    result, recap = guarded(server, deployable, tmp_path)
    assert recap["failed"] == 1
    assert "held by deploy-already-running" in result.stdout
    assert revision(deployable) == BASELINE and app_can_write(deployable)
    still = run_module("deploy_lock", dict(deployable, state="acquired", owner="deploy-already-running"))
    assert still["changed"] is False, "the refused run left the other run's lock alone"


@pytest.mark.one_server_version  # runbook behaviour (the lease, the settings), not the server's
def test_a_live_deployments_lock_cannot_be_taken_by_a_stale_after_below_its_floor(
        server, deployable, tmp_path, live_writer):
    taken = run_module("deploy_lock", dict(deployable, state="acquired", owner="deploy-alive"))
    assert taken["changed"] is True
    writer = live_writer(deployable)
    result, recap = guarded(server, deployable, tmp_path, "-e", "preflight_lock_stale_after=5")
    assert recap["failed"] == 1 and result.returncode != 0
    assert "stale_after 5 is below its floor of 120 s (4 heartbeat intervals of 30 s)" in result.stdout, \
        result.stdout[-3000:]
    holder = run_module("deploy_lock", dict(deployable, state="status"))["holder"]
    assert holder["owner"] == "deploy-alive", "the live run keeps its lock"
    assert revision(deployable) == BASELINE
    assert_application_survived(writer, deployable)


@pytest.mark.one_server_version  # runbook behaviour (the lease, the guard), not the server's
def test_a_lock_taken_from_a_dead_run_comes_with_its_write_guard_and_writes_come_back(
        server, deployable, tmp_path, live_writer):
    """A run died with writes off: the next deployment takes its stale lock, and with it the guard, so writes
    come back when it is done (before, they stayed off under a guard nobody held)."""
    writer = live_writer(deployable)
    guard_set_at = time.time()
    assert run_module("deploy_lock", dict(deployable, state="acquired", owner="deploy-died"))["changed"] is True
    assert run_module("write_guard", dict(deployable, state="read_only", roles=[APP], strategy="revoke_writes",
                                          owner="deploy-died", grace_period=1))["changed"] is True
    time.sleep(5)  # no heartbeat from the dead run: stale after 4 s
    result, recap = guarded(server, deployable, tmp_path, "-e", "preflight_lock_stale_after=4",
                            "-e", "pgops_lease_heartbeat_seconds=1")
    assert result.returncode == 0 and recap["failed"] == 0, result.stdout[-3000:]
    assert "Took over the deployment lock of deploy-died: writes off for %s since " % APP in result.stdout
    assert "(revoke_writes), under the write guard of deploy-died, now deploy-" in result.stdout
    assert revision(deployable) != BASELINE
    assert run_module("write_guard", dict(deployable, state="status"))["guard"] is None
    assert run_module("deploy_lock", dict(deployable, state="status"))["holder"] is None
    # Writes were off from the dead run's guard to the end of this run, and back on since.
    assert_application_survived(writer, deployable, time.time() - guard_set_at)


@pytest.mark.parametrize("extra, message", [
    ('{"pgops_deploy_mode": "fast"}', "pgops_deploy_mode must be maintenance or online (got fast)"),
    ('{"pgops_migration_target": "nope"}', "unknown target revision 'nope'"),
    ('{"pgops_app_roles": ["no_such_app"]}', "application role(s) no_such_app do not exist"),
])
@pytest.mark.one_server_version  # runbook behaviour (the lease, the settings), not the server's
def test_invalid_inventory_values_change_nothing(server, deployable, tmp_path, extra, message):
    result, recap = playbook(server, deployable, tmp_path, "-e", extra)
    assert recap["failed"] == 1
    assert message in result.stdout
    assert revision(deployable) == BASELINE and app_can_write(deployable)


IRREVERSIBLE_REVISION = '''"""drop companies.industry: its data cannot come back by a downgrade

Revision ID: 0a1b2c3d4e5f
Revises: f7a8b9c0d1e2
"""
from alembic import op

revision = "0a1b2c3d4e5f"
down_revision = "f7a8b9c0d1e2"
branch_labels = None
depends_on = None
irreversible = True


def upgrade():
    op.execute("ALTER TABLE companies DROP COLUMN industry")
    op.execute("SELECT 1 / 0")


def downgrade():
    op.execute("ALTER TABLE companies ADD COLUMN industry text")
'''


# Marked `irreversible = True`, or not marked at all: PostgreSQL's parser finds the DROP COLUMN in its SQL.
@pytest.fixture(params=[True, False], ids=["marked", "found-by-parser"])
def irreversible_project(tmp_path, request):
    """The reference project plus a failing revision that drops a column with data."""
    project = tmp_path / "app"
    shutil.copytree(PROJECT_DIR, project, ignore=shutil.ignore_patterns("__pycache__"))
    text = IRREVERSIBLE_REVISION if request.param else IRREVERSIBLE_REVISION.replace("irreversible = True\n", "")
    (project / "migrations" / "versions" / "0a1b2c3d4e5f_drop_industry.py").write_text(text)
    return json.dumps({"pgops_alembic_project_dir": str(project)})


def irreversible_text(project_setting):
    project = json.loads(project_setting)["pgops_alembic_project_dir"]
    return (Path(project) / "migrations" / "versions" / "0a1b2c3d4e5f_drop_industry.py").read_text()


@pytest.mark.one_server_version
@pytest.mark.parametrize("irreversible_project", [True], ids=["marked"], indirect=True)  # parser: the refusal below
def test_failed_irreversible_revision_is_rolled_back_by_restore(server, deployable, tmp_path, irreversible_project):
    before = counts(deployable)
    industries = query(deployable, "SELECT count(industry) FROM companies")[0][0]
    result, recap = guarded(server, deployable, tmp_path, "-e", irreversible_project)
    assert recap["failed"] == 1
    assert "Rolled back by restore: the database is at revision a7f3b2c1d9e8" in result.stdout
    assert revision(deployable) == BASELINE and counts(deployable) == before
    assert query(deployable, "SELECT count(industry) FROM companies")[0][0] == industries
    assert app_can_write(deployable)


@pytest.mark.one_server_version
def test_irreversible_revision_is_refused_in_online_mode(server, deployable, tmp_path, irreversible_project):
    result, recap = guarded(server, deployable, tmp_path, "-e", irreversible_project,
                            "-e", '{"pgops_deploy_mode": "online"}')
    assert recap["failed"] == 1
    assert ("Revision(s) 0a1b2c3d4e5f cannot be rolled back by a downgrade (0a1b2c3d4e5f: "
            + ("marked irreversible" if "irreversible = True" in irreversible_text(irreversible_project)
               else "ALTER TABLE companies DROP COLUMN industry (drops column industry and its data)") + ")") \
        in result.stdout, result.stdout[-3000:]
    assert revision(deployable) == BASELINE and app_can_write(deployable)
    assert not list((tmp_path / "backups").glob("**/*.dump")), "refused before the backup"


RAISING_REVISION = '''"""adds a column, then raises: its transaction rolls back

Revision ID: 1b2c3d4e5f6a
Revises: f7a8b9c0d1e2
"""
from alembic import op

revision = "1b2c3d4e5f6a"
down_revision = "f7a8b9c0d1e2"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("ALTER TABLE companies ADD COLUMN rating integer")
    raise RuntimeError("the data is not what this revision expects")


def downgrade():
    # Not written to tolerate a column that is not there: nothing of a revision that raised is.
    op.drop_column("companies", "rating")
'''


@pytest.mark.one_server_version
@pytest.mark.parametrize("start", ["baseline", "head"])
def test_a_revision_that_raised_is_not_undone(server, deployable, tmp_path, start, live_writer):
    """Its transaction rolled back, so its downgrade (which does not tolerate the missing column) is not what
    proves the rollback: the catalog is. From the head it is the only revision, and the database was never
    changed; from the baseline the revisions before it are downgraded. Either way: rolled back by downgrade,
    writes on, no committed write lost, and the record says why the revision was left alone."""
    project = tmp_path / "app"
    shutil.copytree(PROJECT_DIR, project, ignore=shutil.ignore_patterns("__pycache__"))
    (project / "migrations" / "versions" / "1b2c3d4e5f6a_rating.py").write_text(RAISING_REVISION)
    if start == "head":
        alembic(deployable, "upgrade", HEAD)
    before_revision = revision(deployable)
    writer = live_writer(deployable)
    result, recap = guarded(server, deployable, tmp_path, "-e", json.dumps({"pgops_alembic_project_dir": str(project)}))
    assert recap["failed"] == 1 and result.returncode != 0, result.stdout[-3000:]
    last = failure_message(result)
    assert f"Rolled back by downgrade: the database is at revision {before_revision}, as before the deployment" \
           in last, last
    assert "revision 1b2c3d4e5f6a had left nothing to undo (its downgrade failed: " in last, last
    assert "RESTORE" not in last.upper().replace("RESTORED", ""), last
    assert revision(deployable) == before_revision
    assert query(deployable, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'rating'")[0][0] == 0
    assert app_can_write(deployable)
    (record,) = (tmp_path / "reports").glob("deploy-*.json")
    record = json.loads(record.read_text())
    assert record["outcome"] == "rolled_back", record
    assert_application_survived(writer, deployable, record["write_off_seconds"])
