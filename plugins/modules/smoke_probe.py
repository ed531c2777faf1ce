#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: smoke_probe
short_description: Walk through the application's main writes and reads in a transaction that is rolled back
version_added: 0.1.0
description:
  - Runs named SQL steps, in order, in one transaction that is always rolled back, so the application's
    own path (post a job, apply to it, read the dashboard) is proven to work after a deployment and
    nothing of it stays.
  - The first row a step returns becomes parameters of the steps after it (C(RETURNING id AS job_id)
    lets a later step use C(%(job_id\)s)); values always travel as query parameters.
  - Connect as the application's role (O(login_user), or O(session_role)) so its privileges are proven too.
  - A step that fails, returns fewer rows than its C(min_rows), or runs longer than O(statement_timeout)
    fails the task, naming the step.
options:
  probes:
    description: Steps to run. Mutually exclusive with O(probes_file).
    type: list
    elements: dict
    suboptions:
      name:
        description: Name for the report.
        type: str
        required: true
      sql:
        description: One SQL statement, with C(%(name\)s) placeholders for parameters.
        type: str
        required: true
      params:
        description: Parameters of this step, besides those earlier steps returned.
        type: dict
        default: {}
      min_rows:
        description: Fewest rows the step must return (or change).
        type: int
        default: 0
  probes_file:
    description: YAML file with a C(probes) list of the same form. Mutually exclusive with O(probes).
    type: path
  statement_timeout:
    description: Milliseconds each step may run.
    type: int
    default: 5000
extends_documentation_fragment:
  - intowork.pgops._connection
  - intowork.pgops._connection.ATTRIBUTES
attributes:
  check_mode:
    support: full
    details: The steps run in check mode too; they are rolled back either way.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: Nothing is ever committed.
author:
  - INTOWORK platform team (@intowork)
"""

EXAMPLES = r"""
- name: Post a job, apply to it and read the dashboard, as the application, then roll it all back
  intowork.pgops.smoke_probe:
    probes_file: /srv/intowork/current/smoke_probes.yml
    login_user: intowork_app
    login_password: "{{ vault_app_password }}"

- name: One probe, inline
  intowork.pgops.smoke_probe:
    probes:
      - name: newest published jobs
        sql: SELECT id FROM jobs WHERE status = 'published' ORDER BY posted_at DESC LIMIT 20
        min_rows: 1
"""

RETURN = r"""
probes:
  description: Each step with its time and row count.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Step name.
      type: str
    ms:
      description: Milliseconds the step took, at the client.
      type: float
    rows:
      description: Rows it returned or changed.
      type: int
user:
  description: The role the steps ran as.
  returned: always
  type: str
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.intowork.pgops.plugins.module_utils._connection import (
    PgopsError,
    connect,
    connection_spec,
    one_line,
    psycopg2,
    require_psycopg2,
    run_module,
)
from ansible_collections.intowork.pgops.plugins.module_utils._spec_file import load_yaml_mapping


def load_probes(params):
    if params["probes_file"]:
        probes = load_yaml_mapping(params["probes_file"], "probes_file").get("probes")
        if not isinstance(probes, list) or not probes:
            raise PgopsError("probes_file %s must hold a non-empty 'probes' list" % params["probes_file"])
    else:
        probes = params["probes"] or []
    if not probes:
        raise PgopsError("no probes: give probes or probes_file")
    for index, probe in enumerate(probes):
        if not isinstance(probe, dict) or not probe.get("name") or not probe.get("sql"):
            raise PgopsError("probe #%d needs a name and sql" % (index + 1))
    return probes


def probe(params, check_mode):
    probes = load_probes(params)
    conn = connect(params)
    results = []
    try:
        cur = conn.cursor()
        cur.execute("SELECT current_user")
        user = cur.fetchone()[0]
        cur.execute("SELECT set_config('statement_timeout', %s, true)", (str(params["statement_timeout"]),))
        carried = {}
        for step in probes:
            values = dict(carried, **(step.get("params") or {}))
            started = time.monotonic()
            try:
                cur.execute(step["sql"], values)
            except psycopg2.Error as error:
                raise PgopsError("smoke probe %r failed as %s: %s (all of it rolled back)" % (
                    step["name"], user, one_line(error)))
            except KeyError as error:
                raise PgopsError("smoke probe %r uses parameter %s, which no earlier step returned and params "
                                 "does not give" % (step["name"], error))
            row = cur.fetchone() if cur.description else None
            if row is not None:
                carried.update(zip([column.name for column in cur.description], row))
            rows = cur.rowcount
            results.append({"name": step["name"], "ms": round((time.monotonic() - started) * 1000, 2), "rows": rows})
            if rows < int(step.get("min_rows", 0)):
                raise PgopsError("smoke probe %r returned %d row(s), expected at least %s (all of it rolled back)" % (
                    step["name"], rows, step["min_rows"]))
    finally:
        conn.rollback()
        conn.close()
    return {"changed": False, "probes": results, "user": user}


def main():
    argument_spec = connection_spec()
    argument_spec.update(
        probes=dict(type="list", elements="dict", options=dict(
            name=dict(type="str", required=True),
            sql=dict(type="str", required=True),
            params=dict(type="dict", default={}),
            min_rows=dict(type="int", default=0),
        )),
        probes_file=dict(type="path"),
        statement_timeout=dict(type="int", default=5000),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           mutually_exclusive=[("probes", "probes_file")],
                           required_one_of=[("probes", "probes_file")])
    require_psycopg2(module)
    run_module(module, probe)


if __name__ == "__main__":
    main()
