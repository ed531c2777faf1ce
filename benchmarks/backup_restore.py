"""Backup and restore, side by side: the checklist's procedure against pgops_backup.py. Prints figures.

    .venv/bin/python benchmarks/backup_restore.py [--scale 1] [--version 15]

Checklist: `pg_dump db | gzip > f.sql.gz`, restored with `gunzip -c f.sql.gz | psql`.
pgops: pgops_backup.py backup (custom format, compression auto, snapshot, read-back, checksum), in
custom and directory (2 jobs) format, restored by `pgops_backup.py drill` (pg_restore, 2 jobs,
maintenance_work_mem 512MB). Same database (reference data with every revision applied), one run.
Targets (backups issue): backup at least 3x faster at no more than 1.2x the gzip size; restore at
least 1.5x faster (aim 2x).

Also what knowing a restore's discards costs: the exact count of every table inside the backup's snapshot
(part of every backup), and the measure against it (`restore --check`, checksum included), after 200 rows
were written since the backup.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "examples" / "intowork"
PROGRAM = ROOT / "roles" / "backup" / "files" / "pgops_backup.py"
sys.path.insert(0, str(ROOT / "tools"))

import sandbox  # noqa: E402

# Runs a command and prints its children's peak resident memory (KiB), for the client-memory figure.
MEASURE = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)")


def timed(cmd, env):
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", MEASURE, *cmd], env=env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"benchmark step failed: {' '.join(cmd)}: {result.stderr.strip()[-300:]}")
    peak_kib = int(result.stderr.strip().splitlines()[-1])
    return elapsed, peak_kib, result.stdout


def sql(env, statement, dbname="postgres"):
    conn = psycopg2.connect(host=env["PGHOST"], port=env["PGPORT"], user=env["PGUSER"], password=env["PGPASSWORD"],
                            dbname=dbname)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(statement)
        rows = cur.fetchall() if cur.description else None
    conn.close()
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1)
    parser.add_argument("--version", default="15", choices=["15", "18"])
    args = parser.parse_args()
    name = f"bench-backup-{os.getpid()}"
    state = sandbox.up(name, args.version, "intowork")
    bindir = state["bindir"]
    work = ROOT / "build" / f"bench-backup-{os.getpid()}"
    work.mkdir(parents=True)
    env = dict(os.environ, PGHOST=state["host"], PGPORT=str(state["port"]), PGUSER=state["user"],
               PGPASSWORD=state["password"], PGDATABASE="intowork", DATABASE_URL="postgresql+psycopg2://",
               PATH=f"{bindir}:{os.environ['PATH']}")
    try:
        alembic = [sys.executable, "-m", "alembic", "-c", str(APP / "alembic.ini"), "upgrade"]
        subprocess.run(alembic + ["a7f3b2c1d9e8"], env=env, check=True, capture_output=True)
        subprocess.run([sys.executable, str(APP / "generate_data.py"), "--scale", str(args.scale)], env=env,
                       check=True, capture_output=True)
        subprocess.run(alembic + ["head"], env=env, check=True, capture_output=True)
        size_db = sql(env, "SELECT pg_size_pretty(pg_database_size('intowork'))")[0][0]
        print(f"PostgreSQL {args.version}, {os.cpu_count()} cores, scale {args.scale:g}, database {size_db}")

        gz = work / "intowork.sql.gz"
        b_gzip, m_gzip, _output = timed(["bash", "-c", f"set -o pipefail; pg_dump intowork | gzip > {gz}"], env)
        rows = []
        for label, fmt in (("pgops custom", "custom"), ("pgops directory -j2", "directory")):
            backups = work / fmt
            backups.mkdir(mode=0o700)
            config = work / f"{fmt}.json"
            config.write_text(json.dumps({
                "database": "intowork", "host": state["host"], "port": state["port"], "user": state["user"],
                "backup_dir": str(backups), "bin_dir": bindir, "format": fmt, "jobs": 2,
                "row_count_tables": ["jobs", "job_applications"]}))
            elapsed, peak, out = timed([sys.executable, str(PROGRAM), "backup", f"--config={config}"], env)
            manifest = json.loads(out)
            sql(env, "CREATE DATABASE restore_probe")  # warm the catalog cache equally for both restores
            sql(env, "DROP DATABASE restore_probe")
            r_elapsed, r_peak, r_out = timed([sys.executable, str(PROGRAM), "drill", f"--config={config}", "--jobs=2",
                                              "--maintenance-work-mem=512MB"], env)
            rows.append((label, elapsed, manifest["dump_seconds"], manifest["size_bytes"], peak,
                         json.loads(r_out)["restore_seconds"], r_peak))
            if fmt == "custom":
                custom_config, custom_backup, custom_elapsed = config, manifest["path"], elapsed

        # The exact counts every backup takes in its snapshot, alone: the same statements in one REPEATABLE READ.
        tables = [row[0] for row in sql(env, "SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables",
                                        dbname="intowork")]
        counted = time.monotonic()
        sql(env, "BEGIN ISOLATION LEVEL REPEATABLE READ; " + " ".join(f"SELECT count(*) FROM {t};" for t in tables)
            + " COMMIT", dbname="intowork")
        count_seconds = time.monotonic() - counted
        sql(env, "INSERT INTO companies (name) SELECT 'written since the backup' FROM generate_series(1, 200)",
            dbname="intowork")
        m_elapsed, _m_peak, m_out = timed([sys.executable, str(PROGRAM), "restore", f"--config={custom_config}",
                                           f"--backup={custom_backup}", "--replace-schema=public", "--check"], env)
        measured = json.loads(m_out)["discarded"]

        sql(env, "CREATE DATABASE restore_gzip")
        r_gzip, rm_gzip, _output = timed(["bash", "-c", f"set -o pipefail; gunzip -c {gz} | psql -q -X -v ON_ERROR_STOP=1 "
                                                  f"-o /dev/null restore_gzip"], env)
        sql(env, "DROP DATABASE restore_gzip")
        size_gzip = gz.stat().st_size

        print(f"{'procedure':24} {'backup s':>9} {'dump s':>7} {'size MB':>8} {'x gzip':>7} {'peak MB':>8} "
              f"{'restore s':>10} {'peak MB':>8} {'backup x':>9} {'restore x':>10}")
        print(f"{'pg_dump | gzip, psql':24} {b_gzip:9.1f} {b_gzip:7.1f} {size_gzip / 1e6:8.1f} {1:7.2f} "
              f"{m_gzip / 1024:8.1f} {r_gzip:10.1f} {rm_gzip / 1024:8.1f} {1:9.1f} {1:10.1f}")
        for label, elapsed, dump, size, peak, restore, r_peak in rows:
            print(f"{label:24} {elapsed:9.1f} {dump:7.1f} {size / 1e6:8.1f} {size / size_gzip:7.2f} {peak / 1024:8.1f} "
                  f"{restore:10.1f} {r_peak / 1024:8.1f} {b_gzip / elapsed:9.1f} {r_gzip / restore:10.1f}")
        print("backup s: the whole run (snapshot, dump, fsync, full read-back, sha256, manifest, retention); "
              "dump s: pg_dump alone.")
        print(f"exact counts of {len(tables)} tables in one snapshot: {count_seconds:.2f} s "
              f"({100 * count_seconds / custom_elapsed:.1f}% of the custom backup's {custom_elapsed:.1f} s)")
        print(f"restore --check (checksum, then the measure of what a restore would discard): {m_elapsed:.2f} s; "
              f"it found {sum(t['written_since'] for t in measured['tables'])} row(s) written since, in "
              f"{len(measured['tables'])} table(s)")
    finally:
        sandbox.down(name)
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
