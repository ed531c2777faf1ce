"""Point-in-time recovery with pgBackRest, measured: RPO, RTO, backup cost, the maintenance window. Prints figures.

    .venv/bin/python benchmarks/pitr.py [--scales 1 10] [--tries 5] [--rate 200] [--archive-timeout 60]

Every cluster is a sandbox PostgreSQL 15 (Debian's pgBackRest 2.45 reads up to 15), its archive and schedule
set up by playbooks/pgbackrest.yml as an operator would.

- RPO: the application commits `rate` acknowledged transactions a second, each with its id; at a random moment
  (20 to 80 s in) the server and every process of it are killed -9 and its data folder (pg_wal included) and
  pgBackRest's spool are destroyed: the host is lost. The cluster is restored from the repository to the end of
  the archive into a new folder; the acknowledged transactions missing give the RPO (seconds from the oldest
  missing one to the loss). Goal: at most 60 s each try with archive_timeout 60 (the checklist: 300 s).
- RTO per scale: physical (playbooks/pitr_drill.yml: restore, replay, first answered query) against logical
  (pg_dump -Fc, then pg_restore --jobs=2 into a new database, then the first answered query). Goal: physical at
  least 3x faster at scale 10 (aim 5x); the checklist's 15 minutes as the outer bound.
- Backup cost per scale: a full backup, and an incremental one after a deployment's changes (every revision
  after h8c2d6e5f4g3), against pg_dump -Fc of the same database.
- The maintenance window per scale: what a deployment holds writes off for to secure its way back, a restore
  point archived (restore_point) against a pg_dump of the database; then the whole window of two maintenance-mode
  deployments through deploy_migration.yml (every revision after h8c2d6e5f4g3, the application role guarded), on
  two copies of a fresh database: one with its pg_dump inside the window (the default), one with a restore point
  and no pg_dump (pgops_deploy_logical_backup false).
"""

import argparse
import json
import os
import pwd
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "examples" / "intowork"
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / ".collections"))

import sandbox  # noqa: E402
from ansible_collections.intowork.pgops.plugins.module_utils._restore_point import create  # noqa: E402


