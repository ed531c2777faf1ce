"""playbooks/pgbackrest.yml against a cluster of its own: WAL archived through pgBackRest into a repository the
server's account owns, proven by `pgbackrest check`; a second run changes nothing; a bad value changes nothing."""

import contextlib
import datetime
import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

import sandbox
from conftest import ROOT, artifacts, failure_message, play_recap, query, run_playbook


@contextlib.contextmanager
def archived_cluster(tag):
    """A PostgreSQL 15 cluster (pgBackRest 2.45, Debian's, reads PostgreSQL up to 15 here) and a folder for the
    repository and config that the server's account can reach."""
    name = f"pytest-{tag}-{os.getpid()}"
    state = sandbox.up(name, "15", "intowork")
    account = sandbox.run_as_sandbox_user() or pwd.getpwuid(os.geteuid())
    work = Path(f"/tmp/pgops-{tag}-{os.getpid()}")
    work.mkdir(mode=0o755)
    pgpass = work / "pgpass"
    pgpass.write_text(f"*:*:*:{state['user']}:{state['password']}\n")
    pgpass.chmod(0o600)
    os.chown(pgpass, account.pw_uid, account.pw_gid)
    params = {"login_host": state["host"], "login_port": state["port"], "login_user": state["user"],
              "login_password": state["password"], "login_db": "intowork"}
    # The data and socket folders and the port are read from the server itself.
    settings = {"pgops_pgbackrest_pg_user": state["user"], "pgops_postgres_os_user": account.pw_name,
                "pgops_pgbackrest_pgpass_file": str(pgpass), "pgops_pgbackrest_install_package": False,
                "pgops_pgbackrest_config_file": str(work / "etc" / "pgbackrest.conf"),
                "pgops_pgbackrest_repo_path": str(work / "repo"), "pgops_pgbackrest_spool_path": str(work / "spool"),
                "pgops_pgbackrest_log_path": str(work / "log"), "pgops_pgbackrest_lock_path": str(work / "lock"),
                # No pgops_pgbackrest_python: the steps run as the server's account start /usr/bin/python3 by
                # default (this checkout's virtualenv is beyond that account's reach).
                "pgops_pgbackrest_stanza": "pytest", "pgops_cron_dir": str(work / "cron.d")}
    try:
        yield dict(state, name=name), params, settings, account
    finally:
        sandbox.down(name)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    with archived_cluster("pitr") as made:
        yield made


def pgbackrest(settings, account, *command):
    return subprocess.run(["/usr/sbin/runuser", "-u", account.pw_name, "--", "/usr/bin/pgbackrest",
                           f"--config={settings['pgops_pgbackrest_config_file']}",
                           f"--stanza={settings['pgops_pgbackrest_stanza']}", *command],
                          env=dict(os.environ, PGPASSFILE=settings["pgops_pgbackrest_pgpass_file"]),
                          capture_output=True, text=True, check=False)


def test_wal_reaches_the_repository_and_a_second_run_changes_nothing(cluster, tmp_path):
    state, params, settings, account = cluster
    bad = run_playbook("pgbackrest.yml", state, params, tmp_path, "-e",
                       json.dumps(dict(settings, pgops_pgbackrest_compress_type="rar",
                                       pgops_pgbackrest_stanza="main; rm -rf /")))
    assert bad.returncode != 0 and play_recap(bad)["failed"] == 1
    assert failure_message(bad) == (
        "Bad pgBackRest settings, nothing was changed: pgbackrest_stanza (pgops_pgbackrest_stanza) \"main; rm -rf /\" "
        "is not a stanza name (letters, digits, - and _); pgbackrest_compress_type (pgops_pgbackrest_compress_type) "
        "\"rar\" is not one of zst, lz4, gz, bz2, none."), failure_message(bad)
    assert not Path(settings["pgops_pgbackrest_config_file"]).exists()
    assert query(params, "SELECT current_setting('archive_command')")[0][0] == "/bin/true"

    done = run_playbook("pgbackrest.yml", state, params, tmp_path, "-e", json.dumps(settings))
    assert done.returncode == 0 and play_recap(done)["failed"] == 0, done.stdout[-3000:]
    assert re.search(r"pgBackRest stanza pytest: WAL archived through archive-push \(archive_timeout 60 s, "
                     r"asynchronous\) to \S+/repo; checked: a forced WAL switch reached the repository; ",
                     done.stdout), done.stdout[-2000:]
    assert query(params, "SELECT current_setting('archive_command'), current_setting('archive_timeout')")[0] == (
        f"/usr/bin/pgbackrest --config={settings['pgops_pgbackrest_config_file']} --stanza=pytest archive-push %p",
        "1min")
    repo = Path(settings["pgops_pgbackrest_repo_path"])
    assert (repo.stat().st_uid, stat.S_IMODE(repo.stat().st_mode)) == (account.pw_uid, 0o750)
    config = Path(settings["pgops_pgbackrest_config_file"]).read_text()
    assert f"pg1-path={state['datadir']}\npg1-port={state['port']}\npg1-socket-path={state['socket_dir']}\n" in config
    # The archive holds a segment, and pgBackRest's own view of the stanza is sound.
    info = json.loads(pgbackrest(settings, account, "--output=json", "info").stdout)[0]
    assert info["status"]["code"] == 2 and info["status"]["message"] == "no valid backups", info["status"]
    assert info["archive"] and info["archive"][0]["max"], info["archive"]

    again = run_playbook("pgbackrest.yml", state, params, tmp_path, "-e", json.dumps(settings))
    assert again.returncode == 0 and play_recap(again)["changed"] == 0, again.stdout[-3000:]


def test_the_health_report_shows_what_a_recovery_can_reach_and_names_a_stanza_it_cannot_read(cluster, tmp_path):
    """health_report.yml where pgops_pgbackrest_stanza is set: each backup type's newest backup, the earliest
    recoverable time, the repository's size, the archived WAL and its lag, read as the repository's account; a
    stanza pgBackRest does not know is a critical finding, the report still written."""
    state, params, settings, account = cluster
    assert run_playbook("pgbackrest.yml", state, params, tmp_path, "-e", json.dumps(settings)).returncode == 0
    assert pgbackrest(settings, account, "--type=full", "backup").returncode == 0
    info = json.loads(pgbackrest(settings, account, "--output=json", "info").stdout)[0]
    newest = max(info["backup"], key=lambda backup: backup["timestamp"]["stop"])

    report = run_playbook("health_report.yml", state, params, tmp_path, "-e", json.dumps(settings))
    assert report.returncode == 0 and play_recap(report)["failed"] == 0, report.stdout[-3000:]
    folder = tmp_path / "reports" / "health" / params["login_db"]
    (facts,) = [json.loads(path.read_text()) for path in folder.glob("health-*.json")]
    seen = facts["pgbackrest"]
    assert seen["newest"]["full"]["label"] == newest["label"] and seen["status"] == "ok", seen
    assert seen["recoverable_since"] == min(backup["timestamp"]["start"] for backup in info["backup"])
    assert seen["repository_bytes"] == sum(backup["info"]["repository"]["delta"] for backup in info["backup"])
    assert not [p for p in facts["problems"] if p["check"] == "physical backup"], facts["problems"]
    (markdown,) = folder.glob("health-*.md")
    text = markdown.read_text()
    assert "## Physical backups (pgBackRest)" in text, text
    assert re.search(rf"\| newest full \(or fuller\) \| {re.escape(newest['label'])} \(full\), ended \S+ \S+ UTC, "
                     r"[0-9.]+ h ago, [0-9.]+ [kMG]B \|", text), text
    assert re.search(r"\| recoverable since \| \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \|", text), text
    assert re.search(rf"\| repository \| {len(info['backup'])} backup\(s\), [0-9.]+ [kMG]B \(stanza pytest: ok\) \|",
                     text), text
    assert re.search(r"\| archive lag \| \d+ s since a WAL segment last reached the archive \|", text), text
    (html,) = folder.glob("health-*.html")
    assert '<table id="pgbackrest">' in html.read_text() and newest["label"] in html.read_text()

    # A stanza pgBackRest does not know: named as critical, and the rest of the report still written.
    time.sleep(1.1)  # report names carry the second
    unknown = run_playbook("health_report.yml", state, params, tmp_path, "-e",
                           json.dumps(dict(settings, pgops_pgbackrest_stanza="nosuch")))
    assert unknown.returncode == 0 and play_recap(unknown)["failed"] == 0, unknown.stdout[-3000:]
    assert "NEEDS ACTION: " in unknown.stdout
    assert re.search(r"stanza nosuch: missing stanza path \(status 1\): nothing can be recovered from it; run "
                     r"playbooks/pgbackrest.yml and a full backup", unknown.stdout), unknown.stdout[-3000:]


