#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: restore_point
short_description: Make a named restore point and prove the WAL that holds it is archived
version_added: 0.1.0
description:
  - Creates a restore point named O(name) (C(pg_create_restore_point)), closes the WAL segment that holds it
    (C(pg_switch_wal)), and waits until C(pg_stat_archiver) has archived that segment, for at most
    O(wait_archived_seconds). A point-in-time recovery can then stop exactly there (C(recovery_target_name)),
    from the archive alone.
  - Fails, naming the segment, the last one archived and the last failure, when the segment is not archived in
    time; also on a standby or with C(archive_mode) off.
  - The login needs EXECUTE on C(pg_create_restore_point(text)) and C(pg_switch_wal()) in O(maintenance_db) (a
    superuser has it; docs/sql/least-privilege.sql grants it to the deploy role there).
options:
  name:
    description: The restore point's name (a deployment's id, for example).
    type: str
    required: true
  wait_archived_seconds:
    description: Seconds to wait for the segment to be archived.
    type: float
    default: 120
  poll_interval:
    description: Seconds between two readings of C(pg_stat_archiver).
    type: float
    default: 0.2
  maintenance_db:
    description:
      - The database the module connects to instead of O(login_db). A restore point is the whole cluster's; the
        grant it needs is kept in the maintenance database, out of the application database's dumps.
    type: str
    default: postgres
extends_documentation_fragment:
  - intowork.pgops._connection
  - intowork.pgops._connection.ATTRIBUTES
attributes:
  check_mode:
    support: full
    details: Checks that archiving is on and makes nothing.
  diff_mode:
    support: none
  idempotent:
    support: none
    details: Every run makes a new restore point.
author:
  - INTOWORK platform team (@intowork)
"""

EXAMPLES = r"""
- name: Mark the instant writes went off, and wait until it is archived
  intowork.pgops.restore_point:
    name: "{{ deployment_id }}"
    wait_archived_seconds: 60
  register: restore_point
"""

RETURN = r"""
name:
  description: The restore point's name.
  returned: always
  type: str
lsn:
  description: Its WAL position (null in check mode).
  returned: always
  type: str
wal_file:
  description: The WAL segment that holds it, now archived (null in check mode).
  returned: always
  type: str
archived_seconds:
  description: Seconds from the restore point until its segment was archived.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.intowork.pgops.plugins.module_utils._connection import (
    connection_spec,
    require_psycopg2,
    run_module,
)
from ansible_collections.intowork.pgops.plugins.module_utils._restore_point import create


def main():
    argument_spec = connection_spec()
    argument_spec.update(
        name=dict(type="str", required=True),
        wait_archived_seconds=dict(type="float", default=120.0),
        poll_interval=dict(type="float", default=0.2),
        maintenance_db=dict(type="str", default="postgres"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    require_psycopg2(module)
    run_module(module, create)


if __name__ == "__main__":
    main()
