"""server_config and the monitoring playbook against real servers: settings, preloads, and no surprise restarts."""

import json

import pytest

from conftest import query, run_module, run_playbook


@pytest.fixture
def restore_settings(database):
    """Put the server's configuration back as the sandbox had it, whatever the test changed."""
    yield database
    query(database, "ALTER SYSTEM RESET log_min_duration_statement")
    query(database, "ALTER SYSTEM RESET track_io_timing")
    for name in LOG_SETTINGS:
        query(database, f"ALTER SYSTEM RESET {name}")
    query(database, "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
    query(database, "SELECT pg_reload_conf()")


LOG_SETTINGS = {"log_line_prefix": "%t [%p]: user=%u,db=%d,app=%a,client=%h ", "log_lock_waits": "on",
                "log_temp_files": "0", "log_checkpoints": "on", "log_autovacuum_min_duration": "0", "lc_messages": "C"}


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
    # What pgBadger needs is set, without a restart.
    assert {name: query(params, f"SHOW {name}")[0][0] for name in LOG_SETTINGS} == LOG_SETTINGS
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


def test_a_restart_that_might_restart_other_clusters_is_refused_first(server, restore_settings, tmp_path):
    params = restore_settings
    before = started(params)
    cluster = run_module("server_config", dict(params), check_mode=True)["cluster"]
    assert cluster["debian_unit"] is None and cluster["major_version"] == int(server["version"]), cluster
    result = run_playbook("monitoring.yml", server, params, tmp_path, "-e",
                          '{"monitoring_allow_restart": true, "monitoring_preload_libraries": ["pg_stat_statements", '
                          '"auto_explain"]}')
    assert result.returncode == 2, result.stdout[-3000:]
    last = [line for line in result.stdout.splitlines() if '"msg"' in line][-1]
    assert ("Which unit restarts this cluster alone is unknown (its cluster_name is '', not Debian's "
            "<version>/<cluster>): set monitoring_postgresql_service to its unit, or monitoring_restart_command to "
            "its command. Nothing was changed.") in last, last
    assert query(params, "SHOW log_min_duration_statement")[0][0] == "-1", "nothing was changed"
    assert "auto_explain" not in query(params, "SELECT setting FROM pg_file_settings WHERE name = "
                                               "'shared_preload_libraries'")[-1][0]
    assert started(params) == before


def test_pgbadger_reports_the_week_from_the_logging_the_role_sets(server, restore_settings, tmp_path):
    params = restore_settings
    settings = json.dumps({"monitoring_pgbadger": True, "monitoring_pgbadger_log_files": [server["log"]],
                           "monitoring_pgbadger_report_dir": str(tmp_path / "pgbadger")})
    first = run_playbook("monitoring.yml", server, params, tmp_path, "-e", settings)
    assert first.returncode == 0, first.stdout[-3000:]
    # Lines logged with the role's prefix: a slow statement and a lock wait.
    query(params, "SELECT pg_sleep(0.6) AS pgops_badger_probe")
    result = run_playbook("monitoring.yml", server, params, tmp_path, "-e", settings)
    assert result.returncode == 0, result.stdout[-3000:]
    (report,) = (tmp_path / "pgbadger").glob("pgbadger-*.html")
    assert f"pgBadger report of the last 7 days (1 log file(s)): {report}" in result.stdout
    html = report.read_text(errors="replace")
    assert "pgops_badger_probe" in html, "the slow statement is in the report"
    assert params["login_db"] in html, "with its database, from the log line prefix"


def test_pgbadger_without_logs_is_refused(server, restore_settings, tmp_path):
    settings = json.dumps({"monitoring_pgbadger": True, "monitoring_pgbadger_log_files": [str(tmp_path / "none.log")],
                           "monitoring_pgbadger_report_dir": str(tmp_path / "pgbadger")})
    result = run_playbook("monitoring.yml", server, restore_settings, tmp_path, "-e", settings)
    assert result.returncode == 2
    assert f"No log file matches monitoring_pgbadger_log_files ({tmp_path / 'none.log'}) changed in the last 7 days" \
        in result.stdout and not (tmp_path / "pgbadger").exists()
