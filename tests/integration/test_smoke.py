"""Smoke checks: smoke_probe against real servers, and a deployment whose smoke checks decide its fate."""

import email
import email.policy
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from conftest import APP, BASELINE, HEAD, PASSWORD, PROJECT_DIR, alembic, query, run_module
from test_deploy_faults import app_can_write, counts, guarded
from test_deploy_playbook import revision

PROBES = str(PROJECT_DIR / "smoke_probes.yml")


@pytest.fixture
def migrated(deployable):
    alembic(deployable, "upgrade", HEAD)
    return deployable


def as_app(params):
    return dict(params, login_user=APP, login_password=PASSWORD)


def test_reference_path_passes_as_the_application_and_leaves_nothing(migrated):
    before = counts(migrated)
    result = run_module("smoke_probe", dict(as_app(migrated), probes_file=PROBES))
    assert result.get("failed") is not True, result.get("msg")
    assert result["user"] == APP and result["changed"] is False
    assert [probe["name"] for probe in result["probes"]][2:5] == ["post a job", "the job is listed", "apply to it"]
    assert all(probe["rows"] >= 1 for probe in result["probes"])
    assert counts(migrated) == before
    assert query(migrated, "SELECT count(*) FROM jobs WHERE title LIKE 'pgops smoke probe%'")[0][0] == 0


def test_missing_privilege_fails_naming_the_step(migrated):
    query(migrated, f"REVOKE INSERT ON job_applications FROM {APP}")
    result = run_module("smoke_probe", dict(as_app(migrated), probes_file=PROBES))
    assert result["failed"] is True
    assert "smoke probe 'apply to it' failed as app_web: permission denied for table job_applications" in result["msg"]
    assert query(migrated, "SELECT count(*) FROM jobs WHERE title LIKE 'pgops smoke probe%'")[0][0] == 0


@pytest.mark.parametrize("probes, message", [
    ([{"name": "no rows", "sql": "SELECT 1 WHERE false", "min_rows": 1}],
     "smoke probe 'no rows' returned 0 row(s), expected at least 1"),
    ([{"name": "needs a job", "sql": "SELECT %(job_id)s"}],
     "smoke probe 'needs a job' uses parameter 'job_id', which no earlier step returned"),
    ([{"name": "slow", "sql": "SELECT pg_sleep(2)"}], "smoke probe 'slow' failed as"),
])
def test_bad_steps_are_one_clear_line(migrated, probes, message):
    result = run_module("smoke_probe", dict(migrated, probes=probes, statement_timeout=200))
    assert result["failed"] is True and message in result["msg"]


def test_probes_file_must_hold_probes(migrated, tmp_path):
    path = tmp_path / "probes.yml"
    path.write_text("queries: []\n")
    result = run_module("smoke_probe", dict(migrated, probes_file=str(path)))
    assert result["failed"] is True and f"probes_file {path} must hold a non-empty 'probes' list" in result["msg"]


class Application(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the standard library's name
        healthy = self.path == "/health"
        self.send_response(200 if healthy else 503)
        self.end_headers()
        self.wfile.write(b"ok: jobs served" if healthy else b"down")

    def log_message(self, *args):
        pass


@pytest.fixture
def application():
    server = HTTPServer(("127.0.0.1", 0), Application)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def mailbox(tmp_path):
    """A sendmail that files each message it is given."""
    box = tmp_path / "mail"
    box.mkdir()
    program = tmp_path / "sendmail"
    program.write_text(f'#!/bin/sh\ncat > "$(mktemp {box}/msg.XXXXXX)"\n')
    program.chmod(0o755)
    return program, box


def mails(box):
    """Each message as a reader sees it: its headers, then its body decoded (it may be sent quoted-printable)."""
    texts = []
    for path in box.iterdir():
        message = email.message_from_string(path.read_text(), policy=email.policy.default)
        texts.append("".join(f"{name}: {value}\n" for name, value in message.items()) + "\n"
                     + message.get_content())
    return sorted(texts, key=lambda text: "start" not in text)


@pytest.mark.one_server_version
def test_a_guarded_deployment_turns_writes_off_and_back_on_passes_its_smoke_checks_and_mails_start_and_success(
        server, deployable, tmp_path, application, mailbox):
    program, box = mailbox
    settings = {"pgops_app_http_endpoints": [{"name": "health", "url": application + "/health",
                                              "contains": "jobs served"}],
                "pgops_notify_mail_to": ["dba@intowork.example"], "pgops_sendmail_program": str(program)}
    result, recap = guarded(server, deployable, tmp_path, "-e", json.dumps(settings))
    assert recap["failed"] == 0, result.stdout[-3000:]
    assert "Set the application's writes to read_only" in result.stdout
    assert revision(deployable) == HEAD and app_can_write(deployable)
    assert PASSWORD not in result.stdout
    start, success = mails(box)
    assert "Subject: [pgops] start:" in start and "writes off for about" in start
    assert "estimated_write_off_seconds:" in start
    assert "Subject: [pgops] success:" in success
    (record,) = (tmp_path / "reports").glob("deploy-*.json")
    report = json.loads(record.read_text())
    assert report["outcome"] == "deployed" and float(report["write_off_seconds"]) > 0
    assert report["backup_taken"] == "with writes off"
    assert [phase["phase"] for phase in report["phases"]] == ["preflight", "backup", "migration", "verification", "smoke"]


@pytest.mark.one_server_version
def test_failed_smoke_check_rolls_the_deployment_back(server, deployable, tmp_path, application, mailbox):
    program, box = mailbox
    before = counts(deployable)
    settings = {"pgops_app_http_endpoints": [{"name": "job list", "url": application + "/jobs"}],
                "smoke_http_retries": 1, "smoke_http_delay": 1,
                "pgops_notify_mail_to": ["dba@intowork.example"], "pgops_sendmail_program": str(program)}
    result, recap = guarded(server, deployable, tmp_path, "-e", json.dumps(settings))
    assert recap["failed"] == 1
    assert "job list" in result.stdout and "503" in result.stdout
    assert "Rolled back by downgrade: the database is at revision a7f3b2c1d9e8" in result.stdout
    assert revision(deployable) == BASELINE and counts(deployable) == before
    assert any("Subject: [pgops] rollback:" in text for text in mails(box))
