# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: health_trend
short_description: Compare a health report with the earlier ones - growth, and when the disk fills
version_added: 0.1.0
description:
  - Takes the facts of intowork.pgops.health_check and the earlier reports of the same database, and returns
    the growth of each table and index since the previous report, the database size over time, the growth
    rate (least squares over the reports of the last O(window_days), once they span O(min_span_days)), how much
    of the growth is dead rows (which vacuum reclaims), and the days until the data directory's file system is
    full at that rate.
  - Adds a finding when the disk fills within O(warn_days).
  - Names the findings new since the previous report and those resolved since (by check and subject).
  - Adds a finding for each statement whose mean time over the period since the previous report is at least
    O(regression_ratio) times its mean over the period before (the two reports before), with at least
    O(regression_min_calls) calls in each period and a mean of at least O(regression_min_ms) now. Maintenance
    statements (schema changes, loads, the report's own) are left out.
options:
  _input:
    description: The current facts (a health_check result).
    type: dict
    required: true
  history:
    description: Earlier reports (dicts with at least C(taken), C(database) and C(tables)), in any order.
    type: list
    elements: dict
    required: true
  window_days:
    description: Reports older than this many days do not count toward the growth rate.
    type: int
    default: 28
  warn_days:
    description: A disk that fills within this many days is a finding.
    type: int
    default: 90
  min_span_days:
    description:
      - The growth rate needs reports spanning at least this many days; before, it is not projected (reports
        minutes apart measure a load or a batch, not growth).
    type: int
    default: 7
  regression_ratio:
    description: A statement's mean time up by at least this factor from one period to the next is a finding.
    type: float
    default: 2.0
  regression_min_calls:
    description: Calls a statement needs in each of the two periods for its means to be compared.
    type: int
    default: 50
  regression_min_ms:
    description: A regression is a finding only from this mean time on (milliseconds), not microseconds doubling.
    type: float
    default: 1.0
author:
  - INTOWORK platform team (@intowork)
"""

EXAMPLES = r"""
- name: Compare with the earlier reports
  ansible.builtin.set_fact:
    trend: "{{ health | intowork.pgops.health_trend(previous_reports) }}"
"""

RETURN = r"""
_value:
  description: >-
    previous_taken, series (taken, size_bytes, tables), table_growth and index_growth (name, bytes,
    previous_bytes, delta_bytes), span_days, bytes_per_day (null until the reports span min_span_days),
    dead_bytes and dead_bytes_delta (the estimated bytes of dead rows now, and their change since the previous
    report), projection (why there is none, or the days), days_until_full, new_findings and resolved_findings
    (lines of the current and the previous report, null without a previous one), regressions (queryid, role,
    calls, mean_ms, previous_calls, previous_mean_ms, ratio, query), problems and findings.
  type: dict
"""

import calendar
import time

from ansible.errors import AnsibleFilterError
from ansible_collections.intowork.pgops.plugins.module_utils._health import statement_delta


def _epoch(stamp):
    try:
        return calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
    except (TypeError, ValueError):
        raise AnsibleFilterError("health_trend: report time %r is not YYYY-MM-DDTHH:MM:SS" % (stamp,))


def _growth(current, previous, key):
    before = dict((item["name"], item[key]) for item in previous or [])
    rows = []
    for item in current:
        old = before.get(item["name"])
        rows.append({"name": item["name"], "bytes": item[key], "previous_bytes": old,
                     "delta_bytes": None if old is None else item[key] - old})
    return rows


def _rate(points):
    """Least-squares slope of (seconds, bytes), in bytes per day; None with fewer than two points."""
    if len(points) < 2:
        return None
    n = float(len(points))
    mean_x = sum(point[0] for point in points) / n
    mean_y = sum(point[1] for point in points) / n
    spread = sum((point[0] - mean_x) ** 2 for point in points)
    if spread == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread * 86400


def _dead_bytes(report):
    """Estimated bytes of dead rows: each table's heap in the share of its rows that are dead."""
    total = 0
    for table in report.get("tables", []):
        rows = (table.get("live_rows") or 0) + (table.get("dead_rows") or 0)
        if rows:
            total += (table.get("table_bytes") or 0) * (table.get("dead_rows") or 0) / float(rows)
    return int(total)


def _line(problem):
    return "%s (threshold: %s)" % (problem["detail"], problem["threshold"]) if problem.get("threshold") \
        else problem["detail"]


def _changes(current_problems, previous):
    """(new, resolved): the lines of findings the previous report did not have, and of those it had that are gone;
    a finding is its check and subject (its numbers change from week to week)."""
    before = (previous.get("problems") or []) + ((previous.get("trend") or {}).get("problems") or [])
    keys_before = set((p.get("check"), p.get("subject")) for p in before)
    keys_now = set((p.get("check"), p.get("subject")) for p in current_problems)
    return ([_line(p) for p in current_problems if (p.get("check"), p.get("subject")) not in keys_before],
            [_line(p) for p in before if (p.get("check"), p.get("subject")) not in keys_now])


def _period(later, earlier):
    """{(queryid, role): the statement over the period between two reports}, maintenance statements left out."""
    if later.get("statements") is None or earlier.get("statements") is None:
        return {}
    return dict(((s["queryid"], s.get("role")), s) for s in statement_delta(
        later["statements"], earlier["statements"], earlier.get("statements_reset"), later.get("statements_reset"))
        if not s.get("maintenance") and s["calls"] > 0)


def _regressions(current, reports, ratio, min_calls, min_ms):
    if len(reports) < 2:
        return []
    now, before = _period(current, reports[-1]), _period(reports[-1], reports[-2])
    found = []
    for key, statement in sorted(now.items()):
        old = before.get(key)
        if (old is None or statement["calls"] < min_calls or old["calls"] < min_calls or statement["mean_ms"] < min_ms
                or statement["mean_ms"] < ratio * max(old["mean_ms"], 0.001)):
            continue
        found.append({"queryid": key[0], "role": key[1], "calls": statement["calls"], "mean_ms": statement["mean_ms"],
                      "previous_calls": old["calls"], "previous_mean_ms": old["mean_ms"],
                      "ratio": round(statement["mean_ms"] / max(old["mean_ms"], 0.001), 1),
                      "query": statement["query"]})
    return sorted(found, key=lambda item: -item["ratio"])


def health_trend(current, history, window_days=28, warn_days=90, min_span_days=7, regression_ratio=2.0,
                 regression_min_calls=50, regression_min_ms=1.0):
    if not isinstance(current, dict) or "taken" not in current:
        raise AnsibleFilterError("health_trend: the input must be a health_check result")
    reports = sorted((r for r in history or [] if isinstance(r, dict) and r.get("taken") and
                      r.get("taken") != current["taken"]), key=lambda r: _epoch(r["taken"]))
    previous = reports[-1] if reports else {}
    series = [{"taken": r["taken"], "size_bytes": r["database"]["size_bytes"],
               "tables": dict((t["name"], t["total_bytes"]) for t in r.get("tables", []))}
              for r in reports + [current]]
    now = _epoch(current["taken"])
    points = [(_epoch(s["taken"]), s["size_bytes"]) for s in series if now - _epoch(s["taken"]) <= window_days * 86400]
    span_days = (points[-1][0] - points[0][0]) / 86400.0 if points else 0.0
    rate = _rate(points) if span_days >= min_span_days else None
    dead = _dead_bytes(current)
    dead_delta = dead - _dead_bytes(previous) if previous else None
    disk = current.get("disk") or {}
    days = None
    problems = []
    if len(points) < 2:
        projection = "needs two reports"
    elif span_days < min_span_days:
        projection = "not projected: the reports span %.1f days, and a projection needs %d (min_span_days)" % (
            span_days, min_span_days)
    elif not rate or rate <= 0:
        projection = "not projected: the database did not grow"
    elif disk.get("free_bytes") is None:
        projection = "not projected: the disk's free space cannot be read from here"
    else:
        days = round(disk["free_bytes"] / rate, 1)
        projection = "the disk fills in about %.0f days" % days
        if days < warn_days:
            dead_share = ""
            if dead_delta and dead_delta > 0 and span_days:
                dead_share = ", of which %.1f MB/day is dead rows that vacuum can reclaim" % (
                    min(rate, dead_delta / span_days) / 1048576.0)
            problems.append({
                "check": "disk space", "severity": "critical", "subject": disk.get("path"),
                "detail": "disk of %s fills in about %.0f days at the growth of the last %.0f days (%.1f MB/day%s): "
                          "add space or archive data" % (disk.get("path"), days, span_days, rate / 1048576.0,
                                                         dead_share),
                "threshold": "warn_days %d" % warn_days})
    regressions = _regressions(current, reports, float(regression_ratio), int(regression_min_calls),
                               float(regression_min_ms))
    for item in regressions:
        problems.append({
            "check": "query regression", "severity": "warning", "subject": item["queryid"],
            "detail": "query regression: %.1f ms on average over %d call(s), %.1fx the previous period's %.1f ms "
                      "(%d call(s)) (%s): %s" % (item["mean_ms"], item["calls"], item["ratio"],
                                                 item["previous_mean_ms"], item["previous_calls"], item["role"],
                                                 item["query"][:160]),
            "threshold": "regression_ratio %s with at least %d calls in each period" % (
                regression_ratio, regression_min_calls)})
    new, resolved = _changes((current.get("problems") or []) + problems, previous) if previous else (None, None)
    return {
        "previous_taken": previous.get("taken"),
        "new_findings": new,
        "resolved_findings": resolved,
        "regressions": regressions,
        "series": series,
        "table_growth": _growth(current.get("tables", []), previous.get("tables"), "total_bytes"),
        "index_growth": _growth(current.get("indexes", []), previous.get("indexes"), "bytes"),
        "span_days": round(span_days, 2),
        "bytes_per_day": None if rate is None else round(rate, 1),
        "dead_bytes": dead,
        "dead_bytes_delta": dead_delta,
        "projection": projection,
        "days_until_full": days,
        "problems": problems,
        "findings": [_line(p) for p in problems],
    }


class FilterModule(object):
    def filters(self):
        return {"health_trend": health_trend}
