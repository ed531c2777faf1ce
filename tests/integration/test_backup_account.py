"""Backups belong to the account that runs them next: a playbook run as root and the cron line run as the
unprivileged backup account write the same lock, log and backups, and neither locks the other out."""

import json
import pwd
import re
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (APP, HEAD, INDEX_REVISION, PASSWORD, Hook, assert_application_survived, failure_message, hold_lock,
                      query, run_playbook, start_playbook)
from test_deploy_playbook import revision
# Fixtures, for the test over SSH.
from test_remote_faults import remote_host, remote_inventory  # noqa: F401 pylint: disable=unused-import
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


@pytest.mark.one_server_version
@pytest.mark.parametrize("reached", ["locally", "over_ssh"])
def test_after_a_deployment_as_root_the_backups_go_on_as_the_backup_account(
        server, deployable, host_dirs, tmp_path, live_writer, reached, request):
    """Production's set-up: the play runs as root (over SSH, with sudo), its backups become the backup account,
    the deploy role migrates, a superuser installed pg_stat_statements in public (as monitoring.yml does), the
    application writes. What a deployment leaves in the backup folder is the backup account's; the cron backup
    after it and the next deployment back up beside it; a rollback by restore after that works as the deploy
    role."""
    query(deployable, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements WITH SCHEMA public")
    backups = host_dirs / "backups"
    host = request.getfixturevalue("remote_inventory") if reached == "over_ssh" else []
    settings = [*host, "-e", json.dumps({
        "pgops_backup_os_user": ACCOUNT, "backup_python": "/usr/bin/python3", "pgops_backup_dir": str(backups),
        "pgops_program_dir": str(host_dirs / "lib"), "pgops_config_dir": str(host_dirs / "etc"),
        "pgops_cron_dir": str(host_dirs / "cron.d"), "pgops_app_roles": [APP], "pgops_app_probe_user": APP,
        "pgops_app_probe_password": PASSWORD})]
    writer = live_writer(deployable)
    first = run_playbook("deploy_migration.yml", server, deployable, tmp_path, *settings,
                         "-e", f"pgops_migration_target={INDEX_REVISION}")
    assert first.returncode == 0, failure_message(first)
    assert_application_survived(writer, deployable, deployment_record(tmp_path, INDEX_REVISION)["write_off_seconds"])
    (catalog,) = backups.glob("*.catalog.json")
    assert set(owners(backups).values()) == {ACCOUNT}, owners(backups)
    assert catalog.stat().st_mode & 0o777 == 0o600

    assert run_playbook("backup_cron.yml", server, deployable, tmp_path, *settings).returncode == 0
    account, command = cron_command(host_dirs / "cron.d" / f"pgops-backup-{deployable['login_db']}")
    time.sleep(1.1)  # backups are named by the second
    scheduled = run_as_cron(account, command)
    assert scheduled.returncode == 0, scheduled.stderr
    dumps = sorted(backups.glob("*.dump"))
    assert len(dumps) == 2 and all(Path(f"{dump}.manifest.json").exists() for dump in dumps), dumps

    writer = live_writer(deployable)
    second = run_playbook("deploy_migration.yml", server, deployable, tmp_path, *settings)
    assert second.returncode == 0, failure_message(second)
    record = deployment_record(tmp_path, HEAD)
    assert_application_survived(writer, deployable, record["write_off_seconds"])
    assert revision(deployable) == HEAD
    assert set(owners(backups).values()) == {ACCOUNT}, owners(backups)
    # The restore discards what the application wrote since the second deployment's backup: named, and kept.
    rolled_back = run_playbook("rollback.yml", server, deployable, tmp_path, *settings,
                               "-e", f"record={record['path']}", "-e", "method=restore", "-e", "confirm=yes",
                               "-e", f"discard_writes={Path(record['backup']['path']).name}")
    assert rolled_back.returncode == 0, failure_message(rolled_back)
    assert "Rolled back by restore: the database is at revision %s" % INDEX_REVISION in rolled_back.stdout
    assert revision(deployable) == INDEX_REVISION
    assert query(deployable, "SELECT extnamespace::regnamespace::text FROM pg_extension "
                             "WHERE extname = 'pg_stat_statements'") == [("public",)]
    assert set(owners(backups).values()) == {ACCOUNT}, owners(backups)


@pytest.mark.one_server_version
def test_a_one_off_run_never_repoints_or_breaks_what_cron_runs(server, migrated, host_dirs, tmp_path, hook):
    """backup_cron.yml writes the config cron reads. A one-off backup.yml with a value the program would refuse
    stops with nothing written; one with another backup folder backs up there and leaves cron's config as it
    was. A config broken by hand still fails loudly when cron runs it, through its own webhook, with the cron
    file's MAILTO empty."""
    as_backup = dict(migrated, login_user=server["backup_user"], login_password=server["backup_password"])
    backups, config_dir = host_dirs / "backups", host_dirs / "etc"
    settings = {"pgops_backup_os_user": ACCOUNT, "backup_python": "/usr/bin/python3", "pgops_backup_dir": str(backups),
                "pgops_program_dir": str(host_dirs / "lib"), "pgops_config_dir": str(config_dir),
                "pgops_cron_dir": str(host_dirs / "cron.d"), "pgops_backup_alert_webhook": hook}
    assert run_playbook("backup_cron.yml", server, as_backup, tmp_path, "-e", json.dumps(settings)).returncode == 0
    cron_file = host_dirs / "cron.d" / f"pgops-backup-{migrated['login_db']}"
    assert 'MAILTO=""' in cron_file.read_text()
    scheduled_config = config_dir / f"backup-{migrated['login_db']}.json"
    as_scheduled = scheduled_config.read_bytes()
    account, command = cron_command(cron_file)
    assert f"--config={scheduled_config}" in command

    refused = run_playbook("backup.yml", server, as_backup, tmp_path, "-e", json.dumps(
        dict(settings, pgops_backup_retention_count=-1)))
    assert refused.returncode == 2, refused.stdout[-3000:]
    assert failure_message(refused) == (
        "Bad backup settings, nothing was written: backup_retention_count (pgops_backup_retention_count) must be a "
        'whole number of at least 1 (got "-1")'), refused.stdout[-3000:]
    elsewhere = host_dirs / "spare"
    one_off = run_playbook("backup.yml", server, as_backup, tmp_path, "-e", json.dumps(
        dict(settings, pgops_backup_dir=str(elsewhere))))
    assert one_off.returncode == 0, one_off.stdout[-3000:]
    run_config = config_dir / f"backup-{migrated['login_db']}.run.json"
    assert f"this run read {run_config}, the scheduled jobs read {scheduled_config} (left as it was)" in one_off.stdout
    assert len(list(elsewhere.glob("*.dump"))) == 1 and json.loads(run_config.read_text())["backup_dir"] == str(elsewhere)
    assert scheduled_config.read_bytes() == as_scheduled, "a one-off run repointed the scheduled backups"
    by_cron = run_as_cron(account, command)
    assert by_cron.returncode == 0, by_cron.stderr
    assert len(list(backups.glob("*.dump"))) == 1 and len(list(elsewhere.glob("*.dump"))) == 1
    assert not Hook.received

    # A hand edit (or an older version's file) the program refuses: cron's run fails, and says so to the webhook.
    scheduled_config.write_text(json.dumps(dict(json.loads(as_scheduled), retention_count=-1)))
    broken = run_as_cron(account, command)
    assert broken.returncode == 1
    assert broken.stderr.strip() == (f"pgops-backup: config {scheduled_config}: retention_count must keep at least 1 "
                                     "backup"), broken.stderr
    assert [(alert["event"], alert["database"], alert["message"]) for alert in Hook.received] == [
        ("backup_failed", migrated["login_db"],
         f"config {scheduled_config}: retention_count must keep at least 1 backup")]


def deployment_record(tmp_path, revision_after):
    """The record of the deployment that ended at `revision_after`, with its path."""
    for path in (tmp_path / "reports").glob("deploy-*.json"):
        record = json.loads(path.read_text())
        if record.get("revision_after") == revision_after:
            return dict(record, path=str(path))
    raise AssertionError("no deployment record ending at %s" % revision_after)


@pytest.mark.one_server_version  # the account's rights, not the server's
def test_an_interpreter_the_backup_account_cannot_run_is_named_before_anything_is_written(
        server, migrated, host_dirs, tmp_path):
    """The controller's own Python, in a folder only root can reach: one line names the account, the interpreter
    and the fix, and nothing is installed."""
    private = tmp_path / "venv" / "bin"  # tmp_path is root's, 0700
    private.mkdir(parents=True)
    (private / "python").symlink_to("/usr/bin/python3")
    settings = json.dumps({
        "pgops_backup_os_user": ACCOUNT, "pgops_backup_python": str(private / "python"),
        "pgops_backup_dir": str(host_dirs / "backups"), "pgops_program_dir": str(host_dirs / "lib"),
        "pgops_config_dir": str(host_dirs / "etc")})
    result = run_playbook("backup.yml", server, migrated, tmp_path, "-e", settings)
    assert result.returncode != 0
    assert failure_message(result) == (
        f"the backup account {ACCOUNT} cannot run {private / 'python'} with psycopg2 (Permission denied): set "
        "pgops_backup_python to an interpreter that account can run and that has psycopg2 (ansible-playbook "
        "playbooks/host_python.yml installs one). Nothing was written"), failure_message(result)
    assert not [path.name for path in host_dirs.iterdir()], "nothing was installed"
