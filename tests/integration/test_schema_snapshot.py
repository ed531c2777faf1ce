"""schema_snapshot on a real database: what a snapshot holds, every kind of difference named, lost grants put back."""

import pytest

from conftest import query, run_module
from test_any_project import BOOKSHELF, BOOKSHELF_PYTHON

READER = "bookshelf_reader"


@pytest.fixture
def bookshelf(database):
    """The bookshelf example at head, with a reporting role its migration grants SELECT to, and a few rows."""
    query(database, f"DROP ROLE IF EXISTS {READER}")
    query(database, f"CREATE ROLE {READER}")
    done = run_module("alembic_migration", dict(database, project_dir=str(BOOKSHELF),
                                                alembic_python=str(BOOKSHELF_PYTHON)))
    assert done.get("changed") is True, done.get("msg")
    query(database, "INSERT INTO authors (id, name) VALUES (1, 'Ursula K. Le Guin'), (2, 'Italo Calvino')")
    query(database, "INSERT INTO books (id, author_id, title) VALUES (1, 1, 'The Dispossessed'), "
                    "(2, 1, 'The Lathe of Heaven'), (3, 2, 'Invisible Cities')")
    yield database
    query(database, f"DROP OWNED BY {READER}")
    query(database, f"DROP ROLE {READER}")


def test_a_snapshot_holds_the_catalog_and_compares_equal_to_itself(bookshelf):
    taken = run_module("schema_snapshot", bookshelf)
    assert taken["changed"] is False and taken["estimated_tables"] == []
    objects = taken["snapshot"]["objects"]
    books = objects["relations"]["table public.books"]
    assert [column["name"] for column in books["columns"]] == ["id", "author_id", "title", "status", "published_on"]
    assert f"{READER}:SELECT" in books["acl"]
    assert objects["types"]["enum public.book_status"]["labels"] == ["draft", "published", "archived"]
    assert "constraint public.reviews.reviews_book_id_fkey" in objects["constraints"]
    assert objects["indexes"]["index public.ix_books_author_id"]["valid"] is True
    assert taken["snapshot"]["rows"]["public.books"] == {"rows": 3, "exact": True}

    same = run_module("schema_snapshot", dict(bookshelf, compare_to=taken["snapshot"]))
    assert same.get("failed") is not True and same["differences"] == [], same["differences"]


def test_every_difference_is_named_and_privileges_are_made_as_before(bookshelf):
    before = run_module("schema_snapshot", bookshelf)["snapshot"]
    query(bookshelf, f"REVOKE SELECT ON books FROM {READER}")
    query(bookshelf, f"GRANT UPDATE ON authors TO {READER}")
    query(bookshelf, "DELETE FROM books WHERE id = 3")
    query(bookshelf, "ALTER TABLE authors DROP COLUMN family_name")
    query(bookshelf, "ALTER TABLE authors ADD COLUMN family_name varchar(200)")
    query(bookshelf, "CREATE INDEX ix_books_title ON books (title)")
    query(bookshelf, "ALTER TABLE reviews DROP CONSTRAINT reviews_stars_check")

    check = run_module("schema_snapshot", dict(bookshelf, compare_to=before, restore_grants=True), check_mode=True)
    assert check["grants_restored"] == [f"SELECT on table public.books to {READER}"]
    assert check["grants_revoked"] == [f"UPDATE on table public.authors from {READER}"]
    assert not any("grant" in line for line in check["differences"]), check["differences"]
    assert query(bookshelf, f"SELECT has_table_privilege('{READER}', 'books', 'SELECT'), "
                            f"has_table_privilege('{READER}', 'authors', 'UPDATE')")[0] == (False, True)

    result = run_module("schema_snapshot", dict(bookshelf, compare_to=before, restore_grants=True))
    assert result["failed"] is True and result["changed"] is True
    assert result["grants_restored"] == [f"SELECT on table public.books to {READER}"]
    assert result["grants_revoked"] == [f"UPDATE on table public.authors from {READER}"]
    assert query(bookshelf, f"SELECT has_table_privilege('{READER}', 'books', 'SELECT'), "
                            f"has_table_privilege('{READER}', 'authors', 'UPDATE')")[0] == (True, False)
    assert result["differences"] == [
        "new index public.ix_books_title",
        "constraint public.reviews.reviews_stars_check is gone",
        "table public.books: 3 rows before, 2 now (1 lost)",
    ]
    assert "in 3 way(s)" in result["msg"] and "\n" not in result["msg"]


def test_data_a_downgrade_cannot_give_back_is_named(bookshelf):
    before = run_module("schema_snapshot", bookshelf)["snapshot"]
    query(bookshelf, "ALTER TABLE books DROP COLUMN published_on")  # no row had a value; the table had rows
    query(bookshelf, "ALTER TABLE authors ALTER COLUMN name TYPE text")
    query(bookshelf, "DROP TABLE reviews")  # empty: a downgrade gives it back whole
    result = run_module("schema_snapshot", dict(bookshelf, compare_to=before, fail_on_difference=False))
    assert result["destroyed"] == [
        "table public.authors: column name was rewritten from character varying(200) to text (2 rows)",
        "table public.books: column published_on (3 rows) is gone",
    ]


