"""The backup program's in-place restore: it completes or changes nothing, never hangs, leaves other schemas
alone and takes away what was created after the backup."""

import json
import time
from pathlib import Path

import pytest

from conftest import query
from test_backup_program import client_bin, run_program, write_config


@pytest.fixture
def backed_up(server, migrated, tmp_path):
    """A database at head with data, a verified backup of it, and the program's config: (params, config, dump)."""
    config, _backups = write_config(server, migrated, tmp_path)
    return migrated, config, back_up(config, migrated)


def back_up(config, params):
    """A new verified backup; its path."""
    result = run_program("backup", config, params["login_password"])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["path"]


def restore(config, params, dump, timeout=300, *extra):
    return run_program("restore", config, params["login_password"], f"--backup={dump}", "--replace-schema=public",
                       *extra, timeout=timeout)


def fingerprint(params):
    """Row counts, tables and extensions: enough to see whether anything changed."""
    return (query(params, "SELECT count(*) FROM jobs")[0][0], query(params, "SELECT count(*) FROM job_applications")[0][0],
            query(params, "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class c JOIN pg_namespace n "
                          "ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r'")[0][0],
            query(params, "SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension")[0][0])


def test_a_restore_whose_archive_cannot_be_read_changes_nothing(server, backed_up, tmp_path):
    params, config, dump = backed_up
    query(params, "CREATE TABLE after_backup (id int)")
    before = fingerprint(params)
    broken = client_bin(tmp_path, server, pg_restore=(
        'case "$*" in *--list*) exec "$REAL/pg_restore" "$@";; esac\n'
        'echo "pg_restore: error: could not read input file: simulated" >&2\nexit 1\n'))
    config.write_text(json.dumps(dict(json.loads(config.read_text()), bin_dir=broken)))
    result = restore(config, params, dump)
    assert result.returncode != 0
    assert "restore rolled back, nothing changed: pg_restore could not read" in result.stderr
    assert "could not read input file: simulated" in result.stderr
    assert fingerprint(params) == before, "the schema was replaced by an empty one"


def test_other_schemas_are_left_alone_and_nothing_hangs(server, backed_up):
    params, config, _dump = backed_up
    # A second schema in the archive: restoring all of it would stop at "schema reporting already exists"
    # early in a large archive, which used to leave psql dead and pg_restore blocked on its pipe, forever.
    query(params, "CREATE SCHEMA reporting")
    query(params, "CREATE TABLE reporting.kept (id int)")
    query(params, "INSERT INTO reporting.kept VALUES (1), (2)")
    time.sleep(1.1)  # backups are named by the second
    dump = back_up(config, params)
    query(params, "INSERT INTO reporting.kept VALUES (3)")
    # Deletes, updates and inserts since the backup, each told apart by primary key.
    deleted = query(params, "WITH gone AS (DELETE FROM job_applications WHERE id % 2 = 0 RETURNING 1) "
                            "SELECT count(*) FROM gone")[0][0]
    left = query(params, "SELECT count(*) FROM job_applications")[0][0]
    query(params, "UPDATE jobs SET title = title || ' (edited)' WHERE id IN (SELECT id FROM jobs ORDER BY id LIMIT 3)")
    query(params, "INSERT INTO companies (name) VALUES ('new since the backup'), ('another')")
    refused = restore(config, params, dump, 120)
    assert refused.returncode != 0
    assert "restore refused, nothing changed: it would discard the writes committed between " in refused.stderr
    assert (f"public.job_applications: 0 row(s) written since the backup and {deleted} of its row(s) deleted since;"
            in refused.stderr), refused.stderr
    assert "public.jobs: 3 row(s) written since the backup (0 inserted, 3 updated)." in refused.stderr
    assert "public.companies: 2 row(s) written since the backup (2 inserted, 0 updated);" in refused.stderr
    assert query(params, "SELECT count(*) FROM job_applications")[0][0] == left, "nothing was restored"
    result = restore(config, params, dump, 120, f"--discard-writes={Path(dump).name}")
    assert result.returncode == 0, result.stderr
    restored = json.loads(result.stdout)
    assert {table["table"] for table in restored["discarded"]["tables"]} == {
        "public.companies", "public.job_applications", "public.jobs"}
    assert Path(restored["safety_backup"]).exists(), "a copy of the state it replaced was kept"
    assert query(params, "SELECT count(*) FROM reporting.kept")[0][0] == 3, "the other schema was left as it is"
    assert query(params, "SELECT count(*) FROM job_applications WHERE id % 2 = 0")[0][0] > 0


