# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to intowork.pgops: not a public API, may change without notice.
"""The catalog of a database as data, and what differs between two such snapshots.

A snapshot holds, per object (keyed "kind schema.name"), what makes it that object: columns in order, definitions,
validity, owner, privileges; and, per table, its rows (counted exactly where that is cheap, else the planner's
estimate, and the snapshot says which). Two snapshots compare into one line per difference.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import time

from ansible_collections.intowork.pgops.plugins.module_utils._catalog import SCHEMA_SNAPSHOT
from ansible_collections.intowork.pgops.plugins.module_utils._connection import PgopsError, sql
from ansible_collections.intowork.pgops.plugins.module_utils._findings import FINDING_KINDS, FINDING_LEVELS
from ansible_collections.intowork.pgops.plugins.module_utils._write_guard import read_catalog as read_guard

SECTIONS = ("schemas", "relations", "indexes", "constraints", "types", "functions", "triggers", "policies",
            "extensions")
# Attributes that say nothing about the schema: the oid changes with a restore, the estimate with every ANALYZE.
VOLATILE = ("oid", "rows_estimate")
# Attributes added to snapshots later: an older snapshot (a file a deployment wrote before) has none to compare.
LATER = ("comment", "populated", "row_security")
# Privileges GRANT accepts per object kind, as aclexplode names them.
PRIVILEGES = {"table": {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN"},
              "sequence": {"SELECT", "UPDATE", "USAGE"},
              "schema": {"USAGE", "CREATE"},
              "function": {"EXECUTE"}}
GRANT_TARGET = {"table": "TABLE", "view": "TABLE", "materialized view": "TABLE", "foreign table": "TABLE",
                "sequence": "SEQUENCE", "schema": "SCHEMA"}


# Alembic's version table: always counted, an empty one is how Alembic records base.
VERSION_TABLE = "alembic_version"


def take(conn, schemas=(), exact_count_max_rows=1000000, count=True):
    """The snapshot of `conn`'s database: its objects, and the rows of every table (without `count`, the
    planner's estimates, but for the version table's)."""
    with conn.cursor() as cur:
        cur.execute(SCHEMA_SNAPSHOT, {"schemas": list(schemas)})
        objects = cur.fetchone()[0]
        rows, counted = {}, []
        for key, relation in sorted(objects["relations"].items()):
            # A partitioned table's rows are its partitions', which are tables of their own.
            if relation["kind"] not in ("r", "m"):
                continue
            estimate = max(relation["rows_estimate"], 0)
            name = key.split(" ", 1)[1] if relation["kind"] != "m" else key.split(" ", 2)[2]
            if relation.get("populated") is False:
                rows[name] = {"rows": 0, "exact": True}  # reading it fails until it is refreshed
            elif estimate <= exact_count_max_rows and (count or key.rsplit(".", 1)[-1] == VERSION_TABLE):
                counted.append((name, relation["oid"]))
            else:
                rows[name] = {"rows": estimate, "exact": False}
        for name, count in count_rows(cur, counted):
            rows[name] = {"rows": count, "exact": True}
        held = with_guarded_grants(cur, objects)
    snapshot = {"objects": objects, "rows": rows, "exact_count_max_rows": exact_count_max_rows,
                "grants_held_by_write_guard": held, "taken": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    snapshot["object_count"] = sum(len(objects[section]) for section in SECTIONS)
    return snapshot


def without_new_empty_version_table(before, after, version_table=VERSION_TABLE):
    """`after` without Alembic's version table where it is empty and `before` has none: a downgrade to base
    leaves the table empty, which is how Alembic records base, the same state as no table at all."""
    relations = after["objects"].get("relations", {})
    gone = [key for key in relations if key.startswith("table ") and key.rsplit(".", 1)[-1] == version_table
            and key not in before["objects"].get("relations", {})
            and after["rows"].get(key.split(" ", 1)[1], {}).get("rows", 1) == 0]
    if not gone:
        return after
    objects = dict(after["objects"])
    for key in gone:
        qualified = key.split(" ", 1)[1]
        schema = qualified.rsplit(".", 1)[0]
        objects["relations"] = dict((k, v) for k, v in objects["relations"].items() if k != key)
        objects["indexes"] = dict((k, v) for k, v in objects.get("indexes", {}).items()
                                  if not (k.startswith("index %s." % schema) and v.get("table") == version_table))
        objects["constraints"] = dict((k, v) for k, v in objects.get("constraints", {}).items()
                                      if not k.startswith("constraint %s." % qualified))
    rows = dict((k, v) for k, v in after["rows"].items() if "table " + k not in gone)
    trimmed = dict(after, objects=objects, rows=rows)
    trimmed["object_count"] = sum(len(objects.get(section, {})) for section in SECTIONS)
    return trimmed


def count_rows(cur, tables, per_query=200):
    """(name, rows) of each (name, oid) table, counted exactly. A table without a page on disk has no row, and is
    not read; the others are counted many to a query (one round trip per table would cost more than the
    counting in a schema of small tables)."""
    cur.execute("SELECT t.oid FROM unnest(%s::oid[]) AS t(oid) WHERE pg_catalog.pg_relation_size(t.oid) = 0",
                ([oid for _name, oid in tables],))
    empty = set(row[0] for row in cur.fetchall())
    names = []
    for name, oid in tables:
        if oid in empty:
            yield name, 0
        else:
            names.append(name)
    for start in range(0, len(names), per_query):
        batch = names[start:start + per_query]
        cur.execute(sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {}::int, count(*) FROM ONLY {}").format(sql.Literal(position), identifier(name))
            for position, name in enumerate(batch)))
        for position, count in cur.fetchall():
            yield batch[position], count


def with_guarded_grants(cur, objects):
    """Put the write privileges a write guard took away (maintenance mode) into the relations' privileges, as the
    guard will give them back: a snapshot reads the same with writes off and on. The number put in."""
    cur.execute("SELECT pg_catalog.current_database()")
    state = read_guard(cur, cur.fetchone()[0], [])[1]
    if not state or state.get("strategy") != "revoke_writes":
        return 0
    grants = state["previous"]["grants"]
    # Names as the catalog query writes them (quote_ident quotes keywords too).
    cur.execute("SELECT pg_catalog.quote_ident(g.s) || '.' || pg_catalog.quote_ident(g.r) "
                "FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS g(s, r, n) ORDER BY g.n",
                ([grant[0] for grant in grants], [grant[1] for grant in grants]))
    names = [row[0] for row in cur.fetchall()]
    held = 0
    for name, (_schema, _relation, _kind, role, privilege, grantable) in zip(names, grants):
        for kind in ("table", "view", "foreign table", "sequence"):
            relation_entry = objects["relations"].get("%s %s" % (kind, name))
            if relation_entry is not None:
                item = "%s:%s%s" % (role, privilege, "*" if grantable else "")
                if item not in relation_entry["acl"]:
                    relation_entry["acl"] = sorted(relation_entry["acl"] + [item])
                    held += 1
                break
    return held


def identifier(qualified):
    """sql.Identifier of a name as the snapshot writes it (quote_ident'ed parts joined by dots)."""
    parts, part, quoted, index = [], "", False, 0
    while index < len(qualified):
        char = qualified[index]
        if char == '"':
            if quoted and index + 1 < len(qualified) and qualified[index + 1] == '"':
                part += '"'
                index += 1
            else:
                quoted = not quoted
        elif char == "." and not quoted:
            parts.append(part)
            part = ""
        else:
            part += char
        index += 1
    parts.append(part)
    return sql.Identifier(*parts)


def show(value):
    """A value on one line (a view's definition spans several)."""
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else " ".join(str(value).split())


def comment_text(comment):
    return "none" if comment is None else json.dumps(comment)


def column_line(column):
    text = "%s %s" % (column["name"], column["type"])
    if column.get("not_null"):
        text += " NOT NULL"
    if column.get("default"):
        text += " DEFAULT %s" % column["default"]
    if column.get("identity"):
        text += " IDENTITY"
    if column.get("generated"):
        text += " GENERATED"
    if column.get("collation"):
        text += " COLLATE %s" % column["collation"]
    return text


def compare_columns(key, before, after):
    lines = []
    old = dict((column["name"], column) for column in before)
    new = dict((column["name"], column) for column in after)
    for name in old:
        if name not in new:
            lines.append("%s: column %s is gone" % (key, name))
        elif column_line(old[name]) != column_line(new[name]):
            lines.append("%s: column %s was %s, is %s" % (key, name, column_line(old[name]), column_line(new[name])))
        # A snapshot taken before comments were part of it has none to compare.
        elif "comment" in old[name] and old[name].get("comment") != new[name].get("comment"):
            lines.append("%s: column %s: comment was %s, is %s" % (
                key, name, comment_text(old[name].get("comment")), comment_text(new[name].get("comment"))))
    for name in new:
        if name not in old:
            lines.append("%s: new column %s" % (key, column_line(new[name])))
    common_old = [name for name in old if name in new]
    common_new = [name for name in new if name in old]
    if common_old != common_new:
        lines.append("%s: columns in another order: now %s; was %s" % (
            key, ", ".join(common_new), ", ".join(common_old)))
    return lines


def compare_acl(key, before, after):
    lines = []
    for item in sorted(set(before) - set(after)):
        grantee, privilege = item.rstrip("*").split(":", 1)
        lines.append("%s: grant %s to %s is gone" % (key, privilege, grantee))
    for item in sorted(set(after) - set(before)):
        grantee, privilege = item.rstrip("*").split(":", 1)
        lines.append("%s: new grant %s to %s" % (key, privilege, grantee))
    return lines


def compared_sections(before, after):
    """(earlier, later) objects of each section the earlier snapshot has: one taken before a section was part of
    snapshots has nothing to compare it with."""
    for section in SECTIONS:
        if section in before["objects"]:
            yield before["objects"][section], after["objects"].get(section, {})


def changed_attributes(was, now):
    """The attributes of one object whose values differ, but the volatile ones and those the earlier snapshot
    predates."""
    for attribute in sorted(set(was) | set(now)):
        if attribute in VOLATILE or (attribute in LATER and attribute not in was):
            continue
        if was.get(attribute) != now.get(attribute):
            yield attribute


def compare(before, after, rows=True):
    """One line per difference between two snapshots' objects, and per table with fewer rows than before."""
    lines = []
    for old, new in compared_sections(before, after):
        for key in sorted(set(old) - set(new)):
            lines.append("%s is gone" % key)
        for key in sorted(set(new) - set(old)):
            lines.append("new %s" % key)
        for key in sorted(set(old) & set(new)):
            for attribute in changed_attributes(old[key], new[key]):
                was, now = old[key].get(attribute), new[key].get(attribute)
                if attribute == "comment":
                    lines.append("%s: comment was %s, is %s" % (key, comment_text(was), comment_text(now)))
                elif attribute == "columns":
                    lines.extend(compare_columns(key, was or [], now or []))
                elif attribute == "acl":
                    lines.extend(compare_acl(key, was or [], now or []))
                else:
                    lines.append("%s: %s was %s, is %s" % (key, attribute, show(was), show(now)))
    if rows:
        lines.extend(compare_rows(before["rows"], after["rows"]))
    return lines


def compare_rows(before, after):
    lines = []
    for table in sorted(before):
        if table not in after:
            if before[table]["rows"]:
                lines.append("table %s held %d rows and is gone" % (table, before[table]["rows"]))
            continue
        was, now = before[table], after[table]
        if now["rows"] < was["rows"]:
            how = "" if was["exact"] and now["exact"] else " (planner estimates: the table is larger than " \
                                                           "exact_count_max_rows)"
            lines.append("table %s: %d rows before, %d now (%d lost)%s" % (
                table, was["rows"], now["rows"], was["rows"] - now["rows"], how))
    return lines


def destroyed(before, after):
    """What held data in the earlier snapshot and is gone or rewritten in the later one, one line each: a table
    that had rows, a column of such a table, a column whose type changed. A downgrade re-creates these empty, so
    only a restore gives them back."""
    lines = []
    old_relations, new_relations = before["objects"].get("relations", {}), after["objects"].get("relations", {})
    for name, count in sorted(before["rows"].items()):
        if not count["rows"]:
            continue
        key = "table %s" % name
        if key not in old_relations:
            continue  # a materialized view: derived, refreshed from its tables
        held = "%d row%s%s" % (count["rows"], "" if count["rows"] == 1 else "s",
                               "" if count["exact"] else " by the planner's estimate")
        if key not in new_relations:
            lines.append("%s (%s) is gone" % (key, held))
            continue
        new_columns = dict((column["name"], column) for column in new_relations[key].get("columns") or [])
        for column in old_relations[key].get("columns") or []:
            now = new_columns.get(column["name"])
            if now is None:
                lines.append("%s: column %s (%s) is gone" % (key, column["name"], held))
            elif now["type"] != column["type"]:
                lines.append("%s: column %s was rewritten from %s to %s (%s)" % (
                    key, column["name"], column["type"], now["type"], held))
    return lines


def findings_by_change(before, after, rows=True):
    """(findings, changes): of the differences between the catalog before a deployment and after it, those that
    touch what was there or waste it, as (kind, object key, words) with kind one of FINDING_KINDS, and the rest:
    the changes a migration is for."""
    findings = []
    old_objects, new_objects = before["objects"], after["objects"]
    for section in ("schemas", "relations", "functions"):
        for key in sorted(set(old_objects.get(section, {})) & set(new_objects.get(section, {}))):
            was, now = old_objects[section][key], new_objects[section][key]
            findings.extend(("privilege_lost", key, line) for line in compare_acl(
                key, was.get("acl") or [], now.get("acl") or []) if line.endswith(" is gone"))
            if was.get("owner") != now.get("owner"):
                findings.append(("owner_changed", key, "%s: owner was %s, is %s" % (
                    key, was.get("owner"), now.get("owner"))))
    for key, index in sorted(new_objects.get("indexes", {}).items()):
        if not index["valid"] and (key not in old_objects.get("indexes", {}) or old_objects["indexes"][key]["valid"]):
            findings.append(("index_invalid", key, "%s is not valid (a concurrent build that failed): drop it and "
                                                   "build it again" % key))
        if key not in old_objects.get("indexes", {}):
            twin = duplicate_of(key, index, new_objects["indexes"])
            # Two new twins: the second one is the duplicate.
            if twin and (twin in old_objects.get("indexes", {}) or twin < key):
                findings.append(("index_duplicate", key, "new %s duplicates %s" % (key, twin)))
    for key, constraint in sorted(new_objects.get("constraints", {}).items()):
        was = old_objects.get("constraints", {}).get(key)
        if not constraint["validated"] and was is None:
            findings.append(("constraint_not_valid", key, "new %s is NOT VALID: existing rows were not checked "
                                                          "against it yet" % key))
        elif not constraint["validated"] and was["validated"]:
            findings.append(("constraint_invalidated", key, "%s is NOT VALID: existing rows were never checked "
                                                            "against it" % key))
    for key in sorted(set(old_objects.get("extensions", {})) - set(new_objects.get("extensions", {}))):
        findings.append(("extension_gone", key, "%s is gone" % key))
    if rows:
        findings.extend(("rows_lost", "table " + line.split(":", 1)[0].split(" ", 1)[1], line)
                        for line in compare_rows(before["rows"], after["rows"]) if "is gone" not in line)
    words = set(finding[2] for finding in findings)
    changes = [line for line in compare(before, after, rows=False) if line not in words]
    return findings, changes


def findings_by_drift(before, after):
    """What changed in the catalog since `before`, the baseline (the catalog the last deployment or rollback proved,
    or one an operator recorded), as (kind, object key, words) with kind one of DRIFT_KINDS: what an outage, a
    restore or a hand fix leave behind while every name may still be in place. Rows are not compared (the
    application writes) and comments are not (they change no behaviour)."""
    findings = []
    for old, new in compared_sections(before, after):
        for key in sorted(set(old) - set(new)):
            findings.append(("object_gone", key, "%s%s is gone" % (key, defined_as(old[key]))))
        for key in sorted(set(new) - set(old)):
            findings.append(("object_added", key, "new %s%s" % (key, defined_as(new[key]))))
        for key in sorted(set(old) & set(new)):
            findings.extend(drift_of(key, old[key], new[key]))
    return findings


def defined_as(entry):
    definition = entry.get("definition") if isinstance(entry, dict) else None
    return " (%s)" % show(definition) if definition and not entry.get("kind") else ""


TRIGGER_STATES = {"O": "enabled", "D": "disabled", "R": "enabled on replicas only", "A": "enabled always"}


def drift_of(key, was, now):
    """The findings of one object both catalogs have (see findings_by_drift)."""
    findings = []
    for attribute in changed_attributes(was, now):
        if attribute == "comment":
            continue  # a comment changes no behaviour
        old, new = was.get(attribute), now.get(attribute)
        if attribute == "acl":
            findings.extend(("privilege_lost" if line.endswith(" is gone") else "privilege_added", key, line)
                            for line in compare_acl(key, old or [], new or []))
        elif attribute == "owner":
            findings.append(("owner_changed", key, "%s: owner was %s, is %s" % (key, old, new)))
        elif attribute == "columns":
            findings.extend(("column_added" if line.startswith(key + ": new column ") else "column_changed", key, line)
                            for line in compare_columns(key, old or [], new or []) if ": comment was " not in line)
        elif attribute == "validated":
            if old and not new:
                findings.append(("constraint_invalidated", key, "%s is NOT VALID: the rows it held were never "
                                                                "checked against it" % key))
        elif attribute == "valid":
            if old and not new:
                findings.append(("index_invalid", key, "%s is not valid (a concurrent build that failed): drop it "
                                                       "and build it again" % key))
        elif attribute == "definition" and key.startswith("constraint "):
            # Validity is its own finding: a definition that differs only by it is the same constraint.
            if old.replace(" NOT VALID", "") != new.replace(" NOT VALID", ""):
                findings.append(("constraint_changed", key, "%s was %s, is %s" % (key, show(old), show(new))))
        elif attribute == "definition" and key.startswith("index "):
            findings.append(("index_changed", key, "%s was %s, is %s" % (key, show(old), show(new))))
        elif attribute == "enabled" and new == "D":
            findings.append(("trigger_disabled", key, "%s is disabled (ALTER TABLE ... ENABLE TRIGGER)" % key))
        elif attribute == "populated" and not new:
            findings.append(("matview_unpopulated", key, "%s is not populated: reads fail until REFRESH "
                                                         "MATERIALIZED VIEW" % key))
        elif attribute == "row_security" and not new:
            findings.append(("row_security_off", key, "%s: row level security is off (ALTER TABLE ... ENABLE ROW "
                                                      "LEVEL SECURITY)" % key))
        elif attribute == "body_md5":
            findings.append(("definition_changed", key, "%s: its body changed" % key))
        else:
            shown = dict(enabled=TRIGGER_STATES).get(attribute, {})
            findings.append(("definition_changed", key, "%s: %s was %s, is %s" % (
                key, attribute, shown.get(old, show(old)), shown.get(new, show(new)))))
    return findings


def judge_findings(findings, levels=None, kinds=None):
    """{"fail": [...], "warn": [...], "ignore": [...]}: each finding's words and kind ("... (index_duplicate)"),
    by the level the inventory's `levels` give its kind and object (see finding_level_problems), else the kind's
    own in `kinds` (a deployment's, by default)."""
    kinds = FINDING_KINDS if kinds is None else kinds
    judged = dict((level, []) for level in FINDING_LEVELS)
    for kind, key, words in findings:
        level = (levels or {}).get(kind, kinds[kind])
        if isinstance(level, dict):
            level = level.get(key, level.get("default", kinds[kind]))
        judged[level].append("%s (%s)" % (words, kind))
    return judged


def duplicate_of(key, index, indexes):
    """The other index of the same table with the same definition but its name, if there is one."""
    shape = index_shape(key, index)
    for other_key, other in sorted(indexes.items()):
        if other_key != key and other["table"] == index["table"] and index_shape(other_key, other) == shape:
            return other_key
    return None


def index_shape(key, index):
    name = key.split(".", 1)[1] if "." in key else key
    return index["definition"].replace(" INDEX %s ON " % name, " INDEX ON ", 1)


def estimated_tables(snapshot):
    return sorted(table for table, count in snapshot["rows"].items() if not count["exact"])


def privilege_changes(before, after):
    """What makes the privileges of every object both snapshots have equal to the earlier one's, as
    (action, kind, name, grantee, privilege) with action GRANT, GRANT WITH OPTION, REVOKE or REVOKE OPTION:
    privileges a downgrade lost come back, privileges an upgrade granted and its downgrade left go."""
    changes = []
    for section in ("schemas", "relations", "functions"):
        old, new = before["objects"].get(section, {}), after["objects"].get(section, {})
        for key in sorted(set(old) & set(new)):
            kind, name = split_key(key)
            was, now = acl_map(old[key].get("acl")), acl_map(new[key].get("acl"))
            for item in sorted(set(was) | set(now)):
                grantee, privilege = item
                if item not in now:
                    changes.append(("GRANT WITH OPTION" if was[item] else "GRANT", kind, name, grantee, privilege))
                elif item not in was:
                    changes.append(("REVOKE", kind, name, grantee, privilege))
                elif was[item] and not now[item]:
                    changes.append(("GRANT WITH OPTION", kind, name, grantee, privilege))
                elif now[item] and not was[item]:
                    changes.append(("REVOKE OPTION", kind, name, grantee, privilege))
    return changes


def with_privileges_of(before, objects):
    """A copy of `objects` whose objects that `before` has too carry before's privileges: what
    privilege_changes() would make of them."""
    copy = dict(objects)
    for section in ("schemas", "relations", "functions"):
        old = before["objects"].get(section, {})
        copy[section] = dict((key, dict(value, acl=old[key].get("acl")) if key in old else value)
                             for key, value in objects.get(section, {}).items())
    return copy


def acl_map(acl):
    """{(grantee, privilege): grantable} of a snapshot's privilege list."""
    return dict((tuple(item.rstrip("*").split(":", 1)), item.endswith("*")) for item in acl or [])


def privilege_line(action, kind, name, grantee, privilege):
    if action.startswith("GRANT"):
        return "%s on %s %s to %s%s" % (privilege, kind, name, grantee,
                                        " with grant option" if action.endswith("OPTION") else "")
    return "%s%s on %s %s from %s" % ("grant option for " if action.endswith("OPTION") else "", privilege, kind,
                                      name, grantee)


def split_key(key):
    for kind in ("materialized view", "foreign table"):
        if key.startswith(kind + " "):
            return kind, key[len(kind) + 1:]
    kind, name = key.split(" ", 1)
    return kind, name


def privilege_statement(action, kind, name, grantee, privilege):
    """The GRANT or REVOKE of one privilege_changes() item, identifiers quoted; PgopsError for what cannot be
    done so."""
    if kind == "function":
        raise PgopsError("%s: put it right by hand (GRANT or REVOKE EXECUTE ON FUNCTION ...)" % (
            privilege_line(action, kind, name, grantee, privilege)))
    allowed = PRIVILEGES["table" if GRANT_TARGET.get(kind) == "TABLE" else kind]
    if privilege not in allowed:
        raise PgopsError("%s: not a privilege GRANT and REVOKE handle here; put it right by hand" % (
            privilege_line(action, kind, name, grantee, privilege)))
    target = sql.SQL("{} {}").format(sql.SQL(GRANT_TARGET[kind]), identifier(name))
    role = sql.SQL("PUBLIC") if grantee == "PUBLIC" else sql.Identifier(grantee)
    if action.startswith("GRANT"):
        return sql.SQL("GRANT {} ON {} TO {}{}").format(
            sql.SQL(privilege), target, role, sql.SQL(" WITH GRANT OPTION" if action.endswith("OPTION") else ""))
    return sql.SQL("REVOKE {}{} ON {} FROM {}").format(
        sql.SQL("GRANT OPTION FOR " if action.endswith("OPTION") else ""), sql.SQL(privilege), target, role)
