#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: health_check
short_description: Read the weekly health facts of a PostgreSQL database, with the findings that need action
version_added: 0.1.0
description:
  - Reads, without changing anything, what a DBA checks every week, at the breadth of check_postgres and pghero -
    long-running and idle-in-transaction sessions, blocking lock chains, autovacuum off (for the server or a
    table), dead rows (naming what holds the xmin horizon back) and estimated bloat of tables and
    B-tree indexes, the age of the last vacuum and analyse, transaction-ID and multixact wraparound headroom,
    sequences and identity columns near the end of their range, invalid, duplicate and unused indexes, replication
    lag and inactive slots, WAL archiving failures, roles with SUPERUSER, CREATEROLE or BYPASSRLS that are not on
    an allow list, NOT VALID constraints, the cache hit ratio, connections, the newest verified backup, the data
    directory's free space, and the statements of C(pg_stat_statements) over the period since the previous report.
  - Every finding carries its threshold, from O(thresholds); RV(problems) has them with a severity, RV(findings)
    as one line each. What is not yet a finding (statistics too young to call an index unused, facts this login
    cannot read) is in RV(notes).
  - Growth over time is the health report's job (the C(intowork.pgops.health_trend) filter compares reports); this
    module describes one moment, and the period since O(previous).
options:
  app_roles:
    description: The application's roles; a finding names any that does not exist.
    type: list
    elements: str
    default: []
  privileged_roles_allowed:
    description:
      - Roles that may have SUPERUSER, CREATEROLE or BYPASSRLS (the DBAs' own, a deploy role that manages the
        application's roles). Every other role with one of them is a finding.
      - The bootstrap superuser (the one C(initdb) created) is always allowed.
    type: list
    elements: str
    default: []
  backup_dir:
    description: Folder of the verified backups (with their manifests) on this host; empty skips the backup age.
    type: path
  pgbackrest:
    description:
      - pgBackRest's view of the cluster, as M(intowork.pgops.pitr_restore) O(intowork.pgops.pitr_restore#module:state=repository)
        returns it (C(repository), C(problem)); the report then shows each backup type's newest backup, the
        earliest recoverable time and the repository's size, and names a repository it could not read, a stanza
        with no valid backup, or a newest backup older than C(max_backup_age_hours).
      - Omitted where the cluster has no pgBackRest.
    type: dict
  index_spec_file:
    description:
      - The project's index strategy (the O(intowork.pgops.index_verify#module:spec_file) format). The indexes it
        names are never advised to be dropped as unused.
    type: path
  previous:
    description:
      - The previous report (at least C(taken), C(statements) and C(statements_reset)), so that the statements are
        reported over the period between the two. Without it, the period is since the statistics were reset.
    type: dict
  include_maintenance_statements:
    description:
      - List schema changes, loads, VACUUM, ANALYZE and transaction control among the slow statements too. They are
        left out by default, because their time says nothing about the application's queries.
    type: bool
    default: false
  statement_snapshot_limit:
    description: How many statements (by total time) the report keeps, for the next report's delta.
    type: int
    default: 500
  thresholds:
    description: When a fact becomes a finding. Each key has a default; give only those to change.
    type: dict
    default: {}
    suboptions:
      long_query_seconds:
        description: A statement running longer than this is a finding.
        type: int
        default: 300
      idle_in_transaction_seconds:
        description: A session idle in an open transaction for longer than this is a finding (it holds its locks and
          holds back vacuum).
        type: int
        default: 60
      lock_wait_seconds:
        description: A session waiting for a lock for longer than this is a finding, with the sessions that block it.
        type: int
        default: 30
      dead_tuple_ratio:
        description: A table whose dead rows are more than this share of its rows is a finding, from
          O(thresholds.dead_tuple_min_rows) dead rows on.
        type: float
        default: 0.2
      dead_tuple_min_rows:
        description: See O(thresholds.dead_tuple_ratio).
        type: int
        default: 10000
      bloat_ratio:
        description: A table or B-tree index whose estimated bloat is more than this share of its size is a finding,
          from O(thresholds.bloat_min_bytes) of bloat on.
        type: float
        default: 0.5
      bloat_min_bytes:
        description: See O(thresholds.bloat_ratio).
        type: int
        default: 104857600
      maintenance_max_age_days:
        description: A table not vacuumed (analysed) for this many days is a finding once it has
          O(thresholds.maintenance_min_changes) dead rows (rows changed since the last analyse).
        type: int
        default: 7
      maintenance_min_changes:
        description: See O(thresholds.maintenance_max_age_days).
        type: int
        default: 10000
      wraparound_max_ratio:
        description: A database whose oldest transaction ID or multixact has used more than this share of the
          2^31 before wraparound is a finding.
        type: float
        default: 0.5
      sequence_max_ratio:
        description: A sequence (serial or identity) that has used more than this share of its range, or of its
          column's type where that is smaller, is a finding.
        type: float
        default: 0.8
      replication_lag_seconds:
        description: A standby replaying more than this many seconds behind is a finding.
        type: int
        default: 300
      replication_lag_bytes:
        description: A standby more than this many bytes of WAL behind is a finding.
        type: int
        default: 1073741824
      inactive_slot_min_bytes:
        description: An inactive replication slot holding back at least this many bytes of WAL is a finding.
        type: int
        default: 0
      archive_ready_max_files:
        description: More WAL segments than this waiting to be archived is a finding; so is an archive_command that
          failed on its last attempt.
        type: int
        default: 16
      max_backup_age_hours:
        description: A newest verified backup older than this is a finding.
        type: int
        default: 26
      slow_query_limit:
        description: How many statements the report lists, by total time and by mean time.
        type: int
        default: 10
      slow_query_mean_ms:
        description: A statement whose mean time over the period exceeds this is a finding.
        type: float
        default: 500.0
      slow_query_total_seconds:
        description: A statement whose total time over the period exceeds this is a finding.
        type: float
        default: 600.0
      min_cache_hit_ratio:
        description: A cache hit ratio below this is a finding, once the database has read
          O(thresholds.min_cache_reads) blocks.
        type: float
        default: 0.99
      min_cache_reads:
        description: See O(thresholds.min_cache_hit_ratio); a new database reads everything once.
        type: int
        default: 100000
      max_connection_ratio:
        description: Connections above this share of C(max_connections) are a finding.
        type: float
        default: 0.8
      unused_index_min_bytes:
        description: An index never scanned is a finding from this size on, once the statistics are
          O(thresholds.unused_index_min_stats_days) old. Indexes that enforce a constraint, back a foreign key or
          are in O(index_spec_file) never are.
        type: int
        default: 1048576
      unused_index_min_stats_days:
        description: See O(thresholds.unused_index_min_bytes); before, the report says it is too early to tell.
        type: int
        default: 35
extends_documentation_fragment:
  - intowork.pgops._connection
  - intowork.pgops._connection.ATTRIBUTES
attributes:
  check_mode:
    support: full
    details: Reads only.
  diff_mode:
    support: none
  idempotent:
    support: full
notes:
  - Another role's sessions, queries and replication details need C(pg_read_all_stats) or C(pg_monitor); the
    archive backlog and the database's creation time need C(pg_monitor) or a superuser. Without them, those facts
    are listed in RV(notes) as not checked.
author:
  - INTOWORK platform team (@intowork)
"""

EXAMPLES = r"""
- name: Read the health facts
  intowork.pgops.health_check:
    app_roles: [app_web]
    privileged_roles_allowed: [dba]
    backup_dir: /var/backups/pgops/shop
    thresholds:
      idle_in_transaction_seconds: 120
  register: health

- name: Show what needs action
  ansible.builtin.debug:
    var: health.findings
"""

RETURN = r"""
taken:
  description: When the facts were read (UTC, ISO 8601).
  returned: always
  type: str
thresholds:
  description: The thresholds the findings were judged by, every key filled in.
  returned: always
  type: dict
database:
  description: Name, size in bytes, server version, and since when the statistics count (C(stats_since), with
    C(stats_age_days)).
  returned: always
  type: dict
tables:
  description: User tables, largest first - total, table and index bytes, live and dead rows, estimated bloat,
    the last vacuum and analyse.
  returned: always
  type: list
  elements: dict
indexes:
  description: User indexes with their size, scans, estimated bloat and whether they enforce uniqueness.
  returned: always
  type: list
  elements: dict
unused_indexes:
  description:
    - Indexes never scanned, of O(thresholds.unused_index_min_bytes) or more, that enforce nothing, back no foreign
      key and are not in the strategy.
    - Empty while the statistics are younger than O(thresholds.unused_index_min_stats_days) (RV(unused_indexes_too_early)).
  returned: always
  type: list
  elements: dict
unused_indexes_too_early:
  description: The statistics are too young to call an index unused; the notes name those never scanned so far.
  returned: always
  type: bool
statements:
  description: The snapshot of pg_stat_statements kept for the next report (queryid, role, calls, total_ms, rows,
    query, maintenance).
  returned: always
  type: list
  elements: dict
statements_reset:
  description: When pg_stat_statements was last reset (PostgreSQL 14 on), or null.
  returned: always
  type: str
slow_queries:
  description: The period's statements by total time (calls, total_ms, mean_ms, rows, query).
  returned: always
  type: list
  elements: dict
slow_queries_by_mean:
  description: The period's statements by mean time.
  returned: always
  type: list
  elements: dict
slow_query_source:
  description: Where the slow queries came from and over which period, or why there are none.
  returned: always
  type: str
cache_hit_ratio:
  description: Share of the database's block reads served from shared buffers; null before any read.
  returned: always
  type: float
connections:
  description: Client connections now, max_connections, and connections per state.
  returned: always
  type: dict
sessions:
  description: Sessions over a threshold (pid, user, application, state, seconds, query_start, query).
  returned: always
  type: list
  elements: dict
blocking:
  description: Sessions waiting for a lock, each with the pids that block it and the root of the chain.
  returned: always
  type: list
  elements: dict
wraparound:
  description: Each database's transaction-ID and multixact age, and the share of the limit used.
  returned: always
  type: list
  elements: dict
sequences:
  description: Sequences with their last value, limit (the smaller of the sequence's and its column's), and share used.
  returned: always
  type: list
  elements: dict
replication:
  description: Standbys (lag) and replication slots (active, retained WAL bytes), where present.
  returned: always
  type: dict
archiving:
  description:
    - archive_mode, the archiver's counters and the segments waiting; null counters when not readable.
    - C(archive_lag_seconds) is the time since a WAL segment last reached the archive.
  returned: always
  type: dict
not_valid_constraints:
  description: Constraints added NOT VALID and never validated.
  returned: always
  type: list
  elements: dict
backup:
  description: The newest verified backup (path, ended, age_hours); null when none or not checked.
  returned: always
  type: dict
pgbackrest:
  description: O(pgbackrest)'s C(repository) (pgBackRest's view of the cluster); null without it or when unreadable.
  returned: always
  type: dict
