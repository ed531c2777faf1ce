#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: replication_wait
short_description: Wait until every standby has replayed the primary's latest change
version_added: 0.3.0
description:
  - Reads the primary's current WAL position, then polls C(pg_stat_replication) until every standby streaming
    from it has replayed that position (so a migration's revision is visible there), for at most O(timeout)
    seconds.
  - Fails naming each standby still behind, and how far, when the time is up; or when fewer than
    O(min_standbys) standbys stream. With no standby (and O(min_standbys=0)) it returns at once.
  - Read-only; the login needs C(pg_read_all_stats) (or C(pg_monitor)) to see the replication senders.
options:
  timeout:
    description: Seconds to wait for the standbys.
    type: float
    default: 300
  poll_interval:
    description: Seconds between two readings.
    type: float
    default: 0.5
  min_standbys:
    description: Fewer standbys streaming than this fails at once.
    type: int
    default: 0
extends_documentation_fragment:
  - intowork.pgops._connection
  - intowork.pgops._connection.ATTRIBUTES
attributes:
  check_mode:
    support: full
    details: Read-only; check mode reads the standbys once and does not wait.
  diff_mode:
    support: none
  idempotent:
    support: full
author:
  - INTOWORK platform team (@intowork)
"""

EXAMPLES = r"""
- name: Wait until the standbys have the new revision
  intowork.pgops.replication_wait:
    timeout: 120
    min_standbys: 1
"""

RETURN = r"""
target_lsn:
  description: The primary's WAL position when the wait began.
  returned: always
  type: str
waited_seconds:
  description: How long the standbys took to replay RV(target_lsn).
  returned: always
  type: float
standbys:
  description: Each standby at the end (name, client, state, sync_state, lag_bytes, replay_lag_seconds, replayed).
  returned: always
  type: list
  elements: dict
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.intowork.pgops.plugins.module_utils._connection import (
    PgopsError,
    connect,
    connection_spec,
    require_psycopg2,
    run_module,
    target_label,
)
from ansible_collections.intowork.pgops.plugins.module_utils._replication import (
    current_lsn,
    in_recovery,
    read_standbys,
)
from ansible_collections.intowork.pgops.plugins.module_utils._text import size_text


def wait(params, check_mode):
    for name in ("timeout", "poll_interval"):
        if params[name] <= 0:
            raise PgopsError("%s must be more than 0 seconds, got %s; nothing was read" % (name, params[name]))
    conn = connect(params, autocommit=True)
    try:
        with conn.cursor() as cur:
            if in_recovery(cur):
                raise PgopsError("%s is a standby: point this at the primary" % target_label(params))
            target = current_lsn(cur)
            started = time.monotonic()
            while True:
                standbys = read_standbys(cur, target)
                waited = round(time.monotonic() - started, 3)
                if len(standbys) < params["min_standbys"]:
                    raise PgopsError("%d standby(s) stream from the primary, at least %d expected: start the "
                                     "missing one(s)" % (len(standbys), params["min_standbys"]))
                behind = [s for s in standbys if not s["replayed"]]
                if not behind or check_mode:
                    break
                if waited >= params["timeout"]:
                    return {"changed": False, "failed": True, "target_lsn": target, "waited_seconds": waited,
                            "standbys": standbys,
                            "msg": "after %s s, %s not replayed the primary's position %s: %s" % (
                                params["timeout"],
                                "a standby has" if len(behind) == 1 else "%d standbys have" % len(behind), target,
                                "; ".join("%s %s behind (%s)" % (s["name"] or s["client"], size_text(s["lag_bytes"]),
                                                                 s["state"]) for s in behind))}
                time.sleep(params["poll_interval"])
    finally:
        conn.close()
    return {"changed": False, "target_lsn": target, "waited_seconds": waited, "standbys": standbys}


def main():
    argument_spec = connection_spec()
    argument_spec.update(
        timeout=dict(type="float", default=300),
        poll_interval=dict(type="float", default=0.5),
        min_standbys=dict(type="int", default=0),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    require_psycopg2(module)
    run_module(module, wait)


if __name__ == "__main__":
    main()