def test_more_repository_options_reach_the_config_and_a_bad_one_writes_nothing(cluster, tmp_path):
    """pgops_pgbackrest_repo_options (object storage's settings, or any repo1 option): a name pgBackRest cannot
    read, one the role sets itself, or a value that would break its line is refused before anything is written;
    a good one is a repo1- line of the config, proven by pgbackrest check, and the secret-bearing file is 0640."""
    state, params, settings, account = cluster
    config = Path(settings["pgops_pgbackrest_config_file"])
    assert run_playbook("pgbackrest.yml", state, params, tmp_path, "-e", json.dumps(settings)).returncode == 0
    before = config.read_text()
    bad = run_playbook("pgbackrest.yml", state, params, tmp_path, "-e", json.dumps(dict(
        settings, pgops_pgbackrest_repo_options={"S3 Bucket": "x", "path": "/elsewhere",
                                                 "s3-key-secret": "line\nrepo1-path=/tmp"})))
    assert bad.returncode != 0 and play_recap(bad)["failed"] == 1
    assert failure_message(bad) == (
        "Bad pgBackRest settings, nothing was changed: pgbackrest_repo_options \"S3 Bucket\" is not an option name "
        "(lower-case letters, digits and -, without repo1-); pgbackrest_repo_options \"path\" is set by the role "
        "itself: use pgops_pgbackrest_repo_path instead; pgbackrest_repo_options s3-key-secret must be one value on "
        "one line."), failure_message(bad)
    assert config.read_text() == before

    good = run_playbook("pgbackrest.yml", state, params, tmp_path, "-e", json.dumps(dict(
        settings, pgops_pgbackrest_repo_options={"bundle": True, "storage-upload-chunk-size": "8MiB"})))
    try:
        assert good.returncode == 0 and play_recap(good)["failed"] == 0, good.stdout[-3000:]
        written = config.read_text()
        assert "repo1-bundle=y\nrepo1-storage-upload-chunk-size=8MiB\n" in written, written
        assert "checked: a forced WAL switch reached the repository" in good.stdout
        assert stat.S_IMODE(config.stat().st_mode) == 0o640 and config.stat().st_uid == account.pw_uid
    finally:
        assert run_playbook("pgbackrest.yml", state, params, tmp_path, "-e", json.dumps(settings)).returncode == 0
    assert config.read_text() == before


def test_a_repository_on_a_backup_host_over_ssh_archives_backs_up_and_recovers(tmp_path, live_writer):
    """pgBackRest's repository host, as production runs it: the repository, the stanza and the backups on a backup
    host of their own account, which reads the server over SSH; the server pushes its WAL there over SSH (both
    through the project's loopback sshd). The role proves both ways and a second run changes nothing; a backup
    taken there is recovered by the drill run from the database host; the application writes throughout. The
    other branches: each direction's SSH broken, said in the terms of the two hosts, no schedule written."""
    import ssh_host

    with archived_cluster("pitr-repohost") as (state, params, settings, account):
        work = Path(settings["pgops_pgbackrest_repo_path"]).parent
        host = ssh_host.up(f"repohost-{os.getpid()}", also_allow=[account.pw_name],
                           session_env={"PGPASSFILE": settings["pgops_pgbackrest_pgpass_file"]})
        try:
            backup_side = work / "backup-host"
            backup_side.mkdir(mode=0o755)
            inventory = tmp_path / "backup-host.yml"
            inventory.write_text("backup_hosts:\n  hosts:\n    backup-local:\n      ansible_connection: local\n"
                                 "      ansible_python_interpreter: /usr/bin/python3\n")
            remote = dict(settings, pgops_pgbackrest_stanza="remote", pgops_pgbackrest_repo_host="backup-local",
                          pgops_pgbackrest_repo_host_address="127.0.0.1", pgops_pgbackrest_repo_host_ssh_port=host["port"],
                          pgops_pgbackrest_repo_host_user=host["user"],
                          pgops_pgbackrest_repo_host_config_file=str(backup_side / "etc" / "pgbackrest.conf"),
                          pgops_pgbackrest_repo_host_log_path=str(backup_side / "log"),
                          pgops_pgbackrest_repo_host_lock_path=str(backup_side / "lock"),
                          pgops_pgbackrest_repo_path=str(backup_side / "repo"),
                          pgops_pgbackrest_pg_host_address="127.0.0.1", pgops_pgbackrest_pg_host_ssh_port=host["port"],
                          pgops_pgbackrest_ssh_command=host["ssh_command"], pgops_cron_dir=str(backup_side / "cron.d"))

            # The local inventory, and the backup host beside it.
            inventories = ("-i", str(ROOT / "inventories" / "local"), "-i", str(inventory))

            def role(**changes):
                return run_playbook("pgbackrest.yml", state, params, tmp_path, *inventories, "-e",
                                    json.dumps(dict(remote, **changes)))

            def stopped_saying(pattern, **changes):
                stopped = role(**changes)
                assert stopped.returncode != 0 and play_recap(stopped)["failed"] == 1, stopped.stdout[-3000:]
                assert re.fullmatch(pattern, failure_message(stopped)), failure_message(stopped)

            with the_application_writing_untouched(params, live_writer):
                # The backup host cannot reach the server (a port nothing listens on): said, nothing scheduled.
                stopped_saying(
                    rf"pgBackRest on the backup host backup-local \(as {host['user']}\) could not check stanza remote on "
                    rf"this host over SSH \({account.pw_name}@127\.0\.0\.1 port 1\): .+\. The backup host needs key-based "
                    r"SSH to that account, with this host's key known \(docs/backups\.md\)\. Archiving is set on the "
                    r"server; no backup schedule was written\.", pgops_pgbackrest_pg_host_ssh_port=1)
                assert not (backup_side / "cron.d" / "pgops-pgbackrest-remote").exists()

                done = role()
                assert done.returncode == 0 and play_recap(done)["failed"] == 0, done.stdout[-3000:]
                assert f"to {host['user']}@backup-local:{backup_side / 'repo'} over SSH, backups run there; checked: " \
                       "a forced WAL switch reached the repository" in done.stdout, done.stdout[-2000:]
                assert play_recap(role())["changed"] == 0

                database_side = Path(settings["pgops_pgbackrest_config_file"]).read_text()
                assert f"repo1-host=127.0.0.1\nrepo1-host-port={host['port']}\nrepo1-host-user={host['user']}\n" \
                       in database_side and "repo1-path" not in database_side, database_side
                backup_config = backup_side / "etc" / "pgbackrest.conf"
                assert f"pg1-host=127.0.0.1\npg1-host-port={host['port']}\npg1-host-user={account.pw_name}\n" \
                       in backup_config.read_text(), backup_config.read_text()
                owner = pwd.getpwnam(host["user"])
                repository = backup_side / "repo"
                assert (repository.stat().st_uid, stat.S_IMODE(repository.stat().st_mode)) == (owner.pw_uid, 0o750)
                assert (backup_config.stat().st_uid, stat.S_IMODE(backup_config.stat().st_mode)) == (owner.pw_uid, 0o640)
                _schedule, runs_as, command = cron_lines(backup_side / "cron.d" / "pgops-pgbackrest-remote")["full"]
                assert runs_as == host["user"] and f"--config={backup_config}" in command, command

                # A backup taken on the backup host, as its cron line does, and recovered from the database host.
                backed_up = subprocess.run(["/usr/sbin/runuser", "-u", host["user"], "--", "/usr/bin/pgbackrest",
                                            f"--config={backup_config}", "--stanza=remote", "--type=full", "backup"],
                                           capture_output=True, text=True, check=False, cwd="/")
                assert backed_up.returncode == 0, backed_up.stderr
                drill = run_playbook("pitr_drill.yml", state, params, tmp_path, *inventories, "-e", drill_settings(
                    remote, state, work, pitr_drill_target_age_seconds=0))
                assert drill.returncode == 0 and play_recap(drill)["failed"] == 0, drill.stdout[-3000:]
                assert "PITR drill of stanza remote: backup " in drill.stdout

                # This host cannot reach the backup host: said before the backup host's check would wait for WAL.
                stopped_saying(
                    rf"pgBackRest on this host \(as {account.pw_name}\) could not reach the repository on the backup host "
                    rf"over SSH \({host['user']}@127\.0\.0\.1 port 1\): .+\. This account needs key-based SSH to the "
                    r"backup host's, with its key known \(docs/backups\.md\): until then archive-push fails and WAL "
                    r"piles up in pg_wal\. No backup schedule was written\.", pgops_pgbackrest_repo_host_ssh_port=1)
                assert role().returncode == 0
        finally:
            ssh_host.down(f"repohost-{os.getpid()}")