class Cluster:
    """A sandbox cluster archived by playbooks/pgbackrest.yml into a repository of its own."""

    def __init__(self, label, archive_timeout):
        self.name = f"bench-pitr-{label}-{os.getpid()}"
        self.state = sandbox.up(self.name, "15", "intowork")
        self.account = sandbox.run_as_sandbox_user() or pwd.getpwuid(os.geteuid())
        self.work = Path(f"/tmp/pgops-bench-pitr-{label}-{os.getpid()}")
        self.work.mkdir(mode=0o755)
        pgpass = self.work / "pgpass"
        pgpass.write_text(f"*:*:*:{self.state['user']}:{self.state['password']}\n")
        pgpass.chmod(0o600)
        os.chown(pgpass, self.account.pw_uid, self.account.pw_gid)
        self.settings = {
            "pgops_pgbackrest_pg_user": self.state["user"], "pgops_postgres_os_user": self.account.pw_name,
            "pgops_pgbackrest_pgpass_file": str(pgpass), "pgops_pgbackrest_install_package": False,
            "pgops_pgbackrest_config_file": str(self.work / "etc" / "pgbackrest.conf"),
            "pgops_pgbackrest_repo_path": str(self.work / "repo"),
            "pgops_pgbackrest_spool_path": str(self.work / "spool"),
            "pgops_pgbackrest_log_path": str(self.work / "log"), "pgops_pgbackrest_lock_path": str(self.work / "lock"),
            "pgops_pgbackrest_stanza": "bench", "pgops_cron_dir": str(self.work / "cron.d"),
            "pgops_pgbackrest_schedule_state": "absent", "pgops_pgbackrest_python": "/usr/bin/python3",
            "pgops_pgbackrest_archive_timeout": archive_timeout,
            "pgops_pitr_drill_folder": str(self.work / "drills"), "pgops_db_name": "intowork",
            "pgops_pitr_drill_reserve_mb": 0, "pitr_drill_user": self.state["user"], "pgops_integrity_spec_file": "",
            "pgops_reports_dir": str(self.work / "reports"), "pgops_backup_dir": str(self.work / "backups")}
        self.playbook("pgbackrest.yml")

    @property
    def env(self):
        return dict(os.environ, PGHOST=self.state["host"], PGPORT=str(self.state["port"]), PGUSER=self.state["user"],
                    PGPASSWORD=self.state["password"], PGDATABASE="intowork", DATABASE_URL="postgresql+psycopg2://",
                    ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_SHOW_CUSTOM_STATS="1", ANSIBLE_NOCOLOR="1",
                    PATH=f"{self.state['bindir']}:{Path(sys.executable).parent}:{os.environ['PATH']}")

    def playbook(self, name, **extra):
        ran = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), str(ROOT / "playbooks" / name),
                              "-e", json.dumps(dict(self.settings, **extra))], cwd=ROOT, env=self.env,
                             capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
        if ran.returncode != 0:
            raise SystemExit(f"{name} failed:\n{ran.stdout[-3000:]}")
        for line in ran.stdout.splitlines():
            if line.startswith("\tRUN: "):
                return json.loads(line[len("\tRUN: "):])
        return {}

    def pgbackrest(self, *command):
        started = time.monotonic()
        ran = subprocess.run(["/usr/sbin/runuser", "-u", self.account.pw_name, "--", "/usr/bin/pgbackrest",
                              f"--config={self.settings['pgops_pgbackrest_config_file']}", "--stanza=bench", *command],
                             env=dict(os.environ, PGPASSFILE=self.settings["pgops_pgbackrest_pgpass_file"]),
                             capture_output=True, text=True, check=False, cwd="/")
        if ran.returncode != 0:
            raise SystemExit(f"pgbackrest {' '.join(command)} failed: {ran.stderr.strip()[-500:]}")
        return time.monotonic() - started, ran.stdout

    def newest_backup(self):
        return json.loads(self.pgbackrest("--output=json", "info")[1])[0]["backup"][-1]

    def connect(self, dbname="intowork"):
        return psycopg2.connect(host=self.state["host"], port=self.state["port"], user=self.state["user"],
                                password=self.state["password"], dbname=dbname, connect_timeout=5)

    def sql(self, statement, dbname="intowork"):
        conn = self.connect(dbname)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement)
            rows = cur.fetchall() if cur.description else None
        conn.close()
        return rows

    def lose_the_host(self):
        """kill -9 the server and every process of it, pgBackRest's asynchronous pushers included; destroy the
        data folder and the spool. Returns the instant of the loss."""
        datadir = Path(self.state["datadir"])
        postmaster = int((datadir / "postmaster.pid").read_text().split()[0])
        doomed = {postmaster}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, IndexError, ValueError):
                continue
            if parent == postmaster or (self.settings["pgops_pgbackrest_config_file"] in cmdline
                                        and "pgbackrest" in cmdline):
                doomed.add(int(entry.name))
        lost = time.time()
        for pid in doomed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{pid}").exists() for pid in doomed) and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(datadir)
        # The lost host's /tmp went with it: the dead server's socket and its lock file.
        for leftover in Path(self.state["socket_dir"]).glob(".s.PGSQL.*"):
            leftover.unlink()
        shutil.rmtree(self.work / "spool", ignore_errors=True)
        return lost

    def recover_to_the_end_of_the_archive(self):
        """The whole cluster from the repository, replayed to the last archived segment, into a new data folder
        where the old one was; started and promoted. Returns the seconds to the first answered query."""
        datadir = Path(self.state["datadir"])
        started = time.monotonic()
        for folder, mode in ((datadir, 0o700), (self.work / "spool", 0o750)):
            folder.mkdir(mode=mode)
            os.chown(folder, self.account.pw_uid, self.account.pw_gid)
        self.pgbackrest("restore")
        # The sandbox's port is on its command line, not in the restored settings.
        sandbox.run([self.state["bindir"] + "/pg_ctl", "-D", str(datadir), "-l", self.state["log"], "-o",
                     f"-p {self.state['port']}", "-w", "-t", "600", "start"], self.account)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.sql("SELECT 1")
                return time.monotonic() - started
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def down(self):
        sandbox.down(self.name)
        shutil.rmtree(self.work, ignore_errors=True)


