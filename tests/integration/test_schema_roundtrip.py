"""Downgrading each reference revision and upgrading again leaves exactly the same schema."""

import re
import subprocess

from conftest import BASELINE, alembic, libpq_env, load_reference_data

CHAIN = [BASELINE, "h8c2d6e5f4g3", "c4d5e6f7a8b9", "d5e6f7a8b9c0", "e6f7a8b9c0d1", "f7a8b9c0d1e2"]


def schema(server, params):
    result = subprocess.run([f"{server['bindir']}/pg_dump", "--schema-only", "--no-owner"],
                            env=libpq_env(params), capture_output=True, text=True, check=True)
    # Drop comments, blank lines and the per-dump restrict token of recent pg_dump releases.
    lines = [line for line in result.stdout.splitlines()
             if line.strip() and not line.startswith("--") and not re.match(r"\\(un)?restrict ", line)]
    return "\n".join(lines)


def test_each_revision_round_trips(server, database):
    alembic(database, "upgrade", BASELINE)
    load_reference_data(database, scale=0.002)
    at = {BASELINE: schema(server, database)}
    for revision in CHAIN[1:]:
        alembic(database, "upgrade", revision)
        at[revision] = schema(server, database)
        assert at[revision] != at[CHAIN[CHAIN.index(revision) - 1]], f"{revision} changed nothing"

    for revision in reversed(CHAIN[1:]):
        previous = CHAIN[CHAIN.index(revision) - 1]
        alembic(database, "downgrade", previous)
        assert schema(server, database) == at[previous], f"downgrade of {revision} left a different schema"
        alembic(database, "upgrade", revision)
        assert schema(server, database) == at[revision], f"re-upgrade to {revision} left a different schema"
        alembic(database, "downgrade", previous)
