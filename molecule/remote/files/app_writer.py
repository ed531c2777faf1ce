"""The application writing through its own role while the scenario's runbooks run: one INSERT ... RETURNING id
into `companies` every 50 ms, each in its own transaction; a write that fails (writes off, its session ended)
is timed and the writer connects again.

    app_writer.py <folder> <name>   (libpq settings from PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSFILE)

Appends each committed id and its time to <folder>/<name>.committed, the time of each failed write to <name>.failed,
and stops when <name>.stop appears, or after an hour (a scenario that died leaves no writer behind)."""

import os
import sys
import time

import psycopg2


def main(folder, name):
    base = os.path.join(folder, name)
    deadline = time.monotonic() + 3600
    conn = None
    with open(base + ".committed", "a", encoding="utf-8") as committed, \
            open(base + ".failed", "a", encoding="utf-8") as failed:
        while not os.path.exists(base + ".stop") and time.monotonic() < deadline:
            attempted = time.time()
            try:
                if conn is None:
                    conn = psycopg2.connect(connect_timeout=5, application_name="molecule-app-writer")
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO companies (name) VALUES ('written while the runbooks ran') RETURNING id")
                    new_id = cur.fetchone()[0]
                conn.commit()
                committed.write("%d %.3f\n" % (new_id, time.time()))
                committed.flush()
            except psycopg2.Error:
                failed.write("%.3f\n" % attempted)
                failed.flush()
                if conn is not None:
                    conn.close()
                conn = None
            time.sleep(0.05)
    with open(base + ".done", "w", encoding="utf-8"):
        pass


if __name__ == "__main__":
    main(*sys.argv[1:3])