class AcknowledgedWriter(threading.Thread):
    """The application: one INSERT per transaction, `rate` a second; every commit the server acknowledged is
    kept with its instant. Stops at the first failure (the host is gone)."""

    def __init__(self, cluster, rate, first_id):
        super().__init__(daemon=True)
        self.cluster, self.interval, self.next_id = cluster, 1.0 / rate, first_id
        self.acknowledged = []

    def run(self):
        conn = self.cluster.connect()
        conn.autocommit = True
        cur = conn.cursor()
        due = time.monotonic()
        try:
            while True:
                cur.execute("INSERT INTO acknowledged (id) VALUES (%s)", (self.next_id,))
                self.acknowledged.append((self.next_id, time.time()))
                self.next_id += 1
                due += self.interval
                time.sleep(max(0.0, due - time.monotonic()))
        except psycopg2.Error:
            return


def rpo_try(number, rate, archive_timeout):
    """One lost host, on a cluster of its own (each try starts from a full backup on timeline 1)."""
    cluster = Cluster(f"rpo{number}", archive_timeout)
    try:
        cluster.sql("CREATE TABLE acknowledged (id bigint PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
        cluster.pgbackrest("--type=full", "backup")
        writer = AcknowledgedWriter(cluster, rate, 1)
        writer.start()
        time.sleep(random.uniform(20, 80))
        lost = cluster.lose_the_host()
        writer.join(timeout=30)
        try:
            rto = cluster.recover_to_the_end_of_the_archive()
        except (sandbox.SandboxError, psycopg2.Error) as error:
            log = Path(cluster.state["log"]).read_text(errors="replace").splitlines()
            raise SystemExit(f"try {number}: the recovery failed: {error}\n" + "\n".join(log[-15:]))
        present = {row[0] for row in cluster.sql("SELECT id FROM acknowledged")}
        missing = [(ident, at) for ident, at in writer.acknowledged if ident not in present]
        rpo = lost - missing[0][1] if missing else 0.0
        print(f"  try {number}: {len(writer.acknowledged)} acknowledged in {lost - writer.acknowledged[0][1]:.1f} s, "
              f"{len(missing)} missing after the recovery: RPO {rpo:.1f} s; recovered in {rto:.1f} s", flush=True)
        return number, len(writer.acknowledged), len(missing), rpo, rto
    finally:
        cluster.down()


def deployment_windows(cluster, scale):
    """The write-off window of the same deployment both ways, on two copies of one fresh database: with its pg_dump
    inside the window, and with a restore point instead (pgops_deploy_logical_backup false)."""
    env = dict(cluster.env, PGDATABASE="window_dump")
    cluster.sql("CREATE DATABASE window_dump", dbname="postgres")
    alembic = [sys.executable, "-m", "alembic", "-c", str(APP / "alembic.ini"), "upgrade"]
    subprocess.run(alembic + ["a7f3b2c1d9e8"], env=env, check=True, capture_output=True)
    subprocess.run([sys.executable, str(APP / "generate_data.py"), "--scale", str(scale)], env=env, check=True,
                   capture_output=True)
    subprocess.run(alembic + ["h8c2d6e5f4g3"], env=env, check=True, capture_output=True)
    cluster.sql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bench_window_app') THEN "
                "CREATE ROLE bench_window_app LOGIN PASSWORD 'bench-window'; END IF; END $$", dbname="postgres")
    cluster.sql("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO bench_window_app",
                dbname="window_dump")
    cluster.sql("CREATE DATABASE window_point TEMPLATE window_dump", dbname="postgres")
    figures = {}
    ways = (("window_dump", {}),
            ("window_point", {"pgops_deploy_restore_point": True, "pgops_deploy_logical_backup": False}))
    for database, way in ways:
        cluster.playbook("deploy_migration.yml", pgops_db_name=database, pgops_deploy_mode="maintenance",
                         pgops_app_roles=["bench_window_app"], verification_query_fail_on=[],
                         verification_integrity_fail_on=["orphans", "timeouts"], **way)
        record = max(Path(cluster.settings["pgops_reports_dir"]).glob("deploy-*.json"), key=os.path.getmtime)
        report = json.loads(record.read_text())
        phases = {phase["phase"]: phase["ended_epoch"] for phase in report.get("phases", [])}
        figures[database] = {"write_off_seconds": float(report["write_off_seconds"]),
                             "migration_seconds": phases.get("migration", 0) - phases.get("backup", 0)}
    return {"window_dump": figures["window_dump"], "window_point": figures["window_point"]}


