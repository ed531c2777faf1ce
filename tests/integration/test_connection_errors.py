"""Every way a connection can fail ends in one line naming the target and the cause, never the password."""

import os
import socket

import pytest

from conftest import PROJECT_DIR, run_module


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("change, cause", [
    ({"login_password": "wrong-password-123"}, "password authentication failed"),
    ({"login_db": "no_such_db"}, 'database "no_such_db" does not exist'),
    ({"login_port": None}, "Connection refused"),
])
def test_connection_failures_are_one_clear_line(database, change, cause):
    args = dict(database, project_dir=str(PROJECT_DIR), state="status", **change)
    if "login_port" in change:
        args["login_port"] = closed_port()
    result = run_module("alembic_migration", args)
    assert result["failed"] is True
    assert "\n" not in result["msg"]
    assert result["msg"].startswith(f"cannot connect to {args['login_user']}@127.0.0.1:{args['login_port']}/")
    assert cause in result["msg"]
    assert database["login_password"] not in result["msg"]
    assert "wrong-password-123" not in str(result)


def test_pg_environment_variables_are_the_fallback(database):
    env = {"PGHOST": database["login_host"], "PGPORT": str(database["login_port"]),
           "PGUSER": database["login_user"], "PGPASSWORD": database["login_password"],
           "PGDATABASE": database["login_db"], "PATH": "/usr/bin:/bin"}
    result = run_module("alembic_migration", {"project_dir": str(PROJECT_DIR), "state": "status"}, env=env)
    assert result.get("failed") is not True, result
    assert result["current"] is None


def test_missing_psycopg2_is_one_clear_line(database, tmp_path):
    # A sitecustomize that hides psycopg2 stands in for a host without the driver.
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\nclass Block:\n    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'psycopg2':\n            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    result = run_module("index_verify", dict(database, indexes=[{"name": "a", "table": "b"}]), env=env)
    assert result["failed"] is True
    assert "psycopg2" in result["msg"] and "\n" not in result["msg"]