def test_an_error_late_in_a_large_archive_fails_at_once_and_changes_nothing(server, backed_up):
    params, config, dump = backed_up
    # The archive grants to a role that is gone by the time of the restore: its ACL entries come last.
    query(params, "CREATE ROLE pgops_gone_reader")
    query(params, "GRANT SELECT ON jobs TO pgops_gone_reader")
    time.sleep(1.1)  # backups are named by the second
    late_dump = back_up(config, params)
    query(params, "DROP OWNED BY pgops_gone_reader")
    query(params, "DROP ROLE pgops_gone_reader")
    query(params, "CREATE TABLE after_backup (id int)")
    before = fingerprint(params)
    result = restore(config, params, late_dump, timeout=120)
    assert result.returncode != 0
    assert 'role "pgops_gone_reader" does not exist' in result.stderr
    assert "restore rolled back, nothing changed" in result.stderr
    assert fingerprint(params) == before


def test_a_view_in_another_schema_over_the_restored_tables_refuses_the_restore(server, backed_up):
    params, config, dump = backed_up
    query(params, "CREATE SCHEMA reporting")
    query(params, "CREATE VIEW reporting.open_jobs AS SELECT id FROM public.jobs")
    result = restore(config, params, dump)
    assert result.returncode != 0
    assert "view reporting.open_jobs in other schemas depend(s) on schema public" in result.stderr
    assert query(params, "SELECT count(*) FROM reporting.open_jobs")[0][0] > 0


def test_extensions_created_after_the_backup_are_removed(server, backed_up):
    params, config, dump = backed_up
    query(params, "CREATE EXTENSION IF NOT EXISTS citext")
    had = query(params, "SELECT extname FROM pg_extension WHERE extname = 'pg_trgm'")
    result = restore(config, params, dump)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["extensions_removed"] == ["citext"]
    assert query(params, "SELECT count(*) FROM pg_extension WHERE extname = 'citext'")[0][0] == 0
    assert query(params, "SELECT extname FROM pg_extension WHERE extname = 'pg_trgm'") == had


