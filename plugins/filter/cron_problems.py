# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: cron_problems
short_description: What is wrong with a cron schedule, before it is written into a cron file
version_added: 0.1.0
description:
  - Checks a schedule as cron reads it, five fields (minute, hour, day of month, month, day of week) or a
    keyword (C(@daily), C(@hourly), C(@weekly), C(@monthly), C(@yearly), C(@annually), C(@midnight), C(@reboot)).
  - A field is C(*), a number, a name (C(jan)..C(dec), C(sun)..C(sat), any case), a range (C(1-5), C(mon-fri)),
    any of these with a step (C(*/15), C(0-30/10)), or a comma-separated list of them; day of week 7 is Sunday.
  - Returns one line per problem, naming the bad part and what the field allows; an empty list when cron
    would run it as meant. A schedule spanning lines (it would add a cron line of its own) is a problem.
options:
  _input:
    description: The schedule.
    type: str
    required: true
author:
  - INTOWORK platform team (@intowork)
"""

EXAMPLES = r"""
- name: Refuse a bad schedule before anything is written
  ansible.builtin.assert:
    that: (job.schedule | intowork.pgops.cron_problems) | length == 0
    fail_msg: "{{ job.schedule | intowork.pgops.cron_problems | join('; ') }}"
"""

RETURN = r"""
_value:
  description: One line per problem; empty when the schedule is valid.
  type: list
  elements: str
"""

KEYWORDS = ("@reboot", "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
MONTHS = dict((name, number) for number, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1))
DAYS = dict((name, number) for number, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat")))
FIELDS = (("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}), ("month", 1, 12, MONTHS),
          ("day of week", 0, 7, DAYS))


def _value(text, low, high, names):
    """The number `text` stands for in this field, or None."""
    if text.isdigit():
        number = int(text)
        return number if low <= number <= high else None
    return names.get(text.lower())


def _item_problem(item, name, low, high, names):
    allowed = "%d-%d%s" % (low, high, (" or " + "/".join(sorted(names, key=names.get))) if names else "")
    base, slash, step = item.partition("/")
    if slash and not (step.isdigit() and int(step) > 0):
        return "%s %r: the step after / must be a whole number above 0" % (name, item)
    if base == "*":
        return None
    start, dash, end = base.partition("-")
    first = _value(start, low, high, names)
    last = _value(end, low, high, names) if dash else first
    if first is None or last is None:
        return "%s %r: each value must be * or %s" % (name, item, allowed)
    if dash and first > last:
        return "%s %r: a range runs from low to high" % (name, item)
    if slash and not dash:
        return "%s %r: a step needs * or a range before it (%s)" % (name, item, "*/" + step)
    return None


def cron_problems(schedule):
    text = "" if schedule is None else str(schedule)
    if "\n" in text or "\r" in text:
        return ["schedule %r spans lines: it would add a cron line of its own" % text]
    text = text.strip()
    if text.startswith("@"):
        return [] if text.lower() in KEYWORDS else ["schedule %r: not a cron keyword (%s)" % (text, ", ".join(KEYWORDS))]
    fields = text.split()
    if len(fields) != 5:
        return ["schedule %r has %d field(s): cron needs 5 (minute hour day-of-month month day-of-week), or a keyword "
                "such as @daily" % (text, len(fields))]
    problems = []
    for value, (name, low, high, names) in zip(fields, FIELDS):
        for item in value.split(","):
            problem = _item_problem(item, name, low, high, names) if item else "%s %r: an empty list item" % (name, value)
            if problem:
                problems.append(problem)
    return problems


class FilterModule(object):
    def filters(self):
        return {"cron_problems": cron_problems}