def cron_lines(path):
    """{the backup type, verify or metrics: (schedule, account, command)} of a cron file's lines."""
    lines = {}
    for line in Path(path).read_text().splitlines():
        if not line or line.startswith("#") or re.match(r"^[A-Z]+=", line):
            continue
        fields = line.split(None, 6)
        kind = ("metrics" if "pgops_pgbackrest_metrics.py" in fields[6] else
                re.search(r"--type=(\w+)", fields[6])[1] if "--type=" in fields[6] else fields[6].split()[-1])
        lines[kind] = (" ".join(fields[:5]), fields[5], fields[6])
    return lines


def test_the_schedule_runs_as_cron_would_and_a_bad_schedule_writes_nothing(cluster, tmp_path):
    """The cron file's lines, run as cron runs them (the server's account, sh, a minimal PATH), take a full and an
    incremental backup and verify them; a schedule cron cannot read writes nothing."""
    state, params, settings, account = cluster
    work = Path(settings["pgops_pgbackrest_repo_path"]).parent
    metrics = work / "textfile"
    metrics.mkdir(mode=0o755, exist_ok=True)
    os.chown(metrics, account.pw_uid, account.pw_gid)
    schedule = dict(settings, pgops_pgbackrest_stanza="scheduled", pgops_backup_metrics_dir=str(metrics),
                    pgops_pgbackrest_program_dir=str(work / "program-metrics"))
    bad = run_playbook("pgbackrest.yml", state, params, tmp_path, "-e",
                       json.dumps(dict(schedule, pgops_pgbackrest_schedule_incr="0 * * *",
                                       pgops_pgbackrest_schedule_full="61 1 * * 0")))
    assert bad.returncode != 0 and play_recap(bad)["failed"] == 1
    last = failure_message(bad)
    assert last.startswith("Bad pgBackRest settings, nothing was changed: pgbackrest_schedule_full "
                           "(pgops_pgbackrest_schedule_full): minute '61'"), last
    assert "pgbackrest_schedule_incr (pgops_pgbackrest_schedule_incr): schedule '0 * * *' has 4 field(s)" in last, last
    cron_file = Path(settings["pgops_cron_dir"]) / "pgops-pgbackrest-scheduled"
    assert not cron_file.exists()

    done = run_playbook("pgbackrest.yml", state, params, tmp_path, "-e", json.dumps(schedule))
    assert done.returncode == 0, done.stdout[-3000:]
    assert f"backups from cron ({cron_file}): full 30 1 * * 0, differential 30 1 * * 1-6, incremental 0 * * * *, " \
        f"verify 0 5 * * 6, metrics every 5 minutes into {metrics}/pgops_pgbackrest_scheduled.prom." in done.stdout, \
        done.stdout[-2000:]
    lines = cron_lines(cron_file)
    assert sorted(lines) == ["diff", "full", "incr", "metrics", "verify"], lines
    assert lines["metrics"][0] == "*/5 * * * *"
    # The role wrote the figures once already: a stanza with no backup yet.
    assert "pgops_pgbackrest_status{stanza=\"scheduled\"} 2\n" in (metrics / "pgops_pgbackrest_scheduled.prom").read_text()
    assert {line[1] for line in lines.values()} == {account.pw_name}
    for kind in ("full", "incr", "verify"):
        ran = subprocess.run(["/usr/sbin/runuser", "-u", account.pw_name, "--", "/bin/sh", "-c", lines[kind][2]],
                             env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp"}, cwd="/",
                             capture_output=True, text=True, check=False)
        assert ran.returncode == 0, (kind, ran.stdout, ran.stderr)
    info = json.loads(pgbackrest(schedule, account, "--output=json", "info").stdout)[0]
    assert [backup["type"] for backup in info["backup"]] == ["full", "incr"], info["backup"]
    assert info["status"]["code"] == 0, info["status"]
    # The metrics line, as cron runs it: each type's newest backup (a full one meets the differential schedule
    # too), the ages the alerts allow, the earliest recoverable time, the repository's size, the status.
    ran = subprocess.run(["/usr/sbin/runuser", "-u", account.pw_name, "--", "/bin/sh", "-c", lines["metrics"][2]],
                         env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp"}, cwd="/",
                         capture_output=True, text=True, check=False)
    assert ran.returncode == 0, (ran.stdout, ran.stderr)
    figures = dict(line.rsplit(" ", 1) for line in (metrics / "pgops_pgbackrest_scheduled.prom").read_text().splitlines()
                   if not line.startswith("#"))
    full, incr = info["backup"]
    label = 'stanza="scheduled"'
    assert figures[f'pgops_pgbackrest_backup_last_timestamp_seconds{{{label},type="full"}}'] == str(full["timestamp"]["stop"])
    assert figures[f'pgops_pgbackrest_backup_last_timestamp_seconds{{{label},type="diff"}}'] == str(full["timestamp"]["stop"])
    assert figures[f'pgops_pgbackrest_backup_last_timestamp_seconds{{{label},type="incr"}}'] == str(incr["timestamp"]["stop"])
    assert figures[f'pgops_pgbackrest_backup_max_age_seconds{{{label},type="full"}}'] == str(192 * 3600)
    assert figures[f'pgops_pgbackrest_backup_max_age_seconds{{{label},type="diff"}}'] == str(26 * 3600)
    assert figures[f"pgops_pgbackrest_recoverable_since_timestamp_seconds{{{label}}}"] == str(full["timestamp"]["start"])
    assert int(figures[f"pgops_pgbackrest_repository_size_bytes{{{label}}}"]) == sum(
        backup["info"]["repository"]["delta"] for backup in info["backup"])
    assert figures[f"pgops_pgbackrest_status{{{label}}}"] == "0"

    # An empty schedule leaves that kind out.
    fewer = run_playbook("pgbackrest.yml", state, params, tmp_path, "-e",
                         json.dumps(dict(schedule, pgops_pgbackrest_schedule_incr="", pgops_backup_metrics_dir="")))
    assert fewer.returncode == 0 and sorted(cron_lines(cron_file)) == ["diff", "full", "verify"], fewer.stdout[-2000:]
    assert ", incremental never, " in fewer.stdout

    absent = run_playbook("pgbackrest.yml", state, params, tmp_path, "-e",
                          json.dumps(dict(schedule, pgops_pgbackrest_schedule_state="absent")))
    assert absent.returncode == 0 and not cron_file.exists(), absent.stdout[-2000:]
    assert "; no backup schedule." in absent.stdout


