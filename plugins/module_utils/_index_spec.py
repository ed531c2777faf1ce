# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to intowork.pgops: not a public API, may change without notice.
"""Expected-index specifications: loading, validation, and the findings against a catalog snapshot."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.intowork.pgops.plugins.module_utils._connection import PgopsError
from ansible_collections.intowork.pgops.plugins.module_utils._spec_file import load_yaml_mapping

SPEC_KEYS = frozenset(["name", "table", "columns", "method", "unique", "constraint", "where", "include",
                       "revision", "purpose"])
REQUIRED_KEYS = ("name", "table")
FINDINGS = ["missing", "invalid", "different", "duplicate", "redundant", "unused", "unindexed_fk"]
IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_$]*$")
ORDERING = {"ASC": False, "DESC": True}


def load_spec_file(path):
    """(schema, entries) from a YAML file with a top-level `indexes` list."""
    data = load_yaml_mapping(path, "spec_file")
    if not isinstance(data.get("indexes"), list):
        raise PgopsError("spec_file %s needs a top-level 'indexes' list" % path)
    return data.get("schema"), data["indexes"]


def parse_column(text):
    """'applied_at DESC' -> {expr: applied_at, desc: True, opclass: None}; 'title gin_trgm_ops' -> opclass."""
    words = text.strip().split()
    desc = False
    opclass = None
    if len(words) > 1 and words[-1].upper() in ORDERING:
        desc = ORDERING[words.pop().upper()]
    if len(words) > 1 and words[-1].endswith("_ops"):
        opclass = words.pop()
    return {"expr": " ".join(words), "desc": desc, "opclass": opclass}


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
        item["keys"] = [parse_column(column) for column in item.get("columns") or []]
        item["include"] = list(item.get("include") or [])
        normalised.append(item)
    names = [item["name"] for item in normalised]
    repeated = sorted(set(name for name in names if names.count(name) > 1))
    if repeated:
        raise PgopsError("index spec names %s more than once: each index appears once" % ", ".join(repeated))
    return normalised


def check_names(entries, catalog):
    """PgopsError naming any table, or plain column, of the spec that the schema does not have."""
    columns = dict((relation["name"], set(relation["columns"])) for relation in catalog["relations"])
    unknown_tables = sorted(set(e["table"] for e in entries) - set(columns))
    if unknown_tables:
        raise PgopsError("index spec names table(s) not in the schema: %s (check the spec or the schema option)"
                         % ", ".join(unknown_tables))
    for entry in entries:
        plain = [key["expr"] for key in entry["keys"] if IDENTIFIER.match(key["expr"])] + entry["include"]
        unknown = [name for name in plain if name not in columns[entry["table"]]]
        if unknown:
            raise PgopsError("index %s names column(s) %s that table %s does not have" % (
                entry["name"], ", ".join(unknown), entry["table"]))


def _normalise_sql(text):
    return re.sub(r"[\s()\"]+", "", (text or "").lower()).replace("::text", "")


def key_signature(keys):
    return [(_normalise_sql(key["expr"]), bool(key["desc"]), key.get("opclass")) for key in keys]


def structure_differences(entry, found):
    reasons = []
    if found["table"] != entry["table"]:
        reasons.append("on table %s, expected %s" % (found["table"], entry["table"]))
    if found["method"] != entry["method"]:
        reasons.append("method %s, expected %s" % (found["method"], entry["method"]))
    if found["unique"] != entry["unique"]:
        reasons.append("unique is %s, expected %s" % (found["unique"], entry["unique"]))
    if entry["constraint"] and not found["constraint"]:
        reasons.append("no constraint uses it")
    if entry["keys"] and key_signature(found["keys"]) != key_signature(entry["keys"]):
        reasons.append("keys %s, expected %s" % (describe_keys(found["keys"]), describe_keys(entry["keys"])))
    if [_normalise_sql(c) for c in found["include"]] != [_normalise_sql(c) for c in entry["include"]]:
        reasons.append("include %s, expected %s" % (found["include"], entry["include"]))
    if _normalise_sql(found["predicate"]) != _normalise_sql(entry.get("where")):
        reasons.append("predicate %r, expected %r" % (found["predicate"], entry.get("where")))
    return reasons


def describe_keys(keys):
    words = [filter(None, [k["expr"], k.get("opclass"), "DESC" if k["desc"] else None]) for k in keys]
    return "(%s)" % ", ".join(" ".join(w) for w in words)


def compare(entries, catalog):
    """Findings for the expected entries: missing, invalid, different, ok."""
    check_names(entries, catalog)
    by_name = dict((index["name"], index) for index in catalog["indexes"])
    findings = {"missing": [], "invalid": [], "different": [], "ok": []}
    for entry in entries:
        found = by_name.get(entry["name"])
        if found is None:
            findings["missing"].append({"name": entry["name"], "table": entry["table"]})
        elif not found["valid"] or not found["ready"]:
            findings["invalid"].append({"name": entry["name"], "table": found["table"], "valid": found["valid"],
                                        "ready": found["ready"], "definition": found["definition"]})
        else:
            reasons = structure_differences(entry, found)
            if reasons:
                findings["different"].append({"name": entry["name"], "table": found["table"],
                                              "reasons": reasons, "definition": found["definition"]})
            else:
                findings["ok"].append(entry["name"])
    return findings


def _comparable(a, b):
    return (a["table"] == b["table"] and a["method"] == b["method"]
            and _normalise_sql(a["predicate"]) == _normalise_sql(b["predicate"]))


def _worth_keeping(index, expected_names):
    """Rank for keeping one of two duplicates: what backs a constraint, then what the strategy names, then unique."""
    return (bool(index["constraint"] or index.get("primary")), index["name"] in expected_names, bool(index["unique"]))


def overlaps(catalog, expected_names=()):
    """Duplicate indexes (same keys) and redundant ones (keys a leading prefix of another's).

    Of two duplicates, the one reported (to drop) backs no constraint and is not in the strategy.
    """
    expected_names = set(expected_names)
    indexes = [index for index in catalog["indexes"] if index["valid"]]
    duplicate, redundant = [], []
    for position, a in enumerate(indexes):
        for b in indexes[position + 1:]:
            if not _comparable(a, b):
                continue
            keys_a, keys_b = key_signature(a["keys"]), key_signature(b["keys"])
            if keys_a == keys_b and a["include"] == b["include"]:
                # Keep the one that enforces something or that the strategy asks for; the other is pure cost.
                keep, drop = (a, b) if _worth_keeping(a, expected_names) >= _worth_keeping(b, expected_names) else (b, a)
                duplicate.append({"name": drop["name"], "duplicate_of": keep["name"], "table": a["table"],
                                  "size_bytes": drop["size_bytes"], "definition": drop["definition"]})
                continue
            for short, long_ in ((a, b), (b, a)):
                keys_short, keys_long = key_signature(short["keys"]), key_signature(long_["keys"])
                if (short["method"] == "btree" and not short["unique"] and not short["constraint"]
                        and len(keys_short) < len(keys_long) and keys_long[:len(keys_short)] == keys_short):
                    redundant.append({"name": short["name"], "covered_by": long_["name"], "table": a["table"],
                                      "size_bytes": short["size_bytes"], "definition": short["definition"]})
    return duplicate, redundant


def unused(catalog):
    """Indexes never scanned since the statistics reset, except those that enforce a constraint."""
    return [{"name": index["name"], "table": index["table"], "size_bytes": index["size_bytes"],
             "stats_reset": catalog.get("stats_reset")}
            for index in catalog["indexes"]
            if index["scans"] == 0 and not index["unique"] and not index["constraint"] and not index["primary"]]


def unindexed_foreign_keys(catalog):
    """Foreign keys whose columns do not lead any valid index of the referencing table."""
    found = []
    for fk in catalog["foreign_keys"]:
        wanted = sorted(fk["attnums"])
        supported = any(
            index["table"] == fk["table"] and index["valid"] and index["predicate"] is None
            and sorted(key["attnum"] for key in index["keys"][:len(wanted)]) == wanted
            for index in catalog["indexes"])
        if not supported:
            found.append({"name": fk["name"], "table": fk["table"], "columns": fk["columns"],
                          "references": fk["references"]})
    return found
