# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to intowork.pgops: not a public API, may change without notice.
"""What `pgbackrest info --output=json` says of a stanza, in the terms operators ask about: the newest backup that
meets each type's schedule, the earliest time a recovery reaches, the repository's size, the archived WAL.

Read by the health report (pitr_restore state=repository) and by the metrics program cron runs (installed beside it
as pgops_pgbackrest_info.py): plain Python, no imports.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

TYPES = ("full", "diff", "incr")

# Which backups meet each type's schedule: a full one meets the differential's too, and either the incremental's.
MEETS = {"full": TYPES, "diff": ("diff", "incr"), "incr": ("incr",)}


def newest_per_type(backups):
    """The newest backup (pgBackRest's entry) that meets each type's schedule, by type."""
    newest = {}
    for backup in backups:
        for kind in MEETS[backup["type"]]:
            if kind not in newest or backup["timestamp"]["stop"] > newest[kind]["timestamp"]["stop"]:
                newest[kind] = backup
    return newest


def recoverable_since(backups):
    """The start of the oldest backup kept: the earliest time a recovery reaches (None without a backup)."""
    return min(backup["timestamp"]["start"] for backup in backups) if backups else None


def repository_bytes(backups):
    """The stanza's backups in the repository (compressed, each backup's own files)."""
    return sum(backup["info"]["repository"]["delta"] for backup in backups)


def summary(info, now):
    """The stanza's state for a report: status, the newest backup per type with its age, the recovery window,
    the repository's size and the archived WAL's range (times are Unix seconds)."""
    backups = info.get("backup", [])
    newest = newest_per_type(backups)
    archives = [archive for archive in info.get("archive", []) if archive.get("max")]
    return {
        "stanza": info.get("name"),
        "status_code": info["status"]["code"],
        "status": info["status"]["message"],
        "backups": len(backups),
        "newest": dict((kind, {"label": backup["label"], "type": backup["type"], "stop": backup["timestamp"]["stop"],
                               "age_seconds": round(now - backup["timestamp"]["stop"]),
                               "bytes": backup["info"]["repository"]["delta"]})
                       for kind, backup in newest.items()),
        "recoverable_since": recoverable_since(backups),
        "repository_bytes": repository_bytes(backups),
        "archive_min": min(archive["min"] for archive in archives) if archives else None,
        "archive_max": max(archive["max"] for archive in archives) if archives else None,
    }
