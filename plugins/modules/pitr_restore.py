#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: pitr_restore
short_description: Take a cluster back to a deployment's restore point with pgBackRest, in place
version_added: 0.1.0
description:
  - The steps of a rollback by point-in-time recovery; the runbook (playbooks/rollback.yml, method C(pitr)) stops
    and starts the server between them. Runs on the database host as the account that owns the data folder and
    reads pgBackRest's repository.
  - O(state=backup) chooses the newest backup that ended before O(restore_point), reading the repository (run it
    as the account that can).
  - O(state=check) changes nothing. It measures what recovering to O(restore_point) would discard (WAL written
    since the point; each table's row count against O(row_counts_before) and the exact counts of O(catalog_file)),
    lists the cluster's other databases (a recovery takes the whole cluster back), and returns RV(refusal), the
    reasons to stop, unless O(discard_writes) names the restore point and O(other_databases) names every other
    database.
  - O(state=restore), with the server stopped, copies its C(pg_wal) beside its data folder
    (C(pgops-wal-<keep_wal_as>)), since its last segment holds writes no archive has yet, then runs pgBackRest's
    delta restore of O(backup_label) into the cluster's data folder, with recovery set to stop at the restore
    point and promote.
  - O(state=promoted) waits until the restarted server answers out of recovery, then analyzes the database.
  - O(state=repository) only reads the repository, for the health report; it returns what a recovery can reach (the
    newest backup per type, the earliest recoverable time, the archived WAL, the repository's size).
    pgBackRest's failure to answer is returned as RV(problem), not failed.
options:
  state:
    description: The step.
    type: str
    choices: [backup, check, promoted, repository, restore]
    required: true
  restore_point:
    description:
      - The deployment's restore point, as its record keeps it (C(name) and C(lsn)).
      - Required unless O(state=repository).
    type: dict
  row_counts_before:
    description: The deployment's row counts (table to rows), taken when writes went off.
    type: dict
    default: {}
  catalog_file:
    description: The deployment's catalog snapshot (M(intowork.pgops.schema_snapshot)'s file), for its row counts.
    type: path
  other_databases:
    description: The cluster's other databases the operator agrees to take back to the restore point too.
    type: list
    elements: str
    default: []
  discard_writes:
    description: The restore point's name, to acknowledge that every write since it is discarded.
    type: str
    default: ""
  backup_label:
    description: The backup to restore (RV(backup) of O(state=backup)); required with O(state=restore).
    type: str
  keep_wal_as:
    description: The name of the copy of C(pg_wal) O(state=restore) keeps (the rollback's own restore point's).
    type: str
  timeout_seconds:
    description: Seconds O(state=promoted) waits for the server to answer out of recovery.
    type: float
    default: 1800
extends_documentation_fragment:
  - intowork.pgops._connection
  - intowork.pgops._pgbackrest
  - intowork.pgops._connection.ATTRIBUTES
attributes:
  check_mode:
    support: full
    details: O(state=check) is read only; the other steps change nothing in check mode.
  diff_mode:
    support: none
  idempotent:
    support: none
    details: A restore runs again every time (a delta restore writes only what differs).
author:
  - INTOWORK platform team (@intowork)
"""

EXAMPLES = r"""
- name: Measure what recovering to the deployment's restore point would discard
  intowork.pgops.pitr_restore:
    state: check
    restore_point: "{{ record.restore_point }}"
    row_counts_before: "{{ record.row_counts_before }}"
    discard_writes: "{{ discard_writes | default('') }}"
  become: true
  become_user: postgres
  register: pitr_check
"""

RETURN = r"""
backup:
  description: The backup a recovery starts from (label, type, lsn_stop).
  returned: state is backup
  type: dict
other_databases:
  description: The cluster's other databases, which a recovery takes back too.
  returned: state is check
  type: list
wal_bytes_since:
  description: Bytes of WAL written since the restore point.
  returned: state is check
  type: int
timeline:
  description: The cluster's timeline (check), or the new one after the promotion (promoted).
  returned: state is check or promoted
  type: int
debian_unit:
  description: The systemd unit of the cluster when its cluster_name is Debian's (C(15/main)), else null.
  returned: state is check
  type: str
row_changes:
  description: Each table whose row count differs from O(row_counts_before), by how many rows.
  returned: state is check
  type: dict
discarded_text:
  description: What a recovery discards, in words.
  returned: state is check
  type: str
refusal:
  description: Why the recovery must not run as asked (empty when it may).
  returned: state is check
  type: str
restore_seconds:
  description: Seconds the delta restore took.
  returned: state is restore
  type: float
wal_copy:
  description: The folder the stopped server's C(pg_wal) was copied to.
  returned: state is restore
  type: str
wal_copy_bytes:
  description: Its size.
  returned: state is restore
  type: int
recovery_seconds:
  description: Seconds until the server answered out of recovery.
  returned: state is promoted
  type: float
repository:
  description:
    - The stanza as pgBackRest reports it (null when it could not be read), times in Unix seconds.
    - C(stanza), C(status_code) and C(status) (0, V(ok)), C(backups) (how many), C(newest) (by type V(full),
      V(diff) or V(incr), the newest backup meeting that type's schedule with its C(label), C(type), C(stop),
      C(age_seconds), C(bytes)), C(recoverable_since), C(repository_bytes), C(archive_min) and C(archive_max)
      (the archived WAL's first and last segment).
  returned: state is repository
  type: dict
problem:
  description: Why pgBackRest could not be read (empty when it was).
  returned: state is repository
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.intowork.pgops.plugins.module_utils._connection import (
    connection_spec,
    require_psycopg2,
    run_module,
)
from ansible_collections.intowork.pgops.plugins.module_utils._pitr_drill import PGBACKREST_SPEC
from ansible_collections.intowork.pgops.plugins.module_utils._pitr_restore import backup, check, info, promoted, restore

STEPS = {"backup": backup, "check": check, "repository": info, "restore": restore, "promoted": promoted}


def main():
    argument_spec = connection_spec()
    argument_spec.update(PGBACKREST_SPEC)
    argument_spec.update(
        state=dict(type="str", choices=sorted(STEPS), required=True),
        restore_point=dict(type="dict"),
        row_counts_before=dict(type="dict", default={}),
        catalog_file=dict(type="path"),
        other_databases=dict(type="list", elements="str", default=[]),
        discard_writes=dict(type="str", default=""),
        backup_label=dict(type="str"),
        keep_wal_as=dict(type="str"),
        timeout_seconds=dict(type="float", default=1800.0),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_if=[("state", "restore", ["backup_label", "keep_wal_as", "restore_point"]),
                                        ("state", "backup", ["restore_point"]), ("state", "check", ["restore_point"]),
                                        ("state", "promoted", ["restore_point"])])
    require_psycopg2(module)
    run_module(module, lambda params, check_mode: STEPS[params["state"]](params, check_mode))


if __name__ == "__main__":
    main()
