"""Pure tests of the shared connection layer: parameters, environment, error wording."""

import pytest

from ansible_collections.intowork.pgops.plugins.module_utils import _connection as c

PARAMS = {"login_host": "db1", "login_port": 5433, "login_db": "intowork", "login_user": "migrator",
          "login_password": "s3cret", "ssl_mode": "require", "connect_timeout": 7, "session_role": None,
          "login_unix_socket": None}


@pytest.mark.parametrize("option, variable", [
    ("login_host", "PGHOST"), ("login_port", "PGPORT"), ("login_db", "PGDATABASE"),
    ("login_user", "PGUSER"), ("login_password", "PGPASSWORD"), ("ssl_mode", "PGSSLMODE"),
    ("ca_cert", "PGSSLROOTCERT"), ("ssl_cert", "PGSSLCERT"), ("ssl_key", "PGSSLKEY"),
])
def test_options_fall_back_to_libpq_variables(option, variable):
    assert c.CONNECTION_ARGUMENT_SPEC[option]["fallback"][1] == [variable]


def test_password_is_no_log():
    assert c.CONNECTION_ARGUMENT_SPEC["login_password"]["no_log"] is True


def test_connection_spec_is_a_copy():
    spec = c.connection_spec()
    spec["login_host"]["default"] = "changed"
    assert "default" not in c.CONNECTION_ARGUMENT_SPEC["login_host"]


def test_libpq_params_sets_application_name_and_drops_empty_values():
    params = dict(PARAMS, login_password="", login_db=None)
    kwargs = c.libpq_params(params)
    assert kwargs["application_name"] == "pgops"
    assert "password" not in kwargs and "dbname" not in kwargs
    assert kwargs["host"] == "db1" and kwargs["port"] == 5433 and kwargs["sslmode"] == "require"


def test_unix_socket_takes_precedence_over_host():
    kwargs = c.libpq_params(dict(PARAMS, login_unix_socket="/run/postgresql"))
    assert kwargs["host"] == "/run/postgresql"


def test_child_environment_carries_the_password_and_role():
    env = c.libpq_environment(dict(PARAMS, session_role="app_owner"))
    assert env["PGPASSWORD"] == "s3cret"
    assert env["PGHOST"] == "db1" and env["PGPORT"] == "5433" and env["PGAPPNAME"] == "pgops"
    assert env["PGOPTIONS"] == "-c role=app_owner"


def test_the_tls_files_reach_psycopg2_and_child_programs_alike():
    tls = dict(PARAMS, ssl_mode="verify-full", ca_cert="/etc/pgops/ca.crt", ssl_cert="/etc/pgops/client.crt",
               ssl_key="/etc/pgops/client.key")
    kwargs, env = c.libpq_params(tls), c.libpq_environment(tls)
    assert (kwargs["sslmode"], kwargs["sslrootcert"], kwargs["sslcert"], kwargs["sslkey"]) == (
        "verify-full", "/etc/pgops/ca.crt", "/etc/pgops/client.crt", "/etc/pgops/client.key")
    assert (env["PGSSLMODE"], env["PGSSLROOTCERT"], env["PGSSLCERT"], env["PGSSLKEY"]) == (
        "verify-full", "/etc/pgops/ca.crt", "/etc/pgops/client.crt", "/etc/pgops/client.key")


def test_target_label_never_shows_the_password():
    label = c.target_label(PARAMS)
    assert label == "migrator@db1:5433/intowork"
    assert "s3cret" not in label


@pytest.mark.parametrize("error, hint", [
    ('FATAL:  password authentication failed for user "migrator"', "login_password"),
    ('FATAL:  database "nope" does not exist', "login_db"),
    ('FATAL:  role "ghost" does not exist', "login_user"),
    ("connection to server at \"db1\", port 5433 failed: Connection refused\n\tIs the server running", "running"),
    ("timeout expired", "connect_timeout"),
])
def test_connect_errors_become_one_line_with_target_and_hint(error, hint):
    message = c.explain_connect_error(PARAMS, Exception(error))
    assert "\n" not in message
    assert message.startswith("cannot connect to migrator@db1:5433/intowork: ")
    assert hint in message


def test_a_connect_error_names_the_callers_settings_when_given():
    settings = dict(c.MODULE_SETTINGS, password="the password file (passfile in the config) or PGPASSWORD")
    message = c.explain_connect_error(PARAMS, Exception('FATAL:  password authentication failed for user "x"'),
                                      settings)
    assert message.endswith("(check the password file (passfile in the config) or PGPASSWORD)")
    assert "login_password" not in message


def test_the_application_name_is_the_callers_when_given():
    assert c.libpq_params(PARAMS)["application_name"] == "pgops"
    assert c.libpq_params(dict(PARAMS, application_name="pgops-backup"))["application_name"] == "pgops-backup"
    assert c.libpq_environment(dict(PARAMS, application_name="pgops-backup"))["PGAPPNAME"] == "pgops-backup"
