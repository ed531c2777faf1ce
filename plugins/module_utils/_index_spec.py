# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to intowork.pgops: not a public API, may change without notice.
"""Expected-index specifications: loading, validation and comparison with the catalog."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.intowork.pgops.plugins.module_utils._connection import PgopsError

try:
    import yaml
    HAS_YAML = True
except ImportError:
    HAS_YAML = False

SPEC_KEYS = frozenset(["name", "table", "columns", "method", "unique", "constraint", "where", "include",
                       "revision", "purpose"])
REQUIRED_KEYS = ("name", "table")


def load_spec_file(path):
    """(schema, entries) from a YAML file with a top-level `indexes` list."""
    try:
        with open(path) as handle:
            data = yaml.safe_load(handle)
    except (IOError, OSError) as error:
        raise PgopsError("cannot read spec_file %s: %s" % (path, error.strerror or error))
    except yaml.YAMLError as error:
        raise PgopsError("spec_file %s is not valid YAML: %s" % (path, " ".join(str(error).split())))
    if not isinstance(data, dict) or not isinstance(data.get("indexes"), list):
        raise PgopsError("spec_file %s needs a top-level 'indexes' list" % path)
    return data.get("schema"), data["indexes"]


def validate_entries(entries):
    """Normalised copies of the entries; PgopsError naming the first bad one."""
    normalised = []
    for position, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise PgopsError("index entry %d is %r, not a mapping with name and table" % (position, entry))
        unknown = sorted(set(entry) - SPEC_KEYS)
        if unknown:
            raise PgopsError("index entry %d (%s) has unknown key(s) %s: use %s" % (
                position, entry.get("name", "?"), ", ".join(unknown), ", ".join(sorted(SPEC_KEYS))))
        for key in REQUIRED_KEYS:
            if not entry.get(key) or not isinstance(entry[key], str):
                raise PgopsError("index entry %d (%s) needs '%s' as a string" % (position, entry.get("name", "?"), key))
        item = dict(entry)
        item["method"] = item.get("method") or "btree"
        item["unique"] = bool(item.get("unique", False))
        item["constraint"] = bool(item.get("constraint", False))
        normalised.append(item)
    names = [item["name"] for item in normalised]
    repeated = sorted(set(name for name in names if names.count(name) > 1))
    if repeated:
        raise PgopsError("index spec names %s more than once: each index appears once" % ", ".join(repeated))
    return normalised


def _normalise_predicate(text):
    return re.sub(r"[\s()]+", "", (text or "").lower()).replace("::text", "")


def compare(entries, catalog):
    """Findings for the expected entries against the catalog snapshot (relations + indexes)."""
    relations = set(catalog["relations"])
    unknown_tables = sorted(set(e["table"] for e in entries) - relations)
    if unknown_tables:
        raise PgopsError("index spec names table(s) not in the schema: %s (check the spec or the schema option)"
                         % ", ".join(unknown_tables))
    by_name = dict((index["name"], index) for index in catalog["indexes"])
    findings = {"missing": [], "invalid": [], "different": [], "ok": []}
    for entry in entries:
        found = by_name.get(entry["name"])
        if found is None:
            findings["missing"].append({"name": entry["name"], "table": entry["table"]})
            continue
        if not found["valid"] or not found["ready"]:
            findings["invalid"].append({"name": entry["name"], "table": found["table"],
                                        "valid": found["valid"], "ready": found["ready"],
                                        "definition": found["definition"]})
            continue
        reasons = []
        if found["table"] != entry["table"]:
            reasons.append("on table %s, expected %s" % (found["table"], entry["table"]))
        if found["method"] != entry["method"]:
            reasons.append("method %s, expected %s" % (found["method"], entry["method"]))
        if found["unique"] != entry["unique"]:
            reasons.append("unique is %s, expected %s" % (found["unique"], entry["unique"]))
        if entry["constraint"] and not found["constraint"]:
            reasons.append("no constraint uses it")
        if _normalise_predicate(found["predicate"]) != _normalise_predicate(entry.get("where")):
            reasons.append("predicate %r, expected %r" % (found["predicate"], entry.get("where")))
        if reasons:
            findings["different"].append({"name": entry["name"], "table": found["table"],
                                          "reasons": reasons, "definition": found["definition"]})
        else:
            findings["ok"].append(entry["name"])
    return findings
