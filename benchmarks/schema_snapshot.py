"""Catalog snapshot figures: what schema_snapshot costs, and that it grows with objects, not rows; prints them.

    .venv/bin/python benchmarks/schema_snapshot.py [--scales 1,10] [--tables 2000] [--version 15]

1. The reference schema at head with each of --scales of data (scale 1: 1,000,000 applications; 10 and 100,
   the issue's "scale 10 and 10x", need about 3 and 30 GB): one snapshot, and one comparison of two (target:
   under 2 s together at scale 10, growing with objects, not rows: tables above exact_count_max_rows are read
   from the planner's estimate).
2. A synthetic schema of --tables tables (each with 6 columns, a primary key, an index, a foreign key, a grant)
   and no rows: the same two figures, and the snapshot's size.
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
sys.path.insert(0, str(ROOT / ".collections"))

import sandbox  # noqa: E402
from ansible_collections.intowork.pgops.plugins.module_utils._schema_snapshot import compare, take  # noqa: E402


def environment(state, database):
    return dict(os.environ, PGHOST=state["host"], PGPORT=str(state["port"]), PGUSER=state["user"],
                PGPASSWORD=state["password"], PGDATABASE=database, DATABASE_URL="postgresql+psycopg2://")


def connect(state, database):
    conn = psycopg2.connect(host=state["host"], port=state["port"], user=state["user"], password=state["password"],
                            dbname=database)
    conn.autocommit = True
    return conn


def create(state, database):
    admin = connect(state, "postgres")
    admin.cursor().execute(f'CREATE DATABASE "{database}"')
    admin.close()


def reference(state, database, scale):
    create(state, database)
    env = environment(state, database)
    alembic = [sys.executable, "-m", "alembic", "-c", str(APP / "alembic.ini"), "upgrade"]
    subprocess.run(alembic + ["a7f3b2c1d9e8"], env=env, check=True, capture_output=True)
    subprocess.run([sys.executable, str(APP / "generate_data.py"), "--scale", str(scale)], env=env, check=True,
                   capture_output=True)
    subprocess.run(alembic + ["head"], env=env, check=True, capture_output=True)
    conn = connect(state, database)
    conn.cursor().execute("ANALYZE")
    return conn


def synthetic(state, database, tables):
    create(state, database)
    conn = connect(state, database)
    with conn.cursor() as cur:
        if not role_exists(cur, "bench_reader"):
            cur.execute("CREATE ROLE bench_reader")
        cur.execute("CREATE TABLE parent (id bigint PRIMARY KEY)")
        for number in range(tables):
            cur.execute(f"CREATE TABLE t{number} (id bigint PRIMARY KEY, parent_id bigint REFERENCES parent, "
                        f"name text NOT NULL, created timestamptz DEFAULT now(), amount numeric(12, 2), note text)")
            cur.execute(f"CREATE INDEX t{number}_parent ON t{number} (parent_id)")
            cur.execute(f"GRANT SELECT ON t{number} TO bench_reader")
    return conn


def role_exists(cur, name):
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
    return cur.fetchone() is not None


def measure(label, conn):
    started = time.monotonic()
    first = take(conn)
    conn.rollback()
    snapshot_seconds = time.monotonic() - started
    second = take(conn)
    conn.rollback()
    started = time.monotonic()
    differences = compare(first, second)
    compare_seconds = time.monotonic() - started
    size = len(json.dumps(first))
    estimated = sum(1 for count in first["rows"].values() if not count["exact"])
    print(f"  {label}: {first['object_count']} objects, {len(first['rows'])} tables ({estimated} by estimate); "
          f"snapshot {snapshot_seconds:.2f} s, comparison {compare_seconds:.3f} s, {size / 1024:.0f} KiB, "
          f"{len(differences)} difference(s)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="1,10")
    parser.add_argument("--tables", type=int, default=2000)
    parser.add_argument("--version", default="15", choices=["15", "18"])
    args = parser.parse_args()
    name = f"bench-snapshot-{os.getpid()}"
    state = sandbox.up(name, args.version, "postgres")
    try:
        print(f"PostgreSQL {args.version}, {os.cpu_count()} cores")
        for scale in (float(value) for value in args.scales.split(",")):
            conn = reference(state, f"ref_{int(scale * 10)}", scale)
            conn.autocommit = False
            measure(f"reference schema, scale {scale:g}", conn)
            conn.close()
        conn = synthetic(state, "synthetic", args.tables)
        conn.autocommit = False
        measure(f"synthetic schema, {args.tables} tables", conn)
        conn.close()
    finally:
        sandbox.down(name)


if __name__ == "__main__":
    main()
