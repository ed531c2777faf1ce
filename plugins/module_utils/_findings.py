# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to intowork.pgops: not a public API, may change without notice.
"""The kinds of finding a deployment's catalog check makes, their default levels, and the check of an inventory's
levels. Plain Python, no imports: the settings filter checks the inventory with it before anything changes."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

# What a deployment can do to what was there, and how much each matters by default: "fail" for what breaks the
# application, "warn" for waste or a step a team takes on purpose (a constraint added NOT VALID, validated in a later
# revision). An inventory tightens or loosens each kind, per object too (judge_findings).
FINDING_LEVELS = ("fail", "warn", "ignore")
FINDING_KINDS = {
    "privilege_lost": "fail",       # a grant gone from an object that is still there
    "owner_changed": "fail",
    "index_invalid": "fail",        # an index not valid (a concurrent build that failed)
    "constraint_invalidated": "fail",  # a constraint that was validated, now NOT VALID
    "extension_gone": "fail",
    "rows_lost": "fail",            # fewer rows in a table that is still there
    "index_duplicate": "warn",      # a new index with the definition of another: waste, not breakage
    "constraint_not_valid": "warn",  # a new constraint added NOT VALID: existing rows not checked yet
}
# What verify.yml finds changed since the baseline catalog (the last deployment's, or one recorded): drift.
DRIFT_KINDS = {
    "object_gone": "fail",          # a table, key, foreign key, index, trigger, policy, function, type ... gone
    "object_added": "warn",         # an object the baseline did not have (a hand-made index, say)
    "column_changed": "fail",       # a column gone, or its type, NOT NULL, default, identity changed
    "column_added": "warn",
    "constraint_changed": "fail",   # its definition: columns, action, deferrability
    "index_changed": "fail",        # its definition: unique, columns, predicate
    "trigger_disabled": "fail",
    "matview_unpopulated": "fail",  # reads fail until it is refreshed
    "row_security_off": "fail",
    "privilege_added": "warn",      # a grant the baseline did not have
    "definition_changed": "fail",   # a view's, function's, type's, sequence's, trigger's or policy's definition
    "constraint_invalidated": "fail",
    "index_invalid": "fail",
    "privilege_lost": "fail",
    "owner_changed": "fail",
}


def finding_level_problems(levels, kinds=None):
    """One line per bad entry of an inventory's finding levels ({kind: level} or {kind: {object key or
    "default": level}}) of `kinds` (a deployment's, by default); [] when every entry is good."""
    kinds = FINDING_KINDS if kinds is None else kinds
    if not levels:
        return []
    if not isinstance(levels, dict):
        return ["%r is not a mapping of finding kind to fail, warn or ignore" % (levels,)]
    problems = []
    for kind, level in sorted(levels.items()):
        if kind not in kinds:
            problems.append("finding kind %r is not one of %s" % (kind, ", ".join(sorted(kinds))))
            continue
        for target, value in sorted(level.items() if isinstance(level, dict) else [("default", level)]):
            if value not in FINDING_LEVELS:
                problems.append("%s %s: level %r is not one of fail, warn, ignore" % (kind, target, value))
    return problems
