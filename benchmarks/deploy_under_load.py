"""The whole deployment of the index revision under a steady write load; prints what the writers saw.

    .venv/bin/python benchmarks/deploy_under_load.py [--scales 1 10] [--rate 200] [--version 15]

For each scale and each mode (online: writes stay on; maintenance: the write guard turns them off),
a fresh database at the baseline revision gets pgbench writing as the application role (a new job and
an application for it per transaction, rate-limited on loopback) while deploy_migration.yml runs to
h8c2d6e5f4g3 (the 15 indexes and 3 unique constraints). Printed: failed writes, p99 and max write
latency while the deployment ran, the deployment's duration, and the write-off window.
Targets (safe-deploy issue): online mode 0 failed writes and max latency under 200 ms at scale 1 and
under 1 s at scale 10; maintenance mode writes off no longer than the migration plus 5 s.
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "examples" / "intowork"
sys.path.insert(0, str(ROOT / "tools"))

import sandbox  # noqa: E402

APP_ROLE, APP_PASSWORD = "bench_app", "bench-app-password"
# A new job, then an application to it: every (candidate, job) pair is new, so the unique index that
# the migration builds concurrently never meets a duplicate.
WRITE = ("\\set candidate random(1, {candidates})\n"
         "\\set employer random(1, {employers})\n"
         "INSERT INTO jobs (company_id, employer_id, title, status) SELECT company_id, id, 'Load test job', 'draft' "
         "FROM employers WHERE id = :employer RETURNING id AS job \\gset\n"
         "INSERT INTO job_applications (job_id, candidate_id, status) VALUES (:job, :candidate, 'submitted');\n")


def admin(state, dbname="postgres"):
    conn = psycopg2.connect(host=state["host"], port=state["port"], user=state["user"], password=state["password"],
                            dbname=dbname)
    conn.autocommit = True
    return conn


def prepare(state, database, scale):
    with admin(state).cursor() as cur:
        cur.execute(f'CREATE DATABASE "{database}"')
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,))
        if cur.fetchone() is None:
            cur.execute(f"CREATE ROLE {APP_ROLE} LOGIN PASSWORD '{APP_PASSWORD}'")
    env = dict(os.environ, PGHOST=state["host"], PGPORT=str(state["port"]), PGUSER=state["user"],
               PGPASSWORD=state["password"], PGDATABASE=database, DATABASE_URL="postgresql+psycopg2://",
               PGOPS_SANDBOX_BINDIR=state["bindir"], ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    subprocess.run([sys.executable, "-m", "alembic", "-c", str(APP / "alembic.ini"), "upgrade", "a7f3b2c1d9e8"],
                   env=env, check=True, capture_output=True)
    subprocess.run([sys.executable, str(APP / "generate_data.py"), "--scale", str(scale)], env=env, check=True,
                   capture_output=True)
    with admin(state, database).cursor() as cur:
        cur.execute(f"GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO {APP_ROLE}")
        cur.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {APP_ROLE}")
        cur.execute("SELECT (SELECT count(*) FROM candidates), (SELECT count(*) FROM employers)")
        candidates, employers = cur.fetchone()
    return env, candidates, employers


def measure(state, scale, mode, rate, work):
    database = f"load_{mode}_{str(scale).replace('.', '_')}"
    env, candidates, employers = prepare(state, database, scale)
    script = work / "write.sql"
    script.write_text(WRITE.format(candidates=candidates, employers=employers))
    logs = work / f"{database}"
    logs.mkdir()
    bench_env = dict(env, PGUSER=APP_ROLE, PGPASSWORD=APP_PASSWORD)
    # Long enough to outlast the deployment; stopped as soon as the deployment ends.
    bench = subprocess.Popen([f"{state['bindir']}/pgbench", "--no-vacuum", f"--file={script}", "--client=4",
                              "--jobs=1", f"--rate={rate}", "--time=3600", "--log", f"--log-prefix={logs}/tx",
                              database], env=bench_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)  # steady load before the deployment starts
    settings = {"pgops_deploy_mode": mode, "pgops_migration_target": "h8c2d6e5f4g3",
                "pgops_app_roles": [APP_ROLE] if mode == "maintenance" else [],
                "pgops_app_probe_user": APP_ROLE, "pgops_app_probe_password": APP_PASSWORD,
                # Critical-query targets are the verification issue's; this measures the writers.
                "verification_query_fail_on": [], "verification_integrity_fail_on": ["orphans", "timeouts"],
                "pgops_backup_dir": str(work / f"{database}-backups"), "pgops_reports_dir": str(work / "reports")}
    started = time.time()
    deploy = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"),
                             str(ROOT / "playbooks" / "deploy_migration.yml"), "-e", json.dumps(settings)],
                            cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    ended = time.time()
    time.sleep(2)
    bench.terminate()
    _out, err = bench.communicate()
    latencies, failed = [], 0
    for name in glob.glob(f"{logs}/tx*"):
        for line in open(name, encoding="utf-8"):
            fields = line.split()
            # client_id transaction_no time script_no time_epoch time_us [schedule_lag]
            if len(fields) < 6:
                continue  # the line pgbench was writing when it was stopped
            epoch = int(fields[4]) + int(fields[5]) / 1e6
            if started <= epoch <= ended + 1:
                if fields[2] == "failed":
                    failed += 1
                else:
                    latencies.append(int(fields[2]) / 1000.0)
    aborted = sum(1 for line in err.splitlines() if "aborted" in line or "ERROR" in line)
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan")
    record = {}
    for name in glob.glob(str(work / "reports" / "deploy-*.json")):
        candidate = json.loads(Path(name).read_text())
        if candidate["database"] == database:
            record = candidate
    phases = {phase["phase"]: phase["ended_epoch"] for phase in record.get("phases", [])}
    migration = phases.get("migration", 0) - phases.get("backup", 0)
    print(f"  scale {scale:<4g} {mode:12} deploy {'ok' if deploy.returncode == 0 else 'FAILED'} in "
          f"{ended - started:5.1f} s; writes {len(latencies):6d} ok, {failed + aborted:4d} failed; "
          f"p99 {p99:7.1f} ms, max {latencies[-1] if latencies else float('nan'):7.1f} ms; "
          f"migration {migration:5.1f} s, writes off {float(record.get('write_off_seconds', 0)):5.1f} s")
    if deploy.returncode != 0:
        print("    " + deploy.stdout[-600:].replace("\n", "\n    "))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", nargs="+", type=float, default=[1, 10])
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--version", default="15", choices=["15", "18"])
    args = parser.parse_args()
    name = f"bench-load-{os.getpid()}"
    state = sandbox.up(name, args.version, "postgres")
    try:
        print(f"PostgreSQL {args.version}, {os.cpu_count()} cores, {args.rate} write tx/s from pgbench")
        with tempfile.TemporaryDirectory() as work:
            for scale in args.scales:
                for mode in ("online", "maintenance"):
                    measure(state, scale, mode, args.rate, Path(work))
    finally:
        sandbox.down(name)


if __name__ == "__main__":
    main()
