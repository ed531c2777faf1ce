#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: pitr_drill
short_description: Restore a pgBackRest stanza to a point in time into a scratch server, and measure RTO and RPO
version_added: 0.1.0
description:
  - With O(state=present), restores the cluster of stanza O(stanza) as it was at O(target_time) into the folder
    O(path) on the drill host, starts it there and waits for its first answered query. Never touches the
    primary's data folder or server.
  - Before anything is written it chooses the newest backup that ended before the target, and checks the free
    space of the folder that holds O(path) (the backup's size, a quarter more for the WAL replayed, and
    O(reserve_mb) left free).
  - With O(mark) it first commits an empty transaction on the primary, marks a restore point after it and waits
    until its WAL segment is archived, so that recovery has a commit after the target to stop at even when the
    application wrote nothing since. The login then needs EXECUTE on C(pg_create_restore_point(text)) and
    C(pg_switch_wal()) in O(maintenance_db).
  - The scratch server listens on no TCP port, only on a socket in O(path) that no other account can reach;
    archiving is off (nothing of it reaches the repository), C(hot_standby) off (it answers only once recovery
    is over). It runs as the account the module runs as, which must be able to read the repository (pgBackRest's
    own account).
  - Proves that recovery stopped at the target (PostgreSQL's C(recovery stopping before) line) and not at the end
    of the archive, then leaves the server running for checks (M(intowork.pgops.integrity_check) through
    RV(socket_directory) and RV(scratch_port)). O(state=absent) stops it and removes O(path); a failed O(state=present)
    removes it itself.
  - RTO is the time from the restore's start to the first answered query; RPO is the target against the commit
    time of the last transaction recovered.
options:
  state:
    description: V(present) restores and starts the scratch server; V(absent) stops it and removes O(path).
    type: str
    choices: [present, absent]
    default: present
  path:
    description:
      - The drill's own folder, created 0700 (it must not exist yet) in a folder that does. Removed only when it
        holds the drill's marker file, so a wrong path removes nothing.
    type: path
    required: true
  target_time:
    description:
      - The time to recover to, with its offset (V(2026-12-07 14:30:00+00)). Empty takes O(target_age_seconds)
        before now.
    type: str
    default: ""
  target_age_seconds:
    description: How long ago the target is when O(target_time) is empty.
    type: int
    default: 300
  scratch_database:
    description: The database the first query and the row counts read on the scratch server.
    type: str
  scratch_user:
    description: The role that connects to the scratch server (a role of the restored cluster).
    type: str
    default: postgres
  scratch_port:
    description: The scratch server's port; it names its socket only, no TCP port is opened.
    type: int
    default: 5499
  pg_bin_dir:
    description:
      - Folder of pg_ctl for the restored cluster's major version; empty reads the version from the restored
        data folder and takes Debian's C(/usr/lib/postgresql/<major>/bin).
    type: path
    default: ""
  shared_buffers:
    description: The scratch server's shared_buffers (the primary's could exceed the drill host's memory).
    type: str
    default: 128MB
  reserve_mb:
    description: Space, in MB, that must stay free beside the restored copy.
    type: int
    default: 1024
  timeout_seconds:
    description: Seconds from the restore's start to wait for the first answered query.
    type: float
    default: 1800
  rto_target_seconds:
    description: The RTO target the one-line RV(summary) holds the drill's RTO against (the module does not fail on it).
    type: float
  mark:
    description: Commit and mark a restore point on the primary first, archived (see the description).
    type: bool
    default: true
  wait_archived_seconds:
    description: Seconds to wait for the mark's WAL segment to be archived.
    type: float
    default: 120
  poll_interval:
    description: Seconds between two readings of C(pg_stat_archiver) while waiting for the mark.
    type: float
    default: 0.2
  maintenance_db:
    description: The database the mark is made from.
    type: str
    default: postgres
extends_documentation_fragment:
  - intowork.pgops._connection
  - intowork.pgops._pgbackrest
  - intowork.pgops._connection.ATTRIBUTES
attributes:
  check_mode:
    support: full
    details: Chooses the backup and checks the free space; marks, restores and starts nothing.
  diff_mode:
    support: none
  idempotent:
    support: partial
    details: Every V(present) run restores anew; V(absent) changes nothing when O(path) is gone.
notes:
  - The connection options name the primary, for the mark only.
author:
  - INTOWORK platform team (@intowork)
"""

EXAMPLES = r"""
- name: Restore stanza main as it was five minutes ago into a scratch server
  intowork.pgops.pitr_drill:
    path: /var/lib/postgresql/pgops-drills/main-20261207T1430
    stanza: main
    scratch_database: appdb
  become: true
  become_user: postgres
  register: drill

- name: Stop the scratch server and remove its folder
  intowork.pgops.pitr_drill:
    path: /var/lib/postgresql/pgops-drills/main-20261207T1430
    state: absent
  become: true
  become_user: postgres
"""

RETURN = r"""
folder:
  description: The drill's folder (O(path)).
  returned: always
  type: str
target_time:
  description: The recovery target, UTC.
  returned: state is present
  type: str
backup:
  description: The backup restored (label, type, size in bytes, stopped_at).
  returned: state is present
  type: dict
free_bytes:
  description: Free space in the folder holding O(path) before the restore.
  returned: state is present
  type: int
needed_bytes:
  description: The space the check asked for.
  returned: state is present
  type: int
mark:
  description: The restore point marked on the primary (name, lsn, wal_file), or null.
  returned: state is present
  type: dict
restore_seconds:
  description: Seconds pgbackrest restore took.
  returned: success and not check mode
  type: float
recovery_seconds:
  description: Seconds from the server's start to its first answered query (WAL replayed, promoted).
  returned: success and not check mode
  type: float
rto_seconds:
  description: Seconds from the restore's start to the first answered query.
  returned: success and not check mode
  type: float
recovery_stop:
  description: PostgreSQL's line naming the transaction recovery stopped before.
  returned: success and not check mode
  type: str
last_transaction_time:
  description: Commit time of the last transaction recovered (null when none was replayed).
  returned: success and not check mode
  type: str
rpo_seconds:
  description: The target minus the last recovered transaction's commit time.
  returned: success and not check mode
  type: float
row_counts:
  description: Rows of every table of O(scratch_database) in the restored copy (schema.table), counted in one snapshot.
  returned: success and not check mode
  type: dict
socket_directory:
  description: The scratch server's socket folder (a login_host for checks run as the same account).
  returned: success and not check mode
  type: str
scratch_port:
  description: The scratch server's port (its socket's name).
  returned: success and not check mode
  type: int