def test_archive_mode_off_stops_before_the_stanza_and_says_which_restart_is_due(cluster, tmp_path):
    """The other branch: archiving was off. The role never restarts a server: it sets what it can, stops before
    the stanza and says so; after the restart the same run goes through."""
    state, params, settings, account = cluster
    query(dict(params, login_db="postgres"), "ALTER SYSTEM SET archive_mode = off")
    sandbox.restart(state["name"])
    assert query(params, "SELECT current_setting('archive_mode')")[0][0] == "off"
    stanza = dict(settings, pgops_pgbackrest_stanza="restarted")
    stopped = run_playbook("pgbackrest.yml", state, params, tmp_path, "-e", json.dumps(stanza))
    assert stopped.returncode != 0 and play_recap(stopped)["failed"] == 1
    assert failure_message(stopped) == (
        "archive_mode = on takes effect only after a restart of the server, which this role does not do: restart it "
        "(the service that runs it), then run this again. archive_command and archive_timeout are set; no stanza "
        "was created."), failure_message(stopped)
    status = json.loads(pgbackrest(stanza, account, "--output=json", "info").stdout)[0]["status"]
    assert status["message"] == "missing stanza path", status

    sandbox.restart(state["name"])
    done = run_playbook("pgbackrest.yml", state, params, tmp_path, "-e", json.dumps(stanza))
    assert done.returncode == 0 and play_recap(done)["failed"] == 0, done.stdout[-3000:]
    assert "checked: a forced WAL switch reached the repository; " in done.stdout


def test_a_deployment_marks_a_restore_point_archived_before_it_migrates(cluster, tmp_path):
    """With pgops_deploy_restore_point, the deployment (as the least-privilege deploy role) names the instant
    writes went off in the WAL and proves the segment holding it reached the repository before migrating; with
    archiving broken it stops there, nothing migrated."""
    from conftest import DEPLOY_ROLE, create_accounts
    from test_any_project import BOOKSHELF, CHAIN, recorded

    state, params, settings, account = cluster
    run_playbook("pgbackrest.yml", state, params, tmp_path, "-e", json.dumps(settings))
    create_accounts(state, "shelf")
    query(dict(params, login_db="postgres"), f"ALTER ROLE {DEPLOY_ROLE} PASSWORD 'deploy-restore-point'")
    deploy = dict(params, login_user=DEPLOY_ROLE, login_password="deploy-restore-point", login_db="shelf")
    runbook = ("deploy_migration.yml", state, deploy, tmp_path, "-i", str(BOOKSHELF / "inventory"),
               "-e", "pgops_deploy_restore_point=true", "-e", "pgops_deploy_restore_point_wait_seconds=3")

    admin = dict(params, login_db="postgres")
    query(admin, "ALTER SYSTEM SET archive_command = '/bin/false'")
    query(admin, "SELECT pg_reload_conf()")
    try:
        stopped = run_playbook(*runbook, "-e", f"pgops_migration_target={CHAIN[0]}")
    finally:
        query(admin, "ALTER SYSTEM SET archive_command = %s", (
            f"/usr/bin/pgbackrest --config={settings['pgops_pgbackrest_config_file']} --stanza=pytest archive-push %p",))
        query(admin, "SELECT pg_reload_conf()")
    assert stopped.returncode != 0 and play_recap(stopped)["failed"] == 1, stopped.stdout[-3000:]
    last = failure_message(stopped)
    assert re.search(r"restore point deploy-\S+ \(LSN [0-9A-F/]+\) is in WAL segment [0-9A-F]{24}, which was not "
                     r"archived within 3\.0 s: the last archived is ", last), last
    assert "Check archive_command (pgbackrest check shows why); nothing was migrated" in last, last
    assert "Nothing was migrated: the database is at revision base." in last, last
    assert recorded(deploy) is None
    # After its failures the archiver backs off for up to a minute: the deployment starts once it archives again.
    deadline = time.monotonic() + 120
    while query(admin, "SELECT last_failed_time IS NOT NULL AND (last_archived_time IS NULL OR "
                       "last_archived_time < last_failed_time) FROM pg_stat_archiver")[0][0]:
        assert time.monotonic() < deadline, "the archiver did not recover from /bin/false"
        query(admin, "SELECT pg_switch_wal()")
        time.sleep(1)

    done = run_playbook(*runbook, "-e", f"pgops_migration_target={CHAIN[0]}",
                        "-e", "pgops_deploy_restore_point_wait_seconds=60")
    assert done.returncode == 0 and play_recap(done)["failed"] == 0, failure_message(done)
    assert recorded(deploy) == CHAIN[0]
    record = json.loads(max((tmp_path / "reports").glob("deploy-*.json"), key=os.path.getmtime).read_text())
    point = record["restore_point"]
    assert point["name"] == record["deployment"] and re.fullmatch(r"[0-9A-F]+/[0-9A-F]+", point["lsn"]), point
    # The segment holding it is in the repository: pgBackRest gives it back.
    fetched = Path(settings["pgops_pgbackrest_log_path"]) / point["wal_file"]  # a folder the account writes
    got = pgbackrest(settings, account, "archive-get", point["wal_file"], str(fetched))
    assert got.returncode == 0 and fetched.exists(), got.stderr


def test_check_mode_on_a_new_stanza_says_what_it_would_do_and_changes_nothing(cluster, tmp_path):
    state, params, settings, account = cluster
    fresh = dict(settings, pgops_pgbackrest_stanza="foreseen",
                 pgops_pgbackrest_config_file=str(Path(settings["pgops_pgbackrest_config_file"]).parent.parent
                                                  / "etc-foreseen" / "pgbackrest.conf"))
    before = query(params, "SELECT current_setting('archive_command')")[0][0]
    foreseen = run_playbook("pgbackrest.yml", state, params, tmp_path, "--check", "-e", json.dumps(fresh))
    assert foreseen.returncode == 0 and play_recap(foreseen)["failed"] == 0, foreseen.stdout[-3000:]
    assert "pgBackRest stanza foreseen: " in foreseen.stdout and "not checked (check mode)" in foreseen.stdout
    assert not Path(fresh["pgops_pgbackrest_config_file"]).exists()
    assert query(params, "SELECT current_setting('archive_command')")[0][0] == before


@contextlib.contextmanager
def the_application_writing_untouched(params, live_writer):
    """The application writing on the primary for the block, which must neither fail nor lose any of its writes."""
    from conftest import application_role

    query(params, "CREATE TABLE IF NOT EXISTS companies (id serial PRIMARY KEY, name text NOT NULL, "
                  "created_at timestamptz NOT NULL DEFAULT clock_timestamp())")
    with application_role(params):
        writer = live_writer(params)
        yield writer
        writer.stop()
        assert writer.failed == [] and writer.missing() == [], writer.figures()


def drill_settings(settings, state, work, **extra):
    return json.dumps({**settings, "pgops_pitr_drill_folder": str(work / "drills"), "pgops_db_name": "intowork",
                       "pgops_pitr_drill_reserve_mb": 0, "pitr_drill_user": state["user"],
                       # The local inventory's spec file is the example application's, not this table's.
                       "pgops_integrity_spec_file": "", **extra})


