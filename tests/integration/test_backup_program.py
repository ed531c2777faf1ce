"""The backup program against a real server: what operators rely on when a backup goes wrong."""

import datetime
import fcntl
import getpass
import json
import os
import pwd
import re
import resource
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import BASELINE, ROOT, Hook, alembic, create_accounts, load_reference_data, query, run_module

PROGRAM = ROOT / "roles" / "backup" / "files" / "pgops_backup.py"
TABLES = ["jobs", "job_applications"]


@pytest.fixture
def loaded(database):
    alembic(database, "upgrade", BASELINE)
    load_reference_data(database, scale=0.01)
    return database


# The account a drill's server runs as when the program runs as root (PostgreSQL refuses root): the sandbox's.
DRILL_ACCOUNT = "pgops-sandbox" if os.geteuid() == 0 else ""


def drills_folder():
    """A folder for drills' servers that their account can pass through (a test's tmp_path is root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="pgops-drills-"))
    folder.chmod(0o711)
    return folder


def write_config(server, params, folder, **overrides):
    backups = folder / "backups"
    backups.mkdir(mode=0o700, exist_ok=True)
    config = {"database": params["login_db"], "host": params["login_host"], "port": params["login_port"],
              "user": params["login_user"], "backup_dir": str(backups), "bin_dir": server["bindir"],
              "row_count_tables": TABLES, "retention_count": 2, "retention_days": 0,
              "drill_folder": str(drills_folder()), "drill_server_account": DRILL_ACCOUNT}
    config.update(overrides)
    path = folder / "config.json"
    path.write_text(json.dumps(config))
    return path, backups


# Shell bodies for stand-in client programs (see client_bin).
WRITE_PARTIAL = 'for arg; do case "$arg" in --file=*) echo partial > "${arg#--file=}";; esac; done\n'


def client_bin(tmp_path, server, pg_dump=None, pg_restore=None):
    """A folder of client programs for bin_dir: the real ones, or shell scripts standing in for them.

    A stand-in finds the real program's folder in $REAL and answers --version as the real one does.
    """
    folder = tmp_path / "bin"
    folder.mkdir()
    for name, body in (("pg_dump", pg_dump), ("pg_restore", pg_restore), ("psql", None)):
        if body is None:
            (folder / name).symlink_to(Path(server["bindir"]) / name)
            continue
        script = folder / name
        script.write_text("#!/bin/sh\nREAL=%s\ncase \"$1\" in --version) exec \"$REAL/%s\" --version;; esac\n%s"
                          % (server["bindir"], name, body))
        script.chmod(0o755)
    return str(folder)


def run_program(action, config, password, *extra, env=None, **kwargs):
    environment = dict(env if env is not None else os.environ)
    if password is not None:
        environment["PGPASSWORD"] = password
    return subprocess.run([sys.executable, str(PROGRAM), action, f"--config={config}", *extra],
                          env=environment, capture_output=True, text=True, check=False, **kwargs)


def finals(backups):
    return sorted(p.name for p in backups.iterdir() if not p.name.startswith(".") and p.name.endswith(".dump"))


def test_backup_is_verified_private_and_described(server, loaded, tmp_path):
    metrics = tmp_path / "textfile"
    metrics.mkdir()
    config, backups = write_config(server, loaded, tmp_path, metrics_dir=str(metrics))
    result = run_program("backup", config, loaded["login_password"])
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    dump = Path(manifest["path"])
    assert dump.exists() and dump.stat().st_mode & 0o077 == 0
    assert manifest["verified"] is True and manifest["alembic_revision"] == BASELINE
    assert manifest["made_by"] == pwd.getpwuid(os.geteuid()).pw_name
    assert manifest["row_counts"] == {"jobs": 1000, "job_applications": 10000}
    assert manifest["server_version"].startswith(server["version"])
    assert json.loads(Path(f"{dump}.manifest.json").read_text())["sha256"] == manifest["sha256"]
    assert loaded["login_password"] not in result.stderr + (backups / "pgops-backup.log").read_text()
    assert not [p for p in backups.iterdir() if p.name.endswith(".partial")]
    prom = (metrics / f"pgops_backup_{loaded['login_db']}.prom").read_text()
    ended = datetime.datetime.fromisoformat(manifest["ended"]).timestamp()
    assert f'pgops_backup_last_success_timestamp_seconds{{database="{loaded["login_db"]}"}} {ended}' in prom
    assert f'pgops_backup_last_size_bytes{{database="{loaded["login_db"]}"}} {manifest["size_bytes"]}' in prom


def test_killed_pg_dump_publishes_nothing_and_keeps_older_backups(server, loaded, tmp_path):
    config, backups = write_config(server, loaded, tmp_path)
    assert run_program("backup", config, loaded["login_password"]).returncode == 0
    before = finals(backups)
    # A pg_dump that writes part of its archive and is then killed.
    fake = client_bin(tmp_path, server, pg_dump=WRITE_PARTIAL + "kill -9 $$\n")
    config, _backups = write_config(server, loaded, tmp_path, bin_dir=fake)
    time.sleep(1.1)  # a new second, a new backup name
    result = run_program("backup", config, loaded["login_password"])
    assert result.returncode == 1
    assert "pg_dump failed: killed by signal SIGKILL" in result.stderr
    assert finals(backups) == before
    assert not [p for p in backups.iterdir() if p.name.endswith(".partial")]


def test_program_killed_mid_dump_leaves_no_final_file_and_next_run_cleans_up(server, loaded, tmp_path):
    fake = client_bin(tmp_path, server, pg_dump=WRITE_PARTIAL + "sleep 30\n")
    config, backups = write_config(server, loaded, tmp_path, bin_dir=fake)
    env = dict(os.environ, PGPASSWORD=loaded["login_password"])
    process = subprocess.Popen([sys.executable, str(PROGRAM), "backup", f"--config={config}"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 20
    while not [p for p in backups.iterdir() if p.name.endswith(".partial")]:
        assert time.monotonic() < deadline, "the dump never started"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert finals(backups) == []
    config, _backups = write_config(server, loaded, tmp_path)
    result = run_program("backup", config, loaded["login_password"])
    assert result.returncode == 0, result.stderr
    assert "removing leftover" in result.stderr
    assert len(finals(backups)) == 1
    assert not [p for p in backups.iterdir() if p.name.endswith(".partial")]


# A read-back that passes, after which nothing can be written where the dump's manifest goes.
BLOCK_MANIFEST = ('"$REAL/pg_restore" "$@" || exit $?\ncase "$1" in --file=/dev/null) for last; do :; done; '
                  'name=$(basename "$last" .partial); mkdir "$(dirname "$last")/${name#.}.manifest.json";; esac\n')


def test_a_dump_gets_its_final_name_only_with_its_manifest(server, loaded, tmp_path):
    config, backups = write_config(server, loaded, tmp_path)
    assert run_program("backup", config, loaded["login_password"]).returncode == 0
    before = sorted(p.name for p in backups.iterdir())
    config, _backups = write_config(server, loaded, tmp_path,
                                    bin_dir=client_bin(tmp_path, server, pg_restore=BLOCK_MANIFEST))
    time.sleep(1.1)  # a new second, a new backup name
    result = run_program("backup", config, loaded["login_password"])
    assert result.returncode == 1, result.stderr
    assert ".manifest.json" in result.stderr.splitlines()[-1] and "Traceback" not in result.stderr
    # Nothing that looks like a backup: no dump with a final name, no manifest without its dump, no partial.
    assert sorted(p.name for p in backups.iterdir()) == before


def test_disk_full_fails_clearly_and_keeps_older_backups(server, database, tmp_path):
    alembic(database, "upgrade", BASELINE)
    load_reference_data(database, scale=0.05)
    config, backups = write_config(server, database, tmp_path)
    assert run_program("backup", config, database["login_password"]).returncode == 0
    before = finals(backups)

    def small_disk():
        # A file size limit stands in for a full disk: writes past 256 KiB fail.
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    time.sleep(1.1)
    result = run_program("backup", config, database["login_password"], preexec_fn=small_disk)
    assert result.returncode == 1
    assert "FAILED: pg_dump failed" in result.stderr
    assert finals(backups) == before
    assert not [p for p in backups.iterdir() if p.name.endswith(".partial")]


def test_corrupted_backup_fails_the_drill_loudly(server, loaded, tmp_path):
    config, backups = write_config(server, loaded, tmp_path)
    manifest = json.loads(run_program("backup", config, loaded["login_password"]).stdout)
    data = bytearray(Path(manifest["path"]).read_bytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
    Path(manifest["path"]).write_bytes(bytes(data))
    result = run_program("drill", config, loaded["login_password"])
    assert result.returncode == 1
    assert "is corrupt: sha256" in result.stderr
    databases = query(loaded, "SELECT count(*) FROM pg_database WHERE datname LIKE %s", (f"{loaded['login_db']}_drill_%",))
    assert databases[0][0] == 0


def test_corruption_during_the_dump_is_caught_by_the_read_back(server, loaded, tmp_path):
    # A pg_dump whose archive is damaged on its way to disk.
    fake = client_bin(tmp_path, server, pg_dump=(
        '"$REAL/pg_dump" "$@" || exit $?\n'
        'for arg; do case "$arg" in --file=*) f="${arg#--file=}";; esac; done\n'
        'size=$(stat -c %s "$f"); printf XXXXXXXXXXXXXXXX | dd of="$f" bs=1 seek=$((size / 2)) conv=notrunc 2>/dev/null\n'))
    config, backups = write_config(server, loaded, tmp_path, bin_dir=fake)
    result = run_program("backup", config, loaded["login_password"])
    assert result.returncode == 1
    assert "pg_restore read-back failed" in result.stderr
    assert finals(backups) == []


def test_drill_restores_and_matches_the_manifest(server, loaded, tmp_path):
    config, _backups = write_config(server, loaded, tmp_path)
    assert run_program("backup", config, loaded["login_password"]).returncode == 0
    result = run_program("drill", config, loaded["login_password"], "--jobs=2")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] is True and report["row_counts"] == {"jobs": 1000, "job_applications": 10000}
    assert report["rto_seconds"] < report["rto_target_seconds"] and report["analyse_seconds"] >= 0
    # Restored into a server of its own, never the one it proves: nothing of it on that server, and its folder gone.
    assert report["scratch_server"]["folder"].startswith(json.loads(config.read_text())["drill_folder"])
    leftover = query(loaded, "SELECT count(*) FROM pg_database WHERE datname = %s", (report["scratch_database"],))
    assert leftover[0][0] == 0
    assert not os.path.exists(report["scratch_server"]["folder"]), "the drill's server was removed"


def test_the_backup_role_drills_a_database_with_a_superusers_extension(server, loaded, tmp_path):
    """pg_stat_statements installed in public by a superuser, as monitoring.yml does, and a trusted extension
    (pg_trgm): the backup role (no superuser, no CREATEDB) drills it into a server of the drill's own, where the
    drill's account is the superuser, so both are restored; --keep leaves that server for more checks, and
    drop-scratch removes it."""
    query(loaded, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements WITH SCHEMA public")
    query(loaded, "CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public")
    create_accounts(server, loaded["login_db"])  # the backup role reads this database's tables
    as_backup = dict(loaded, login_user=server["backup_user"])
    config, _backups = write_config(server, as_backup, tmp_path)
    assert run_program("backup", config, server["backup_password"]).returncode == 0
    result = run_program("drill", config, server["backup_password"], "--keep")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] is True and report["extensions_left_out"] == [], report
    kept = report["scratch_server"]
    copy = {"login_host": kept["socket"], "login_port": kept["port"], "login_user": kept["user"],
            "login_password": None, "login_db": report["scratch_database"]}
    try:
        assert query(copy, "SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1") == [
            ("pg_stat_statements",), ("pg_trgm",)]
        assert query(copy, "SELECT count(*) FROM jobs")[0][0] == 1000
    finally:
        dropped = run_program("drop-scratch", config, server["backup_password"], f"--scratch-path={kept['folder']}")
        assert dropped.returncode == 0, dropped.stderr
    assert not os.path.exists(kept["folder"])


@pytest.mark.parametrize("failure", ["rto", "row_counts"])
def test_a_failed_drill_leaves_no_scratch_copy_even_when_asked_to_keep_it(server, loaded, tmp_path, failure):
    config, _backups = write_config(server, loaded, tmp_path)
    manifest = json.loads(run_program("backup", config, loaded["login_password"]).stdout)
    options = ["--keep"]
    if failure == "rto":
        options.append("--rto-target-seconds=0")
    else:
        described = Path(manifest["path"] + ".manifest.json")
        described.write_text(json.dumps(dict(json.loads(described.read_text()), row_counts={"jobs": 999})))
    result = run_program("drill", config, loaded["login_password"], *options)
    assert result.returncode == 1
    assert ("is over the 0 s target" if failure == "rto" else "row counts differ from the manifest") in result.stderr
    left = query(loaded, "SELECT count(*) FROM pg_database WHERE datname LIKE %s", (f"{loaded['login_db']}_drill_%",))
    assert left[0][0] == 0, "nothing of the drill on the server it proves"
    assert list(Path(json.loads(config.read_text())["drill_folder"]).iterdir()) == [], "the failed drill's server was removed"


@pytest.mark.skipif(os.geteuid() != 0, reason="only a program run as root needs the server's account")
def test_a_drill_run_as_root_without_an_account_for_its_server_says_so(server, loaded, tmp_path):
    config, _backups = write_config(server, loaded, tmp_path, drill_server_account="")
    assert run_program("backup", config, loaded["login_password"]).returncode == 0
    result = run_program("drill", config, loaded["login_password"])
    assert result.returncode == 1
    assert ("FAILED: PostgreSQL refuses to run as root: give the drill server's account "
            "(pgops_restore_drill_server_account)") in result.stderr


def old_backup(backups, database, stamp, verified=True):
    path = backups / f"{database}-{stamp}.dump"
    path.write_text("old")
    path.chmod(0o600)
    Path(f"{path}.manifest.json").write_text(json.dumps({"verified": verified, "sha256": "x"}))
    return path.name


def test_retention_keeps_everything_when_a_run_fails_and_trims_after_success(server, loaded, tmp_path):
    config, backups = write_config(server, loaded, tmp_path, retention_count=2, retention_days=3)
    olds = [old_backup(backups, loaded["login_db"], stamp) for stamp in
            ("20200101T000000Z", "20200102T000000Z", "20200103T000000Z")]
    failed = run_program("backup", config, "wrong-password")
    assert failed.returncode == 1
    assert finals(backups) == olds, "a failed run removes nothing"
    assert run_program("backup", config, loaded["login_password"]).returncode == 0
    kept = finals(backups)
    assert len(kept) == 2 and "20200103T000000Z" in kept[0], kept


def test_newest_verified_backup_survives_any_age(server, loaded, tmp_path):
    config, backups = write_config(server, loaded, tmp_path, retention_count=1, retention_days=0)
    good = old_backup(backups, loaded["login_db"], "20200101T000000Z", verified=True)
    old_backup(backups, loaded["login_db"], "20200102T000000Z", verified=False)
    # Every new backup fails its read-back: the only verified backup is the old one.
    fake = client_bin(tmp_path, server, pg_restore='case "$1" in --list) exec "$REAL/pg_restore" "$@";; esac\nexit 1\n')
    broken, _backups = write_config(server, loaded, tmp_path, bin_dir=fake, retention_count=1, retention_days=0)
    assert run_program("backup", broken, loaded["login_password"]).returncode == 1
    assert good in finals(backups)


def test_second_run_refuses_while_the_first_holds_the_lock(server, loaded, tmp_path):
    config, backups = write_config(server, loaded, tmp_path)
    with open(backups / ".pgops-backup.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = run_program("backup", config, loaded["login_password"])
    assert result.returncode == 75
    assert "refused: another pgops-backup run holds" in result.stderr
    assert finals(backups) == []
    waited, _backups = write_config(server, loaded, tmp_path, lock_wait_seconds=10)
    with open(backups / ".pgops-backup.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        process = subprocess.Popen([sys.executable, str(PROGRAM), "backup", f"--config={waited}"],
                                   env=dict(os.environ, PGPASSWORD=loaded["login_password"]),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)
        assert process.poll() is None, "the second run waits for the lock"
    assert process.wait(timeout=30) == 0
    assert len(finals(backups)) == 1


@pytest.mark.parametrize("change, cause", [
    ({"password": "wrong-password"}, "password authentication failed"),
    ({"port": 1}, "Connection refused"),
])
def test_connection_failures_are_one_line_and_alerted(server, loaded, tmp_path, hook, change, cause):
    overrides = {"alert_webhook": hook}
    if "port" in change:
        overrides["port"] = change["port"]
    config, backups = write_config(server, loaded, tmp_path, **overrides)
    result = run_program("backup", config, change.get("password", loaded["login_password"]))
    assert result.returncode == 1
    failures = [line for line in result.stderr.splitlines() if "FAILED" in line]
    assert len(failures) == 1 and "cannot connect to" in failures[0] and cause in failures[0]
    assert "wrong-password" not in result.stderr
    assert Hook.received and Hook.received[0]["event"] == "backup_failed" and cause in Hook.received[0]["message"]
    assert finals(backups) == []


@pytest.mark.parametrize("content, fragment", [
    ({"database": "intowork"}, "needs backup_dir"),
    ({"database": "intowork", "backup_dir": "/tmp", "format": "tar"}, "format 'tar', choose custom or directory"),
    ({"database": "intowork", "backup_dir": "/tmp", "compresion": "lz4"}, "unknown key(s) compresion"),
    ({"database": "a/../b", "backup_dir": "/tmp"}, "cannot name a file safely"),
    ({"database": "intowork", "backup_dir": "/tmp", "retention_count": 0}, "keep at least 1"),
    ({"database": "intowork\n", "backup_dir": "/tmp"}, "cannot name a file safely"),
    ({"database": "intowork", "backup_dir": "/tmp", "alert_mail": "ops@example.com\nBcc: x@evil"},
     'alert_mail "ops@example.com\\nBcc: x@evil" is not one mail address'),
    ({"database": "intowork", "backup_dir": "/tmp", "alert_webhook": "file:///etc/passwd"},
     'alert_webhook "file:///etc/passwd" is not an http or https URL'),
])
def test_bad_config_is_one_clear_line(tmp_path, content, fragment):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(content))
    result = run_program("backup", path, None)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and fragment in result.stderr and "Traceback" not in result.stderr


def test_the_module_runs_the_program_with_the_password_in_no_argument(server, loaded, tmp_path):
    from conftest import run_module
    config, backups = write_config(server, loaded, tmp_path)
    # The config names the target; the module is given only the password.
    args = dict(login_password=loaded["login_password"], program=str(PROGRAM), config=str(config), command="backup")
    planned = run_module("backup_program", args, check_mode=True)
    assert planned["changed"] is True and finals(backups) == [], "check mode runs nothing"
    assert loaded["login_password"] not in json.dumps(planned["cmd"])
    clean = dict((key, value) for key, value in os.environ.items() if key != "PGPASSWORD")
    done = run_module("backup_program", args, env=clean)
    assert done["changed"] is True and done["result"]["path"].endswith(finals(backups)[0])
    assert done["result"]["row_counts"]["jobs"] == query(loaded, "SELECT count(*) FROM jobs")[0][0]
    # Its own folder: a second backup in the same second would stop at the name, before connecting.
    (tmp_path / "other").mkdir()
    other, _other_backups = write_config(server, loaded, tmp_path / "other")
    wrong = run_module("backup_program", dict(args, config=str(other), login_password="not-the-password"), env=clean)
    assert wrong["failed"] is True and wrong["msg"].startswith(
        f"Backup of {loaded['login_db']} failed, nothing was published: ") and "password" in wrong["msg"]
    assert "not-the-password" not in json.dumps(wrong)
    missing = run_module("backup_program", dict(args, program=str(tmp_path / "nowhere.py")))
    assert missing["failed"] is True and "is not installed" in missing["msg"]


def test_row_counts_are_of_the_named_table_not_one_earlier_in_the_search_path(server, loaded, tmp_path):
    # "$user" comes first in the default search_path: a schema named after the backup's login shadows public.
    query(loaded, f'CREATE SCHEMA "{loaded["login_user"]}"')
    query(loaded, f'CREATE TABLE "{loaded["login_user"]}".jobs (id int)')
    config, _backups = write_config(server, loaded, tmp_path)
    result = run_program("backup", config, loaded["login_password"])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["row_counts"]["jobs"] == query(loaded, "SELECT count(*) FROM public.jobs")[0][0]


def test_backup_install_writes_once_with_its_modes_and_check_mode_writes_nothing(tmp_path):
    owner = getpass.getuser()
    args = {"program_dir": str(tmp_path / "lib"), "config_dir": str(tmp_path / "etc"),
            "config_file": str(tmp_path / "etc" / "backup-appdb.json"), "config": {"database": "appdb", "port": 5432},
            "backup_dir": str(tmp_path / "backups"), "owner": owner,
            "pgpass_file": str(tmp_path / "etc" / "pgpass-appdb"), "pgpass": "*:5432:*:backup:s3cret-pw\n",
            "program": PROGRAM.read_text(), "program_path": str(tmp_path / "lib" / "pgops_backup.py")}
    # The session's PG* variables, as a deployment's connection to the host has them; cron's runs will have none.
    session = dict((key, value) for key, value in os.environ.items() if not key.startswith("PG"))
    session.update(PGHOST="db.example.internal", PGPORT="6543")
    checked = run_module("backup_install", args, check_mode=True, env=session)
    assert checked["changed"] is True and checked["connected_as"] == owner
    assert not (tmp_path / "lib").exists() and not (tmp_path / "etc").exists(), "check mode wrote nothing"
    installed = run_module("backup_install", args, env=session)
    assert installed["changed"] is True and "s3cret-pw" not in json.dumps(installed)
    modes = {name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in
             ["lib", "etc", "backups", "lib/pgops_backup.py", "lib/pgops_connection.py", "lib/pgops_write_guard.py",
              "lib/pgops_lease.py", "lib/pgops_deployment_record.py", "etc/backup-appdb.json", "etc/pgpass-appdb"]}
    assert modes == {"lib": 0o755, "etc": 0o755, "backups": 0o700, "lib/pgops_backup.py": 0o755,
                     "lib/pgops_connection.py": 0o644, "lib/pgops_write_guard.py": 0o644, "lib/pgops_lease.py": 0o644,
                     "lib/pgops_deployment_record.py": 0o644,
                     "etc/backup-appdb.json": 0o600,
                     "etc/pgpass-appdb": 0o600}, modes
    assert (tmp_path / "lib" / "pgops_backup.py").read_bytes() == PROGRAM.read_bytes(), "the program, byte for byte"
    # Resolved once, as every module resolves them: the variables; no PGUSER leaves libpq's default (the account
    # the program runs as, which peer authentication expects from cron).
    assert json.loads((tmp_path / "etc" / "backup-appdb.json").read_text()) == {
        "database": "appdb", "host": "db.example.internal", "port": 6543, "user": ""}
    assert installed["target"] == {"host": "db.example.internal", "port": 6543, "user": ""}
    with_user = run_module("backup_install", args, check_mode=True, env=dict(session, PGUSER="backup"))
    assert with_user["target"]["user"] == "backup"
    assert (tmp_path / "etc" / "pgpass-appdb").read_text() == "*:5432:*:backup:s3cret-pw\n"
    assert "def writes_back" in (tmp_path / "lib" / "pgops_write_guard.py").read_text()
    assert "def lock_and_read" in (tmp_path / "lib" / "pgops_lease.py").read_text()
    assert "def progress" in (tmp_path / "lib" / "pgops_deployment_record.py").read_text()
    assert "def libpq_environment" in (tmp_path / "lib" / "pgops_connection.py").read_text()
    assert run_module("backup_install", args, env=session)["changed"] is False, "a second run changes nothing"
    # The inventory's values win over the variables.
    given = run_module("backup_install", dict(args, login_host="127.0.0.1", login_port=5433, login_user="backup"),
                       env=session)
    assert given["written"] == [args["config_file"]] and given["target"] == {
        "host": "127.0.0.1", "port": 5433, "user": "backup"}
    (tmp_path / "etc" / "pgpass-appdb").chmod(0o644)
    again = run_module("backup_install", dict(args, login_host="127.0.0.1", login_port=5433, login_user="backup"),
                       env=session)
    assert again["written"] == [str(tmp_path / "etc" / "pgpass-appdb")]
    assert stat.S_IMODE((tmp_path / "etc" / "pgpass-appdb").stat().st_mode) == 0o600
    refused = run_module("backup_install", dict(args, owner="no-such-account"))
    assert refused["failed"] is True and "owner no-such-account is not an account" in refused["msg"]


@pytest.fixture
def small_volume():
    """A 64 MB file system (tmpfs) for drills' servers, where mounting one is allowed (root)."""
    folder = drills_folder()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0711", "tmpfs", str(folder)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {mounted.stderr.strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)
    folder.rmdir()


def test_a_drill_without_room_for_its_server_stops_before_anything_is_made(server, loaded, tmp_path, small_volume):
    config, _backups = write_config(server, loaded, tmp_path, drill_folder=str(small_volume))
    assert run_program("backup", config, loaded["login_password"]).returncode == 0
    result = run_program("drill", config, loaded["login_password"])
    assert result.returncode == 1
    assert re.search(rf"FAILED: not enough free space in {small_volume} for the drill's server: \d+ MB free, \d+ MB "
                     r"needed \(4 times the backup's \d+ MB, and 256 MB for the server\); nothing was restored",
                     result.stderr), result.stderr
    assert list(small_volume.iterdir()) == []