def test_a_column_put_back_elsewhere_is_named(bookshelf):
    before = run_module("schema_snapshot", bookshelf)["snapshot"]
    query(bookshelf, "ALTER TABLE books DROP COLUMN title")
    query(bookshelf, "ALTER TABLE books ADD COLUMN title varchar(300) NOT NULL DEFAULT ''")
    query(bookshelf, "ALTER TABLE books ALTER COLUMN title DROP DEFAULT")
    result = run_module("schema_snapshot", dict(bookshelf, compare_to=before, fail_on_difference=False))
    assert result.get("failed") is not True
    assert result["differences"] == ["table public.books: columns in another order: now id, author_id, status, "
                                     "published_on, title; was id, author_id, title, status, published_on"]


def test_large_tables_are_compared_by_estimate_and_named(bookshelf):
    query(bookshelf, "ANALYZE books")
    taken = run_module("schema_snapshot", dict(bookshelf, exact_count_max_rows=2))
    assert taken["estimated_tables"] == ["public.books"]
    assert taken["snapshot"]["rows"]["public.books"] == {"rows": 3, "exact": False}
    assert taken["snapshot"]["rows"]["public.authors"] == {"rows": 2, "exact": True}


def test_bad_input_is_one_line(bookshelf):
    result = run_module("schema_snapshot", dict(bookshelf, compare_to={"rows": {}}))
    assert result["failed"] is True and "compare_to is not a snapshot" in result["msg"]


def test_a_deployment_is_judged_on_what_it_broke_not_on_what_was_there(bookshelf):
    # Already there before: a duplicate index and an unindexed foreign key are not the deployment's doing.
    query(bookshelf, "CREATE INDEX ix_books_author_again ON books (author_id)")
    before = run_module("schema_snapshot", bookshelf)["snapshot"]
    # The deployment: a new column and table (its own changes), and three breakages.
    query(bookshelf, "ALTER TABLE books ADD COLUMN subtitle text")
    query(bookshelf, "CREATE TABLE shelves (id int PRIMARY KEY)")
    query(bookshelf, "CREATE INDEX ix_reviews_book ON reviews (book_id)")
    query(bookshelf, "CREATE INDEX ix_reviews_book_id ON reviews (book_id)")
    query(bookshelf, f"REVOKE SELECT ON authors FROM {READER}")
    query(bookshelf, "ALTER TABLE reviews ADD CONSTRAINT reviews_body_short CHECK (length(body) < 4000) NOT VALID")
    result = run_module("schema_snapshot", dict(bookshelf, compare_to=before, judge="deployment"))
    assert result["failed"] is True
    assert result["broken"] == [f"table public.authors: grant SELECT to {READER} is gone (privilege_lost)"], \
        result["broken"]
    # Waste, and a constraint added NOT VALID on purpose (validated by a later revision): warnings.
    assert result["warned"] == [
        "new index public.ix_reviews_book_id duplicates index public.ix_reviews_book (index_duplicate)",
        "new constraint public.reviews.reviews_body_short is NOT VALID: existing rows were not checked against it "
        "yet (constraint_not_valid)",
    ], result["warned"]
    assert "table public.books: new column subtitle text" in result["changes"]
    assert "new table public.shelves" in result["changes"]
    assert not any("ix_books_author_again" in line for line in result["broken"] + result["changes"])
    assert result["msg"].startswith("the deployment broke 1 thing(s) on ")
    assert result["msg"].endswith("Each kind (in brackets) can be set to warn, for one object or all, in findings "
                                  "(pgops_catalog_findings)"), result["msg"]
    # Per object: the lost grant on authors is expected (warn); the duplicate index must not pass (fail).
    levels = {"privilege_lost": {"default": "fail", "table public.authors": "warn"}, "index_duplicate": "fail",
              "constraint_not_valid": "ignore"}
    judged = run_module("schema_snapshot", dict(bookshelf, compare_to=before, judge="deployment", findings=levels))
    assert judged["broken"] == ["new index public.ix_reviews_book_id duplicates index public.ix_reviews_book "
                                "(index_duplicate)"], judged["broken"]
    assert judged["warned"] == [f"table public.authors: grant SELECT to {READER} is gone (privilege_lost)"]
    assert [line.split(":")[0] for line in judged["ignored"]] == [
        "new constraint public.reviews.reviews_body_short is NOT VALID"]
    bad = run_module("schema_snapshot", dict(bookshelf, compare_to=before, judge="deployment",
                                             findings={"index_duplicate": "loud"}))
    assert bad["failed"] is True and bad["msg"] == (
        "findings: index_duplicate default: level 'loud' is not one of fail, warn, ignore; nothing was read")
