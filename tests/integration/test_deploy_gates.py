"""Every decision deploy_migration.yml and rollback.yml take, driven down the branch an operator fears, through
ansible-playbook: the play's exit status, its last line and the database afterwards."""

import fcntl
import getpass
import json
import os
import re
import shutil
import socket
import stat
import time

import psycopg2
import pytest

from conftest import (APP, HEAD, PASSWORD, PROJECT_DIR, admin_run, assert_application_survived,
                      assert_writes_kept_off, connect_as, failure_message, owner_params, play_recap, process_argvs,
                      query, run_playbook, start_playbook)
from test_deploy_faults import app_can_write, counts
from test_deploy_playbook import revision

REVISION = '''"""{doc}

Revision ID: {revision}
Revises: {down}
"""
from alembic import op

revision = "{revision}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade():
{upgrade}


def downgrade():
{downgrade}
'''


def project(tmp_path, *revisions):
    """The reference project plus revisions after its head: (revision id, upgrade body, downgrade body)."""
    folder = tmp_path / "app"
    shutil.copytree(PROJECT_DIR, folder, ignore=shutil.ignore_patterns("__pycache__"))
    down = HEAD
    for number, (rev, upgrade, downgrade) in enumerate(revisions):
        (folder / "migrations" / "versions" / f"{rev}_step{number}.py").write_text(REVISION.format(
            doc=f"test revision {number}", revision=rev, down=down, upgrade=upgrade, downgrade=downgrade))
        down = rev
    return json.dumps({"pgops_alembic_project_dir": str(folder)})


GUARD = json.dumps({"pgops_app_roles": [APP], "pgops_app_probe_user": APP, "pgops_app_probe_password": PASSWORD})


def deploy(server, params, tmp_path, *extra):
    result = run_playbook("deploy_migration.yml", server, params, tmp_path, "-e", GUARD, *extra)
    return result, play_recap(result)


def record(tmp_path):
    (path,) = (tmp_path / "reports").glob("deploy-*.json")
    return json.loads(path.read_text())


def guard_record(params):
    return query(params, "SELECT count(*) FROM pg_db_role_setting d, unnest(d.setconfig) s "
                         "WHERE s LIKE 'pgops.write_guard=%'")[0][0]


UNDOABLE_TABLE = ("0b00000000a1", "    op.execute('CREATE TABLE audit_notes (id int)')",
                  "    raise RuntimeError('audit_notes cannot be dropped by a downgrade')")
FAILING = ("0b00000000a2", "    op.execute('SELECT 1 / 0')", "    pass")


@pytest.mark.one_server_version
def test_failed_downgrade_falls_through_to_the_restore(server, guarded_db, tmp_path, live_writer):
    """The restore puts back the backup taken with writes off: every write the application committed is in it."""
    before = counts(guarded_db)
    writer = live_writer(guarded_db)
    result, recap = deploy(server, guarded_db, tmp_path, "-e", project(tmp_path, UNDOABLE_TABLE, FAILING))
    assert recap["failed"] == 1 and result.returncode != 0
    message = failure_message(result)
    assert "Rolled back by restore: the database is at revision f7a8b9c0d1e2" in message, message
    assert "the downgrade had failed" in message and "audit_notes cannot be dropped" in message
    assert "its catalog and rows as before (" in message, message
    assert revision(guarded_db) == HEAD and counts(guarded_db) == before
    assert query(guarded_db, "SELECT to_regclass('audit_notes')")[0][0] is None
    assert app_can_write(guarded_db) and guard_record(guarded_db) == 0
    report = record(tmp_path)
    assert report["outcome"] == "rolled_back" and report["revision_after"] == HEAD
    assert report["backup_taken"] == "with writes off"
    assert_application_survived(writer, guarded_db, report["write_off_seconds"])


