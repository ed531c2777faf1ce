"""The pgBackRest metrics program's figures and the health report's view of a stanza (pure functions, no
repository)."""

import importlib.util
import sys

from ansible_collections.intowork.pgops.plugins.module_utils import _pgbackrest_info
from conftest import ROOT

# As installed: the collection's reading of pgbackrest info beside the program, under its installed name.
sys.modules["pgops_pgbackrest_info"] = _pgbackrest_info
spec = importlib.util.spec_from_file_location(
    "pgops_pgbackrest_metrics", ROOT / "roles" / "pgbackrest" / "files" / "pgops_pgbackrest_metrics.py")
metrics = importlib.util.module_from_spec(spec)
spec.loader.exec_module(metrics)


def backup(kind, start, stop, size):
    return {"type": kind, "label": "%s-%d" % (kind, stop), "timestamp": {"start": start, "stop": stop},
            "info": {"repository": {"delta": size}}}


def test_a_full_backup_meets_every_schedule_and_a_differential_the_incremental_one():
    newest = _pgbackrest_info.newest_per_type(
        [backup("full", 0, 10, 0), backup("incr", 20, 30, 0), backup("diff", 40, 50, 0)])
    assert dict((kind, entry["label"]) for kind, entry in newest.items()) == {
        "full": "full-10", "diff": "diff-50", "incr": "diff-50"}
    only_full = _pgbackrest_info.newest_per_type([backup("full", 0, 10, 0)])
    assert dict((kind, entry["label"]) for kind, entry in only_full.items()) == {
        "full": "full-10", "diff": "full-10", "incr": "full-10"}


def test_the_health_reports_summary_names_each_types_newest_backup_the_window_and_the_size():
    info = {"name": "main", "status": {"code": 0, "message": "ok"},
            "backup": [backup("full", 100, 160, 5000), backup("incr", 200, 230, 700)],
            "archive": [{"id": "15-1", "min": "000000010000000000000002", "max": "000000010000000000000009"}]}
    got = _pgbackrest_info.summary(info, 1000.4)
    assert got["newest"]["full"] == {"label": "full-160", "type": "full", "stop": 160, "age_seconds": 840,
                                     "bytes": 5000}
    assert got["newest"]["incr"]["label"] == "incr-230" and got["newest"]["diff"]["label"] == "full-160"
    assert (got["recoverable_since"], got["repository_bytes"], got["backups"]) == (100, 5700, 2)
    assert (got["archive_min"], got["archive_max"], got["status_code"]) == (
        "000000010000000000000002", "000000010000000000000009", 0)
    empty = _pgbackrest_info.summary({"name": "main", "status": {"code": 2, "message": "no valid backups"}}, 1.0)
    assert (empty["newest"], empty["recoverable_since"], empty["repository_bytes"], empty["archive_max"]) == (
        {}, None, 0, None)


def test_the_figures_read_as_prometheus_text():
    info = {"status": {"code": 0}, "backup": [backup("full", 100, 160, 5000), backup("incr", 200, 230, 700)]}
    lines = metrics.metric_lines("main", info, {"full": 691200, "diff": 93600}, 1000.5)
    samples = [line for line in lines if not line.startswith("#")]
    assert samples == [
        'pgops_pgbackrest_backup_last_timestamp_seconds{stanza="main",type="full"} 160',
        'pgops_pgbackrest_backup_last_timestamp_seconds{stanza="main",type="diff"} 160',
        'pgops_pgbackrest_backup_last_timestamp_seconds{stanza="main",type="incr"} 230',
        'pgops_pgbackrest_backup_max_age_seconds{stanza="main",type="diff"} 93600',
        'pgops_pgbackrest_backup_max_age_seconds{stanza="main",type="full"} 691200',
        'pgops_pgbackrest_recoverable_since_timestamp_seconds{stanza="main"} 100',
        'pgops_pgbackrest_repository_size_bytes{stanza="main"} 5700',
        'pgops_pgbackrest_status{stanza="main"} 0',
        'pgops_pgbackrest_metrics_timestamp_seconds{stanza="main"} 1000.5']
    # Every sample has its HELP and TYPE lines before it.
    assert sum(line.startswith("# TYPE") for line in lines) == 6


def test_a_stanza_without_backups_has_no_backup_times_but_its_status():
    lines = metrics.metric_lines("main", {"status": {"code": 2}, "backup": []}, {}, 1.0)
    samples = [line for line in lines if not line.startswith("#")]
    assert samples == ['pgops_pgbackrest_repository_size_bytes{stanza="main"} 0',
                       'pgops_pgbackrest_status{stanza="main"} 2',
                       'pgops_pgbackrest_metrics_timestamp_seconds{stanza="main"} 1.0']