def test_a_drill_recovers_to_the_target_into_a_scratch_server_while_the_application_writes(
        cluster, tmp_path, live_writer):
    """playbooks/pitr_drill.yml restores the newest full backup and the archive to a time between two of the
    application's writes, into a scratch server of its own: the copy holds exactly the writes committed before
    the target; the primary loses no write and refuses none; nothing of the scratch server reaches the
    repository; its folder is gone."""
    from conftest import application_role

    state, params, settings, account = cluster
    assert run_playbook("pgbackrest.yml", state, params, tmp_path, "-e", json.dumps(settings)).returncode == 0
    work = Path(settings["pgops_pgbackrest_repo_path"]).parent
    query(params, "CREATE TABLE IF NOT EXISTS companies (id serial PRIMARY KEY, name text NOT NULL, "
                  "created_at timestamptz NOT NULL DEFAULT clock_timestamp())")
    with application_role(params):
        writer = live_writer(params)
        assert pgbackrest(settings, account, "--type=full", "backup").returncode == 0
        time.sleep(1.0)
        target = query(params, "SELECT clock_timestamp()")[0][0]
        time.sleep(1.0)
        drill = run_playbook("pitr_drill.yml", state, params, tmp_path, "-e", drill_settings(
            settings, state, work, pitr_drill_target_time=target.isoformat(sep=" ")))
        writer.stop()
        assert drill.returncode == 0 and play_recap(drill)["failed"] == 0, drill.stdout[-4000:]
        assert writer.failed == [], f"{len(writer.failed)} writes failed during the drill"
        kept = {row[0] for row in query(params, "SELECT id FROM companies")}
        assert set(writer.committed) <= kept, "the primary lost a committed write"

    report = artifacts(drill)["pgops_pitr_drills"]["intowork-local"]
    before, after = query(params, "SELECT count(*) FILTER (WHERE created_at <= %s - interval '10 ms'), "
                                  "count(*) FILTER (WHERE created_at <= %s + interval '10 ms') FROM companies",
                          (target, target))[0]
    assert before <= report["row_counts"]["public.companies"] <= after, (report["row_counts"], before, after)
    assert after < len(kept), "no write came after the target: the test proves nothing"
    assert report["mark"]["name"].startswith("pgops-drill-") and report["timeline"] >= 2, report
    stop = re.fullmatch(r"recovery stopping before commit of transaction \d+, time (.+)", report["recovery_stop"])
    assert stop, report["recovery_stop"]
    assert report["rto_seconds"] == pytest.approx(report["restore_seconds"] + report["recovery_seconds"], abs=0.01)
    assert 0 <= report["rpo_seconds"] < 1.0, report
    assert re.search(
        r"PITR drill of stanza pytest: backup \S+F \(full\) restored in [0-9.]+ s and recovered to "
        + re.escape(report["target_time"]) + r" in [0-9.]+ s \(recovery stopping before commit of transaction \d+, "
        r"time [^)]+\); RTO [0-9.]+ s against a 900 s target; RPO achieved [0-9.]+ s \(the last transaction recovered "
        r"committed at [^)]+\); 1 tables, \d+ rows; integrity checks of public passed; the scratch copy was removed\.",
        drill.stdout), drill.stdout[-3000:]
    # Promoted, the copy is on a timeline of its own, which its server never archived into the repository.
    archived = [path.name for path in (work / "repo" / "archive" / "pytest").rglob("*")]
    assert archived and not any(name.startswith("%08X" % report["timeline"]) for name in archived), archived
    assert list((work / "drills").iterdir()) == []
    assert subprocess.run(["pgrep", "-f", str(work / "drills")], capture_output=True, check=False).returncode == 1


def test_a_drill_refuses_what_it_cannot_do_and_fails_over_its_rto_target(cluster, tmp_path, live_writer):
    """The other branches, each through the playbook: a target without its offset, a target before every backup,
    too little free space (each before anything is written), and a drill slower than its RTO target (its copy
    removed all the same); check mode restores nothing. The application writes throughout: none of it touches
    the primary's writes."""
    state, params, settings, account = cluster
    with the_application_writing_untouched(params, live_writer):
        drill_branches(state, params, settings, account, tmp_path)


def drill_branches(state, params, settings, account, tmp_path):
    assert run_playbook("pgbackrest.yml", state, params, tmp_path, "-e", json.dumps(settings)).returncode == 0
    assert pgbackrest(settings, account, "--type=full", "backup").returncode == 0
    work = Path(settings["pgops_pgbackrest_repo_path"]).parent
    drills = work / "drills"

    def drill(*extra, **options):
        return run_playbook("pitr_drill.yml", state, params, tmp_path, *extra, "-e",
                            drill_settings(settings, state, work, **options))

    for options, message in (
            ({"pitr_drill_target_time": "2026-12-07 14:30"}, "target_time '2026-12-07 14:30' is not a time with its "
             "offset (2026-12-07 14:30:00+00): a time without its offset would be read in the server's zone"),
            ({"pitr_drill_target_time": "2000-01-01 00:00:00+00"}, "no backup of stanza pytest ended before the "
             "target 2000-01-01 00:00:00+00: the earliest ended at "),
            ({"pgops_pitr_drill_reserve_mb": 1 << 40, "pitr_drill_target_age_seconds": 0}, "not enough free space in " + str(drills) + " for the drill: "),
            ({"pgops_pitr_drill_port": 0}, "Bad drill settings, nothing was changed: pitr_drill_port "
             "(pgops_pitr_drill_port) ")):
        refused = drill(**options)
        assert refused.returncode != 0 and play_recap(refused)["failed"] == 1, refused.stdout[-3000:]
        assert message in failure_message(refused), (options, failure_message(refused))
        assert not drills.exists() or list(drills.iterdir()) == []

    # Check mode on a host whose drills' folder is not made yet: it says what it would do and makes nothing.
    unmade = work / "drills-not-made"
    foreseen = drill("--check", pitr_drill_target_age_seconds=0, pgops_pitr_drill_folder=str(unmade))
    assert foreseen.returncode == 0, foreseen.stdout[-3000:]
    assert re.search(r"Check mode: would restore backup \S+F of stanza pytest and the archive to .+ into "
                     + re.escape(str(unmade)) + r"/pytest-\S+ \(.+ needed, .+ free\), check it and remove it\. "
                     r"Nothing was changed\.", foreseen.stdout), foreseen.stdout[-2000:]
    assert not unmade.exists()

    slow = drill(pitr_drill_target_age_seconds=0, pgops_rto_target_seconds=1)
    assert slow.returncode != 0 and play_recap(slow)["failed"] == 1, slow.stdout[-3000:]
    assert re.fullmatch(r"PITR drill of stanza pytest: RTO [0-9.]+ s is over the 1 s target \(restore [0-9.]+ s, "
                        r"recovery [0-9.]+ s\)\. The scratch copy was removed\.", failure_message(slow)), \
        failure_message(slow)
    assert list(drills.iterdir()) == []