def scale_figures(scale, archive_timeout):
    cluster = Cluster(f"scale{scale:g}".replace(".", "_"), archive_timeout)
    try:
        env = cluster.env
        alembic = [sys.executable, "-m", "alembic", "-c", str(APP / "alembic.ini"), "upgrade"]
        subprocess.run(alembic + ["a7f3b2c1d9e8"], env=env, check=True, capture_output=True)
        subprocess.run([sys.executable, str(APP / "generate_data.py"), "--scale", str(scale)], env=env, check=True,
                       capture_output=True)
        subprocess.run(alembic + ["h8c2d6e5f4g3"], env=env, check=True, capture_output=True)
        size = cluster.sql("SELECT pg_database_size('intowork')")[0][0]
        full_seconds, _out = cluster.pgbackrest("--type=full", "backup")
        full = cluster.newest_backup()

        # The physical way back, as the drill does it (restore, replay to now, first answered query); before the
        # logical restore below, whose WAL it would otherwise replay too.
        drill = cluster.playbook("pitr_drill.yml", pitr_drill_target_age_seconds=0)["pgops_pitr_drills"]
        drill = next(iter(drill.values()))

        dump = cluster.work / "intowork.dump"
        started = time.monotonic()
        subprocess.run(["pg_dump", "-Fc", "-f", str(dump), "intowork"], env=env, check=True)
        dump_seconds, dump_bytes = time.monotonic() - started, dump.stat().st_size

        # The logical way back: a new database from the dump, until its first answered query.
        cluster.sql("CREATE DATABASE restored", dbname="postgres")
        started = time.monotonic()
        subprocess.run(["pg_restore", "--jobs=2", "--no-owner", "--exit-on-error", "-d", "restored", str(dump)],
                       env=dict(env, PGOPTIONS="-c maintenance_work_mem=512MB"), check=True)
        cluster.sql("SELECT count(*) FROM pg_class", dbname="restored")
        logical_rto = time.monotonic() - started
        cluster.sql("DROP DATABASE restored", dbname="postgres")

        # What a deployment holds writes off for to secure its way back.
        point_params = {"login_host": cluster.state["host"], "login_port": cluster.state["port"],
                        "login_user": cluster.state["user"], "login_password": cluster.state["password"],
                        "maintenance_db": "postgres", "wait_archived_seconds": 120, "poll_interval": 0.05,
                        "name": "bench-window"}
        started = time.monotonic()
        create(point_params, False)
        point_seconds = time.monotonic() - started

        # A deployment's changes, then what backing them up costs each way.
        subprocess.run(alembic + ["head"], env=env, check=True, capture_output=True)
        incr_seconds, _out = cluster.pgbackrest("--type=incr", "backup")
        incr = cluster.newest_backup()
        started = time.monotonic()
        subprocess.run(["pg_dump", "-Fc", "-f", str(dump), "intowork"], env=env, check=True)
        dump_after_seconds, dump_after_bytes = time.monotonic() - started, dump.stat().st_size
        dump.unlink()
        windows = deployment_windows(cluster, scale)
        return {"scale": scale, "size": size, "full_seconds": full_seconds,
                "full_repo_bytes": full["info"]["repository"]["delta"], "incr_seconds": incr_seconds,
                "incr_repo_bytes": incr["info"]["repository"]["delta"], "dump_seconds": dump_seconds,
                "dump_bytes": dump_bytes, "dump_after_seconds": dump_after_seconds,
                "dump_after_bytes": dump_after_bytes, "logical_rto": logical_rto, "physical_rto": drill["rto_seconds"],
                "physical_restore": drill["restore_seconds"], "physical_recovery": drill["recovery_seconds"],
                "point_seconds": point_seconds, "drill": drill, **windows}
    finally:
        cluster.down()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[1, 10])
    parser.add_argument("--tries", type=int, default=5)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--archive-timeout", type=int, default=60)
    args = parser.parse_args()
    print(f"PostgreSQL 15, pgBackRest 2.45, {os.cpu_count()} cores; archive_timeout {args.archive_timeout} s, "
          "asynchronous archiving, zst", flush=True)
    mb = 1e6
    header = (f"{'scale':>5} {'db MB':>7} | {'full s':>6} {'repo MB':>7} | {'incr s':>6} {'repo MB':>7} | "
              f"{'dump s':>6} {'dump MB':>7} {'after s':>7} | {'RTO phys s':>10} {'(restore':>8} {'replay)':>7} "
              f"{'RTO logical s':>13} {'x':>5} | {'window: point s':>15} {'pg_dump s':>9} | "
              f"{'deploy off: dump s':>18} {'point s':>7} {'(migration s)':>13}")
    rows, scales = [], []
    for scale in args.scales:
        print(f"scale {scale:g}: generating, backing up, restoring both ways ...", flush=True)
        row = scale_figures(scale, args.archive_timeout)
        scales.append(row)
        rows.append(f"{row['scale']:5g} {row['size'] / mb:7.0f} | {row['full_seconds']:6.1f} "
                    f"{row['full_repo_bytes'] / mb:7.1f} | {row['incr_seconds']:6.1f} {row['incr_repo_bytes'] / mb:7.1f} | "
                    f"{row['dump_seconds']:6.1f} {row['dump_bytes'] / mb:7.1f} {row['dump_after_seconds']:7.1f} | "
                    f"{row['physical_rto']:10.1f} {row['physical_restore']:8.1f} {row['physical_recovery']:7.1f} "
                    f"{row['logical_rto']:13.1f} {row['logical_rto'] / row['physical_rto']:5.1f} | "
                    f"{row['point_seconds']:15.2f} {row['dump_seconds']:9.1f} | "
                    f"{row['window_dump']['write_off_seconds']:18.1f} {row['window_point']['write_off_seconds']:7.1f} "
                    f"{row['window_point']['migration_seconds']:13.1f}")
        print(header + "\n" + rows[-1], flush=True)
    print(f"RPO: {args.tries} tries, {args.rate:g} acknowledged transactions a second, the host lost at a random "
          "moment", flush=True)
    tries = [rpo_try(number, args.rate, args.archive_timeout) for number in range(1, args.tries + 1)]

    print()
    print(header)
    for line in rows:
        print(line)
    if tries:
        per_try = ", ".join(f"{rpo:.1f} s ({missing} of {acked} lost)" for _n, acked, missing, rpo, _rto in tries)
        print(f"RPO per try (goal <= 60 s): {per_try}; worst {max(t[3] for t in tries):.1f} s; recovery to the end "
              f"of the archive " + ", ".join(f"{t[4]:.1f}" for t in tries) + " s")
    for row in scales:
        # The drill's own line, as the playbook and cron print it.
        print(f"drill at scale {row['scale']:g}: {row['drill']['summary']}")


if __name__ == "__main__":
    main()
