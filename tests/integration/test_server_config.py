"""server_config and the monitoring playbook against real servers: settings, preloads, and no surprise restarts."""

import pytest

from conftest import query, run_module, run_playbook


@pytest.fixture
def restore_settings(database):
    """Put the server's configuration back as the sandbox had it, whatever the test changed."""
    yield database
    query(database, "ALTER SYSTEM RESET log_min_duration_statement")
    query(database, "ALTER SYSTEM RESET track_io_timing")
    query(database, "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
    query(database, "SELECT pg_reload_conf()")


def started(params):
    return query(params, "SELECT pg_postmaster_start_time()")[0][0]


def test_reloadable_settings_apply_with_check_mode_diff_and_idempotence(restore_settings):
    params = restore_settings
    args = dict(params, settings={"log_min_duration_statement": "500ms", "track_io_timing": "on"},
                extensions=["pg_stat_statements"])
    check = run_module("server_config", args, check_mode=True, diff=True)
    assert check["changed"] is True and check["diff"]["after"]["log_min_duration_statement"] == "500ms"
    assert query(params, "SHOW log_min_duration_statement")[0][0] == "-1", "check mode wrote nothing"
    applied = run_module("server_config", args)
    assert applied["changed"] is True and applied["restart_required"] is False
    assert query(params, "SHOW log_min_duration_statement")[0][0] == "500ms"
    assert query(params, "SHOW track_io_timing")[0][0] == "on"
    assert query(params, "SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'")[0][0] == 1
    assert run_module("server_config", args)["changed"] is False


def test_a_new_preload_is_reported_and_never_restarts_the_server(server, restore_settings, tmp_path):
    params = restore_settings
    before = started(params)
    result = run_playbook("monitoring.yml", server, params, tmp_path,
                          "-e", '{"monitoring_preload_libraries": ["pg_stat_statements", "auto_explain"]}')
    assert result.returncode == 0, result.stdout[-3000:]
    assert "RESTART PENDING: shared_preload_libraries take effect only after a server restart" in result.stdout
    assert started(params) == before, "the server was not restarted"
    pending = run_module("server_config", dict(params, preload_libraries=["auto_explain"]))
    assert pending["changed"] is False, "the libraries already there were kept, auto_explain added once"
    assert pending["configured"]["shared_preload_libraries"] == "pg_stat_statements,auto_explain"
    assert pending["restart_required"] is True
    files = query(params, "SELECT setting FROM pg_file_settings WHERE name = 'shared_preload_libraries' "
                          "ORDER BY seqno DESC LIMIT 1")[0][0]
    assert files.replace(" ", "") == "pg_stat_statements,auto_explain", "two libraries, not one named 'a,b'"


def test_unknown_setting_is_one_clear_line(database):
    result = run_module("server_config", dict(database, settings={"log_min_duraton_statement": "1s"}))
    assert result["failed"] is True and "unknown setting(s) log_min_duraton_statement" in result["msg"]
