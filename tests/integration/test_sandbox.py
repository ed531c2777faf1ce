"""The sandbox server: loopback only, unprivileged, extensions available, removed without a trace."""

import os
from pathlib import Path

import sandbox
from conftest import admin_connect


def test_server_listens_on_loopback_with_extensions(server):
    conn = admin_connect(server)
    with conn.cursor() as cur:
        cur.execute("SELECT current_setting('listen_addresses'), current_setting('server_version_num')::int / 10000")
        listen, major = cur.fetchone()
        cur.execute("SELECT name FROM pg_available_extensions WHERE name IN ('pg_trgm', 'pg_stat_statements')")
        available = sorted(row[0] for row in cur.fetchall())
        cur.execute("SHOW shared_preload_libraries")
        preload = cur.fetchone()[0]
    conn.close()
    assert listen == "127.0.0.1"
    assert str(major) == server["version"]
    assert available == ["pg_stat_statements", "pg_trgm"]
    assert "pg_stat_statements" in preload


def test_server_process_is_not_root(server):
    pid = int((Path(server["datadir"]) / "postmaster.pid").read_text().splitlines()[0])
    assert os.stat(f"/proc/{pid}").st_uid != 0


def test_secrets_are_private(server):
    root = Path(server["datadir"]).parent
    for name in ("state.json", "pg.env"):
        assert (root / name).stat().st_mode & 0o077 == 0


def test_up_twice_reuses_the_server_and_down_removes_everything():
    name = f"pytest-lifecycle-{os.getpid()}"
    first = sandbox.up(name, "15", "intowork")
    try:
        again = sandbox.up(name, "15", "intowork")
        assert again["port"] == first["port"]
        assert sandbox.main(["env", "--name", name]) == 0
    finally:
        assert sandbox.down(name) is True
    assert not Path(first["datadir"]).parent.exists()
    assert sandbox.down(name) is False
    assert sandbox.main(["env", "--name", name]) == 1
