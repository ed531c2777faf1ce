"""Reference data load time at scale 1 and 10 on a fresh sandbox server; prints the figures.

    .venv/bin/python benchmarks/data_load.py [--scales 1 10] [--version 15]

Targets (issue: foundation): scale 1 under 30 s, scale 10 under 5 minutes, on 2 cores.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import sandbox  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", nargs="+", type=float, default=[1, 10])
    parser.add_argument("--version", default="15", choices=["15", "18"])
    args = parser.parse_args()
    name = f"bench-load-{os.getpid()}"
    state = sandbox.up(name, args.version, "intowork")
    env = dict(os.environ, PGHOST=state["host"], PGPORT=str(state["port"]), PGUSER=state["user"],
               PGPASSWORD=state["password"], PGDATABASE="intowork", DATABASE_URL="postgresql+psycopg2://")
    try:
        subprocess.run([sys.executable, "-m", "alembic", "-c", str(ROOT / "examples/intowork/alembic.ini"),
                        "upgrade", "a7f3b2c1d9e8"], env=env, check=True, capture_output=True)
        print(f"PostgreSQL {args.version}, {os.cpu_count()} cores")
        for scale in args.scales:
            started = time.monotonic()
            result = subprocess.run([sys.executable, str(ROOT / "examples/intowork/generate_data.py"),
                                     "--scale", str(scale), "--replace"], env=env, check=True,
                                    capture_output=True, text=True)
            wall = time.monotonic() - started
            print(f"scale {scale:g}: {result.stdout.splitlines()[0].split(': ', 2)[2]}; {wall:.1f} s wall clock")
    finally:
        sandbox.down(name)


if __name__ == "__main__":
    main()