def test_the_scheduled_drill_runs_as_cron_would_and_a_bad_schedule_writes_nothing(cluster, tmp_path):
    """playbooks/pitr_drill_cron.yml: a schedule cron cannot read writes nothing; the cron line, run as cron runs it
    (the server's account, sh, a minimal PATH), restores, proves and removes a copy with the collection's own
    code installed beside the program; absent removes the schedule."""
    state, params, settings, account = cluster
    assert run_playbook("pgbackrest.yml", state, params, tmp_path, "-e", json.dumps(settings)).returncode == 0
    query(params, "CREATE TABLE IF NOT EXISTS companies (id serial PRIMARY KEY, name text NOT NULL, "
                  "created_at timestamptz NOT NULL DEFAULT clock_timestamp())")
    assert pgbackrest(settings, account, "--type=full", "backup").returncode == 0
    query(params, "INSERT INTO companies (name) VALUES ('written after the backup')")
    work = Path(settings["pgops_pgbackrest_repo_path"]).parent
    cron_file = Path(settings["pgops_cron_dir"]) / "pgops-pitr-drill-pytest"
    scheduled = {"pgops_pitr_drill_program_dir": str(work / "program"),
                 "pgops_pitr_drill_config_dir": str(work / "etc-pgops"),
                 "pgops_pitr_drill_folder": str(work / "scheduled-drills"), "pitr_drill_target_age_seconds": 0}

    bad = run_playbook("pitr_drill_cron.yml", state, params, tmp_path, "-e",
                       drill_settings(settings, state, work, **scheduled, pgops_pitr_drill_schedule="0 4 32 * *"))
    assert bad.returncode != 0 and play_recap(bad)["failed"] == 1, bad.stdout[-3000:]
    assert failure_message(bad).startswith("Bad drill schedule settings, nothing was changed: pitr_drill_schedule "
                                           "(pgops_pitr_drill_schedule): day of month '32'"), failure_message(bad)
    assert not cron_file.exists() and not (work / "program").exists()

    done = run_playbook("pitr_drill_cron.yml", state, params, tmp_path, "-e",
                        drill_settings(settings, state, work, **scheduled))
    assert done.returncode == 0, done.stdout[-3000:]
    assert f"PITR drill of stanza pytest from cron ({cron_file}): 0 4 1 * *, as {account.pw_name}, to 0 s before each " \
        "run, RTO target 900 s; failures mailed to the account." in done.stdout, done.stdout[-2000:]
    line = [entry for entry in cron_file.read_text().splitlines() if entry.startswith("0 4 1 * * ")]
    assert len(line) == 1, cron_file.read_text()
    user, command = line[0][len("0 4 1 * * "):].split(None, 1)
    assert user == account.pw_name
    ran = subprocess.run(["/usr/sbin/runuser", "-u", account.pw_name, "--", "/bin/sh", "-c", command],
                         env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp"}, cwd="/",
                         capture_output=True, text=True, check=False)
    assert ran.returncode == 0, (ran.stdout, ran.stderr)
    # The same line as the playbook's (one implementation), with what cron's run did last.
    assert re.fullmatch(r"PITR drill of stanza pytest: backup \S+ \((full|diff|incr)\) restored in [0-9.]+ s and "
                        r"recovered to .+ in [0-9.]+ s \(recovery stopping before commit of transaction \d+, time .+\); "
                        r"RTO [0-9.]+ s against a 900 s target; RPO achieved [0-9.]+ s \(the last transaction recovered "
                        r"committed at [^)]+\); 1 tables, [1-9]\d* rows; the scratch copy was removed\.\n",
                        ran.stdout), ran.stdout
    assert [path.name for path in (work / "scheduled-drills").iterdir() if path.is_dir()] == []

    absent = run_playbook("pitr_drill_cron.yml", state, params, tmp_path, "-e", drill_settings(
        settings, state, work, **scheduled, pgops_pitr_drill_schedule_state="absent"))
    assert absent.returncode == 0 and not cron_file.exists(), absent.stdout[-2000:]
    assert not (work / "etc-pgops" / "pitr-drill-pytest.json").exists()
    assert "No scheduled PITR drill of stanza pytest." in absent.stdout


def test_backups_read_the_standby_and_a_standby_that_is_gone_stops_the_role(cluster, tmp_path, live_writer):
    """With the cluster's streaming standby named, pgBackRest knows it as pg2 and a full backup reads its files
    from the standby (the manifest says so); with the standby gone, the role's check stops and says why. The
    application writes on the primary throughout and loses and fails nothing."""
    state, params, settings, account = cluster
    with the_application_writing_untouched(params, live_writer):
        standby_branches(state, params, settings, account, tmp_path)


def standby_branches(state, params, settings, account, tmp_path):
    standby = sandbox.standby(f"{state['name']}-standby", state["name"])
    work = Path(settings["pgops_pgbackrest_repo_path"]).parent
    stanza = dict(settings, pgops_pgbackrest_stanza="fromstandby",
                  pgops_pgbackrest_config_file=str(work / "etc-standby" / "pgbackrest.conf"),
                  pgops_pgbackrest_standby_pg_data=standby["datadir"], pgops_pgbackrest_standby_pg_port=standby["port"],
                  pgops_pgbackrest_standby_pg_socket_path=standby["socket_dir"], pgops_pgbackrest_schedule_state="absent")
    try:
        done = run_playbook("pgbackrest.yml", state, params, tmp_path, "-e", json.dumps(stanza))
        assert done.returncode == 0 and play_recap(done)["failed"] == 0, done.stdout[-3000:]
        assert f"backups read from the standby in {standby['datadir']} (port {standby['port']}), the primary serving " \
            "only their start and stop; " in done.stdout, done.stdout[-2000:]
        config = Path(stanza["pgops_pgbackrest_config_file"]).read_text()
        assert "backup-standby=y\n" in config and f"pg2-path={standby['datadir']}\npg2-port={standby['port']}\n" in config
        backed_up = pgbackrest(stanza, account, "--type=full", "backup")
        assert backed_up.returncode == 0, backed_up.stderr
        label = json.loads(pgbackrest(stanza, account, "--output=json", "info").stdout)[0]["backup"][-1]["label"]
        manifest = (work / "repo" / "backup" / "fromstandby" / label / "backup.manifest").read_text()
        assert "option-backup-standby=true" in manifest, manifest[:2000]

        sandbox.down(standby["name"])
        gone = run_playbook("pgbackrest.yml", state, params, tmp_path, "-e", json.dumps(stanza))
        assert gone.returncode != 0 and play_recap(gone)["failed"] == 1, gone.stdout[-3000:]
        assert re.fullmatch(
            rf"The standby in {re.escape(standby['datadir'])} \(port {standby['port']}\) did not answer pgBackRest's "
            r"check \(unable to check pg2: \[DbConnectError\] unable to connect to .+\): every backup from it would "
            r"fail\. Start it, or correct pgops_pgbackrest_standby_pg_data/_port/_socket_path, or back up from the "
            r"primary \(pgops_pgbackrest_backup_standby false\)\. The archive is checked; the backup schedule was not "
            r"written\.", failure_message(gone)), failure_message(gone)
    finally:
        sandbox.down(standby["name"])
        assert run_playbook("pgbackrest.yml", state, params, tmp_path, "-e", json.dumps(settings)).returncode == 0


def bookshelf_at_its_first_revision_backed_up(state, params, settings, account, tmp_path, database):
    """The bookshelf project deployed to its first revision by the least-privilege deploy role in `database` (a
    name of its own: the backup program's config is named after it), and a full backup after it: (the deploy
    role's params, the inventory arguments, the server's pg_ctl argv)."""
    from conftest import DEPLOY_ROLE, create_accounts
    from test_any_project import BOOKSHELF, CHAIN

    assert run_playbook("pgbackrest.yml", state, params, tmp_path, "-e", json.dumps(settings)).returncode == 0
    create_accounts(state, database)
    query(dict(params, login_db="postgres"), f"ALTER ROLE {DEPLOY_ROLE} PASSWORD 'deploy-pitr'")
    deploy = dict(params, login_user=DEPLOY_ROLE, login_password="deploy-pitr", login_db=database)
    inventory = ("-i", str(BOOKSHELF / "inventory"))
    first = run_playbook("deploy_migration.yml", state, deploy, tmp_path, *inventory,
                         "-e", f"pgops_migration_target={CHAIN[0]}")
    assert play_recap(first)["failed"] == 0, failure_message(first)
    assert pgbackrest(settings, account, "--type=full", "backup").returncode == 0
    return deploy, inventory, [f"{state['bindir']}/pg_ctl", "-D", state["datadir"]]


def deployed_with_a_restore_point(state, deploy, tmp_path, inventory):
    """The bookshelf deployed on to its third revision with a restore point: (its record's path, the point)."""
    from test_any_project import CHAIN

    deployed = run_playbook("deploy_migration.yml", state, deploy, tmp_path, *inventory,
                            "-e", f"pgops_migration_target={CHAIN[2]}", "-e", "pgops_deploy_restore_point=true")
    assert play_recap(deployed)["failed"] == 0, failure_message(deployed)
    record = max((tmp_path / "reports").glob("deploy-*.json"), key=os.path.getmtime)
    return record, json.loads(record.read_text())["restore_point"]


