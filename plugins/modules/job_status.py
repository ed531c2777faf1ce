#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: job_status
short_description: Wait for a job started with async, printing its progress
version_added: 0.1.0
description:
  - Like M(ansible.builtin.async_status), for a job started with C(async) and C(poll=0); used with C(until) to wait
    for it. Each call looks at the job for up to O(wait) seconds (every quarter second at first, each look one
    shell command), so a short job is seen as soon as it ends and a long one costs one line and a few round trips
    per call.
  - "While the job runs, it reads O(progress_file) (JSON with C(phase), C(bytes), C(elapsed_seconds)) and prints one
    line, for example C(db1: backup of appdb: dumping, 1.2 GB written, 3 min 20 s so far)."
  - When the job has finished, the result is the job's own and the job's result file on the host is removed.
  - Runs as an action on the controller; the job's files are read on the host, as the task's become user.
options:
  jid:
    description: The job id (C(ansible_job_id) of the task that started it).
    type: str
    required: true
  progress_file:
    description: The job's progress file on the host. Not given, or not written yet, no progress line is printed.
    type: str
  label:
    description: What the job is, in the progress line.
    type: str
    default: the job
  wait:
    description: Seconds to look at the job in one call before returning while it still runs.
    type: int
    default: 10
extends_documentation_fragment:
  - intowork.pgops._connection.ATTRIBUTES
attributes:
  check_mode:
    support: full
    details: It only reads.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: It reads the job's state; the result file is removed only once the job has finished.
author:
  - INTOWORK platform team (@intowork)
"""

EXAMPLES = r"""
- name: Start a long step as a job
  intowork.pgops.backup_program:
    program: /usr/local/lib/pgops/pgops_backup.py
    config: /etc/pgops/backup-appdb.json
    command: backup
    args: ["--progress-file=/var/backups/pgops/appdb/.pgops-progress.json"]
  async: 43200
  poll: 0
  register: backup_job

- name: Wait for it, one progress line every 10 s
  intowork.pgops.job_status:
    jid: "{{ backup_job.ansible_job_id }}"
    progress_file: /var/backups/pgops/appdb/.pgops-progress.json
    label: backup of appdb
  register: backup_done
  until: backup_done is finished
  retries: 4320
  delay: 0
"""

RETURN = r"""
finished:
  description: Whether the job has ended (then the rest of the result is the job's).
  returned: always
  type: bool
started:
  description: Whether the job was found.
  returned: always
  type: bool
progress:
  description: The progress line printed, while the job runs.
  returned: while the job runs and its progress file can be read
  type: str
  sample: dumping, 1.2 GB written, 3 min 20 s so far
"""
