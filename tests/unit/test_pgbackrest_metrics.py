"""The pgBackRest metrics program's figures (pure functions, no repository)."""

import importlib.util

from conftest import ROOT

spec = importlib.util.spec_from_file_location(
    "pgops_pgbackrest_metrics", ROOT / "roles" / "pgbackrest" / "files" / "pgops_pgbackrest_metrics.py")
metrics = importlib.util.module_from_spec(spec)
spec.loader.exec_module(metrics)


def backup(kind, start, stop, size):
    return {"type": kind, "timestamp": {"start": start, "stop": stop}, "info": {"repository": {"delta": size}}}


def test_a_full_backup_meets_every_schedule_and_a_differential_the_incremental_one():
    newest = metrics.newest_per_type([backup("full", 0, 10, 0), backup("incr", 20, 30, 0), backup("diff", 40, 50, 0)])
    assert newest == {"full": 10, "diff": 50, "incr": 50}
    assert metrics.newest_per_type([backup("full", 0, 10, 0)]) == {"full": 10, "diff": 10, "incr": 10}


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
