# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to intowork.pgops: not a public API, may change without notice.

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # How a module finds pgBackRest (plugins/module_utils/_pitr_drill.py PGBACKREST_SPEC), documented once.
    DOCUMENTATION = r"""
options:
  stanza:
    description: The pgBackRest stanza (the pgbackrest role's).
    type: str
    default: main
  config_file:
    description: pgBackRest's config file.
    type: path
    default: /etc/pgbackrest/pgbackrest.conf
  pgbackrest_bin:
    description: The pgbackrest program.
    type: path
    default: /usr/bin/pgbackrest
"""
