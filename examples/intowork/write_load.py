"""The INTOWORK application's writes, at a steady rate, until stopped; then what they met.

    PGUSER=<application role> PGPASSWORD=... python examples/intowork/write_load.py --out writes.json [--rate 20]

Each write is one INSERT into companies, in its own transaction, as the application role. A write that fails
(writes turned off, the session ended by the write guard, a refused connection) is counted and the writer
connects again. On SIGTERM or SIGINT it writes to --out: how many writes, how many failed, and the window in
which they failed (from the first failed write to the first write that succeeded after the last failed one).
The connection comes from the PG* environment variables, the password from PGPASSWORD (never the command line).
"""

import argparse
import json
import signal
import sys
import time

import psycopg2

INSERT = "INSERT INTO companies (name) VALUES (%s)"


def write_until_stopped(rate):
    """[(epoch, succeeded)] of every write, until SIGTERM or SIGINT."""
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    interval = 1.0 / rate
    writes, conn = [], None
    while not stopping:
        started = time.time()
        try:
            if conn is None or conn.closed:
                conn = psycopg2.connect(connect_timeout=2, application_name="intowork_write_load")
                conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(INSERT, ("written while a deployment ran",))
            writes.append((started, True))
        except psycopg2.Error:
            writes.append((started, False))
            if conn is not None and not conn.closed:
                conn.close()
            conn = None
        time.sleep(max(0.0, interval - (time.time() - started)))
    if conn is not None and not conn.closed:
        conn.close()
    return writes


def summarise(writes):
    failed = [epoch for epoch, succeeded in writes if not succeeded]
    window = 0.0
    if failed:
        recovered = [epoch for epoch, succeeded in writes if succeeded and epoch > failed[-1]]
        window = (recovered[0] if recovered else writes[-1][0]) - failed[0]
    return {"writes": len(writes), "failed": len(failed), "failed_window_seconds": round(window, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the JSON file the summary is written to when stopped")
    parser.add_argument("--rate", type=float, default=20.0, help="writes per second (default 20)")
    args = parser.parse_args()
    if args.rate <= 0:
        sys.exit(f"write_load.py: --rate must be a positive number of writes per second (got {args.rate})")
    with open(args.out, "w", encoding="utf-8") as out:
        json.dump(summarise(write_until_stopped(args.rate)), out)
        out.write("\n")


if __name__ == "__main__":
    main()
