"""Verification figures on the reference data; prints them, judges nothing.

    .venv/bin/python benchmarks/verification.py [--scale 1] [--orphan-scale 10] [--version 15]

1. playbooks/verify.yml end to end at --scale (target: under 15 s at scale 1), and how many statements
   each module sends for its catalog work (target: one or two round trips).
2. At --orphan-scale (10 = 10,000,000 applications) with work_mem 4MB: every declared foreign key's
   orphan check through intowork.pgops.integrity_check (target: under 10 s together), against the
   checklist's `NOT IN (SELECT id ...)` form timed on a sample of rows and extrapolated.
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
sys.path.insert(0, str(ROOT / "tools"))

import sandbox  # noqa: E402

NOT_IN_SAMPLE_ROWS = 2000


def environment(state, database):
    return dict(os.environ, PGHOST=state["host"], PGPORT=str(state["port"]), PGUSER=state["user"],
                PGPASSWORD=state["password"], PGDATABASE=database, DATABASE_URL="postgresql+psycopg2://",
                PGOPS_SANDBOX_BINDIR=state["bindir"], ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
                PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


def prepare(state, database, scale):
    admin = psycopg2.connect(host=state["host"], port=state["port"], user=state["user"],
                             password=state["password"], dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{database}"')
    admin.close()
    env = environment(state, database)
    conn = connect(env)
    conn.cursor().execute("CREATE EXTENSION pg_stat_statements")
    conn.close()
    alembic = [sys.executable, "-m", "alembic", "-c", str(APP / "alembic.ini"), "upgrade"]
    subprocess.run(alembic + ["a7f3b2c1d9e8"], env=env, check=True, capture_output=True)
    started = time.monotonic()
    subprocess.run([sys.executable, str(APP / "generate_data.py"), "--scale", str(scale)], env=env, check=True,
                   capture_output=True)
    loaded = time.monotonic() - started
    started = time.monotonic()
    subprocess.run(alembic + ["head"], env=env, check=True, capture_output=True)
    print(f"  scale {scale:g}: data loaded in {loaded:.1f} s, migrated to head in {time.monotonic() - started:.1f} s")
    return env


def connect(env, **options):
    conn = psycopg2.connect(host=env["PGHOST"], port=env["PGPORT"], user=env["PGUSER"], password=env["PGPASSWORD"],
                            dbname=env["PGDATABASE"], **options)
    conn.autocommit = True
    return conn


def run_module(name, args, env):
    result = subprocess.run([sys.executable, str(ROOT / "plugins" / "modules" / f"{name}.py")],
                            input=json.dumps({"ANSIBLE_MODULE_ARGS": args}), capture_output=True, text=True,
                            env=dict(env, PYTHONPATH=str(ROOT / ".collections")), check=False)
    return json.loads(result.stdout)


def catalog_statements(env, name, args):
    """Statements a module sent that read the system catalogs, counted by pg_stat_statements."""
    conn = connect(env)
    conn.cursor().execute("SELECT pg_stat_statements_reset()")
    run_module(name, args, env)
    cur = conn.cursor()
    cur.execute("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query ~ 'pg_(class|namespace|index)' "
                "AND query !~ 'pg_stat_statements'")
    count = cur.fetchone()[0]
    conn.close()
    return count


def verify_run(state, scale):
    print(f"1. verify.yml at scale {scale:g}")
    env = prepare(state, "bench_verify", scale)
    started = time.monotonic()
    result = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), str(ROOT / "playbooks/verify.yml"),
                             "-e", f"pgops_reports_dir={ROOT / 'build' / 'bench-reports'}"],
                            cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    status = "passed" if result.returncode == 0 else "FAILED"
    print(f"  verify.yml {status} in {elapsed:.1f} s (target: under 15 s at scale 1)")
    modules = {
        "index_verify": {"spec_file": str(APP / "index_strategy.yml")},
        "integrity_check": {"spec_file": str(APP / "integrity_checks.yml")},
        "query_benchmark": {"queries_file": str(APP / "critical_queries.yml"), "iterations": 1, "warmup": 0},
    }
    for name, args in modules.items():
        print(f"  {name}: {catalog_statements(env, name, args)} catalog statement(s)")


def orphan_run(state, scale):
    print(f"2. orphan checks at scale {scale:g}, work_mem 4MB")
    env = prepare(state, "bench_orphans", scale)
    conn = connect(env)
    cur = conn.cursor()
    cur.execute("ALTER DATABASE bench_orphans SET work_mem = '4MB'")
    cur.execute("SELECT count(*) FROM job_applications")
    applications = cur.fetchone()[0]
    result = run_module("integrity_check", {"foreign_keys": True, "not_valid_constraints": False}, env)
    orphans = result["orphans"]
    total = sum(o["elapsed_ms"] for o in orphans) / 1000.0
    slowest = max(orphans, key=lambda o: o["elapsed_ms"])
    print(f"  {len(orphans)} foreign keys checked over {applications:,} applications: {total:.2f} s together "
          f"(target: under 10 s); slowest {slowest['name']} {slowest['elapsed_ms'] / 1000:.2f} s")
    anti_join = next(o for o in orphans if o["name"] == "job_applications_candidate_id_fkey")["elapsed_ms"] / 1000.0

    conn = connect(env, options="-c work_mem=4MB")
    cur = conn.cursor()
    started = time.monotonic()
    cur.execute(f"SELECT count(*) FROM (SELECT candidate_id FROM job_applications LIMIT {NOT_IN_SAMPLE_ROWS}) a "
                "WHERE candidate_id NOT IN (SELECT id FROM candidates)")
    sample = time.monotonic() - started
    cur.execute("EXPLAIN SELECT count(*) FROM job_applications WHERE candidate_id NOT IN (SELECT id FROM candidates)")
    plan = " ".join(row[0].strip() for row in cur.fetchall())
    conn.close()
    extrapolated = sample / NOT_IN_SAMPLE_ROWS * applications
    print(f"  NOT IN form: {sample:.2f} s for {NOT_IN_SAMPLE_ROWS:,} rows; plan: "
          f"{'per-row SubPlan' if 'hashed SubPlan' not in plan and 'SubPlan' in plan else 'hashed'}")
    print(f"  extrapolated to all {applications:,} rows: {extrapolated:,.0f} s ({extrapolated / 86400:.1f} days) "
          f"vs {anti_join:.2f} s as NOT EXISTS: ratio {extrapolated / anti_join:,.0f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1)
    parser.add_argument("--orphan-scale", type=float, default=10)
    parser.add_argument("--version", default="15", choices=["15", "18"])
    args = parser.parse_args()
    name = f"bench-verify-{os.getpid()}"
    state = sandbox.up(name, args.version, "postgres")
    try:
        print(f"PostgreSQL {args.version}, {os.cpu_count()} cores")
        verify_run(state, args.scale)
        orphan_run(state, args.orphan_scale)
    finally:
        sandbox.down(name)


if __name__ == "__main__":
    main()
