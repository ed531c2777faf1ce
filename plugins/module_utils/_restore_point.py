# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to intowork.pgops: not a public API, may change without notice.
"""A named restore point in the WAL, and the proof that the segment holding it reached the archive."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.intowork.pgops.plugins.module_utils._connection import PgopsError, connect

# The restore point, the segment that holds it, closed at once so that it is archived now, not at archive_timeout.
CREATE = """
SELECT lsn::text, pg_catalog.pg_walfile_name(lsn), pg_catalog.pg_switch_wal()::text
  FROM (SELECT pg_catalog.pg_create_restore_point(%s) AS lsn) point
"""
ARCHIVER = """
SELECT last_archived_wal, last_archived_time, last_failed_wal, last_failed_time, failed_count,
       pg_catalog.current_setting('archive_mode'), pg_catalog.pg_is_in_recovery()
  FROM pg_catalog.pg_stat_archiver
"""


def segment_reached(last_archived, segment):
    """Whether the archiver's last archived segment is `segment` or a later one of the same timeline (names sort
    by position within a timeline; history and backup label files are not segments)."""
    if not last_archived or len(last_archived) != 24 or not segment:
        return False
    return last_archived[:8] == segment[:8] and last_archived >= segment


def check_archiving(cur, archive_off_advice="turn pgops_deploy_restore_point off"):
    cur.execute(ARCHIVER)
    row = cur.fetchone()
    if row[6]:
        raise PgopsError("the server is a standby: a restore point is made on the primary")
    if row[5] == "off":
        raise PgopsError("archive_mode is off: a restore point is of use only with the WAL archived (run "
                         "playbooks/pgbackrest.yml), else %s" % archive_off_advice)
    return row


def create(params, check_mode, commit_first=False, consequence="nothing was migrated",
           archive_off_advice="turn pgops_deploy_restore_point off"):
    """The restore point, archived. With commit_first, a transaction (no data) commits just before it: recovery to
    a time stops only at a commit after that time, so a drill's target in the past is then always reachable."""
    name = params["name"]
    conn = connect(dict(params, login_db=params["maintenance_db"]), autocommit=True)
    try:
        cur = conn.cursor()
        check_archiving(cur, archive_off_advice)
        if check_mode:
            return {"changed": True, "name": name, "lsn": None, "wal_file": None, "archived_seconds": None}
        if commit_first:
            cur.execute("SELECT pg_catalog.txid_current()")
        cur.execute(CREATE, (name,))
        lsn, segment, _switched = cur.fetchone()
        started = time.monotonic()
        deadline = started + params["wait_archived_seconds"]
        while True:
            row = check_archiving(cur, archive_off_advice)
            if segment_reached(row[0], segment):
                break
            if time.monotonic() >= deadline:
                failed = (", last failure %s at %s (%d in all)" % (row[2], row[3], row[4])) if row[2] else ""
                raise PgopsError(
                    "restore point %s (LSN %s) is in WAL segment %s, which was not archived within %s s: the last "
                    "archived is %s%s. Check archive_command (pgbackrest check shows why); %s" % (
                        name, lsn, segment, params["wait_archived_seconds"], row[0] or "none", failed, consequence))
            time.sleep(params["poll_interval"])
    finally:
        conn.close()
    return {"changed": True, "name": name, "lsn": lsn, "wal_file": segment,
            "archived_seconds": round(time.monotonic() - started, 3)}
