#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: report_files
short_description: Write a run's report files (JSON, Markdown, SQL) into a reports folder in one task
version_added: 0.1.0
description:
  - Creates O(path) (mode O(folder_mode)) and writes each of O(files) in it, in one task instead of one task per
    file and one for the folder (each a round trip, and a copy or template task is two).
  - Each file is written only when its content or mode differ, atomically (a temporary file in the same folder,
    then renamed), so a reader sees the old report or the whole new one.
  - The runbooks run it on the controller (delegated to C(localhost)), where their records are kept.
options:
  path:
    description: The reports folder; created with its parents when missing.
    type: path
    required: true
  files:
    description: The files, in the order written.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The file's name, without a folder.
        type: str
        required: true
      content:
        description:
          - What it holds, written as given; render JSON with C(to_nice_json) and Markdown with the C(template)
            lookup.
        type: str
        required: true
  mode:
    description: Mode of each file.
    type: str
    default: "0640"
  folder_mode:
    description: Mode of O(path).
    type: str
    default: "0750"
extends_documentation_fragment:
  - intowork.pgops._connection.ATTRIBUTES
attributes:
  check_mode:
    support: full
    details: Says what it would write and writes nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
author:
  - INTOWORK platform team (@intowork)
"""

EXAMPLES = r"""
- name: Keep the deployment record
  intowork.pgops.report_files:
    path: /var/lib/pgops/reports
    files:
      - name: deploy-20261207T0100-db1.json
        content: "{{ deploy_report | to_nice_json }}\n"
      - name: deploy-20261207T0100-db1.md
        content: "{{ lookup('ansible.builtin.template', 'deploy_report.md.j2') }}"
  delegate_to: localhost
"""

RETURN = r"""
paths:
  description: The full path of each file, by name.
  returned: always
  type: dict
  sample: {deploy-20261207T0100-db1.json: /var/lib/pgops/reports/deploy-20261207T0100-db1.json}
written:
  description: The paths created or changed, or that would be in check mode.
  returned: always
  type: list
  elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.intowork.pgops.plugins.module_utils._files import FileWriter


def octal(module, name):
    try:
        return int(module.params[name], 8)
    except ValueError:
        module.fail_json(msg="%s %r is not an octal mode: write it as a quoted string, for example \"0640\"; nothing "
                             "was written" % (name, module.params[name]))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            files=dict(type="list", elements="dict", required=True, options=dict(
                name=dict(type="str", required=True),
                content=dict(type="str", required=True),
            )),
            mode=dict(type="str", default="0640"),
            folder_mode=dict(type="str", default="0750"),
        ),
        supports_check_mode=True,
    )
    folder, files = module.params["path"], module.params["files"]
    mode, folder_mode = octal(module, "mode"), octal(module, "folder_mode")
    bad = [entry["name"] for entry in files if entry["name"] in ("", ".", "..") or "/" in entry["name"]]
    if bad:
        module.fail_json(msg="report file name(s) %s name a folder too: give plain file names, the folder is path; "
                             "nothing was written" % ", ".join(repr(name) for name in bad))
    paths = {entry["name"]: os.path.join(folder, entry["name"]) for entry in files}
    writer = FileWriter(module.check_mode)
    try:
        writer.folder(folder, folder_mode)
        for entry in files:
            writer.file(paths[entry["name"]], entry["content"], mode)
    except OSError as error:
        module.fail_json(msg="writing the reports in %s failed: %s" % (folder, error), written=writer.written)
    module.exit_json(changed=bool(writer.written), written=writer.written, paths=paths)


if __name__ == "__main__":
    main()
