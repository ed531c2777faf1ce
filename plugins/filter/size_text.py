# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: size_text
short_description: A byte count as people read it (kB, MB, GB, TB)
version_added: 0.1.0
description:
  - The same wording as the modules' messages - C(0 kB), C(12 kB), C(3.4 MB), C(1.2 GB); a negative count keeps
    its sign.
options:
  _input:
    description: A number of bytes.
    type: int
    required: true
author:
  - INTOWORK platform team (@intowork)
"""

EXAMPLES = r"""
- name: Say how large the backup is
  ansible.builtin.debug:
    msg: "{{ backup.size_bytes | intowork.pgops.size_text }}"
"""

RETURN = r"""
_value:
  description: The size, with its unit.
  type: str
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.intowork.pgops.plugins.module_utils._text import size_text as _size_text


def size_text(count):
    try:
        count = int(count)
    except (TypeError, ValueError):
        raise AnsibleFilterError("size_text: %r is not a number of bytes" % (count,))
    return ("-" if count < 0 else "") + _size_text(abs(count))


class FilterModule(object):
    def filters(self):
        return {"size_text": size_text}
