"""Backups belong to the account that runs them next: a playbook run as root and the cron line run as the
unprivileged backup account write the same lock, log and backups, and neither locks the other out."""

import json
import pwd
import re
import subprocess
import time
from pathlib import Path

import pytest

from conftest import hold_lock, run_playbook, start_playbook
from test_deploy_interruptions import let_go
from sandbox import SANDBOX_USER

# The account that runs the server is the one production backs up as (postgres); here, the sandbox's.
ACCOUNT = SANDBOX_USER


def cron_command(cron_file, action="backup"):
    """The `action` line's command, exactly as cron would run it, and the account it runs as."""
    (line,) = [line for line in cron_file.read_text().splitlines()
               if f" {action} '--config=" in line or f" {action} --config=" in line]
    fields = line.split(None, 6)
    return fields[5], fields[6]


def run_as_cron(account, command):
    return subprocess.run(["sudo", "-u", account, "env", "-i", "SHELL=/bin/sh", "PATH=/usr/local/bin:/usr/bin:/bin",
                           "/bin/sh", "-c", command], capture_output=True, text=True, check=False)


def wait_for_line(process, pattern, timeout=120):
    """The output of a running playbook up to the first line matching `pattern` (fails after `timeout` s)."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if pattern.search(line):
            return "".join(seen)
    process.kill()
    raise AssertionError("no line matching %s in:\n%s" % (pattern.pattern, "".join(seen)[-3000:]))


def owners(folder):
    return {path.name: pwd.getpwuid(path.stat().st_uid).pw_name for path in folder.iterdir()}


@pytest.mark.one_server_version
def test_playbook_and_cron_backups_belong_to_the_backup_account(server, migrated, host_dirs, tmp_path):
    backups = host_dirs / "backups"  # the other folders have spaces: the cron line quotes every path
    # As the read-only backup role (docs/sql/least-privilege.sql): the pgpass file and the cron line use it too.
    admin, migrated = migrated, dict(migrated, login_user=server["backup_user"], login_password=server["backup_password"])
    settings = json.dumps({
        "pgops_backup_os_user": ACCOUNT, "backup_python": "/usr/bin/python3", "pgops_backup_dir": str(backups),
        "pgops_program_dir": str(host_dirs / "pgops lib"), "pgops_config_dir": str(host_dirs / "pgops etc"),
        "pgops_cron_dir": str(host_dirs / "cron.d"), "pgops_backup_retention_count": 1,
        "pgops_backup_retention_days": 0})
    # A backup is a job the controller polls, a progress line per poll: held up by a lock for a few polls here.
    holder = hold_lock(admin, "sessions", "ACCESS EXCLUSIVE")
    try:
        first = start_playbook("backup.yml", server, migrated, tmp_path, "-e", settings,
                               "-e", "pgops_backup_poll_seconds=1")
        progress = wait_for_line(first, re.compile(
            r"backup of \S+: (dumping, \d+(\.\d)? (kB|MB) written|reading the database's revision and row counts), "
            r"\d+ s so far"))
    finally:
        let_go(holder)
    output = progress + first.communicate(timeout=300)[0]
    assert first.returncode == 0, output[-3000:]
    assert "Wait, a progress line per poll, for the backup of" in output, "the backup ran as a polled job"
    (first_dump,) = backups.glob("*.dump")
    assert set(owners(backups).values()) == {ACCOUNT}, owners(backups)
    # What the poll read and the job's result file are gone once it has ended.
    assert not list(backups.glob(".pgops-progress-*")) and not list((backups / ".ansible_async").iterdir())

    schedule = run_playbook("backup_cron.yml", server, migrated, tmp_path, "-e", settings)
    assert schedule.returncode == 0, schedule.stdout[-3000:]
    account, command = cron_command(host_dirs / "cron.d" / f"pgops-backup-{migrated['login_db']}")
    assert account == ACCOUNT
    scheduled = run_as_cron(account, command)
    assert scheduled.returncode == 0, scheduled.stderr
    (second_dump,) = backups.glob("*.dump")
    assert second_dump != first_dump, "the scheduled run's retention removed the playbook's backup"
    assert set(owners(backups).values()) == {ACCOUNT}, owners(backups)
    assert "backup[" in (backups / "pgops-backup.log").read_text()
    # The dead-man switch beside it, every minute, as the same account: no deployment, nothing to say.
    watch_account, watch = cron_command(host_dirs / "cron.d" / f"pgops-backup-{migrated['login_db']}", "watch")
    assert watch_account == ACCOUNT and "--stale-after-seconds=180" in watch
    cron_file = (host_dirs / "cron.d" / f"pgops-backup-{migrated['login_db']}").read_text()
    assert f"*/1 * * * * {ACCOUNT} " in cron_file, cron_file
    watched = run_as_cron(watch_account, watch)
    assert watched.returncode == 0 and json.loads(watched.stdout)["lease"] is None, watched.stderr

    # A file another account left in the folder (a deployment's catalog snapshot, written under become as root,
    # 0600): the next scheduled backup neither reads it nor fails on it.
    foreign = backups / "deploy-left-by-root.catalog.json"
    foreign.write_text("{}")
    foreign.chmod(0o600)
    assert pwd.getpwuid(foreign.stat().st_uid).pw_name != ACCOUNT
    time.sleep(1.1)  # backups are named by the second
    beside_it = run_as_cron(account, command)
    assert beside_it.returncode == 0, beside_it.stderr
    (second_dump,) = backups.glob("*.dump")
    assert Path(str(second_dump) + ".manifest.json").exists() and foreign.read_text() == "{}"

    (backups / "pgops-backup.log").chmod(0o400)
    unlogged = run_as_cron(account, command)
    assert unlogged.returncode == 1
    assert f"pgops-backup: cannot write the log {backups / 'pgops-backup.log'}: Permission denied" in unlogged.stderr
    assert list(backups.glob("*.dump")) == [second_dump], "nothing ran without its log"