disk:
  description: Total and free bytes of the data directory's file system; null when it cannot be read from here.
  returned: always
  type: dict
security:
  description: Security findings, each with a check and a detail.
  returned: always
  type: list
  elements: dict
problems:
  description: Every finding as check, severity (critical or warning), subject, detail and threshold.
  returned: always
  type: list
  elements: dict
findings:
  description: One line per finding that needs action, with its threshold.
  returned: always
  type: list
  elements: str
notes:
  description: What is not a finding but a reader should know (too early to tell, not checked and why).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.intowork.pgops.plugins.module_utils._connection import (
    connection_spec,
    require_psycopg2,
    run_module,
)
from ansible_collections.intowork.pgops.plugins.module_utils._health import THRESHOLDS
from ansible_collections.intowork.pgops.plugins.module_utils._health_gather import gather


def main():
    argument_spec = connection_spec()
    argument_spec.update(
        app_roles=dict(type="list", elements="str", default=[]),
        privileged_roles_allowed=dict(type="list", elements="str", default=[]),
        backup_dir=dict(type="path"),
        pgbackrest=dict(type="dict"),
        index_spec_file=dict(type="path"),
        previous=dict(type="dict"),
        include_maintenance_statements=dict(type="bool", default=False),
        statement_snapshot_limit=dict(type="int", default=500),
        thresholds=dict(type="dict", default={}, apply_defaults=True, options=dict(
            (key, dict(type="float" if isinstance(value, float) else "int", default=value))
            for key, value in THRESHOLDS.items())),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    require_psycopg2(module)
    run_module(module, gather)


if __name__ == "__main__":
    main()
