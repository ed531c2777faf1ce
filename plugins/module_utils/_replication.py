# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to intowork.pgops: not a public API, may change without notice.
"""What a primary knows of its standbys and replication slots: the one reading preflight and the
post-migration wait share."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.intowork.pgops.plugins.module_utils._text import size_text

# On a standby pg_current_wal_lsn() raises: every figure here is the primary's view (pg_stat_replication
# needs pg_read_all_stats, or pg_monitor, for other roles' senders).
STANDBYS = """
SELECT coalesce(json_agg(json_build_object(
           'name', application_name, 'client', coalesce(client_addr::text, 'local socket'), 'state', state,
           'sync_state', sync_state,
           'lag_bytes', coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), -1)::bigint,
           'replay_lag_seconds', round(coalesce(extract(epoch FROM replay_lag), 0)::numeric, 3),
           'replayed', replay_lsn IS NOT NULL AND replay_lsn >= %(target)s::pg_lsn)
         ORDER BY application_name, pid), '[]')
  FROM pg_stat_replication
"""

SLOTS = """
SELECT coalesce(json_agg(json_build_object(
           'name', slot_name, 'type', slot_type, 'active', active, 'database', database,
           'retained_bytes', coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::bigint)
         ORDER BY slot_name), '[]')
  FROM pg_replication_slots
"""


def in_recovery(cur):
    """Whether the server is a standby."""
    cur.execute("SELECT pg_is_in_recovery()")
    return cur.fetchone()[0]


def lsn_number(text):
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def lsn_text(number):
    return "%X/%X" % (number >> 32, number & 0xFFFFFFFF)


def current_lsn(cur):
    """The end of everything the primary has logged so far, commits not yet flushed included: with
    synchronous_commit off a commit returns before its WAL is written, so pg_current_wal_lsn() (the write
    position) can be short of it."""
    cur.execute("SELECT pg_current_wal_insert_lsn()::text, current_setting('wal_block_size')::int")
    insert_lsn, block_size = cur.fetchone()
    position = lsn_number(insert_lsn)
    # Right after a page header (24 bytes, 40 at a segment's start) the last record ended at the page boundary,
    # which is the position a standby reports once it has replayed it.
    offset = position % block_size
    if 24 <= offset <= 40:
        position -= offset
    return lsn_text(position)


def read_standbys(cur, target_lsn=None):
    """The standbys streaming from this primary; `replayed` says whether each has replayed target_lsn."""
    cur.execute(STANDBYS, {"target": target_lsn or "0/0"})
    return cur.fetchone()[0]


def read_slots(cur):
    cur.execute(SLOTS)
    return cur.fetchone()[0]


def standby_gates(standbys, slots, max_lag_bytes, max_lag_seconds, min_standbys, fail_on_inactive_slots):
    """One line per replication problem that should stop a deployment."""
    gates = []
    if len(standbys) < min_standbys:
        gates.append("%d standby(s) stream from this server, the inventory expects at least %d: start the missing "
                     "one(s) or lower pgops_min_standbys" % (len(standbys), min_standbys))
    for standby in standbys:
        name = standby["name"] or standby["client"]
        if standby["state"] != "streaming":
            gates.append("standby %s is %s, not streaming: wait until it has caught up" % (name, standby["state"]))
        elif standby["lag_bytes"] > max_lag_bytes:
            gates.append("standby %s is %s of WAL behind (limit %s): wait until it has caught up" % (
                name, size_text(standby["lag_bytes"]), size_text(max_lag_bytes)))
        elif standby["replay_lag_seconds"] > max_lag_seconds:
            gates.append("standby %s replays %s s behind (limit %s s): wait until it has caught up" % (
                name, standby["replay_lag_seconds"], max_lag_seconds))
    if fail_on_inactive_slots:
        for slot in slots:
            if not slot["active"]:
                gates.append("replication slot %s is inactive and keeps %s of WAL: reconnect its consumer or "
                             "drop it (pg_drop_replication_slot)" % (slot["name"], size_text(slot["retained_bytes"])))
    return gates
