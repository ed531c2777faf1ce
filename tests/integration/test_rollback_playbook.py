"""rollback.yml used alone, days later: from a deployment record, from a backup, and refusing to guess."""

import json
import re
import time
from pathlib import Path

import pytest

from conftest import (APP, BASELINE, HEAD, PASSWORD, alembic, application_role, artifacts, assert_application_survived,
                      failure_message, load_reference_data, play_recap, query, run_module, run_playbook)
from test_deploy_playbook import playbook, revision


def rollback(server, params, tmp_path, *extra):
    return run_playbook("rollback.yml", server, params, tmp_path, *extra)


def deployed(server, database, tmp_path):
    alembic(database, "upgrade", BASELINE)
    load_reference_data(database, scale=0.01)
    result, recap = playbook(server, database, tmp_path)
    assert recap["failed"] == 0, result.stdout[-2000:]
    (record,) = (tmp_path / "reports").glob("deploy-*.json")
    return record, json.loads(record.read_text())


GUARDED = json.dumps({"pgops_app_roles": [APP], "pgops_app_probe_user": APP, "pgops_app_probe_password": PASSWORD})


def test_restore_discarding_writes_is_refused_then_acknowledged_with_a_safety_copy(
        server, database, tmp_path, live_writer):
    """The application writes after a deployment. A restore of the deployment's backup would discard those writes:
    refused, naming them, writes never turned off; acknowledged by naming the backup, it keeps a verified copy of
    the state it replaces and says where, and the writes it discarded are all in that copy."""
    alembic(database, "upgrade", BASELINE)
    load_reference_data(database, scale=0.01)
    with application_role(database):
        result, recap = playbook(server, database, tmp_path, "-e", GUARDED)
        assert recap["failed"] == 0, result.stdout[-2000:]
        (report,) = (tmp_path / "reports").glob("deploy-*.json")
        backup = Path(json.loads(report.read_text())["backup"]["path"])
        query(database, "DELETE FROM job_applications WHERE id IN (SELECT id FROM job_applications LIMIT 3)")
        writer = live_writer(database)
        time.sleep(1)

        refused = rollback(server, database, tmp_path, "-e", GUARDED, "-e", "method=restore",
                           "-e", f"backup={backup}", "-e", "confirm=yes")
        assert refused.returncode != 0 and play_recap(refused)["failed"] == 1
        last = failure_message(refused)
        assert last.startswith("restore refused, nothing changed: it would discard the writes committed between "), last
        assert re.search(r"public\.companies: \d+ row\(s\) written since the backup", last), last
        assert "public.job_applications: 0 row(s) written since the backup and 3 of its row(s) deleted" in last, last
        assert f"-e discard_writes={backup.name}" in last and last.endswith("Writes were not turned off."), last
        assert revision(database) == HEAD
        assert_application_survived(writer, database)

        writer = live_writer(database)
        time.sleep(1)
        done = rollback(server, database, tmp_path, "-e", GUARDED, "-e", "method=restore", "-e", f"backup={backup}",
                        "-e", "confirm=yes", "-e", f"discard_writes={backup.name}")
        writer.stop()
        assert done.returncode == 0, done.stdout[-3000:]
        assert revision(database) == BASELINE
        (published,) = artifacts(done)["pgops_rollbacks"].values()
        assert published["method"] == "restore" and published["revision"] == BASELINE
        safety = Path(published["safety_backup"])
        assert f"; the state before the restore is kept in {safety}." in done.stdout
        assert re.search(r"; discarded, as acknowledged: the writes committed between \S+ and \S+: .*"
                         r"public\.companies: \d+ row\(s\) written since the backup", published["summary"])
        assert "public.companies" in published["discarded"]
        kept = json.loads(Path(str(safety) + ".manifest.json").read_text())
        assert kept["verified"] and kept["alembic_revision"] == HEAD
        # Every write the restore discarded is in the copy: the copy has as many rows beyond the backup's.
        lost = writer.missing(database)
        at_backup = json.loads(Path(str(backup) + ".manifest.json").read_text())["table_rows"]["public.companies"]
        assert 0 < len(lost) <= kept["table_rows"]["public.companies"] - at_backup, (lost, writer.figures())
        assert query(database, "SELECT count(*) FROM job_applications")[0][0] == \
            kept["table_rows"]["public.job_applications"] + 3
        # Fresh statistics before the application's queries return: every restored table was analysed.
        assert query(database, "SELECT count(*) FROM pg_stat_user_tables WHERE schemaname = 'public' "
                               "AND last_analyze IS NULL AND last_autoanalyze IS NULL")[0][0] == 0
        # The next deployment, started at once, passes its verification with the application writing.
        writer = live_writer(database)
        again, recap = playbook(server, database, tmp_path, "-e", GUARDED)
        assert recap["failed"] == 0 and revision(database) == HEAD, again.stdout[-3000:]
        (latest,) = [path for path in (tmp_path / "reports").glob("deploy-*.json") if path != report]
        assert_application_survived(writer, database, json.loads(latest.read_text())["write_off_seconds"])