@pytest.fixture
def broken_restore(server, tmp_path):
    """Client programs whose pg_restore verifies backups but cannot restore one in place."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for program in os.listdir(server["bindir"]):
        (bindir / program).symlink_to(os.path.join(server["bindir"], program))
    (bindir / "pg_restore").unlink()
    wrapper = bindir / "pg_restore"
    wrapper.write_text("#!/bin/sh\ncase \"$*\" in *--file=-*) "
                       "echo 'pg_restore: error: simulated: the archive cannot be restored' >&2; exit 1;; esac\n"
                       "exec %s \"$@\"\n" % os.path.join(server["bindir"], "pg_restore"))
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return json.dumps({"pgops_pg_bin_dir": str(bindir)})


@pytest.mark.one_server_version
@pytest.mark.parametrize("writes_on_after", [False, True], ids=["fail-closed", "writes-on-chosen"])
def test_a_failed_rollback_keeps_writes_off_and_says_what_to_run(
        server, guarded_db, tmp_path, broken_restore, writes_on_after, live_writer):
    extra = ["-e", json.dumps({"pgops_writes_on_after_failed_rollback": writes_on_after})]
    writer = live_writer(guarded_db)
    result, recap = deploy(server, guarded_db, tmp_path, "-e", project(tmp_path, UNDOABLE_TABLE, FAILING),
                           "-e", broken_restore, *extra)
    assert recap["failed"] == 1
    message = failure_message(result)
    report = record(tmp_path)
    assert "THE ROLLBACK FAILED TOO" in message and "The database is at revision 0b00000000a1" in message
    assert f"ansible-playbook playbooks/rollback.yml -e method=restore -e backup={report['backup']['path']}" in message
    assert report["outcome"] == "rollback_failed"
    assert revision(guarded_db) == "0b00000000a1"
    backup_name = os.path.basename(report["backup"]["path"])
    if writes_on_after:
        assert "writes are back on" in message and app_can_write(guarded_db)
        assert "discard_writes" not in message, "the application wrote since: only the operator may acknowledge that"
        assert_application_survived(writer, guarded_db, report["write_off_seconds"])
    else:
        assert "writes are kept OFF" in message and not app_can_write(guarded_db)
        assert guard_record(guarded_db) == 1
        assert report["writes"] == "kept off after the failed rollback"
        assert_writes_kept_off(writer, guarded_db)
        # Writes were off since the backup: the remedy acknowledges the migration's own writes, and it works.
        remedy = re.search(r"ansible-playbook playbooks/rollback\.yml (-e method=restore -e backup=\S+ "
                           r"-e discard_writes=(\S+) -e confirm=yes)", message)
        assert remedy and remedy.group(2) == backup_name, message
        restored = run_playbook("rollback.yml", server, guarded_db, tmp_path, "-e", GUARD, *remedy.group(1).split())
        assert restored.returncode == 0, restored.stdout[-3000:]
        assert revision(guarded_db) == HEAD and app_can_write(guarded_db)


@pytest.mark.one_server_version
def test_verification_failing_after_migrating_rolls_back(server, guarded_db, tmp_path, live_writer):
    # A trigger of its own, left disabled (the deploy role may not disable the foreign keys' system triggers).
    disables = ("0b00000000b1",
                "    op.execute('CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$')\n"
                "    op.execute('CREATE TRIGGER touch BEFORE UPDATE ON job_applications "
                "FOR EACH ROW EXECUTE FUNCTION touch()')\n"
                "    op.execute('ALTER TABLE job_applications DISABLE TRIGGER touch')",
                "    op.execute('DROP TRIGGER IF EXISTS touch ON job_applications')\n"
                "    op.execute('DROP FUNCTION IF EXISTS touch()')")
    writer = live_writer(guarded_db)
    result, recap = deploy(server, guarded_db, tmp_path, "-e", project(tmp_path, disables))
    assert recap["failed"] == 1
    message = failure_message(result)
    assert "failed at Pass only if every check passed" in message
    assert "on job_applications is disabled" in message
    assert "Rolled back by downgrade: the database is at revision f7a8b9c0d1e2" in message
    assert revision(guarded_db) == HEAD and app_can_write(guarded_db)
    assert query(guarded_db, "SELECT count(*) FROM pg_trigger WHERE tgenabled = 'D'")[0][0] == 0
    assert record(tmp_path)["outcome"] == "rolled_back"
    assert_application_survived(writer, guarded_db, record(tmp_path)["write_off_seconds"])


@pytest.mark.one_server_version
def test_check_mode_with_a_failing_revision_claims_nothing(server, guarded_db, tmp_path):
    needs_db = ("0b00000000c1", "    op.get_bind().commit()", "    pass")
    result, recap = deploy(server, guarded_db, tmp_path, "--check", "-e", project(tmp_path, needs_db, FAILING))
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Check mode: would deploy f7a8b9c0d1e2 -> 0b00000000a2" in result.stdout
    assert re.search(r"Check mode: the SQL of 1 of 2 revision\(s\) is in \S+\.plan\.sql; not rendered offline: "
                     r"0b00000000c1 \(alembic upgrade --sql \w+:0b00000000c1 failed: ", result.stdout), \
        result.stdout[-3000:]
    assert "Rolled back" not in result.stdout
    assert recap["failed"] == 0
    assert revision(guarded_db) == HEAD and app_can_write(guarded_db)
    # The SQL it would run is the only thing written: no backup, no deployment record.
    reports = list((tmp_path / "reports").iterdir())
    assert [path.suffixes for path in reports] == [[".plan", ".sql"]], reports
    sql = reports[0].read_text()
    assert "-- not rendered offline: 0b00000000c1:" in sql and "SELECT 1 / 0" in sql
    assert not (tmp_path / "backups").exists()


def changes_roles(server, allowed):
    """Give the deploy role, or take back, what the guard strategies that alter the application's roles need:
    CREATEROLE, and from PostgreSQL 16 ADMIN OPTION on each of them."""
    if allowed:
        admin_run(server, "ALTER ROLE {} CREATEROLE", server["deploy_user"])
        admin_run(server, "GRANT {} TO {} WITH ADMIN OPTION", APP, server["deploy_user"])
    else:
        admin_run(server, "REVOKE {} FROM {}", APP, server["deploy_user"])
        admin_run(server, "ALTER ROLE {} NOCREATEROLE", server["deploy_user"])


# The committed-then-undone path (default_transaction_read_only) on every server; the other on the newest.
@pytest.mark.parametrize("strategy", [pytest.param("revoke_writes", marks=pytest.mark.one_server_version),
                                      "default_transaction_read_only"])
def test_a_probe_that_fails_still_turns_writes_back_on(server, guarded_db, tmp_path, strategy):
    # revoke_writes finds it in the catalog before committing anything; default_transaction_read_only by a
    # login after its changes committed, which the always section then undoes.
    query(guarded_db, "CREATE ROLE app_unguarded LOGIN PASSWORD 'unguarded-pw'")
    query(guarded_db, "GRANT INSERT ON companies TO app_unguarded")
    if strategy == "default_transaction_read_only":
        # It changes the application's roles: the deploy role needs what docs/security.md says, for the test.
        changes_roles(server, True)
    try:
        # The probe logs in as a role the guard does not cover: it can still write, so the guard fails its proof.
        settings = json.dumps({"pgops_app_probe_user": "app_unguarded", "pgops_app_probe_password": "unguarded-pw",
                               "pgops_write_guard_strategy": strategy})
        result, recap = deploy(server, guarded_db, tmp_path, "-e", project(tmp_path, FAILING), "-e", settings)
    finally:
        query(guarded_db, "DROP OWNED BY app_unguarded")
        query(guarded_db, "DROP ROLE app_unguarded")
        changes_roles(server, False)
    assert recap["failed"] == 1
    message = failure_message(result)
    assert "write guard set read_only but app_unguarded still writes" in message
    assert "Nothing was migrated: the database is at revision f7a8b9c0d1e2" in message
    assert app_can_write(guarded_db) and guard_record(guarded_db) == 0
    assert record(tmp_path)["outcome"] == "failed"


@pytest.mark.one_server_version  # runbook behaviour (the lease, the settings), not the server's
def test_three_simultaneous_deployments_one_deploys(server, guarded_db, tmp_path, live_writer):
    writer = live_writer(guarded_db)
    settings = project(tmp_path, ("0b00000000d1", "    op.execute('CREATE TABLE d1 (id int)')",
                                  "    op.execute('DROP TABLE d1')"))
    runs = [start_playbook("deploy_migration.yml", server, guarded_db, tmp_path, "-e", GUARD, "-e", settings)
            for _run in range(3)]
    outputs = [(run.communicate(timeout=600)[0], run.returncode) for run in runs]
    winners = [out for out, rc in outputs if rc == 0]
    losers = [out for out, rc in outputs if rc != 0]
    assert len(winners) == 1, [out[-1500:] for out, _rc in outputs]
    # Named as the operator knows it: who ran the holder, from which machine (not the database host).
    by = f"run by {getpass.getuser()} on {socket.gethostname()}"
    for out in losers:
        assert "deployment lock of" in out and "is held by deploy-" in out and by in out
        assert "Nothing was migrated" in out
    (record,) = [json.loads(path.read_text()) for path in (tmp_path / "reports").glob("deploy-*.json")
                 if json.loads(path.read_text())["outcome"] == "deployed"]
    assert record["run_by"] == {"controller": socket.gethostname(), "user": getpass.getuser(), "run_id": ""}
    assert {phase["host"] for phase in record["phases"]} == {"intowork-local"}
    assert revision(guarded_db) == "0b00000000d1" and app_can_write(guarded_db)
    assert len(list((tmp_path / "backups").glob("*.dump"))) == 1, "the refused runs took no backup"
    assert query(guarded_db, "SELECT count(*) FROM pg_db_role_setting d, unnest(d.setconfig) s "
                             "WHERE s LIKE 'pgops.deploy_lock=%'")[0][0] == 0, "the winner released its lock"
    # Only the winner turned writes off; the refused runs never touched them.
    assert_application_survived(writer, guarded_db, record["write_off_seconds"])


@pytest.mark.one_server_version  # runbook behaviour (the lease, the settings), not the server's
def test_two_simultaneous_rollbacks_one_rolls_back(server, guarded_db, tmp_path, live_writer):
    writer = live_writer(guarded_db)
    runs = [start_playbook("rollback.yml", server, guarded_db, tmp_path, "-e", GUARD, "-e", "revision=e6f7a8b9c0d1",
                           "-e", "confirm=yes") for _run in range(2)]
    outputs = [(run.communicate(timeout=600)[0], run.returncode) for run in runs]
    assert sorted(rc == 0 for _out, rc in outputs) == [False, True], [out[-1500:] for out, _rc in outputs]
    (loser,) = [out for out, rc in outputs if rc != 0]
    assert "holds the deployment lock" in loser or "is held by rollback-" in loser
    assert f"run by {getpass.getuser()} on {socket.gethostname()}" in loser
    assert revision(guarded_db) == "e6f7a8b9c0d1" and app_can_write(guarded_db)
    (winner,) = [out for out, rc in outputs if rc == 0]
    assert_application_survived(writer, guarded_db, re.search(r"Writes were off for ([0-9.]+) s", winner).group(1))


@pytest.mark.one_server_version  # runbook behaviour (the lease, the settings), not the server's
def test_every_bad_setting_is_named_in_one_message_before_anything_runs(server, guarded_db, tmp_path):
    bad = json.dumps({"pgops_backup_dir": "backups", "pgops_reports_dir": "", "pgops_deploy_mode": "fast"})
    result, recap = deploy(server, guarded_db, tmp_path, "-e", bad)
    assert recap["failed"] == 1
    message = failure_message(result)
    assert message.startswith("Bad settings, nothing was changed: ")
    for fragment in ('pgops_backup_dir "backups" must be an absolute path on the database host',
                     "pgops_reports_dir is not set", "pgops_deploy_mode must be maintenance or online (got fast)"):
        assert fragment in message
    assert "TASK [intowork.pgops.preflight" not in result.stdout, "refused before the preflight"
    assert revision(guarded_db) == HEAD and app_can_write(guarded_db)


@pytest.mark.one_server_version  # runbook behaviour (tags), not the server's
@pytest.mark.parametrize("playbook, tags, refusal", [
    ("deploy_migration.yml", ["--tags", "backup"],
     "--tags backup would run only part of the deployment, which runs whole: leave --tags out. Nothing was changed."),
    ("deploy_migration.yml", ["--skip-tags", "smoke,backup"],
     "--skip-tags backup is not a part the deployment can do without: it can skip smoke, notify. Nothing was changed."),
    ("rollback.yml", ["--skip-tags", "notify", "-e", "revision=" + HEAD, "-e", "confirm=yes"],
     "--skip-tags notify is not a part the rollback can do without: it skips nothing. Nothing was changed."),
])
def test_a_runbook_refuses_tags_that_would_run_part_of_it(server, guarded_db, tmp_path, playbook, tags, refusal):
    result = run_playbook(playbook, server, guarded_db, tmp_path, "-e", GUARD, *tags)
    assert result.returncode == 2 and play_recap(result)["failed"] == 1, result.stdout[-3000:]
    assert failure_message(result) == refusal
    assert "TASK [intowork.pgops." not in result.stdout, "refused before any role ran"
    assert revision(guarded_db) == HEAD and app_can_write(guarded_db)


@pytest.mark.one_server_version  # runbook behaviour (tags), not the server's
def test_a_deployment_without_its_optional_parts_passes_the_tag_check(server, guarded_db, tmp_path):
    result = run_playbook("deploy_migration.yml", server, guarded_db, tmp_path, "-e", GUARD, "--check",
                          "--tags", "deploy", "--skip-tags", "smoke,notify,molecule-notest")
    assert result.returncode == 0 and play_recap(result)["failed"] == 0, result.stdout[-3000:]
    assert "TASK [intowork.pgops.preflight" in result.stdout
    assert "nothing to deploy: at %s (head)" % HEAD in result.stdout


def backup_program_waiting(database):
    """True once the backup program runs for `database` (here: waiting for the backup lock)."""
    for _pid, argv in process_argvs():
        if any(arg.endswith(b"pgops_backup.py") for arg in argv) and b"backup" in argv and any(
                arg.endswith(f"backup-{database}.run.json".encode()) for arg in argv):
            return True
    return False


@pytest.mark.one_server_version  # runbook behaviour (the lease, the settings), not the server's
def test_a_deployment_in_a_long_backup_keeps_its_lease_and_is_never_taken_over(server, guarded_db, tmp_path):
    settings = project(tmp_path, ("0b00000000e1", "    op.execute('CREATE TABLE e1 (id int)')",
                                  "    op.execute('DROP TABLE e1')"))
    stale_after = 3
    quick_leases = ["-e", f"preflight_lock_stale_after={stale_after}", "-e", "pgops_lease_heartbeat_seconds=0.5"]
    backups = tmp_path / "backups"
    backups.mkdir(mode=0o700)
    with open(backups / ".pgops-backup.lock", "w", encoding="utf-8") as other_backup:
        # Another backup of this database holds the lock: the deployment's backup waits for it, a long step.
        fcntl.flock(other_backup, fcntl.LOCK_EX)
        first = start_playbook("deploy_migration.yml", server, guarded_db, tmp_path, "-e", GUARD, "-e", settings,
                               *quick_leases, "-e", "backup_lock_wait_seconds=300")
        deadline = time.monotonic() + 240
        while not backup_program_waiting(guarded_db["login_db"]):
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()[0][-3000:]
            time.sleep(0.2)
        time.sleep(3 * stale_after)
        second, second_recap = deploy(server, guarded_db, tmp_path, "-e", settings, *quick_leases)
        assert first.poll() is None, "the first deployment is still waiting for its backup"
    out = first.communicate(timeout=600)[0]
    assert second.returncode != 0 and second_recap["failed"] >= 1
    assert "is held by deploy-" in second.stdout, second.stdout[-3000:]
    assert first.returncode == 0, out[-3000:]
    assert revision(guarded_db) == "0b00000000e1" and app_can_write(guarded_db)
    assert len(list(backups.glob("*.dump"))) == 1, "the refused run took no backup"


def application_grants(params):
    return query(params, "SELECT table_name, privilege_type FROM information_schema.role_table_grants "
                         "WHERE grantee = %s ORDER BY 1, 2", (APP,))


@pytest.mark.one_server_version
def test_a_deployment_guarded_by_revoking_writes_gives_back_exactly_the_grants(server, guarded_db, tmp_path):
    before = application_grants(guarded_db)
    settings = project(tmp_path, ("0b00000000g1", "    op.execute('CREATE TABLE g1 (id int)')",
                                  "    op.execute('DROP TABLE g1')"))
    result, recap = deploy(server, guarded_db, tmp_path, "-e", settings,
                           "-e", json.dumps({"pgops_write_guard_strategy": "revoke_writes"}))
    assert result.returncode == 0 and recap["failed"] == 0, result.stdout[-3000:]
    assert revision(guarded_db) == "0b00000000g1"
    assert application_grants(guarded_db) == before and app_can_write(guarded_db) and guard_record(guarded_db) == 0
    kept = record(tmp_path)
    assert kept["outcome"] == "deployed" and kept["backup_taken"] == "with writes off"


JOB_TITLES = "CREATE VIEW job_titles AS SELECT id, title FROM jobs"
# The deployment re-creates a view its readers use (new column), and so does its downgrade: the grant on it is
# lost both ways, which fails the deployment and then the downgrade's proof. An unfaithful downgrade also gives
# the view back with its columns in another order.
VIEW_REBUILT = ("0b00000000c1",
                "    op.execute('DROP VIEW job_titles')\n"
                "    op.execute('CREATE VIEW job_titles AS SELECT id, title, company_id FROM jobs')",
                "    op.execute('DROP VIEW job_titles')\n    op.execute('%s')" % JOB_TITLES)
VIEW_REBUILT_ELSEWISE = VIEW_REBUILT[:2] + (
    "    op.execute('DROP VIEW job_titles')\n    op.execute('CREATE VIEW job_titles AS SELECT title, id FROM jobs')",)


def app_reads_job_titles(params):
    conn = connect_as(params, APP, PASSWORD)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT * FROM job_titles LIMIT 1")
            return [column.name for column in cur.description]
    except psycopg2.Error:
        return None
    finally:
        conn.close()


@pytest.mark.one_server_version
@pytest.mark.parametrize("downgrade, mode", [(VIEW_REBUILT, "maintenance"), (VIEW_REBUILT_ELSEWISE, "maintenance"),
                                             (VIEW_REBUILT_ELSEWISE, "online")],
                         ids=["faithful", "lossy-maintenance", "lossy-online"])
def test_a_lost_grant_fails_the_deployment_and_the_rollback_proves_the_catalog(server, guarded_db, tmp_path, downgrade, mode):
    owner = owner_params(server, guarded_db)
    query(owner, JOB_TITLES)
    query(owner, f"GRANT SELECT ON job_titles TO {APP}")
    result, recap = deploy(server, guarded_db, tmp_path, "-e", project(tmp_path, downgrade),
                           "-e", json.dumps({"pgops_deploy_mode": mode}))
    assert recap["failed"] == 1 and result.returncode != 0
    message = failure_message(result)
    report = record(tmp_path)
    # The migration ran, and the gate found what it broke: the readers' grant on the view it re-created.
    assert (f"failed at Check that the deployment broke nothing in the catalog: the deployment broke 1 thing(s) on "
            f"{server['deploy_user']}@") in message, message
    assert f"view public.job_titles: grant SELECT to {APP} is gone" in message
    if downgrade is VIEW_REBUILT:
        assert "Rolled back by downgrade: the database is at revision f7a8b9c0d1e2" in message, message
        assert "its catalog and rows as before (" in message
        assert f"privileges the rollback had lost were granted back: SELECT on view public.job_titles to {APP}" \
            in message, message
        assert report["outcome"] == "rolled_back"
    elif mode == "maintenance":
        assert "Rolled back by restore: the database is at revision f7a8b9c0d1e2" in message, message
        assert ("the downgrade had not given everything back: view public.job_titles: columns in another order: "
                "now title, id; was id, title") in message, message
        assert report["outcome"] == "rolled_back"
    else:
        assert "THE ROLLBACK FAILED TOO" in message, message
        assert ("did not give everything back: view public.job_titles: columns in another order: now title, id; "
                "was id, title") in message, message
        assert f"-e method=restore -e backup={report['backup']['path']} -e confirm=yes" in message
        assert report["outcome"] == "rollback_failed"
        return
    assert revision(guarded_db) == HEAD and app_reads_job_titles(guarded_db) == ["id", "title"]
    assert app_can_write(guarded_db)


def definer_seen(table):
    """A revision that records, while the deployment migrates, whether the application can run add_company."""
    return (f"    op.execute(\"CREATE TABLE {table} AS SELECT pg_catalog.has_function_privilege('{APP}', "
            "'add_company(text)', 'EXECUTE') AS runnable\")", f"    op.execute('DROP TABLE {table}')")


def newest_record(tmp_path):
    return json.loads(max((tmp_path / "reports").glob("deploy-*.json"), key=os.path.getmtime).read_text())


def routine_acl(params):
    return query(params, "SELECT (SELECT array_agg(a::text ORDER BY a::text) FROM unnest(coalesce(proacl, "
                         "acldefault('f', proowner))) a) FROM pg_proc WHERE oid = 'add_company(text)'::regprocedure")


@pytest.mark.one_server_version  # runbook behaviour (the inventory's choice), not the server's
def test_the_inventory_chooses_whether_definer_routines_stay_runnable_during_the_window(
        server, guarded_db, tmp_path, live_writer):
    """A SECURITY DEFINER routine writes with its owner's rights whatever the guard revoked from the application.
    Preflight names it; by default the window leaves it runnable (said); with revoke the application cannot run
    it while the migration runs, and gets exactly its EXECUTE back; a routine the guard cannot take away stops
    the deployment before anything changes."""
    # Created as the runbooks' account, as a migration would create it.
    deployer = owner_params(server, guarded_db)
    query(deployer, "CREATE FUNCTION add_company(name text) RETURNS void LANGUAGE sql SECURITY DEFINER "
                    "AS $$ INSERT INTO companies (name) VALUES (name) $$")
    first, second = "0d00000000f1", "0d00000000f2"
    settings = project(tmp_path, (first, *definer_seen("definer_seen_1")), (second, *definer_seen("definer_seen_2")))
    revoke = json.dumps({"pgops_write_guard_definer_routines": "revoke"})
    acl = routine_acl(guarded_db)

    # Reached through a role the application belongs to: revoking cannot take it away, so nothing changes.
    query(guarded_db, "CREATE ROLE app_runners")
    query(guarded_db, f"GRANT app_runners TO {APP}")
    query(deployer, "GRANT EXECUTE ON FUNCTION add_company(text) TO app_runners")
    try:
        writer = live_writer(guarded_db)
        refused, recap = deploy(server, guarded_db, tmp_path, "-e", settings, "-e", revoke)
        assert_application_survived(writer, guarded_db, newest_record(tmp_path)["write_off_seconds"])
    finally:
        query(guarded_db, "DROP OWNED BY app_runners")
        query(guarded_db, "DROP ROLE app_runners")
    assert refused.returncode == 2 and recap["failed"] == 1, refused.stdout[-3000:]
    message = failure_message(refused)
    assert "after revoking EXECUTE the roles can still run SECURITY DEFINER routine(s) that write: " \
           f"public.add_company(text) (owned by {deployer['login_user']}) for {APP}" in message, message
    assert "Nothing was migrated: the database is at revision %s" % HEAD in message
    assert revision(guarded_db) == HEAD and app_can_write(guarded_db) and guard_record(guarded_db) == 0
    assert routine_acl(guarded_db) == acl

    writer = live_writer(guarded_db)
    allowed, recap = deploy(server, guarded_db, tmp_path, "-e", settings, "-e", f"pgops_migration_target={first}")
    assert allowed.returncode == 0, failure_message(allowed)
    assert_application_survived(writer, guarded_db, newest_record(tmp_path)["write_off_seconds"])
    assert (f"{APP} can run SECURITY DEFINER routine(s) whose owner can write: public.add_company(text) (owned by "
            f"{deployer['login_user']}). The write guard leaves them runnable") in allowed.stdout
    assert "Writes are off, except through SECURITY DEFINER routine(s) the roles can still run" in allowed.stdout
    assert query(guarded_db, "SELECT runnable FROM definer_seen_1") == [(True,)]

    writer = live_writer(guarded_db)
    revoked, recap = deploy(server, guarded_db, tmp_path, "-e", settings, "-e", revoke)
    assert revoked.returncode == 0, failure_message(revoked)
    assert_application_survived(writer, guarded_db, newest_record(tmp_path)["write_off_seconds"])
    assert "The write guard takes EXECUTE on them away for its window and gives it back after." in revoked.stdout
    assert query(guarded_db, "SELECT runnable FROM definer_seen_2") == [(False,)]
    assert routine_acl(guarded_db) == acl, "exactly the EXECUTE privileges of before"
    assert revision(guarded_db) == second and app_can_write(guarded_db)
