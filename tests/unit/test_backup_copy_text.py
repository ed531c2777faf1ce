"""How the backup program reads an archive's COPY data to tell updates from inserts (pure parsing, no server)."""

import importlib.util

import pytest

from conftest import ROOT

spec = importlib.util.spec_from_file_location("pgops_backup", ROOT / "roles" / "backup" / "files" / "pgops_backup.py")
pgops_backup = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pgops_backup)


@pytest.mark.parametrize("header, columns", [
    ("COPY public.jobs (id, title, company_id) FROM stdin;", ["id", "title", "company_id"]),
    ('COPY "Sales"."Orders" ("Order ID", "say ""hi""", plain) FROM stdin;', ["Order ID", 'say "hi"', "plain"]),
    ("SET statement_timeout = 0;", None),
    ("-- Data for Name: jobs; Type: TABLE DATA; Schema: public; Owner: deploy", None),
])
def test_the_columns_of_a_copy_line(header, columns):
    assert pgops_backup.copy_columns(header) == columns


@pytest.mark.parametrize("field, value", [
    ("42", "42"), ("a\\tb", "a\tb"), ("line\\nbreak", "line\nbreak"), ("back\\\\slash", "back\\slash"),
    ("\\101\\x42", "AB"), ("caf\u00e9", "caf\u00e9"), ("\\q", "q"),
])
def test_a_copy_field_reads_back_as_the_type_wrote_it(field, value):
    assert pgops_backup.copy_field(field) == value