timeline:
  description: The scratch server's timeline after its promotion.
  returned: success and not check mode
  type: int
summary:
  description: The drill in one line (backup, recovery, RTO against O(rto_target_seconds), RPO, rows).
  returned: success and not check mode, with O(rto_target_seconds)
  type: str
stopped:
  description: Whether O(state=absent) stopped a running server.
  returned: state is absent
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.intowork.pgops.plugins.module_utils._connection import (
    connection_spec,
    require_psycopg2,
    run_module,
)
from ansible_collections.intowork.pgops.plugins.module_utils._pitr_drill import PGBACKREST_SPEC, drill


def main():
    argument_spec = connection_spec()
    argument_spec.update(PGBACKREST_SPEC)
    argument_spec.update(
        state=dict(type="str", choices=["present", "absent"], default="present"),
        path=dict(type="path", required=True),
        target_time=dict(type="str", default=""),
        target_age_seconds=dict(type="int", default=300),
        scratch_database=dict(type="str"),
        scratch_user=dict(type="str", default="postgres"),
        scratch_port=dict(type="int", default=5499),
        pg_bin_dir=dict(type="path", default=""),
        shared_buffers=dict(type="str", default="128MB"),
        reserve_mb=dict(type="int", default=1024),
        timeout_seconds=dict(type="float", default=1800.0),
        mark=dict(type="bool", default=True),
        wait_archived_seconds=dict(type="float", default=120.0),
        poll_interval=dict(type="float", default=0.2),
        maintenance_db=dict(type="str", default="postgres"),
        rto_target_seconds=dict(type="float"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_if=[("state", "present", ["scratch_database"])])
    require_psycopg2(module)
    run_module(module, drill)


if __name__ == "__main__":
    main()
