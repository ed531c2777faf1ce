# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to intowork.pgops: not a public API, may change without notice.
"""The arithmetic of the health report: bloat estimates, the statements' delta over a period, and what
counts as a maintenance statement. No database access here."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math
import re

# What the thresholds default to (the module documents each one).
THRESHOLDS = {
    "long_query_seconds": 300,
    "idle_in_transaction_seconds": 60,
    "lock_wait_seconds": 30,
    "dead_tuple_ratio": 0.2,
    "dead_tuple_min_rows": 10000,
    "bloat_ratio": 0.5,
    "bloat_min_bytes": 104857600,
    "maintenance_max_age_days": 7,
    "maintenance_min_changes": 10000,
    "wraparound_max_ratio": 0.5,
    "sequence_max_ratio": 0.8,
    "replication_lag_seconds": 300,
    "replication_lag_bytes": 1073741824,
    "inactive_slot_min_bytes": 0,
    "archive_ready_max_files": 16,
    "max_backup_age_hours": 26,
    "slow_query_limit": 10,
    "slow_query_mean_ms": 500.0,
    "slow_query_total_seconds": 600.0,
    "min_cache_hit_ratio": 0.99,
    "min_cache_reads": 100000,
    "max_connection_ratio": 0.8,
    "unused_index_min_bytes": 1048576,
    "unused_index_min_stats_days": 35,
}

WRAPAROUND_LIMIT = 2 ** 31
PAGE_HEADER = 24
HEAP_TUPLE_HEADER = 24  # 23 bytes, aligned
BTREE_TUPLE_HEADER = 8
ITEM_POINTER = 4
BTREE_SPECIAL = 16
BTREE_LEAF_FILL = 0.9

# Statements a weekly slow-query list leaves out unless asked: schema changes, loads, maintenance and the
# transaction control around them, whose time says nothing about the application's queries.
MAINTENANCE = re.compile(
    r"^\s*(vacuum|analy[sz]e|create|alter|drop|reindex|cluster|copy|refresh|truncate|grant|revoke|comment|"
    r"begin|start|commit|end|rollback|savepoint|release|set|reset|show|lock|checkpoint|discard|deallocate|"
    r"listen|notify|do|select\s+pg_(stat_statements_reset|terminate_backend|cancel_backend|create_\w+|drop_\w+|"
    r"switch_wal|reload_conf)|select\s+set_config|"
    # Alembic's bookkeeping of the revision a migration reached.
    r"(insert\s+into|update|delete\s+from)\s+alembic_version)\b", re.IGNORECASE)
WRITE = re.compile(r"^\s*(insert|update|delete|merge)\b", re.IGNORECASE)
# A write of this many rows per call is a load or a backfill, not the application's own writing.
BULK_ROWS_PER_CALL = 1000


def _align(value, to=8):
    return int(math.ceil(value / float(to)) * to)


# The health check's own statements carry this mark (pg_stat_statements keeps the text as first seen), so
# that the report never lists its own reading among the slow queries. Inside the statement: PostgreSQL 18 keeps
# a statement's text from its first word, without the comments before it.
OWN_MARK = "/* pgops health_check */"
FIRST_WORD = re.compile(r"^(\s*\w+)")


def marked(statement):
    return FIRST_WORD.sub(lambda found: found.group(1) + " " + OWN_MARK, statement, count=1)


def is_maintenance(query, rows=0, calls=0):
    """Schema changes, loads (a bulk write), maintenance and the health check's own reading."""
    query = query or ""
    bulk = bool(WRITE.match(query)) and calls > 0 and rows >= BULK_ROWS_PER_CALL * calls
    return bool(MAINTENANCE.match(query)) or OWN_MARK in query or bulk


def heap_bloat_bytes(heap_bytes, rows, row_width, fillfactor, block_size):
    """Estimated bytes a table holds beyond what its live rows need; None without the statistics."""
    if row_width is None or heap_bytes <= 0:
        return None
    usable = (block_size - PAGE_HEADER) * fillfactor / 100.0
    per_row = HEAP_TUPLE_HEADER + _align(row_width) + ITEM_POINTER
    expected_pages = int(math.ceil(rows * per_row / usable)) if rows > 0 else 0
    return max(0, heap_bytes - expected_pages * block_size)


def btree_bloat_bytes(index_bytes, rows, key_width, block_size):
    """Estimated bytes of a B-tree index beyond what its entries need (leaves at the default 90% fill, plus the
    metapage and an upper level's share); None without the statistics."""
    if key_width is None or index_bytes <= 0:
        return None
    usable = (block_size - PAGE_HEADER - BTREE_SPECIAL) * BTREE_LEAF_FILL
    per_entry = BTREE_TUPLE_HEADER + _align(key_width) + ITEM_POINTER
    leaves = int(math.ceil(rows * per_entry / usable)) if rows > 0 else 1
    expected_pages = 1 + leaves + int(math.ceil(leaves / 100.0))
    return max(0, index_bytes - expected_pages * block_size)


def statement_delta(current, previous, previous_reset=None, current_reset=None):
    """What each statement did between two snapshots of pg_stat_statements (lists of dicts with queryid, role,
    calls, total_ms, rows, query): calls, total and mean time over the period.

    A statement not in the previous snapshot, or with fewer calls than then (its entry was evicted or the
    statistics were reset), counts from zero: all it shows now happened within the period.
    """
    reset_between = bool(current_reset and current_reset != previous_reset)
    before = {} if reset_between else dict(((s["queryid"], s.get("role")), s) for s in previous or [])
    period = []
    for statement in current:
        old = before.get((statement["queryid"], statement.get("role")))
        if old is not None and old["calls"] <= statement["calls"]:
            calls = statement["calls"] - old["calls"]
            total = statement["total_ms"] - old["total_ms"]
            rows = statement["rows"] - old["rows"]
        else:
            calls, total, rows = statement["calls"], statement["total_ms"], statement["rows"]
        if calls <= 0:
            continue
        period.append(dict(statement, calls=calls, total_ms=round(total, 1), rows=rows,
                           mean_ms=round(total / calls, 2)))
    return period