@pytest.mark.one_server_version
def test_check_mode_says_what_the_rollback_would_do_and_changes_nothing(server, database, tmp_path):
    alembic(database, "upgrade", HEAD)
    result = rollback(server, database, tmp_path, "--check", "-e", f"revision={BASELINE}", "-e", "method=downgrade")
    assert result.returncode == 0 and play_recap(result)["failed"] == 0, result.stdout[-2000:]
    assert f"Check mode: would roll back {database['login_db']}" in result.stdout
    assert f"to revision {BASELINE}" in result.stdout and "Nothing was changed." in result.stdout
    assert "TASK [intowork.pgops.rollback" not in result.stdout, "check mode stops at the plan"
    assert revision(database) == HEAD


def test_unconfirmed_or_corrupt_rollbacks_change_nothing_then_the_record_rolls_back(server, database, tmp_path):
    """One deployment, three rollbacks: without confirm=yes, and from a corrupt backup, nothing changes (both
    fail); from the deployment record, it rolls back by downgrade."""
    record, report = deployed(server, database, tmp_path)
    unconfirmed = rollback(server, database, tmp_path, "-e", f"revision={BASELINE}")
    assert unconfirmed.returncode != 0
    assert "Not confirmed: nothing was changed" in unconfirmed.stdout
    assert revision(database) == HEAD

    path = Path(report["backup"]["path"])
    intact = path.read_bytes()
    corrupt = bytearray(intact)
    corrupt[len(corrupt) // 2] ^= 0xFF
    path.write_bytes(bytes(corrupt))
    refused = rollback(server, database, tmp_path, "-e", "method=restore", "-e", f"backup={path}", "-e", "confirm=yes")
    path.write_bytes(intact)
    assert refused.returncode != 0
    assert "is corrupt: sha256" in refused.stdout
    assert revision(database) == HEAD

    result = rollback(server, database, tmp_path, "-e", f"record={record}", "-e", "confirm=yes")
    assert result.returncode == 0, result.stdout[-2000:]
    assert "Rolled back by downgrade" in result.stdout
    assert revision(database) == BASELINE == report["revision_before"]
    assert query(database, "SELECT count(*) FROM job_applications")[0][0] == report["row_counts_before"]["job_applications"]
    # The catalog the rollback proved equal to the one before the deployment is verify.yml's baseline now.
    # (The baseline revision has none of the indexes INTOWORK's inventory counts on, which it fails on.)
    verified = run_playbook("verify.yml", server, database, tmp_path,
                            "-e", '{"pgops_index_fail_on": ["missing"], "pgops_index_min_count": 0}')
    assert verified.returncode == 0, failure_message(verified)
    assert "; no drift from the catalog the rollback of " in verified.stdout, verified.stdout[-3000:]


def test_missing_record_is_one_clear_line(server, database, tmp_path):
    alembic(database, "upgrade", BASELINE)
    result = rollback(server, database, tmp_path, "-e", "record=/nonexistent/deploy.json", "-e", "confirm=yes")
    assert result.returncode != 0
    assert "No deployment record at /nonexistent/deploy.json" in result.stdout


@pytest.mark.one_server_version
def test_rollback_after_a_deployment_died_with_its_lock(server, database, tmp_path, live_writer):
    """The deployment died with writes off: the rollback takes its lock with force_unlock, and with it the guard
    (said in the run), rolls back, and gives the writes back."""
    _record, _report = deployed(server, database, tmp_path)
    with application_role(database):
        # What a deployment whose machine died leaves behind: its lock, and writes off under its guard.
        run_module("deploy_lock", dict(database, state="acquired", owner="deploy-died-at-3am"))
        writer = live_writer(database)
        guard_off_at = time.time()
        assert run_module("write_guard", dict(database, state="read_only", roles=[APP], owner="deploy-died-at-3am",
                                              strategy="revoke_writes", grace_period=1))["changed"] is True
        refused = rollback(server, database, tmp_path, "-e", GUARDED, "-e", f"revision={BASELINE}", "-e", "confirm=yes")
        assert refused.returncode != 0
        assert "deploy-died-at-3am (lease taken on" in refused.stdout and "run again with -e force_unlock=yes" in refused.stdout
        assert revision(database) == HEAD
        done = rollback(server, database, tmp_path, "-e", GUARDED, "-e", f"revision={BASELINE}", "-e", "confirm=yes",
                        "-e", "force_unlock=yes")
        assert done.returncode == 0, done.stdout[-2000:]
        assert (f"Took over the deployment lock of deploy-died-at-3am: writes off for {APP} since "
                in done.stdout), done.stdout[-3000:]
        assert "under the write guard of deploy-died-at-3am, now rollback-" in done.stdout
        assert revision(database) == BASELINE
        assert run_module("write_guard", dict(database, state="status"))["guard"] is None
        # Writes were off from the dead run's guard to the end of the rollback.
        assert_application_survived(writer, database, time.time() - guard_off_at)
    assert run_module("deploy_lock", dict(database, state="acquired", owner="next"))["changed"] is True


@pytest.mark.one_server_version  # the runbook's checks, not the server's
def test_bad_rollback_input_is_refused_before_writes_go_off(server, guarded_db, tmp_path, live_writer):
    """Each bad input is named before anything changes: the application never stops writing, the revision stays."""
    backups = tmp_path / "backups"
    backups.mkdir()
    corrupt = backups / "corrupt.dump"
    corrupt.write_bytes(b"not a dump")
    (backups / "corrupt.dump.manifest.json").write_text(json.dumps({"sha256": "0" * 64, "verified": True}))
    cases = [
        (["-e", "revision=nope"], "unknown target revision 'nope'"),
        (["-e", "method=restore", "-e", f"backup={backups / 'missing.dump'}"], "has no readable manifest"),
        (["-e", "method=restore", "-e", f"backup={corrupt}"], "is corrupt: sha256"),
        # A backup alone has no revision to downgrade to: the default method restores it (and checks it first).
        (["-e", f"backup={corrupt}"], "is corrupt: sha256"),
        ([], "Nothing to roll back to: give -e record=reports/deploy-....json, -e revision=REV or -e backup=FILE "
             f"(no deployment left its plan in the lock of {guarded_db['login_db']}). Nothing was changed."),
        (["-e", "method=restore"], "Nothing to restore: method restore needs a backup, from -e backup=FILE or a "
                                   "record that names one. Nothing was changed."),
        (["-e", "method=downgrade", "-e", f"backup={corrupt}"],
         "Nothing to downgrade to: method downgrade needs a revision, from -e revision=REV or a record."),
    ]
    writer = live_writer(guarded_db)
    for extra, message in cases:
        result = rollback(server, guarded_db, tmp_path, "-e", GUARDED, "-e", "confirm=yes", *extra)
        assert result.returncode != 0, result.stdout[-2000:]
        assert message in failure_message(result), (extra, failure_message(result))
        assert "TASK [intowork.pgops.write_guard" not in result.stdout, f"{extra}: writes were turned off"
    assert revision(guarded_db) == HEAD
    assert_application_survived(writer, guarded_db)
