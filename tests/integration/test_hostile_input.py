"""Values that reach a cron file, a path or a file name are checked before anything is written: a hostile or
mistaken inventory gets one line naming the value, and the host is left as it was. No server is needed: every
refusal here comes before the first connection."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT, failure_message, playbook_command

NOWHERE = {"login_host": "127.0.0.1", "login_port": 1, "login_user": "nobody", "login_password": "x",
           "login_db": "appdb"}
INJECTED = "\n* * * * * root touch /tmp/pgops-pwned"


def run(name, tmp_path, settings):
    folders = {"pgops_program_dir": str(tmp_path / "lib"), "pgops_config_dir": str(tmp_path / "etc"),
               "pgops_cron_dir": str(tmp_path / "cron.d")}
    cmd, env = playbook_command(name, {"bindir": ""}, NOWHERE, tmp_path, "-e", json.dumps(dict(folders, **settings)))
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False,
                          stdin=subprocess.DEVNULL)


def written(tmp_path):
    return sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*") if path.is_file())


@pytest.mark.parametrize("playbook, settings, expected", [
    ("backup_cron.yml", {"backup_schedule_mailto": "ops@example.com" + INJECTED},
     "Bad schedule, nothing was written"),
    ("backup_cron.yml", {"backup_schedule_drill_hour": "4" + INJECTED}, "Bad schedule, nothing was written"),
    ("backup_cron.yml", {"backup_schedule_drill_rto_target_seconds": "900 --x"},
     "backup_schedule_drill_rto_target_seconds' is of type str and we were unable to convert to int"),
    ("maintenance_cron.yml", {"maintenance_jobs_mailto": "ops@example.com" + INJECTED,
                              "pgops_maintenance_jobs": []}, "mailto \"ops@example.com\\n* * * * * root"),
    ("backup.yml", {"pgops_db_name": "../../etc/appdb"},
     'backup_db_name "../../etc/appdb" cannot name a file safely'),
    ("backup.yml", {"pgops_program_dir": "lib"}, 'backup_program_dir (pgops_program_dir) "lib" must be an absolute path'),
    ("backup.yml", {"backup_python": "/usr/bin/python3" + INJECTED}, "backup_python \"/usr/bin/python3\\n"),
    ("backup.yml", {"pgops_backup_os_user": "root\nx"}, 'backup_os_user "root\\nx" is not an account name'),
], ids=["cron-mailto", "cron-drill-hour", "cron-rto", "jobs-mailto", "db-name-path", "relative-program-dir",
        "python-newline", "account-newline"])
def test_a_bad_value_is_named_and_nothing_is_written(tmp_path, playbook, settings, expected):
    result = run(playbook, tmp_path, settings)
    assert result.returncode == 2, result.stdout[-2000:]
    assert expected in failure_message(result)
    assert written(tmp_path) == [], "nothing was written"
    assert "Traceback" not in result.stdout + result.stderr


def test_a_symlinked_backup_dir_is_refused_and_its_target_left_alone(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o755)
    (tmp_path / "backups").symlink_to(target)
    result = run("backup.yml", tmp_path, {"pgops_backup_dir": str(tmp_path / "backups")})
    assert result.returncode == 2
    assert "is a symlink" in failure_message(result) and "backup_allow_symlinked_dir=true" in failure_message(result)
    assert oct(target.stat().st_mode & 0o777) == oct(0o755) and written(tmp_path) == []


def test_preflight_refuses_a_relative_backup_dir_at_once(tmp_path):
    # It used to climb dirname('') forever, holding the deployment lock.
    result = subprocess.run(
        [sys.executable, str(ROOT / "plugins" / "modules" / "preflight_check.py")],
        input=json.dumps({"ANSIBLE_MODULE_ARGS": dict(NOWHERE, backup_dir="backups")}),
        capture_output=True, text=True, check=False, timeout=60,
        env={"PYTHONPATH": str(ROOT / ".collections"), "PATH": "/usr/bin:/bin"})
    failed = json.loads(result.stdout)
    assert failed["failed"] is True
    assert failed["msg"].startswith("backup_dir 'backups' must be an absolute path on the database host")


@pytest.mark.parametrize("settings, expected", [
    ({"pgops_lease_heartbeat_seconds": 0}, 'pgops_lease_heartbeat_seconds must be a number from 0.1 to 600 (got "0")'),
    ({"pgops_rollback_connect_retries": -1},
     'pgops_rollback_connect_retries must be a whole number from 0 to 1000 (got "-1")'),
    ({"pgops_async_poll_seconds": "ten"}, 'pgops_async_poll_seconds must be a number from 0 to 3600 (got "ten")'),
    ({"pgops_host_reconnect_seconds": 99999},
     'pgops_host_reconnect_seconds must be a number from 0 to 3600 (got "99999")'),
    ({"pgops_exact_count_max_rows": "1e9"}, 'pgops_exact_count_max_rows must be a whole number of at least 0 (got "1e9")'),
    ({"preflight_lock_stale_after": 0}, 'preflight_lock_stale_after must be a whole number of at least 1 (got "0")'),
    ({"pgops_backup_dir": "/var/backups/../../etc"},
     'pgops_backup_dir "/var/backups/../../etc" is not a normalised path: give it as /etc, without ".."'),
    ({"pgops_backup_dir": "backups"}, 'pgops_backup_dir "backups" must be an absolute path on the database host'),
], ids=["heartbeat-zero", "retries-negative", "poll-word", "reconnect-huge", "count-exponent", "stale-zero",
        "backup-dir-dotdot", "backup-dir-relative"])
def test_a_bad_deployment_setting_is_named_before_anything_runs(tmp_path, settings, expected):
    result = run("deploy_migration.yml", tmp_path, dict(settings, pgops_alembic_project_dir="/srv/app"))
    assert result.returncode == 2, result.stdout[-2000:]
    message = failure_message(result)
    assert message.startswith("Bad settings, nothing was changed: ") and expected in message, message
    assert written(tmp_path) == [], "nothing was written"
    assert "Traceback" not in result.stdout + result.stderr


# Every runbook, one or two bad values each: refused in its first task, by name, with the fix, before any
# connection (the server here does not exist) and before any file is written.
EVERY_RUNBOOK = [
    ("backup.yml", {"pgops_backup_retention_count": -1},
     'Bad backup settings, nothing was written: backup_retention_count (pgops_backup_retention_count) must be a whole '
     'number of at least 1 (got "-1")'),
    ("backup.yml", {"pgops_backup_dir": "/var/backups/../../etc"},
     'backup_dir (pgops_backup_dir) "/var/backups/../../etc" is not a normalised path: give it as /etc'),
    ("backup.yml", {"pgops_backup_alert_mail": "ops@example.com\nBcc: x@example.org"},
     'backup_alert_mail (pgops_backup_alert_mail) "ops@example.com\\nBcc: x@example.org" is not one mail address'),
    ("backup_cron.yml", {"pgops_cron_dir": "cron.d"},
     'backup_schedule_cron_dir (pgops_cron_dir) "cron.d" must be an absolute path'),
    ("maintenance_cron.yml", {"pgops_cron_dir": "/etc/cron.d/../x", "pgops_maintenance_jobs": []},
     'maintenance_jobs_cron_dir (pgops_cron_dir) "/etc/cron.d/../x" is not a normalised path: give it as /etc/x'),
    ("restore_drill.yml", {"restore_drill_jobs": 0},
     'Bad drill settings, nothing was changed: restore_drill_jobs must be a whole number from 1 to 64 (got "0")'),
    ("restore_drill.yml", {"restore_drill_backup": "latest.dump"},
     'restore_drill_backup "latest.dump" must be an absolute path'),
    ("verify.yml", {"pgops_reports_dir": "reports"},
     'Bad verification settings, nothing was changed: verification_report_dir (pgops_reports_dir) "reports" must be '
     'an absolute path'),
    ("health_report.yml", {"pgops_reports_dir": "reports"},
     'Bad health report settings, nothing was written: pgops_reports_dir "reports" must be an absolute path'),
    ("health_report.yml", {"pgops_db_name": "../etc"}, 'pgops_db_name "../etc" cannot name a report folder'),
    ("pool_config.yml", {"pgops_app_env_file": "app.env"},
     'Bad pool settings, nothing was changed: pool_config_env_file (pgops_app_env_file) "app.env" must be an '
     'absolute path'),
    ("pool_config.yml", {"pgops_pool_size": 0},
     'pool_config_pool_size (pgops_pool_size) must be a whole number from 1 to 10000 (got "0")'),
    ("monitoring.yml", {"pgops_prometheus_rules_dir": "rules"},
     'Bad monitoring settings, nothing was changed: monitoring_prometheus_rules_dir (pgops_prometheus_rules_dir) '
     '"rules" must be an absolute path'),
    ("deploy_migration.yml", {"pgops_reports_dir": "reports", "pgops_alembic_project_dir": "/srv/app"},
     'Bad settings, nothing was changed: pgops_reports_dir "reports" must be an absolute path'),
    ("rollback.yml", {"method": "magic", "confirm": "yes"},
     'Bad rollback settings, nothing was changed: method "magic" is not one of auto, downgrade, restore'),
    ("rollback.yml", {"backup": "intowork.dump", "confirm": "yes"}, 'backup "intowork.dump" must be an absolute path'),
    ("deploy_migration.yml", {"pgops_notify_mail_to": ["ops@example.com\nBcc: x@example.org"],
                              "pgops_alembic_project_dir": "/srv/app"},
     'pgops_notify_mail_to: "ops@example.com\\nBcc: x@example.org" is not one mail address'),
    ("deploy_migration.yml", {"pgops_pitr_other_databases": "intowork", "pgops_alembic_project_dir": "/srv/app"},
     'pgops_pitr_other_databases must be a list of database names (got "intowork")'),
    ("deploy_migration.yml", {"pgops_notify_webhook_url": "file:///etc/passwd", "pgops_alembic_project_dir": "/srv/app"},
     'pgops_notify_webhook_url "file:///etc/passwd" is not an http or https URL'),
    ("backup.yml", {"pgops_backup_alert_webhook": "https://hooks.example.com/x\r\nX-Injected: 1"},
     'backup_alert_webhook (pgops_backup_alert_webhook) "https://hooks.example.com/x\\r\\nX-Injected: 1" is not an '
     'http or https URL'),
    ("finish_deployment.yml", {"force_unlock": "sure", "confirm": "yes"},
     'Bad settings, nothing was changed: force_unlock "sure" is not yes or no'),
    ("finish_deployment.yml", {"pgops_reports_dir": "reports", "force_unlock": "yes"},
     'pgops_reports_dir "reports" must be an absolute path'),
    ("deploy_migration.yml", {"pgops_write_guard_definer_routines": "sometimes", "pgops_alembic_project_dir": "/srv/app"},
     'pgops_write_guard_definer_routines "sometimes" is not one of allow, revoke'),
]


@pytest.mark.parametrize("playbook, settings, expected", EVERY_RUNBOOK,
                         ids=[f"{case[0]}-{next(iter(case[1]))}" for case in EVERY_RUNBOOK])
def test_every_runbook_refuses_a_bad_value_before_it_changes_anything(tmp_path, playbook, settings, expected):
    result = run(playbook, tmp_path, settings)
    assert result.returncode == 2, result.stdout[-2000:]
    message = failure_message(result)
    assert expected in message, message
    assert "\n" not in message.strip(), "one line"
    assert written(tmp_path) == [], "nothing was written"
    assert "Traceback" not in result.stdout + result.stderr
