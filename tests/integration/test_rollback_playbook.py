"""rollback.yml used alone, days later: from a deployment record, from a backup, and refusing to guess."""

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import BASELINE, HEAD, ROOT, alembic, libpq_env, load_reference_data, query
from test_deploy_playbook import playbook, revision

ROLLBACK = str(ROOT / "playbooks" / "rollback.yml")


def rollback(server, params, tmp_path, *extra):
    env = libpq_env(params)
    env.update(PGOPS_SANDBOX_BINDIR=server["bindir"], ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), ROLLBACK,
           "-e", f"pgops_backup_dir={tmp_path / 'backups'}", "-e", f"pgops_reports_dir={tmp_path / 'reports'}", *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)


def deployed(server, database, tmp_path):
    alembic(database, "upgrade", BASELINE)
    load_reference_data(database, scale=0.01)
    result, recap = playbook(server, database, tmp_path)
    assert recap["failed"] == 0, result.stdout[-2000:]
    (record,) = (tmp_path / "reports").glob("deploy-*.json")
    return record, json.loads(record.read_text())


def test_rollback_from_the_deployment_record(server, database, tmp_path):
    record, report = deployed(server, database, tmp_path)
    assert revision(database) == HEAD
    result = rollback(server, database, tmp_path, "-e", f"record={record}", "-e", "confirm=yes")
    assert result.returncode == 0, result.stdout[-2000:]
    assert "Rolled back by downgrade" in result.stdout
    assert revision(database) == BASELINE == report["revision_before"]
    assert query(database, "SELECT count(*) FROM job_applications")[0][0] == report["row_counts_before"]["job_applications"]


def test_rollback_from_the_backup_file(server, database, tmp_path):
    _record, report = deployed(server, database, tmp_path)
    query(database, "INSERT INTO companies (name) VALUES ('written after the backup')")
    result = rollback(server, database, tmp_path, "-e", "method=restore", "-e", f"backup={report['backup']['path']}",
                      "-e", "confirm=yes")
    assert result.returncode == 0, result.stdout[-2000:]
    assert "Rolled back by restore" in result.stdout
    assert revision(database) == BASELINE
    assert query(database, "SELECT count(*) FROM companies WHERE name = 'written after the backup'")[0][0] == 0
    assert query(database, "SELECT count(*) FROM job_applications")[0][0] == report["backup"]["row_counts"]["job_applications"]


def test_corrupt_backup_changes_nothing(server, database, tmp_path):
    _record, report = deployed(server, database, tmp_path)
    path = Path(report["backup"]["path"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    result = rollback(server, database, tmp_path, "-e", "method=restore", "-e", f"backup={path}", "-e", "confirm=yes")
    assert result.returncode != 0
    assert "is corrupt: sha256" in result.stdout
    assert revision(database) == HEAD


def test_unconfirmed_rollback_changes_nothing(server, database, tmp_path):
    _record, _report = deployed(server, database, tmp_path)
    result = rollback(server, database, tmp_path, "-e", f"revision={BASELINE}")
    assert result.returncode != 0
    assert "Not confirmed: nothing was changed" in result.stdout
    assert revision(database) == HEAD


def test_missing_record_is_one_clear_line(server, database, tmp_path):
    alembic(database, "upgrade", BASELINE)
    result = rollback(server, database, tmp_path, "-e", "record=/nonexistent/deploy.json", "-e", "confirm=yes")
    assert result.returncode != 0
    assert "No deployment record at /nonexistent/deploy.json" in result.stdout
