"""No secret on a command line, in the output or in a file: the database password is looked for in every
process's argv (sampled while the runbooks run), in their -vvv output, and in every file they write. Only the
0600 password file may hold it. (monitoring.yml and pool_config.yml change the server and the application's
environment file, which holds the application's own password by design; they are not run here.)"""

import json
import os
import pathlib
import re
import signal
import stat
import threading
import time

import pytest

from conftest import APP, ROOT, hold_lock, process_argvs, run_playbook, start_playbook
from test_backup_account import ACCOUNT, wait_for_line
from test_deploy_gates import GUARD, project, record
from test_deploy_interruptions import let_go


class CommandLines(object):
    """Samples every process's argv until stopped; keeps those that contain `secret`."""

    def __init__(self, secret):
        self.secret = secret.encode()
        self.samples, self.leaks = 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for _pid, argv in process_argvs():
                command = b" ".join(argv)
                if self.secret in command:
                    self.leaks.append(command.replace(self.secret, b"<password>").decode()[:300])
            self.samples += 1
            # The command lines looked for live as long as their command, far longer than this pause, which
            # leaves the CPU to the runbooks (and to the tests running beside this one).
            time.sleep(0.01)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        assert self._thread.is_alive(), "the sampler stopped before the runbooks did"
        self._stop.set()
        self._thread.join()


def files_holding(secret, folder, since=0.0):
    """Files under `folder` changed since `since` that contain `secret`."""
    return [path for path in pathlib.Path(folder).rglob("*")
            if path.is_file() and not path.is_symlink() and path.stat().st_mtime >= since
            and secret.encode() in path.read_bytes()]


@pytest.mark.one_server_version
def test_no_password_on_a_command_line_in_output_or_in_files(server, guarded_db, tmp_path):
    secret = server["deploy_password"]  # the runbooks' login (the deploy role)
    program = {"pgops_program_dir": str(tmp_path / "lib"), "pgops_config_dir": str(tmp_path / "etc"),
               "pgops_cron_dir": str(tmp_path / "cron.d")}
    jobs = {"pgops_maintenance_jobs": [{"name": "expire_sessions", "kind": "delete", "table": "sessions",
                                        "where": "expires < now() - interval '30 days'", "schedule": "20 3 * * *"}],
            "maintenance_jobs_run_now": ["all"]}
    settings = project(tmp_path, ("0b00000000f1", "    op.execute('CREATE TABLE f1 (id int)')",
                                  "    op.execute('DROP TABLE f1')"))
    runs = [("deploy_migration.yml", ["-e", GUARD, "-e", settings]),
            ("backup.yml", []),
            ("restore_drill.yml", []),
            ("maintenance_cron.yml", ["-e", json.dumps(jobs)]),
            ("backup_cron.yml", []),
            ("health_report.yml", ["-e", json.dumps({"pgops_app_roles": [APP]})]),
            ("rollback.yml", ["-e", GUARD, "-e", settings, "-e", "method=restore", "-e", "confirm=yes"]),
            ("verify.yml", [])]
    started = time.time()
    with CommandLines(secret) as watch:
        for name, extra in runs:
            if name == "rollback.yml":
                deployed = next((tmp_path / "reports").glob("deploy-*.json"))
                # The maintenance job deleted rows since the backup: the restore discards that, acknowledged.
                backup_name = pathlib.Path(json.loads(deployed.read_text())["backup"]["path"]).name
                extra += ["-e", f"record={deployed}", "-e", f"discard_writes={backup_name}"]
            result = run_playbook(name, server, guarded_db, tmp_path, "-e", json.dumps(program), *extra, "-vvv")
            assert result.returncode == 0, f"{name}: {result.stdout[-3000:]}"
            assert secret not in result.stdout + result.stderr, f"{name} printed the password at -vvv"
    assert record(tmp_path)["outcome"] == "deployed"
    assert watch.samples > 100, "the sampler ran throughout"
    assert watch.leaks == [], watch.leaks[:3]
    # Tests running beside this one leave their own databases' password files in build/.
    others = [path for path in files_holding(secret, ROOT / "build", started) if not path.name.startswith("pgpass-t_")]
    assert others == [], "the runbooks wrote the password into the checkout"
    (passfile,) = files_holding(secret, tmp_path)
    assert passfile.name == f"pgpass-{guarded_db['login_db']}" and passfile.parent == tmp_path / "etc"
    assert stat.S_IMODE(passfile.stat().st_mode) == 0o600 and passfile.stat().st_uid == os.getuid()


def files_holding_anywhere(secret, folders, since):
    """files_holding over several folders, leaving out the test servers' own data (not the runbooks')."""
    found = []
    for folder in folders:
        for parent, children, names in os.walk(folder):
            children[:] = [child for child in children if child not in ("pgops-sandbox", "pytest-of-root")]
            for name in names:
                path = pathlib.Path(parent, name)
                try:
                    if (path.is_file() and not path.is_symlink() and path.stat().st_mtime >= since
                            and secret.encode() in path.read_bytes()):
                        found.append(path)
                except OSError:
                    continue  # gone meanwhile
    return found


@pytest.mark.one_server_version
def test_a_run_killed_mid_module_leaves_no_password_on_disk(server, migrated, host_dirs, tmp_path):
    """The backup runs as an async job: its module on the host, polled by the controller. Ansible starts such a job
    from a file holding every argument, the password included, even with pipelining. The controller is killed
    while the job waits for a lock: no temporary folder, nor any file written since, holds the password (the 0600
    password file for cron excepted), and the job still finishes alone."""
    secret = server["backup_password"]
    as_backup = dict(migrated, login_user=server["backup_user"], login_password=secret)
    backups = host_dirs / "backups"
    settings = json.dumps({
        "pgops_backup_os_user": ACCOUNT, "backup_python": "/usr/bin/python3", "pgops_backup_dir": str(backups),
        "pgops_program_dir": str(host_dirs / "lib"), "pgops_config_dir": str(host_dirs / "etc"),
        "pgops_backup_poll_seconds": 1})
    started = time.time() - 1
    holder = hold_lock(migrated, "sessions", "ACCESS EXCLUSIVE")
    try:
        run = start_playbook("backup.yml", server, as_backup, tmp_path, "-e", settings)
        wait_for_line(run, re.compile(r"backup of \S+: .*\d+ s so far"))
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
        # host_dirs is in /tmp.
        left = files_holding_anywhere(secret, [pathlib.Path.home(), pathlib.Path("/tmp"), pathlib.Path("/var/tmp"),
                                               tmp_path], started)
    finally:
        let_go(holder)
    assert [path for path in left if path.name != f"pgpass-{migrated['login_db']}"] == [], left
    deadline = time.monotonic() + 120
    while not list(backups.glob("*.dump")):
        assert time.monotonic() < deadline, "the orphaned job never finished its backup"
        time.sleep(1)
