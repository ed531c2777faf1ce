"""The monitoring role's Prometheus rules and Grafana dashboard, checked with Prometheus's own promtool."""

import json
import re
import shutil
import subprocess

import pytest
import yaml

from conftest import ROOT

FILES = ROOT / "roles" / "monitoring" / "files"
RULES = FILES / "prometheus" / "pgops-rules.yml"
DASHBOARD = FILES / "grafana" / "pgops-postgresql.json"


@pytest.fixture(scope="module")
def promtool():
    path = shutil.which("promtool")
    assert path, "tools/setup.sh installs Debian's prometheus package, which has promtool"
    return path


def run(promtool, *args, cwd=None):
    return subprocess.run([promtool, *args], capture_output=True, text=True, check=False, cwd=cwd)


def test_rules_are_valid(promtool):
    result = run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_fire_when_they_should_and_not_before(promtool):
    result = run(promtool, "test", "rules", "pgops-rules.test.yml", cwd=RULES.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", (RULES.parent / "pgops-rules.test.yml").read_text()))
    alerts = {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"]
              for rule in group["rules"] if "alert" in rule}
    assert alerts == tested, "every alert has a test"


def test_dashboard_queries_are_valid_promql_and_cover_the_checklist(promtool, tmp_path):
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    titles = " ".join(panel["title"].lower() for panel in panels)
    for topic in ("slow queries", "max_connections", "cache hit ratio", "backup age", "open transaction",
                  "replication lag", "replication slots", "wraparound", "wal archiving", "database size",
                  "deadlocks", "temporary file bytes", "with their text"):
        assert topic in titles, topic
    assert [panel["title"] for panel in panels if not panel["fieldConfig"]["defaults"].get("unit")] == []
    # One unit per panel: deadlocks (a count) and temporary bytes never share an axis again.
    assert not [panel["title"] for panel in panels if "deadlock" in str(panel["targets"]) and "temp" in str(panel["targets"])]
    expressions = [target["expr"] for panel in panels for target in panel["targets"]]
    assert all(expressions)
    # Grafana's variables become plain PromQL, then each query must parse as a rule expression.
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{index}",
         "expr": expr.replace("$instance", ".*").replace("$__rate_interval", "5m")}
        for index, expr in enumerate(expressions)]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    recorded = {rule["record"] for group in yaml.safe_load(RULES.read_text())["groups"]
                for rule in group["rules"] if "record" in rule}
    used = {name for expr in expressions for name in re.findall(r"pgops:[a-z_:0-9]+", expr)}
    assert used <= recorded, "the dashboard uses only recording rules the rule file defines"
