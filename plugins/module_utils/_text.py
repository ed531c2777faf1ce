# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to intowork.pgops: not a public API, may change without notice.
"""Sizes and durations as the runbooks' messages write them, and statement texts with their secrets hidden."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

HIDDEN = "***"
# What a statement's text may carry in clear: pg_stat_statements keeps utility statements verbatim
# (CREATE/ALTER ROLE ... PASSWORD '...', CREATE USER MAPPING ... OPTIONS (password '...'), CREATE SUBSCRIPTION
# ... CONNECTION '...'), and pg_stat_activity shows any statement as sent (dblink's connection strings). A text
# cut short by the query that read it may end inside the literal.
SECRETS = (
    (re.compile(r"(\bpassword\s*(?:=\s*)?)'(?:[^']|'')*(?:'|$)", re.I), r"\1'%s'" % HIDDEN),
    (re.compile(r"(\bpassword\s+)(\$[A-Za-z_0-9]*\$).*?(?:\2|$)", re.I | re.S), r"\1%s" % HIDDEN),
    (re.compile(r"(\bconnection\s+)'(?:[^']|'')*(?:'|$)", re.I), r"\1'%s'" % HIDDEN),
    (re.compile(r"(\bpassword\s*=\s*)(?!')[^\s',)]+", re.I), r"\1%s" % HIDDEN),
)


def without_secrets(text):
    """`text` with every password and connection string in it replaced by ***; None stays None."""
    if text is None:
        return None
    for pattern, replacement in SECRETS:
        text = pattern.sub(replacement, text)
    return text


def size_text(count):
    """Bytes as people read them: small amounts in kB (a few bytes is not "0.0 MB"), then MB, GB, TB."""
    if count < 2 ** 20:
        return "%d kB" % max(1, round(count / 1024.0)) if count else "0 kB"
    for unit, power in (("MB", 20), ("GB", 30)):
        if count < 2 ** (power + 10):
            return "%.1f %s" % (count / 2.0 ** power, unit)
    return "%.1f TB" % (count / 2.0 ** 40)


def duration_text(seconds):
    """Seconds as "42 s", "3 min 05 s" or "2 h 10 min"."""
    seconds = int(seconds)
    if seconds < 60:
        return "%d s" % seconds
    if seconds < 3600:
        return "%d min %02d s" % (seconds // 60, seconds % 60)
    return "%d h %02d min" % (seconds // 3600, seconds % 3600 // 60)
