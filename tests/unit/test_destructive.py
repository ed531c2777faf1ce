"""Which statements of a revision's offline SQL destroy data, and why, given the column types before the
deployment (a stand-in for the database's catalog: the judgement is pure)."""

import pytest

from ansible_collections.intowork.pgops.plugins.module_utils._destructive import destructive_statements

COLUMNS = {
    "title": {"name": "varchar", "type": "character varying(50)", "oid": 1043, "length": 50, "labels": None},
    "status": {"name": "book_status", "type": "book_status", "oid": 90001, "length": None, "labels": ["a", "b"]},
    "stars": {"name": "int4", "type": "integer", "oid": 23, "length": None, "labels": None},
    "note": {"name": "bpchar", "type": "character(10)", "oid": 1042, "length": 10, "labels": None},
}


class Catalog(object):
    def column(self, _schema, _table, column):
        return COLUMNS.get(column)

    def enum_labels(self, _name):
        return None

    def binary_coercible(self, source, target):
        return (source, target) == (1042, "text")


def judged(sql):
    return destructive_statements(sql, Catalog())


@pytest.mark.parametrize("sql", [
    "ALTER TABLE books ALTER COLUMN title TYPE VARCHAR(100)",
    "ALTER TABLE books ALTER COLUMN title TYPE VARCHAR",
    "ALTER TABLE books ALTER COLUMN title TYPE text",
    "ALTER TABLE books ALTER COLUMN title TYPE citext",
    "ALTER TABLE books ALTER COLUMN stars TYPE BIGINT",
    "ALTER TABLE books ALTER COLUMN note TYPE text",
    "CREATE TYPE book_status2 AS ENUM ('a', 'b', 'c'); "
    "ALTER TABLE books ALTER COLUMN status TYPE book_status2 USING status::text::book_status2",
    "DROP TYPE book_status_old",
    "DROP SCHEMA old_reports",
    "DELETE FROM books WHERE id = 1",
])
def test_what_keeps_every_value_is_not_destructive(sql):
    assert judged(sql) == []


@pytest.mark.parametrize("sql, why", [
    ("ALTER TABLE books ALTER COLUMN title TYPE VARCHAR(10)",
     "rewrites column title from character varying(50) to varchar(10), which can lose values"),
    ("ALTER TABLE books ALTER COLUMN stars TYPE SMALLINT", "rewrites column stars from integer to int2"),
    ("CREATE TYPE s2 AS ENUM ('a'); ALTER TABLE books ALTER COLUMN status TYPE s2 USING status::text::s2",
     "rewrites column status from enum book_status to s2, which has no label b"),
    ("ALTER TABLE books ALTER COLUMN title TYPE text USING upper(title)",
     "rewrites column title with a USING expression"),
    ("ALTER TABLE books ALTER COLUMN isbn TYPE text", "rewrites column isbn to text: its type before is not known"),
    ("DROP TYPE book_status CASCADE", "CASCADE drops what uses it, with its data"),
    ("ALTER TABLE books DROP COLUMN isbn", "drops column isbn and its data"),
    ("DROP TABLE books", "drops the table and its rows"),
    ("TRUNCATE books", "removes every row"),
    ("DELETE FROM books", "deletes every row"),
])
def test_what_can_lose_data_is_named_with_why(sql, why):
    (found,) = judged(sql)
    assert why in found and found.startswith(sql.split("; ")[-1][:30]), found


def test_without_the_catalog_every_type_change_counts():
    (found,) = destructive_statements("ALTER TABLE books ALTER COLUMN title TYPE VARCHAR(100)")
    assert "its type before is not known" in found
