"""rollback.yml used alone, days later: from a deployment record, from a backup, and refusing to guess."""

import json
from pathlib import Path

import pytest

from conftest import (BASELINE, HEAD, alembic, artifacts, load_reference_data, play_recap, query, run_module,
                      run_playbook)
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


def test_rollback_from_the_backup_file(server, database, tmp_path):
    _record, report = deployed(server, database, tmp_path)
    query(database, "INSERT INTO companies (name) VALUES ('written after the backup')")
    result = rollback(server, database, tmp_path, "-e", "method=restore", "-e", f"backup={report['backup']['path']}",
                      "-e", "confirm=yes")
    assert result.returncode == 0, result.stdout[-2000:]
    assert "Rolled back by restore" in result.stdout
    assert revision(database) == BASELINE
    assert query(database, "SELECT count(*) FROM companies WHERE name = 'written after the backup'")[0][0] == 0
    (published,) = artifacts(result)["pgops_rollbacks"].values()  # the job artifact, as the record says
    assert published["method"] == "restore" and published["revision"] == BASELINE
    assert query(database, "SELECT count(*) FROM job_applications")[0][0] == report["backup"]["row_counts"]["job_applications"]


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


def test_missing_record_is_one_clear_line(server, database, tmp_path):
    alembic(database, "upgrade", BASELINE)
    result = rollback(server, database, tmp_path, "-e", "record=/nonexistent/deploy.json", "-e", "confirm=yes")
    assert result.returncode != 0
    assert "No deployment record at /nonexistent/deploy.json" in result.stdout


@pytest.mark.one_server_version
def test_rollback_after_a_deployment_died_with_its_lock(server, database, tmp_path):
    _record, _report = deployed(server, database, tmp_path)
    # What a deployment whose machine died leaves behind: its lock.
    run_module("deploy_lock", dict(database, state="acquired", owner="deploy-died-at-3am"))
    refused = rollback(server, database, tmp_path, "-e", f"revision={BASELINE}", "-e", "confirm=yes")
    assert refused.returncode != 0
    assert "deploy-died-at-3am (lease taken on" in refused.stdout and "run again with -e force_unlock=yes" in refused.stdout
    assert revision(database) == HEAD
    done = rollback(server, database, tmp_path, "-e", f"revision={BASELINE}", "-e", "confirm=yes",
                    "-e", "force_unlock=yes")
    assert done.returncode == 0, done.stdout[-2000:]
    assert revision(database) == BASELINE
    assert run_module("deploy_lock", dict(database, state="acquired", owner="next"))["changed"] is True