def test_a_rollback_by_pitr_takes_the_cluster_back_to_the_deployments_restore_point_while_the_application_writes(
        tmp_path, live_writer):
    """rollback.yml -e method=pitr, as the deploy role, the application writing: refused until the discarded
    writes are acknowledged by the restore point's name and the cluster's other database is named (nothing
    changed, no write refused); then the whole cluster goes back to the point the deployment marked: its
    revision, its rows, every write before the point kept, writes refused only while the server was down, the
    state before the rollback marked and archived."""
    from conftest import application_role
    from test_any_project import CHAIN, recorded

    with archived_cluster("pitr-rollback") as (state, params, settings, account):
        deploy, inventory, server = bookshelf_at_its_first_revision_backed_up(state, params, settings, account,
                                                                              tmp_path, "shelf_pitr")
        commands = json.dumps({
            "pgops_postgresql_stop_command": server + ["-m", "fast", "-w", "-t", "60", "stop"],
            "pgops_postgresql_start_command": server + ["-l", state["log"], "-o", f"-p {state['port']}", "-w", "-t",
                                                        "300", "start"]})
        with application_role(dict(params, login_db="shelf_pitr")):
            writer = live_writer(dict(params, login_db="shelf_pitr"), table="authors")
            before_deployment = len(writer.committed_names)
            record, point = deployed_with_a_restore_point(state, deploy, tmp_path, inventory)
            time.sleep(2)  # the application's writes after the deployment: a recovery to the point discards them
            rollback = ("rollback.yml", state, deploy, tmp_path, *inventory, "-e", f"record={record}",
                        "-e", "method=pitr", "-e", "confirm=yes", "-e", json.dumps(settings), "-e", commands)

            # A record without a restore point, and a server nobody said how to stop: refused before anything.
            first_record = min((tmp_path / "reports").glob("deploy-*.json"), key=os.path.getmtime)
            pointless = run_playbook("rollback.yml", state, deploy, tmp_path, *inventory, "-e", f"record={first_record}",
                                     "-e", "method=pitr", "-e", "confirm=yes", "-e", json.dumps(settings))
            assert pointless.returncode != 0 and play_recap(pointless)["failed"] == 1
            assert failure_message(pointless) == (
                "Nothing to recover to: method pitr needs a deployment record that names a restore point (a "
                f"deployment with pgops_deploy_restore_point true) ({first_record} names none). Nothing was changed.")
            unstoppable = run_playbook(*rollback[:-2])
            assert unstoppable.returncode != 0 and play_recap(unstoppable)["failed"] == 1
            assert failure_message(unstoppable) == (
                "Which unit stops and starts this cluster is unknown (its cluster_name is not Debian's "
                "<version>/<cluster>): set pgops_postgresql_service, or pgops_postgresql_stop_command and "
                "pgops_postgresql_start_command. Writes were not turned off. Nothing was changed.")

            refused = run_playbook(*rollback)
            assert refused.returncode != 0 and play_recap(refused)["failed"] == 1, refused.stdout[-3000:]
            last = failure_message(refused)
            assert last.startswith("the cluster also holds the database(s) intowork, which a point-in-time recovery "
                                   "takes back to the restore point too: name them with -e pitr_other_databases="), last
            assert f"recovering to restore point {point['name']} discards every write since it, in every database " \
                   "of the cluster: " in last and re.search(r"authors \+\d+ rows", last), last
            assert last.endswith(f"To mean it, run again with -e discard_writes={point['name']}. Writes were not "
                                 "turned off. Nothing was changed."), last
            assert recorded(deploy) == CHAIN[2] and writer.failed == []

            before_rollback = len(writer.committed_names)
            started = time.time()
            done = run_playbook(*rollback, "-e", f"discard_writes={point['name']}", "-e", "pitr_other_databases=intowork")
            ended = time.time()
            time.sleep(1)  # writes after the rollback, on the recovered cluster
            writer.stop()
        assert done.returncode == 0 and play_recap(done)["failed"] == 0, done.stdout[-4000:]
        assert recorded(deploy) == CHAIN[0]
        (published,) = artifacts(done)["pgops_rollbacks"].values()
        pitr = published["pitr"]
        assert re.search(
            rf"Rolled back by pitr: the database is at revision {CHAIN[0]}, as before the deployment, .*; the whole "
            rf"cluster recovered to restore point {re.escape(point['name'])} \(LSN {point['lsn']}\) from backup \S+F, "
            r"the server down for [0-9.]+ s \(restore [0-9.]+ s, replay and promotion [0-9.]+ s\), now on timeline 2; "
            r"discarded, as acknowledged: .+; databases taken back with it: intowork; the state before the rollback is "
            rf"kept as restore point {re.escape(pitr['before']['name'])} \(LSN \S+, timeline 1\): pgbackrest restore "
            rf"--type=name --target={re.escape(pitr['before']['name'])} --target-timeline=1 recovers it, and the "
            rf"stopped server's WAL \(the writes after it that no archive held yet\) is kept in "
            rf"{re.escape(pitr['wal_copy'])} \([0-9.]+ MB\)\.",
            published["summary"]), published["summary"]
        live = {row[0] for row in query(deploy, "SELECT name FROM authors")}
        # The cluster as it was at one instant: of the writes before the rollback, it holds a first run without a
        # hole, every write from before the deployment among them; the later ones are gone, as acknowledged.
        earlier = writer.committed_names[:before_rollback]
        kept = [name in live for name in earlier]
        held = kept.index(False) if False in kept else len(kept)
        assert not any(kept[held:]), "the recovered cluster has a hole in the application's writes"
        assert before_deployment <= held < before_rollback, (before_deployment, held, before_rollback)
        # Writes failed only while the rollback ran, and the application writes again after it.
        assert writer.failed and all(started <= moment <= ended for moment in writer.failed), (started, ended)
        assert writer.failed_window() <= float(pitr["server_down_seconds"]) + 1.0, (writer.failed_window(), pitr)
        assert set(writer.committed_names[before_rollback:]) & live, "no write after the rollback"
        # The stopped server's WAL, the application's last writes before the stop in it, beside its data folder.
        assert Path(pitr["wal_copy"]).parent == Path(state["datadir"]).parent
        assert any(re.fullmatch(r"[0-9A-F]{24}", path.name) for path in Path(pitr["wal_copy"]).iterdir())
        # The state before the rollback is in the repository: its restore point's segment comes back.
        fetched = Path(settings["pgops_pgbackrest_log_path"]) / pitr["before"]["wal_file"]
        got = pgbackrest(settings, account, "archive-get", pitr["before"]["wal_file"], str(fetched))
        assert got.returncode == 0 and fetched.exists(), got.stderr


