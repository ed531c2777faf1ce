"""Retention and compression rules of the backup program (pure functions, no server)."""

import datetime
import importlib.util

import pytest

from conftest import ROOT

spec = importlib.util.spec_from_file_location("pgops_backup", ROOT / "roles" / "backup" / "files" / "pgops_backup.py")
pgops_backup = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pgops_backup)

NOW = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.timezone.utc)


def backups(*ages_and_verified):
    """Newest first, as list_backups returns them."""
    return [{"path": "b%d" % days, "taken": NOW - datetime.timedelta(days=days), "verified": verified}
            for days, verified in ages_and_verified]


@pytest.mark.parametrize("existing, count, days, removed", [
    # Newest N kept, and everything younger than D days.
    (backups((0, True), (1, True), (2, True), (10, True)), 2, 5, ["b10"]),
    (backups((0, True), (1, True), (2, True), (3, True)), 2, 5, []),
    (backups((0, True), (6, True), (7, True)), 1, 5, ["b6", "b7"]),
    # Backups stopped working: the newest verified one stays, however old.
    (backups((1, False), (2, False), (40, True), (41, True)), 2, 7, ["b41"]),
    (backups((40, True),), 1, 0, []),
])
def test_retention_plan(existing, count, days, removed):
    assert [b["path"] for b in pgops_backup.retention_plan(existing, count, days, NOW)] == removed


@pytest.mark.parametrize("wanted, major, methods, option", [
    ("auto", 15, {"gzip"}, "--compress=2"),
    ("auto", 17, {"gzip", "lz4"}, "--compress=lz4"),
    ("auto", 18, {"gzip"}, "--compress=gzip:2"),
    ("gzip:9", 15, {"gzip"}, "--compress=9"),
    ("zstd:3", 16, {"gzip", "zstd"}, "--compress=zstd:3"),
    ("none", 15, {"gzip"}, "--compress=0"),
])
def test_compression_choice(monkeypatch, wanted, major, methods, option):
    monkeypatch.setattr(pgops_backup, "compression_methods", lambda config, major: methods)
    assert pgops_backup.compression_option({"compression": wanted}, major) == option


def test_unsupported_compression_is_refused(monkeypatch):
    monkeypatch.setattr(pgops_backup, "compression_methods", lambda config, major: {"gzip"})
    with pytest.raises(pgops_backup.BackupError) as caught:
        pgops_backup.compression_option({"compression": "lz4"}, 18)
    assert "compression lz4 is not supported by this pg_dump 18 (it has: gzip)" in str(caught.value)
