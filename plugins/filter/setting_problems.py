# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: setting_problems
short_description: What is wrong with a runbook's settings, before anything is changed
version_added: 0.1.0
description:
  - Checks each setting by its kind and returns one line per bad value, naming the variable, the value and
    the fix; an empty list when every value is good. Runbooks and roles check their whole input with it in
    one task, before their first change.
  - Each check is a list C([name, value, kind, ...]). Kinds
  - C(path) an absolute, normalised path (no C(..), C(.), doubled or trailing slash) without control
    characters or C(%) (a cron line reads C(%) as a newline); an optional 4th item says where, for example
    C(on the database host).
  - C(optional_path) the same, or empty for none.
  - C(number) a plain decimal number (no sign, no exponent) from the 4th to the 5th item (null for no upper
    bound); C(whole) likewise, a whole number.
  - C(name) an account, database or file name (letters, digits, C(_), C(.), C(-), not starting with C(-)).
  - C(mail) one mail address, or empty for none; nothing a mail header could read as a second header or
    a second address.
  - C(mails) a list of such addresses (empty for none).
  - C(url) an http or https URL with a host, without spaces or control characters, or empty for none.
  - C(choice) one of the values that follow the kind.
  - C(finding_levels) the levels of the deployment's catalog findings (followed by C(drift), of verify.yml's drift
    findings), a mapping of finding kind to V(fail), V(warn) or V(ignore), or to a mapping of object key (or
    V(default)) to one (see M(intowork.pgops.schema_snapshot)).
  - No kind accepts a line break anywhere, a trailing one included.
options:
  _input:
    description: The checks.
    type: list
    elements: list
    required: true
author:
  - INTOWORK platform team (@intowork)
"""

EXAMPLES = r"""
- name: Check the settings before anything is written
  ansible.builtin.assert:
    that: _problems | length == 0
    fail_msg: "Bad settings, nothing was changed: {{ _problems | join('; ') }}."
  vars:
    _problems: >-
      {{ [['pgops_backup_dir', pgops_backup_dir, 'path', 'on the database host'],
          ['pgops_lease_heartbeat_seconds', pgops_lease_heartbeat_seconds, 'number', 0.1, 600]]
         | intowork.pgops.setting_problems }}
"""

RETURN = r"""
_value:
  description: One line per bad value; empty when all are good.
  type: list
  elements: str
"""

import json
import posixpath
import re
from urllib.parse import urlsplit

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_text
from ansible_collections.intowork.pgops.plugins.module_utils._findings import DRIFT_KINDS, finding_level_problems

PLAIN_NUMBER = re.compile(r"^[0-9]+([.][0-9]+)?$")
WHOLE_NUMBER = re.compile(r"^[0-9]+$")
UNSAFE_IN_PATH = re.compile(r"[%\x00-\x1f\x7f]")
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
MAIL = re.compile(r"^[A-Za-z0-9.!#$&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
UNSAFE_IN_URL = re.compile(r"[\s\x00-\x1f\x7f]")


def matches(pattern, text):
    """The whole text matches: `$` alone would also let a trailing line break through."""
    return pattern.fullmatch(text) is not None


def url_problem(name, value):
    text = "" if value is None else to_text(value)
    if text == "":
        return None
    parts = urlsplit(text) if not UNSAFE_IN_URL.search(text) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        return "%s %s is not an http or https URL: give one like https://hooks.example.com/..., or empty for none" % (
            name, quoted(text))
    return None


def quoted(value):
    return json.dumps(to_text(value))


def path_problem(name, value, where=None):
    value = "" if value is None else to_text(value)
    if not value.startswith("/"):
        return "%s %s must be an absolute path%s" % (name, quoted(value), " " + where if where else "")
    if UNSAFE_IN_PATH.search(value):
        return "%s %s must be an absolute path without control characters or %%" % (name, quoted(value))
    normal = posixpath.normpath(value)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    if value != normal:
        return ('%s %s is not a normalised path: give it as %s, without "..", "." or doubled and trailing slashes'
                % (name, quoted(value), normal))
    return None


def number_problem(name, value, low, high, whole):
    text = to_text(value) if value is not None and not isinstance(value, bool) else ""
    pattern = WHOLE_NUMBER if whole else PLAIN_NUMBER
    if not matches(pattern, text) or float(text) < low or (high is not None and float(text) > high):
        bounds = "of at least %s" % low if high is None else "from %s to %s" % (low, high)
        return '%s must be a %s %s (got "%s")' % (
            name, "whole number" if whole else "number", bounds, "" if value is None else to_text(value))
    return None


def one_problem(check):
    if not isinstance(check, (list, tuple)) or len(check) < 3:
        raise AnsibleFilterError("setting_problems: each check is [name, value, kind, ...], got %r" % (check,))
    name, value, kind, args = check[0], check[1], check[2], list(check[3:])
    if kind in ("path", "optional_path"):
        if kind == "optional_path" and (value is None or to_text(value) == ""):
            return None
        return path_problem(name, value, args[0] if args else None)
    if kind in ("number", "whole"):
        low, high = (args[0] if args else 0), (args[1] if len(args) > 1 else None)
        return number_problem(name, value, low, high, kind == "whole")
    if kind == "name":
        if value is None or not matches(NAME, to_text(value)):
            return "%s %s is not a name: use letters, digits, _, . and -" % (name, quoted(value or ""))
        return None
    if kind == "mail":
        if value is None or to_text(value) == "" or matches(MAIL, to_text(value)):
            return None
        return "%s %s is not one mail address: give one address like ops@example.com, or empty for none" % (
            name, quoted(value))
    if kind == "mails":
        if value is None or value == "":
            return None
        if not isinstance(value, (list, tuple)):
            return '%s %s must be a list of mail addresses, like ["ops@example.com"]' % (name, quoted(value))
        for item in value:
            if item is None or to_text(item) == "" or not matches(MAIL, to_text(item)):
                return "%s: %s is not one mail address: give one address like ops@example.com per item" % (
                    name, quoted(item or ""))
        return None
    if kind == "url":
        return url_problem(name, value)
    if kind == "choice":
        if to_text(value) in [to_text(choice) for choice in args]:
            return None
        return "%s %s is not one of %s" % (name, quoted(value if value is not None else ""), ", ".join(args))
    if kind == "finding_levels":
        # "drift" after the kind: verify.yml's drift findings; else a deployment's catalog findings.
        problems = finding_level_problems(value, DRIFT_KINDS if args[:1] == ["drift"] else None)
        if not problems:
            return None
        return "%s: %s (see docs/your-project.md)" % (name, "; ".join(problems))
    raise AnsibleFilterError("setting_problems: unknown kind %r for %s" % (kind, name))


def setting_problems(checks):
    """One line per bad value among `checks`; empty when all are good."""
    return [problem for problem in (one_problem(check) for check in checks) if problem]


class FilterModule(object):
    def filters(self):
        return {"setting_problems": setting_problems}