def test_a_rollback_by_pitr_whose_server_does_not_start_says_it_is_down_and_keeps_the_lock(tmp_path, live_writer):
    """The other branch of the recovery: the start command fails after the restore, the application writing. The
    play stops with the reason, says the server is down since when and that the lock stays with the rollback;
    the application's writes failed only from then on; started by hand, the server recovers to the point with
    every write from before the deployment."""
    from conftest import application_role
    from test_any_project import CHAIN, recorded

    with archived_cluster("pitr-down") as (state, params, settings, account):
        deploy, inventory, server = bookshelf_at_its_first_revision_backed_up(state, params, settings, account,
                                                                              tmp_path, "shelf_down")
        shelf = dict(params, login_db="shelf_down")
        with application_role(shelf):
            writer = live_writer(shelf, table="authors")
            before_deployment = len(writer.committed_names)
            record, point = deployed_with_a_restore_point(state, deploy, tmp_path, inventory)
            commands = {"pgops_postgresql_stop_command": server + ["-m", "fast", "-w", "-t", "60", "stop"],
                        "pgops_postgresql_start_command": ["/bin/sh", "-c", "echo no start for you >&2; exit 3"]}
            down = run_playbook("rollback.yml", state, deploy, tmp_path, *inventory, "-e", f"record={record}",
                                "-e", "method=pitr", "-e", "confirm=yes", "-e", f"discard_writes={point['name']}",
                                "-e", "pitr_other_databases=intowork", "-e", json.dumps({**settings, **commands}))
            assert down.returncode != 0 and play_recap(down)["failed"] == 1, down.stdout[-3000:]
            said = re.fullmatch(
                rf"the server did not start after the restore to restore point {re.escape(point['name'])}: /bin/sh -c "
                r"echo no start for you >&2; exit 3 exited 3 \(no start for you\); its data folder is restored and set "
                r"to recover to the point when it starts\. The server is DOWN since (\S+Z), stopped for the recovery: "
                r"finish it as said above and start it; the deployment lock stays with this rollback "
                r"\(rollback-\S+\)\.", failure_message(down))
            assert said, failure_message(down)
            # No application role is guarded here: writes went on until the stop the line names (its second).
            down_since = datetime.datetime.strptime(said.group(1), "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=datetime.timezone.utc).timestamp()
            assert writer.failed and min(writer.failed) >= down_since, (min(writer.failed, default=None), down_since)

            sandbox.run(server + ["-l", state["log"], "-o", f"-p {state['port']}", "-w", "-t", "120", "start"],
                        account)
            deadline = time.monotonic() + 60
            while query(params, "SELECT pg_is_in_recovery()")[0][0]:
                assert time.monotonic() < deadline, "the server did not finish its recovery"
                time.sleep(0.5)
            writer.stop()
        assert recorded(deploy) == CHAIN[0]
        live = {row[0] for row in query(deploy, "SELECT name FROM authors")}
        assert set(writer.committed_names[:before_deployment]) <= live, "a write from before the deployment is lost"


def test_a_deployment_without_pg_dump_goes_back_by_its_restore_point_on_its_own_while_the_application_writes(
        tmp_path, live_writer):
    """pgops_deploy_logical_backup false: no pg_dump in the window, the restore point is the way back. A revision
    a downgrade cannot undo fails the deployment (writes guarded, the application writing): while the cluster
    holds a database the inventory does not name, the rescue recovers nothing, keeps writes off, and names the
    rollback.yml command, which then recovers it; named in pgops_pitr_other_databases, the next deployment's
    rescue recovers the cluster on its own. Every committed write survives both."""
    from conftest import APP, application_role, assert_application_survived
    from test_any_project import CHAIN, FAILING, project_copy, recorded

    with archived_cluster("pitr-auto") as (state, params, settings, account):
        deploy, inventory, server = bookshelf_at_its_first_revision_backed_up(state, params, settings, account,
                                                                              tmp_path, "shelf_auto")
        project = project_copy(tmp_path)
        (project / "migrations" / "versions" / "6e5f6a7b8c9d_fails.py").write_text(FAILING)
        shelf = dict(params, login_db="shelf_auto")
        # The data a revision of the plan destroys (it drops isbn): a downgrade would bring it back empty.
        query(deploy, "INSERT INTO authors (id, name) VALUES (1000000, 'Ursula K. Le Guin')")
        query(deploy, "INSERT INTO books (author_id, title, isbn) VALUES (1000000, 'The Dispossessed', '978-0061054884')")
        inventory_vars = {**settings, "pgops_alembic_project_dir": str(project), "pgops_app_roles": [APP],
                          "pgops_allow_destructive": [CHAIN[3]], "pgops_deploy_restore_point": True,
                          "pgops_deploy_logical_backup": False,
                          "pgops_postgresql_stop_command": server + ["-m", "fast", "-w", "-t", "60", "stop"],
                          "pgops_postgresql_start_command": server + ["-l", state["log"], "-o", f"-p {state['port']}",
                                                                      "-w", "-t", "300", "start"]}

        # Refused before anything: no pg_dump and no restore point leaves nothing to go back to.
        neither = run_playbook("deploy_migration.yml", state, deploy, tmp_path, *inventory,
                               "-e", json.dumps(dict(inventory_vars, pgops_deploy_restore_point=False)))
        assert neither.returncode != 0 and play_recap(neither)["failed"] == 1
        assert failure_message(neither) == (
            "Bad settings, nothing was changed: pgops_deploy_logical_backup false needs pgops_deploy_restore_point "
            "true (with pgBackRest archiving the WAL): a deployment with neither has nothing to go back to.")

        with application_role(shelf):
            writer = live_writer(shelf, table="authors")
            refused = run_playbook("deploy_migration.yml", state, deploy, tmp_path, *inventory,
                                   "-e", json.dumps(inventory_vars))
            assert refused.returncode != 0 and play_recap(refused)["failed"] == 1
            record = max((tmp_path / "reports").glob("deploy-*.json"), key=os.path.getmtime)
            report = json.loads(record.read_text())
            point = report["restore_point"]
            assert report["backup"] is None and point["name"] == report["deployment"], report
            last = failure_message(refused)
            assert f"the database is now at revision {CHAIN[4]}. THE ROLLBACK FAILED TOO (the cluster also holds " \
                   "the database(s) intowork, which a point-in-time recovery takes back to the restore point too: " \
                   "name them with -e pitr_other_databases=intowork to mean it. Nothing was recovered). " in last, last
            command = (f"ansible-playbook playbooks/rollback.yml -e record={record} -e method=pitr "
                       f"-e discard_writes={point['name']} -e pitr_other_databases=intowork -e confirm=yes")
            assert f"The database is at revision {CHAIN[4]}; writes are kept OFF. Recover the cluster to the restore " \
                   f"point taken before the deployment with: {command} (see docs/runbooks/rollback.md)." in last, last
            assert recorded(deploy) == CHAIN[4]
            assert writer.missing(shelf) == [] and writer.failed[-1] > time.time() - 2, writer.figures()

            # The command it names, as it names it: the cluster back at the point, writes back on.
            kept_off = len(writer.committed)
            recovered = run_playbook("rollback.yml", state, deploy, tmp_path, *inventory, *command.split()[2:],
                                     "-e", json.dumps(inventory_vars))
            assert recovered.returncode == 0 and play_recap(recovered)["failed"] == 0, recovered.stdout[-3000:]
            assert recorded(deploy) == CHAIN[0]
            assert query(deploy, "SELECT isbn FROM books") == [("978-0061054884",)]
            time.sleep(1)
            writer.stop()
            assert writer.missing(shelf) == [] and len(writer.committed) > kept_off, writer.figures()

            # Named in the inventory: the rescue recovers the cluster itself.
            writer = live_writer(shelf, table="authors")
            on_its_own = run_playbook("deploy_migration.yml", state, deploy, tmp_path, *inventory,
                                      "-e", json.dumps(dict(inventory_vars, pgops_pitr_other_databases=["intowork"])))
            assert on_its_own.returncode != 0 and play_recap(on_its_own)["failed"] == 1
            record = max((tmp_path / "reports").glob("deploy-*.json"), key=os.path.getmtime)
            report = json.loads(record.read_text())
            last = failure_message(on_its_own)
            assert re.search(
                rf"Rolled back by pitr: the database is at revision {CHAIN[0]}, as before the deployment, .*; the "
                rf"whole cluster recovered to restore point {re.escape(report['restore_point']['name'])} ", last), last
            # The downgrade would bring back empty the column the deployment dropped: it falls to the point.
            assert report["rollback_decided"]["reason"] == (
                f"a downgrade to {CHAIN[0]}, and a recovery of the cluster to restore point "
                f"{report['restore_point']['name']} if it fails (writes were off since the restore point)"), report
            assert query(deploy, "SELECT isbn FROM books") == [("978-0061054884",)]
            assert recorded(deploy) == CHAIN[0]
            assert_application_survived(writer, shelf, report["write_off_seconds"])