def test_as_the_deploy_role_with_a_superusers_extensions_in_the_schema(server, migrated, tmp_path):
    """As production has it: pg_stat_statements installed in public by a superuser (as monitoring.yml does),
    pg_trgm there too with an index in another schema built on it, a commented schema. The deploy role, no
    superuser, restores: the extensions stay as they are, nothing elsewhere is touched, the schema keeps its
    comment, and every kind of object the schema holds is replaced."""
    query(migrated, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements WITH SCHEMA public")
    query(migrated, "COMMENT ON SCHEMA public IS 'the application''s tables'")
    deploy = dict(migrated, login_user=server["deploy_user"], login_password=server["deploy_password"])
    query(deploy, "CREATE TYPE public.span AS ENUM ('short', 'long')")
    query(deploy, "CREATE DOMAIN public.positive AS int CHECK (VALUE > 0)")
    query(deploy, "CREATE TABLE public.events (id int GENERATED ALWAYS AS IDENTITY, at public.span, n public.positive)"
                  " PARTITION BY HASH (id)")
    query(deploy, "CREATE TABLE public.events_0 PARTITION OF public.events FOR VALUES WITH (MODULUS 1, REMAINDER 0)")
    query(deploy, "CREATE FUNCTION public.event_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM public.events'")
    query(deploy, "CREATE STATISTICS public.jobs_stats ON id, title FROM public.jobs")
    query(deploy, "INSERT INTO public.events (at, n) VALUES ('short', 1)")
    config, _backups = write_config(server, deploy, tmp_path)
    dump = back_up(config, deploy)
    jobs = query(deploy, "SELECT count(*) FROM public.jobs")[0][0]
    query(deploy, "DELETE FROM public.events")
    query(deploy, "DELETE FROM public.jobs WHERE id IN (SELECT id FROM public.jobs ORDER BY id LIMIT 3)")
    query(deploy, "CREATE TABLE public.after_backup (id int)")
    query(deploy, "CREATE SCHEMA reporting")
    query(deploy, "CREATE TABLE reporting.notes (body text)")
    query(deploy, "CREATE INDEX notes_trgm ON reporting.notes USING gin (body public.gin_trgm_ops)")
    extensions = query(migrated, "SELECT e.extname, e.extnamespace::regnamespace::text, e.extowner::regrole::text "
                                 "FROM pg_extension e ORDER BY 1")

    done = restore(config, deploy, dump, 300, f"--discard-writes={Path(dump).name}")
    assert done.returncode == 0, done.stderr
    assert query(migrated, "SELECT e.extname, e.extnamespace::regnamespace::text, e.extowner::regrole::text "
                           "FROM pg_extension e ORDER BY 1") == extensions
    assert query(deploy, "SELECT count(*) FROM public.pg_stat_statements_info")[0][0] == 1
    assert query(deploy, "SELECT count(*) FROM public.jobs")[0][0] == jobs
    assert query(deploy, "SELECT public.event_count(), (SELECT n FROM public.events)") == [(1, 1)]
    assert query(deploy, "SELECT to_regclass('public.after_backup')") == [(None,)]
    assert query(deploy, "SELECT count(*) FROM pg_indexes WHERE indexname = 'notes_trgm'")[0][0] == 1
    assert query(deploy, "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                         "WHERE c.relname = 'ix_jobs_title_trgm' AND i.indisvalid")[0][0] == 1
    assert query(deploy, "SELECT obj_description('public'::regnamespace, 'pg_namespace')") == [
        ("the application's tables",)]
    assert query(deploy, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'pgops_replaced_%'")[0][0] == 0


def test_an_object_the_restore_cannot_set_aside_refuses_it_first(server, backed_up):
    params, config, dump = backed_up
    query(params, "CREATE FUNCTION public.longer(text, text) RETURNS bool LANGUAGE sql "
                  "AS 'SELECT length($1) > length($2)'")
    query(params, "CREATE OPERATOR public.>>> (LEFTARG = text, RIGHTARG = text, FUNCTION = public.longer)")
    before = fingerprint(params)
    refused = restore(config, params, dump)
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines()[-1].endswith(
        "restore refused, nothing changed: schema public holds operator >>>, which the restore cannot set aside; "
        "move them to a schema of their own (or make them part of an extension) first"), refused.stderr
    assert fingerprint(params) == before


def test_as_the_deploy_role_a_function_of_another_owner_refuses_it_first(server, migrated, tmp_path):
    """Only its owner may move a routine aside (a range type's constructors belong to the bootstrap superuser):
    the deploy role's restore is refused before anything changes, naming it."""
    deploy = dict(migrated, login_user=server["deploy_user"], login_password=server["deploy_password"])
    config, _backups = write_config(server, deploy, tmp_path)
    dump = back_up(config, deploy)
    query(migrated, "CREATE FUNCTION public.audit_note() RETURNS text LANGUAGE sql AS 'SELECT ''kept'''")
    before = fingerprint(deploy)
    refused = restore(config, deploy, dump)
    assert refused.returncode != 0
    assert f"schema public holds function audit_note (owned by {server['user']}), which the restore cannot set " \
           "aside" in refused.stderr, refused.stderr
    assert fingerprint(deploy) == before
    assert query(deploy, "SELECT public.audit_note()") == [("kept",)]
