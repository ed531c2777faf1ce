"""alembic_migration with a project written the way most teams write theirs (examples/bookshelf): the stock env.py
reading sqlalchemy.url, psycopg 3 in the application's own virtualenv, the async template, op.get_bind().commit()."""

import json
import re
import shutil
import subprocess
import time
import types
from pathlib import Path

import pytest

from conftest import (APP, PASSWORD, ROOT, admin_run, application_role, artifacts, assert_application_survived,
                      connect_as, failure_message,
                      hold_lock, owner_params, play_recap, query, run_module, run_playbook, scratch_database,
                      start_playbook)
from test_deploy_interruptions import TOLERATE_BLOCKER, kill_alembic, wait_until_migration_waits

BOOKSHELF = ROOT / "examples" / "bookshelf"
BOOKSHELF_PYTHON = ROOT / ".venv-bookshelf" / "bin" / "python"
CHAIN = ["1f0a2b3c4d5e", "2a1b2c3d4e5f", "3b2c3d4e5f6a", "4c3d4e5f6a7b", "5d4e5f6a7b8c"]


def recorded(params):
    if not query(params, "SELECT to_regclass('alembic_version') IS NOT NULL")[0][0]:
        return None
    return query(params, "SELECT version_num FROM alembic_version")[0][0]


@pytest.fixture
def decoy(server):
    """Another database on the same server, the one a project's own configuration names."""
    with scratch_database(server, "decoy_") as params:
        yield params


def project_copy(tmp_path, url=None, env_py=None):
    """The bookshelf project in tmp_path, with its alembic.ini naming `url`, and env.py replaced by `env_py`."""
    project = tmp_path / "bookshelf"
    shutil.copytree(BOOKSHELF, project, ignore=shutil.ignore_patterns("__pycache__"))
    if url:
        ini = project / "alembic.ini"
        ini.write_text(ini.read_text().replace("postgresql+psycopg://bookshelf@localhost/bookshelf", url))
    if env_py:
        (project / "migrations" / "env.py").write_text(env_py)
    return project


def args(database, project, **more):
    return dict(database, project_dir=str(project), alembic_python=str(BOOKSHELF_PYTHON), **more)


def decoy_url(decoy):
    return "postgresql+psycopg://{login_user}@{login_host}:{login_port}/{login_db}".format(**decoy)


def test_stock_env_py_migrates_the_inventorys_database_not_the_ini_one(database, decoy, tmp_path):
    project = project_copy(tmp_path, url=decoy_url(decoy))
    done = run_module("alembic_migration", args(database, project))
    assert done.get("changed") is True, done
    assert [step["revision"] for step in done["pending"]] == CHAIN
    assert recorded(database) == CHAIN[-1]
    assert query(database, "SELECT enum_range(NULL::book_status)::text")[0][0] == "{draft,published,archived}"
    assert recorded(decoy) is None and query(decoy, "SELECT to_regclass('books')")[0][0] is None
    again = run_module("alembic_migration", args(database, project))
    assert again["changed"] is False and again["direction"] == "none"

    refused = run_module("alembic_migration", args(database, project, target=CHAIN[-2], allow_downgrade=True))
    assert refused["failed"] is True
    assert "family names were edited by hand after the split: restore the backup instead" in refused["msg"]
    assert refused["msg"].endswith(f"the database is now at revision {CHAIN[-1]}")


def test_an_env_py_that_connects_elsewhere_is_refused_before_any_statement(database, decoy, tmp_path):
    # A URL written into env.py (or read from the application's settings) ignores what Alembic is given.
    env_py = (BOOKSHELF / "migrations" / "env.py").read_text().replace(
        "connectable = engine_from_config(", f"connectable = engine_from_config({{'sqlalchemy.url': "
        f"{decoy_url(decoy)!r}}}, prefix='sqlalchemy.', poolclass=pool.NullPool) or engine_from_config(")
    project = project_copy(tmp_path, env_py=env_py)
    refused = run_module("alembic_migration", args(database, project))
    assert refused["failed"] is True
    assert (f"Alembic's env.py connected to database {decoy['login_db']} on 127.0.0.1 port {decoy['login_port']}, "
            f"not to the inventory's {database['login_db']}") in refused["msg"], refused["msg"]
    assert "nothing was run" in refused["msg"] and "\n" not in refused["msg"]
    assert recorded(database) is None and recorded(decoy) is None
    assert query(decoy, "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace")[0][0] == 0


def test_an_env_py_reading_its_url_under_another_name_gets_the_inventorys(database, decoy, tmp_path):
    """env.py reads config.get_main_option("url"), which alembic.ini points at another database: url_options hands
    the inventory's URL under that name too, and the database proof still holds."""
    env_py = (BOOKSHELF / "migrations" / "env.py").read_text().replace(
        'config.get_section(config.config_ini_section, {}),\n        prefix="sqlalchemy.",',
        '{"db.url": config.get_main_option("url")},\n        prefix="db.",')
    assert 'get_main_option("url")' in env_py
    project = project_copy(tmp_path, env_py=env_py)
    ini = project / "alembic.ini"
    ini.write_text(ini.read_text().replace("[alembic]\n", f"[alembic]\nurl = {decoy_url(decoy)}\n", 1))
    bad = run_module("alembic_migration", args(database, project, url_options=["url", "a b"]))
    assert bad["failed"] is True and bad["msg"].startswith("url_options 'a b': an option name"), bad["msg"]
    elsewhere = run_module("alembic_migration", args(database, project))
    assert elsewhere["failed"] is True and "not to the inventory's" in elsewhere["msg"], elsewhere["msg"]
    assert elsewhere["msg"].endswith("or name the option it reads in url_options (pgops_alembic_url_options); the "
                                     "database is now at revision base"), elsewhere["msg"]
    done = run_module("alembic_migration", args(database, project, url_options=["url"]))
    assert done.get("changed") is True, done
    assert recorded(database) == CHAIN[-1] and recorded(decoy) is None
    assert "url = " + decoy_url(decoy) in ini.read_text(), "the file is never edited"


@pytest.mark.one_server_version  # Alembic's behaviour, not the server's
def test_a_run_alembic_calls_good_that_kept_one_revision_fails(database, tmp_path):
    # The stock env.py runs everything in one transaction: a revision that commits ends it, and what runs after
    # it (the next revisions, and Alembic's record of them) is rolled back when Alembic closes the connection.
    stock = (BOOKSHELF / "migrations" / "env.py").read_text().replace("transaction_per_migration=True,", "")
    project = project_copy(tmp_path, env_py=stock)
    result = run_module("alembic_migration", args(database, project))
    assert result["failed"] is True
    assert result["msg"].startswith(f"alembic upgrade reported success but the database records revision {CHAIN[0]}, "
                                    f"not {CHAIN[-1]}: what ran after it was rolled back"), result["msg"]
    assert query(database, "SELECT to_regclass('reviews')")[0][0] is None


def test_the_async_template_runs_on_psycopg_async(database, tmp_path):
    scratch = tmp_path / "scratch"
    subprocess.run([str(BOOKSHELF_PYTHON), "-m", "alembic", "init", "-t", "async", str(scratch)], check=True,
                   capture_output=True, cwd=tmp_path)
    env_py = (scratch / "env.py").read_text().replace(
        "context.configure(connection=connection, target_metadata=target_metadata)",
        "context.configure(connection=connection, target_metadata=target_metadata, transaction_per_migration=True)")
    assert "transaction_per_migration=True" in env_py
    project = project_copy(tmp_path, env_py=env_py)
    done = run_module("alembic_migration", args(database, project, target=CHAIN[2]))
    assert done.get("changed") is True and recorded(database) == CHAIN[2], done.get("msg")
    assert query(database, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgops_migration'")[0][0] == 0


@pytest.mark.one_server_version  # offline rendering needs no server
def test_check_mode_renders_each_revision_it_can_and_says_why_not_for_the_others(database):
    result = run_module("alembic_migration", args(database, BOOKSHELF), check_mode=True)
    assert result["changed"] is True and recorded(database) is None
    assert [item["revision"] for item in result["sql_unrendered"]] == [CHAIN[1]], result["sql_unrendered"]
    assert "commit" in result["sql_unrendered"][0]["reason"]
    assert "CREATE TABLE reviews" in result["sql"] and "ALTER TABLE books DROP COLUMN isbn" in result["sql"]
    assert f"-- revision {CHAIN[1]}: no offline SQL" in result["sql"]


@pytest.mark.one_server_version
@pytest.mark.parametrize("python, fragment", [
    ("/nonexistent/venv/bin/python", "alembic_python /nonexistent/venv/bin/python is not an executable Python"),
    # The modules' Python has psycopg2 only: the project's driver is psycopg 3.
    (None, "No module named 'psycopg'; set alembic_python to the Python of the project's virtualenv"),
])
def test_an_interpreter_without_the_projects_driver_is_named(database, python, fragment):
    module_args = dict(database, project_dir=str(BOOKSHELF))
    if python:
        module_args["alembic_python"] = python
    result = run_module("alembic_migration", module_args)
    assert result["failed"] is True and fragment in result["msg"] and "\n" not in result["msg"], result["msg"]
    assert recorded(database) is None


def test_a_revision_that_drops_data_is_found_before_it_runs(server, database):
    run_module("alembic_migration", args(database, BOOKSHELF, target=CHAIN[2]))
    status = run_module("alembic_migration", args(database, BOOKSHELF, state="status"))
    assert [(step["revision"], step["destructive"], step["destructive_checked"]) for step in status["pending"]] == [
        (CHAIN[3], ["ALTER TABLE books DROP COLUMN isbn (drops column isbn and its data)"], True), (CHAIN[4], [], True)]
    assert status["destructive_check"] == "checked from the offline SQL of every pending revision"
    # From base, the revision that commits cannot be rendered offline: it is named as not checked.
    with scratch_database(server) as fresh:
        status = run_module("alembic_migration", args(fresh, BOOKSHELF, state="status"))
    assert [step["revision"] for step in status["pending"] if not step["destructive_checked"]] == [CHAIN[1]]
    assert status["destructive_check"].startswith(f"not checked before running for {CHAIN[1]} ("), \
        status["destructive_check"]
    assert status["destructive_check"].endswith("the catalog comparison after the migration still is")


def enum_values(params):
    return [row[0] for row in query(params, "SELECT unnest(enum_range(NULL::book_status))::text")]


READER = "bookshelf_reader"
FAILING = '''revision = "6e5f6a7b8c9d"
down_revision = "5d4e5f6a7b8c"


def upgrade():
    from alembic import op
    op.execute("SELECT 1 / 0")


def downgrade():
    pass
'''


@pytest.fixture
def bookshelf_owned(server, database):
    """The database owned by the deploy role, at the bookshelf's first revision with a book that has an ISBN,
    and the reporting role its third revision grants SELECT to."""
    admin_run(server, "DROP ROLE IF EXISTS {}", READER)
    admin_run(server, "CREATE ROLE {}", READER)
    admin_run(server, "ALTER DATABASE {} OWNER TO {}", database["login_db"], server["deploy_user"])
    owner = owner_params(server, database)
    assert run_module("alembic_migration", args(owner, BOOKSHELF, target=CHAIN[0])).get("changed") is True
    query(owner, "INSERT INTO authors (name) VALUES ('Italo Calvino')")
    query(owner, "INSERT INTO books (author_id, title, isbn) SELECT id, 'Invisible Cities', '978-0156453806' FROM authors")
    yield owner
    query(database, f"DROP OWNED BY {READER}")
    admin_run(server, "DROP ROLE {}", READER)


def test_the_minimum_inventory_through_every_runbook_ends_with_the_catalog_as_before(server, bookshelf_owned, tmp_path):
    database = bookshelf_owned
    inventory = ("-i", str(BOOKSHELF / "inventory"))
    name = database["login_db"]

    def runbook(playbook, *extra):
        return run_playbook(playbook, server, database, tmp_path, *inventory, *extra)

    def records():
        return sorted((tmp_path / "reports").glob("deploy-*.json"), key=lambda path: path.stat().st_mtime)

    # Online, the revision that drops a column holding data is refused before anything runs.
    refused = runbook("deploy_migration.yml", "-e", "pgops_deploy_mode=online")
    assert play_recap(refused)["failed"] == 1 and recorded(database) == CHAIN[0]
    assert f"Revision(s) {CHAIN[3]} cannot be rolled back by a downgrade ({CHAIN[3]}: ALTER TABLE books DROP " \
           "COLUMN isbn (drops column isbn and its data))" in refused.stdout, refused.stdout[-3000:]
    assert "by id in pgops_allow_destructive. Nothing was changed. Nothing was migrated" in failure_message(refused), \
        failure_message(refused)

    # Maintenance mode, up to the revision that grants to the reporting role; a re-run changes nothing.
    deployed = runbook("deploy_migration.yml", "-e", f"pgops_migration_target={CHAIN[2]}")
    assert play_recap(deployed)["failed"] == 0, deployed.stdout[-3000:]
    assert f"{name}: deployed {CHAIN[0]} -> {CHAIN[2]} (2 revision(s))" in deployed.stdout
    # Said before anything changed, and kept in the record: the revision that commits could not be read offline.
    assert f"The check for statements that destroy data was not checked before running for {CHAIN[1]} (" \
        in deployed.stdout, deployed.stdout[-3000:]
    assert query(database, f"SELECT has_table_privilege('{READER}', 'books', 'SELECT')")[0][0] is True
    record = records()[-1]
    # No application role to guard: the backup is taken with writes on, and the record says so.
    assert json.loads(record.read_text())["backup_taken"] == "with writes on (no application roles guarded)"
    assert json.loads(record.read_text())["destructive_check"].startswith(f"not checked before running for {CHAIN[1]}")
    again = runbook("deploy_migration.yml", "-e", f"pgops_migration_target={CHAIN[2]}")
    assert play_recap(again)["failed"] == 0 and f"nothing to deploy: at {CHAIN[2]} (target {CHAIN[2]}, not the " \
        "head)" in again.stdout, again.stdout[-2000:]

    # Rollback by downgrade: the grants the upgrade made on tables that stay are taken back, and the catalog is
    # proven equal to the snapshot taken before the deployment (not the rows: the deployment finished, they are
    # the application's since).
    rolled = runbook("rollback.yml", "-e", f"record={record}", "-e", "confirm=yes")
    assert play_recap(rolled)["failed"] == 0, rolled.stdout[-3000:]
    assert f"Rolled back by downgrade: the database is at revision {CHAIN[0]}, as before the deployment, its " \
           f"catalog as before (" in rolled.stdout, rolled.stdout[-3000:]
    assert f"; privileges the deployment had granted were revoked: SELECT on table public.authors from {READER}, " \
           f"SELECT on table public.books from {READER}." in rolled.stdout, rolled.stdout[-3000:]
    assert query(database, f"SELECT has_table_privilege('{READER}', 'books', 'SELECT')")[0][0] is False

    # A failure injected after the revision that drops a column, allowed so that the offline SQL does not decide:
    # the automatic rollback would have to downgrade past the dropped column, found gone in the catalog, so it
    # plans a restore. No application role is guarded, so writes were never off: the rows the migration itself
    # wrote since the backup cannot be told from the application's, and the restore is refused, naming them.
    project = project_copy(tmp_path)
    (project / "migrations" / "versions" / "6e5f6a7b8c9d_fails.py").write_text(FAILING)
    failing = ("-e", f"pgops_alembic_project_dir={project}", "-e", '{"pgops_allow_destructive": ["%s"]}' % CHAIN[3])
    failed = runbook("deploy_migration.yml", *failing)
    assert failed.returncode != 0 and play_recap(failed)["failed"] == 1
    last = failure_message(failed)
    assert "THE ROLLBACK FAILED TOO (" in last and "restore refused, nothing changed: it would discard the writes " \
        "committed between " in last, last
    assert f"The database is at revision {CHAIN[4]}; writes are on (this deployment never turned them off)." in last
    assert recorded(database) == CHAIN[4]

    # Acknowledged by naming the backup: restored, the state it replaced kept in a copy, the column back.
    record = records()[-1]
    backup_name = json.loads(record.read_text())["backup"]["path"].rsplit("/", 1)[-1]
    restored = runbook("rollback.yml", "-e", f"record={record}", "-e", "method=restore", "-e", "confirm=yes",
                       "-e", f"pgops_alembic_project_dir={project}", "-e", f"discard_writes={backup_name}")
    assert play_recap(restored)["failed"] == 0, restored.stdout[-3000:]
    assert f"Rolled back by restore: the database is at revision {CHAIN[0]}" in restored.stdout, restored.stdout[-3000:]
    assert "; discarded, as acknowledged: the writes committed between " in restored.stdout
    assert "; the state before the restore is kept in " in restored.stdout
    assert recorded(database) == CHAIN[0] and query(database, "SELECT isbn FROM books")[0][0] == "978-0156453806"

    # Online, the same: it does not downgrade either, and says what restores the column.
    failed = runbook("deploy_migration.yml", "-e", "pgops_deploy_mode=online", *failing)
    assert failed.returncode != 0 and play_recap(failed)["failed"] == 1
    assert recorded(database) == CHAIN[4] and query(database, "SELECT to_regclass('books')")[0][0] is not None
    last = failure_message(failed)
    assert f"A downgrade to {CHAIN[0]} would bring back empty what the deployment destroyed: table public.books: " \
           "column isbn (1 row) is gone. Nothing was downgraded." in last, last
    assert "writes are on (this deployment never turned them off)" in last
    assert last.count("ansible-playbook playbooks/rollback.yml -e method=restore -e backup=") == 1, last

    # The restore it names gives the column back with its data; the catalog is proven as before.
    record = records()[-1]
    # Online, the deployment's backup was taken with writes on: what the restore discards must be acknowledged.
    backup_name = json.loads(record.read_text())["backup"]["path"].rsplit("/", 1)[-1]
    restored = runbook("rollback.yml", "-e", f"record={record}", "-e", "method=restore", "-e", "confirm=yes",
                       "-e", f"pgops_alembic_project_dir={project}", "-e", f"discard_writes={backup_name}")
    assert play_recap(restored)["failed"] == 0, restored.stdout[-3000:]
    assert f"Rolled back by restore: the database is at revision {CHAIN[0]}, as before the deployment, its " \
           f"catalog as before (" in restored.stdout, restored.stdout[-3000:]
    assert query(database, "SELECT isbn FROM books")[0][0] == "978-0156453806"


def test_an_unguarded_deployments_own_restore_drops_no_write_of_the_application(
        server, database, bookshelf_owned, tmp_path, live_writer):
    """The other branch of the minimum inventory's automatic restore: no application role is named, so writes stay
    on, and the application wrote since the backup. The restore the plan calls for is refused, naming those
    writes, instead of dropping them as the deployment's own work; every write survives."""
    project = project_copy(tmp_path)
    (project / "migrations" / "versions" / "6e5f6a7b8c9d_fails.py").write_text(FAILING)
    with application_role(database):
        writer = live_writer(bookshelf_owned, table="authors")
        failed = run_playbook("deploy_migration.yml", server, bookshelf_owned, tmp_path,
                              "-i", str(BOOKSHELF / "inventory"), "-e", f"pgops_alembic_project_dir={project}",
                              "-e", '{"pgops_allow_destructive": ["%s"]}' % CHAIN[3])
        assert failed.returncode != 0 and play_recap(failed)["failed"] == 1, failed.stdout[-3000:]
        last = failure_message(failed)
        assert "THE ROLLBACK FAILED TOO (" in last and "restore refused, nothing changed: it would discard the " \
            "writes committed between " in last, last
        assert re.search(r"public\.authors: \d+ row\(s\) written since the backup", last), last
        assert "No application roles are guarded (pgops_app_roles), so writes were never off: the rows it names " \
            "may be the application's writes or the migration's own." in last.replace("\\'", "'"), last
        assert f"The database is at revision {CHAIN[4]}; writes are on (this deployment never turned them off)." \
            in last, last
        assert recorded(bookshelf_owned) == CHAIN[4]
        assert_application_survived(writer, bookshelf_owned)


def test_an_inventory_without_host_or_port_backs_up_the_server_every_other_step_reaches(
        server, bookshelf_owned, tmp_path):
    """The minimum inventory without pgops_db_host and pgops_db_port: the session's PGHOST and PGPORT name the
    server (not libpq's default port). The modules, Alembic and the backup program resolve them once, the same
    way: the backup proves it dumps the locked database, and its config keeps the server for cron's runs."""
    database = bookshelf_owned
    inventory = tmp_path / "inventory"
    shutil.copytree(BOOKSHELF / "inventory", inventory)
    settings = inventory / "group_vars" / "all.yml"
    text = settings.read_text().replace("{{ inventory_dir | dirname | dirname | dirname }}", str(ROOT)) \
        .replace("{{ inventory_dir | dirname }}", str(BOOKSHELF))
    settings.write_text("".join(line for line in text.splitlines(keepends=True)
                                if not line.startswith(("pgops_db_host:", "pgops_db_port:"))))
    assert "pgops_db_port" not in settings.read_text() and database["login_port"] != 5432
    deployed = run_playbook("deploy_migration.yml", server, database, tmp_path, "-i", str(inventory),
                            "-e", f"pgops_migration_target={CHAIN[2]}")
    assert deployed.returncode == 0 and play_recap(deployed)["failed"] == 0, failure_message(deployed)
    assert f"{database['login_db']}: deployed {CHAIN[0]} -> {CHAIN[2]} (2 revision(s))" in deployed.stdout
    assert recorded(database) == CHAIN[2]
    (record,) = (tmp_path / "reports").glob("deploy-*.json")
    backup = json.loads(record.read_text())["backup"]
    assert backup["verified"] is True, backup
    config = json.loads((ROOT / "build" / "bookshelf" / "etc" / f"backup-{database['login_db']}.run.json").read_text())
    assert (config["host"], config["port"], config["user"]) == (
        database["login_host"], database["login_port"], database["login_user"]), config


def names_in_backup(server, backup, table):
    """The name column of `table` in a custom-format backup, read with pg_restore (nothing restored)."""
    sql_text = subprocess.run([f"{server['bindir']}/pg_restore", "--data-only", f"--table={table}", "--file=-",
                               str(backup)], capture_output=True, text=True, check=True).stdout
    rest = sql_text.partition(f"COPY public.{table} (")[2]
    assert rest, f"no data of {table} in {backup}"
    columns = rest.split(")", 1)[0].split(", ")
    rows = rest.split("FROM stdin;\n", 1)[1].split("\n\\.\n", 1)[0].splitlines()
    return {row.split("\t")[columns.index("name")] for row in rows}


@pytest.mark.one_server_version  # the runbook's hold and copy, not the server's
def test_a_restore_with_the_application_writing_keeps_every_write_it_discards(
        server, database, bookshelf_owned, tmp_path, live_writer):
    """The minimum inventory guards no application role: writes stay on through a rollback. A restore that would
    discard the application's writes is refused, naming them; acknowledged, the application's writes wait (none
    refused) while the copy of the current state is taken and the schema replaced, so every committed write is in
    the database or in that copy, none lost between the two."""
    inventory = ("-i", str(BOOKSHELF / "inventory"))
    with application_role(database):  # created by the superuser: the deploy role may not create roles
        database = bookshelf_owned
        deployed = run_playbook("deploy_migration.yml", server, database, tmp_path, *inventory,
                                "-e", f"pgops_migration_target={CHAIN[2]}")
        assert play_recap(deployed)["failed"] == 0, failure_message(deployed)
        (record,) = (tmp_path / "reports").glob("deploy-*.json")
        backup = Path(json.loads(record.read_text())["backup"]["path"])
        rollback = ("rollback.yml", server, database, tmp_path, *inventory, "-e", f"record={record}",
                    "-e", "method=restore", "-e", "confirm=yes")

        writer = live_writer(database, table="authors")
        time.sleep(1)
        refused = run_playbook(*rollback)
        assert refused.returncode != 0 and play_recap(refused)["failed"] == 1, refused.stdout[-3000:]
        last = failure_message(refused)
        assert last.startswith("restore refused, nothing changed: it would discard the writes committed between "), last
        assert re.search(r"public\.authors: \d+ row\(s\) written since the backup", last), last
        assert f"-e discard_writes={backup.name}" in last, last
        assert recorded(database) == CHAIN[2]

        done = run_playbook(*rollback, "-e", f"discard_writes={backup.name}")
        time.sleep(1)  # writes after the restore, into the restored table
        writer.stop()
        assert done.returncode == 0 and play_recap(done)["failed"] == 0, done.stdout[-3000:]
        assert recorded(database) == CHAIN[0]
        (published,) = artifacts(done)["pgops_rollbacks"].values()
        assert published["writes_held_seconds"] > 0, published
        assert f"; writes to the restored schema were held (waiting, not refused) for " \
               f"{published['writes_held_seconds']} s." in published["summary"], published["summary"]
        live = {row[0] for row in query(database, "SELECT name FROM authors")}
        kept = names_in_backup(server, published["safety_backup"], "authors")
        committed = set(writer.committed_names)
        discarded = committed - live
        assert discarded, "the restore discarded none of the application's writes: nothing was tested"
        assert discarded <= kept, f"committed writes neither in the database nor in the copy: {sorted(discarded - kept)[:5]}"
        assert not writer.failed, f"writes were refused, not held: {writer.figures()}"
        assert committed & live, "the application wrote into the restored table"


@pytest.mark.one_server_version  # the runbook's refusal, not the server's
def test_a_restore_that_cannot_hold_the_applications_writes_changes_nothing(server, database, bookshelf_owned, tmp_path):
    """The other branch of the hold: a write the application keeps open on a table the restore replaces outlasts
    the restore's lock timeout. The restore is refused, nothing restored and no copy taken, and the open write
    can still commit."""
    inventory = ("-i", str(BOOKSHELF / "inventory"))
    with application_role(database):
        owner = bookshelf_owned
        deployed = run_playbook("deploy_migration.yml", server, owner, tmp_path, *inventory,
                                "-e", f"pgops_migration_target={CHAIN[2]}")
        assert play_recap(deployed)["failed"] == 0, failure_message(deployed)
        (record,) = (tmp_path / "reports").glob("deploy-*.json")
        backup = Path(json.loads(record.read_text())["backup"]["path"])
        dumps = sorted(path.name for path in backup.parent.glob("*.dump"))
        open_write = connect_as(owner, APP, PASSWORD, application_name="app-batch")
        open_write.cursor().execute("INSERT INTO authors (name) VALUES ('kept open through the restore')")
        try:
            refused = run_playbook("rollback.yml", server, owner, tmp_path, *inventory, "-e", f"record={record}",
                                   "-e", "method=restore", "-e", "confirm=yes", "-e", f"discard_writes={backup.name}")
            assert refused.returncode != 0 and play_recap(refused)["failed"] == 1, refused.stdout[-3000:]
            last = failure_message(refused)
            assert "restore refused, nothing changed: the writes to schema public could not be held: " in last, last
            assert "lock timeout" in last and "retry once it ends, or guard the application's roles with " \
                "pgops_app_roles" in last, last
            assert recorded(owner) == CHAIN[2]
            assert sorted(path.name for path in backup.parent.glob("*.dump")) == dumps, "no copy was taken"
            open_write.commit()
        finally:
            open_write.close()
        assert query(owner, "SELECT count(*) FROM authors WHERE name = 'kept open through the restore'")[0][0] == 1


@pytest.mark.parametrize("mode", ["maintenance", "online"])
def test_alembic_killed_after_its_revision_committed_part_of_itself(server, bookshelf_owned, tmp_path, mode):
    """The revision that commits its new enum value, then waits for a lock on books, killed there: the database
    still records the old revision, its catalog is not the one before, and the revision's downgrade cannot run
    on half of it. Maintenance mode restores the backup; online mode (writes made since) names the restore."""
    database = bookshelf_owned
    holder = hold_lock(database, "books", application_name="report-job")
    deploy = start_playbook("deploy_migration.yml", server, database, tmp_path, "-i", str(BOOKSHELF / "inventory"),
                            "-e", f"pgops_migration_target={CHAIN[1]}", "-e", TOLERATE_BLOCKER,
                            "-e", f"pgops_deploy_mode={mode}")
    try:
        wait_until_migration_waits(database, deploy, half_applied=lambda: "archived" in enum_values(database))
        kill_alembic(database)
    finally:
        holder.rollback()
        holder.close()
    output = types.SimpleNamespace(stdout=deploy.communicate(timeout=600)[0])
    assert deploy.returncode != 0 and play_recap(output)["failed"] == 1
    last = failure_message(output)
    assert f"alembic upgrade to {CHAIN[1]} on " in last and " was killed (signal 9); the database is now at " \
           f"revision {CHAIN[0]}." in last, last
    # Its downgrade fails on half of it; the catalog names what it left, and only a restore takes that back.
    assert f"enum public.book_status: labels was [\"draft\", \"published\"], is [\"draft\", \"published\", " \
           f"\"archived\"] (left by the half-applied revision {CHAIN[1]}, whose downgrade failed: " in last, last
    assert recorded(database) == CHAIN[0]
    if mode == "maintenance":
        assert f"Rolled back by restore: the database is at revision {CHAIN[0]}, as before the deployment, its " \
               "catalog and rows as before (" in last, last
        assert enum_values(database) == ["draft", "published"]
        assert query(database, "SELECT isbn FROM books")[0][0] == "978-0156453806"
    else:
        assert "THE ROLLBACK FAILED TOO" in last and "-e method=restore -e backup=" in last, last
        assert "archived" in enum_values(database), "nothing restored over the writes made online"


@pytest.fixture
def bookshelf_new(server, database):
    """A new project's database: owned by the deploy role, nothing migrated yet (no alembic_version table)."""
    admin_run(server, "DROP ROLE IF EXISTS {}", READER)
    admin_run(server, "CREATE ROLE {}", READER)
    admin_run(server, "ALTER DATABASE {} OWNER TO {}", database["login_db"], server["deploy_user"])
    yield owner_params(server, database)
    query(database, f"DROP OWNED BY {READER}")
    admin_run(server, "DROP ROLE {}", READER)


def test_a_new_projects_first_deployment_rolls_back_to_base(server, bookshelf_new, tmp_path):
    """The record of a first deployment has no revision before it: the rollback goes back to base, from the record
    and with -e revision=base, and the database is as it was: no tables, alembic_version empty."""
    database = bookshelf_new

    def runbook(playbook, *extra):
        return run_playbook(playbook, server, database, tmp_path, "-i", str(BOOKSHELF / "inventory"), *extra)

    def tables():
        return [row[0] for row in query(database, "SELECT relname FROM pg_class WHERE relkind = 'r' AND "
                                                  "relnamespace = 'public'::regnamespace AND relname <> "
                                                  "'alembic_version' ORDER BY 1")]

    deployed = runbook("deploy_migration.yml", "-e", f"pgops_migration_target={CHAIN[2]}")
    assert play_recap(deployed)["failed"] == 0, deployed.stdout[-3000:]
    assert f"{database['login_db']}: deployed base -> {CHAIN[2]} (3 revision(s))" in deployed.stdout
    record = sorted((tmp_path / "reports").glob("deploy-*.json"))[-1]
    assert json.loads(record.read_text())["revision_before"] is None
    assert tables() == ["authors", "books", "reviews"]

    rolled = runbook("rollback.yml", "-e", f"record={record}", "-e", "confirm=yes")
    assert play_recap(rolled)["failed"] == 0, rolled.stdout[-3000:]
    assert "Rolled back by downgrade: the database is at revision base, as before the deployment, its catalog as " \
           "before (" in rolled.stdout, rolled.stdout[-3000:]
    assert tables() == []
    assert query(database, "SELECT count(*) FROM alembic_version")[0][0] == 0

    deployed = runbook("deploy_migration.yml", "-e", f"pgops_migration_target={CHAIN[2]}")
    assert play_recap(deployed)["failed"] == 0, deployed.stdout[-3000:]
    rolled = runbook("rollback.yml", "-e", "revision=base", "-e", "confirm=yes")
    assert play_recap(rolled)["failed"] == 0, rolled.stdout[-3000:]
    assert "Rolled back by downgrade: the database is at revision base." in rolled.stdout, rolled.stdout[-3000:]
    assert tables() == [] and query(database, "SELECT count(*) FROM alembic_version")[0][0] == 0

    # A first deployment that fails is undone the same way by its own rescue, and its record says where it is.
    project = project_copy(tmp_path)
    (project / "migrations" / "versions" / "6e5f6a7b8c9d_fails.py").write_text(FAILING)
    failed = runbook("deploy_migration.yml", "-e", f"pgops_alembic_project_dir={project}",
                     "-e", '{"pgops_allow_destructive": ["%s"]}' % CHAIN[3])
    assert failed.returncode != 0 and play_recap(failed)["failed"] == 1
    last = failure_message(failed)
    # The bookshelf's last revision refuses its downgrade: the backup of the empty database is restored.
    assert "Rolled back by restore: the database is at revision base, as before the deployment, its catalog and " \
           "rows as before (" in last, last
    assert "; the downgrade had failed: alembic downgrade to base on " in last, last
    # As before it: the table Alembic left empty at the last rollback to base.
    assert tables() == [] and query(database, "SELECT count(*) FROM alembic_version")[0][0] == 0
    record = json.loads(sorted((tmp_path / "reports").glob("deploy-*.json"))[-1].read_text())
    assert record["revision_before"] is None and record["revision_after"] is None, record


def test_a_migration_that_never_began_is_not_undone(server, bookshelf_new, tmp_path):
    """env.py fails to load when it connects (a settings module missing on the host): Alembic ran no revision, the
    run says so, and nothing is downgraded or restored."""
    database = bookshelf_new
    env_py = (BOOKSHELF / "migrations" / "env.py").read_text().replace(
        "def run_migrations_online() -> None:\n", "def run_migrations_online() -> None:\n"
        "    import bookshelf_settings_not_installed  # noqa: F401\n", 1)
    assert "bookshelf_settings_not_installed" in env_py
    project = project_copy(tmp_path, env_py=env_py)
    query(database, "COMMENT ON DATABASE {} IS 'kept'".format(database["login_db"]))
    failed = run_playbook("deploy_migration.yml", server, database, tmp_path, "-i", str(BOOKSHELF / "inventory"),
                          "-e", f"pgops_alembic_project_dir={project}")
    assert failed.returncode != 0 and play_recap(failed)["failed"] == 1, failed.stdout[-3000:]
    last = failure_message(failed)
    assert "stopped before Alembic's first revision (nothing ran): No module named " \
           "'bookshelf_settings_not_installed'; alembic_python " in last, last
    assert " cannot import bookshelf_settings_not_installed: install what provides it into that environment, or, " \
           "if it is the project's own module, check its name and that it is under project_dir" in last, last
    assert "; the database is now at revision base. Nothing was migrated: the database is at revision base. " \
           "Record: " in last, last
    assert "Rolled back" not in failed.stdout and "TASK [intowork.pgops.rollback" not in failed.stdout
    assert query(database, "SELECT to_regclass('alembic_version')")[0][0] is None
    record = json.loads(sorted((tmp_path / "reports").glob("deploy-*.json"))[-1].read_text())
    assert record["rollback_decided"] is None and record["revision_after"] is None, record


@pytest.mark.one_server_version  # the module's words, not the server's
def test_a_failed_stamp_is_said_as_one(database, tmp_path):
    """Undoing a half-applied revision starts by stamping it; when that fails, the error says so (not that the
    downgrade failed) and that nothing was downgraded."""
    assert run_module("alembic_migration", args(database, BOOKSHELF, target=CHAIN[0])).get("changed") is True
    env_py = (BOOKSHELF / "migrations" / "env.py").read_text().replace(
        "def run_migrations_online() -> None:\n", "def run_migrations_online() -> None:\n"
        "    import bookshelf_settings_not_installed  # noqa: F401\n", 1)
    project = project_copy(tmp_path, env_py=env_py)
    failed = run_module("alembic_migration", args(database, project, target=CHAIN[0], allow_downgrade=True,
                                                  interrupted_plan=[CHAIN[1]]))
    assert failed["failed"] is True
    assert failed["msg"].startswith(f"marking the half-applied revision {CHAIN[1]} as applied, for its downgrade to "
                                    f"run, failed (alembic stamp to {CHAIN[1]} on "), failed["msg"]
    assert failed["msg"].endswith(f"nothing was downgraded, the database still records revision {CHAIN[0]}"), \
        failed["msg"]
    assert recorded(database) == CHAIN[0]


UNIQUE_PAIR = '''revision = "7f6a7b8c9d0e"
down_revision = "5d4e5f6a7b8c"


def upgrade():
    from alembic import op
    op.create_unique_constraint("uq_authors_name", "authors", ["name"])
    op.create_index("ix_authors_name", "authors", ["name"], unique=True)


def downgrade():
    from alembic import op
    op.drop_index("ix_authors_name", table_name="authors")
    op.drop_constraint("uq_authors_name", "authors", type_="unique")
'''


@pytest.mark.one_server_version  # the runbook's judgement, not the server's
def test_a_unique_constraint_and_a_unique_index_on_the_same_columns_deploy_with_a_warning(
        server, database, bookshelf_owned, tmp_path, live_writer):
    """Waste is not breakage: the duplicate index is a warning in the last line, the record and the report. The
    inventory can make it fail the deployment, and a finding kind that does not exist stops the run first. The
    application writes all along (no role guarded: writes stay on); the failed deployment's downgrade and the
    deployment keep every write."""
    assert run_module("alembic_migration", args(bookshelf_owned, BOOKSHELF, target=CHAIN[-1])).get("changed") is True
    with application_role(database):
        writer = live_writer(bookshelf_owned, table="authors")
        unique_pair_deployments(server, bookshelf_owned, tmp_path)
        assert_application_survived(writer, bookshelf_owned)


def unique_pair_deployments(server, database, tmp_path):
    project = project_copy(tmp_path)
    (project / "migrations" / "versions" / "7f6a7b8c9d0e_unique_pair.py").write_text(UNIQUE_PAIR)
    warning = "new index public.uq_authors_name duplicates index public.ix_authors_name (index_duplicate)"

    def runbook(*extra):
        return run_playbook("deploy_migration.yml", server, database, tmp_path, "-i", str(BOOKSHELF / "inventory"),
                            "-e", f"pgops_alembic_project_dir={project}", *extra)

    bad = runbook("-e", '{"pgops_catalog_findings": {"index_twin": "warn", "rows_lost": {"default": "maybe"}}}')
    assert bad.returncode != 0 and play_recap(bad)["failed"] == 1
    assert failure_message(bad).startswith(
        "Bad settings, nothing was changed: pgops_catalog_findings: finding kind 'index_twin' is not one of "
        "constraint_invalidated, constraint_not_valid, extension_gone, index_duplicate, index_invalid, "
        "owner_changed, privilege_lost, rows_lost; rows_lost default: level 'maybe' is not one of fail, warn, "
        "ignore (see docs/your-project.md)."), failure_message(bad)
    assert recorded(database) == CHAIN[-1]

    tightened = runbook("-e", '{"pgops_catalog_findings": {"index_duplicate": "fail"}}')
    assert tightened.returncode != 0 and play_recap(tightened)["failed"] == 1
    last = failure_message(tightened)
    assert "Check that the deployment broke nothing in the catalog: the deployment broke 1 thing(s) on " in last, last
    assert warning in last and "Rolled back by downgrade" in last, last
    assert recorded(database) == CHAIN[-1]

    deployed = runbook()
    assert play_recap(deployed)["failed"] == 0, deployed.stdout[-3000:]
    assert f"deployed {CHAIN[-1]} -> 7f6a7b8c9d0e (1 revision(s)), writes off " in deployed.stdout
    assert f"; catalog warning(s): {warning}" in deployed.stdout, deployed.stdout[-3000:]
    record = sorted((tmp_path / "reports").glob("deploy-*.json"), key=lambda path: path.stat().st_mtime)[-1]
    assert json.loads(record.read_text())["catalog_warnings"] == [warning]
    assert f"- **warning:** {warning}" in record.with_suffix(".md").read_text()
    assert "- new index public.ix_authors_name" in record.with_suffix(".md").read_text()


def revision_source(revision, down_revision, upgrade, downgrade=()):
    """A revision file whose upgrade and downgrade run these SQL statements (op.execute)."""
    def body(statements):
        return "".join("    op.execute(%r)\n" % statement for statement in statements) or "    pass\n"
    return (f'revision = "{revision}"\ndown_revision = "{down_revision}"\n\n\ndef upgrade():\n    from alembic import op\n'
            f'{body(upgrade)}\n\ndef downgrade():\n    from alembic import op  # noqa: F401\n{body(downgrade)}')


RECOMMENTED = revision_source("7f6a7b8c9d0e", "5d4e5f6a7b8c", [
    "COMMENT ON SCHEMA public IS 'changed by the deployment'", "COMMENT ON TABLE books IS NULL",
    "COMMENT ON COLUMN authors.name IS 'changed by the deployment'"])  # its downgrade leaves them


def comments(params):
    return query(params, "SELECT obj_description('public'::regnamespace, 'pg_namespace'), "
                         "obj_description('books'::regclass, 'pg_class'), col_description('authors'::regclass, 2)")[0]


def test_comments_are_part_of_the_catalog_proof_and_a_restore_gives_them_back(server, bookshelf_owned, tmp_path):
    """A downgrade that leaves the deployment's comments is not 'as before': the rollback names them and restores
    the backup, which gives back the schema's comment too (pg_restore --schema leaves it out)."""
    database = bookshelf_owned
    assert run_module("alembic_migration", args(database, BOOKSHELF, target=CHAIN[-1])).get("changed") is True
    query(database, "COMMENT ON SCHEMA public IS 'bookshelf'; COMMENT ON TABLE books IS 'books we hold'")
    before = comments(database)
    assert before == ("bookshelf", "books we hold", None)
    project = project_copy(tmp_path)
    (project / "migrations" / "versions" / "7f6a7b8c9d0e_recomment.py").write_text(RECOMMENTED)

    def runbook(playbook, *extra):
        return run_playbook(playbook, server, database, tmp_path, "-i", str(BOOKSHELF / "inventory"),
                            "-e", f"pgops_alembic_project_dir={project}", *extra)

    deployed = runbook("deploy_migration.yml")
    assert play_recap(deployed)["failed"] == 0, deployed.stdout[-3000:]
    assert comments(database) == ("changed by the deployment", None, "changed by the deployment")
    record = sorted((tmp_path / "reports").glob("deploy-*.json"))[-1]
    assert 'schema public: comment was "bookshelf", is "changed by the deployment"' in \
        json.loads(record.read_text())["catalog_changes"]

    rolled = runbook("rollback.yml", "-e", f"record={record}", "-e", "confirm=yes")
    assert play_recap(rolled)["failed"] == 0, rolled.stdout[-3000:]
    assert f"Rolled back by restore: the database is at revision {CHAIN[-1]}, as before the deployment, its " \
           "catalog as before (" in rolled.stdout, rolled.stdout[-3000:]
    assert '; the downgrade had not given everything back: schema public: comment was "bookshelf", is "changed by ' \
           'the deployment"; table public.authors: column name: comment was none, is "changed by the deployment"; ' \
           'table public.books: comment was "books we hold", is none; writes to the restored schema were held ' \
           '(waiting, not refused) for ' in rolled.stdout.replace('\\"', '"'), \
        rolled.stdout[-3000:]
    assert comments(database) == before


@pytest.mark.one_server_version  # the runbook's words, not the server's
def test_check_mode_fails_when_env_py_cannot_load(server, bookshelf_new, tmp_path):
    """Nothing can be rendered when env.py itself fails: check mode says so and fails, instead of 'would deploy'."""
    env_py = "import bookshelf_settings_not_installed  # noqa: F401\n" + (
        BOOKSHELF / "migrations" / "env.py").read_text()
    project = project_copy(tmp_path, env_py=env_py)
    result = run_playbook("deploy_migration.yml", server, bookshelf_new, tmp_path, "-i", str(BOOKSHELF / "inventory"),
                          "--check", "-e", f"pgops_alembic_project_dir={project}")
    assert result.returncode != 0 and play_recap(result)["failed"] == 1, result.stdout[-3000:]
    last = failure_message(result)
    assert f"check mode cannot show what {len(CHAIN)} revision(s) would do: env.py failed before any revision " \
           "(alembic upgrade --sql head): No module named 'bookshelf_settings_not_installed'. Check mode: nothing " \
           "was changed." in last, last
    assert f"{bookshelf_new['login_db']} would deploy" not in result.stdout, "the run's summary claims nothing"
    assert query(bookshelf_new, "SELECT to_regclass('alembic_version')")[0][0] is None


ENUM_SWAP = [  # how alembic-postgresql-enum changes an enum's labels: a new type, the column cast through text
    "ALTER TYPE book_status RENAME TO book_status_old", "CREATE TYPE book_status AS ENUM ({labels})",
    "ALTER TABLE books ALTER COLUMN status DROP DEFAULT",
    "ALTER TABLE books ALTER COLUMN status TYPE book_status USING status::text::book_status",
    "ALTER TABLE books ALTER COLUMN status SET DEFAULT 'draft'", "DROP TYPE book_status_old"]


def enum_swap(*labels):
    return [statement.format(labels=", ".join("'%s'" % label for label in labels)) for statement in ENUM_SWAP]


KEEPS_EVERY_VALUE = revision_source("8a7b8c9d0e1f", "5d4e5f6a7b8c", [
    "CREATE EXTENSION IF NOT EXISTS citext", "ALTER TABLE books ALTER COLUMN title TYPE VARCHAR(500)",
    "ALTER TABLE authors ALTER COLUMN name TYPE citext", "ALTER TABLE reviews ALTER COLUMN stars TYPE integer",
    *enum_swap("draft", "published", "archived", "withdrawn")])
LOSES_A_LABEL = revision_source("9b8c9d0e1f2a", "8a7b8c9d0e1f", enum_swap("draft", "published"))


@pytest.mark.one_server_version  # the check's judgement, not the server's
def test_type_changes_that_keep_every_value_deploy_online_and_a_lost_enum_label_is_refused(
        server, bookshelf_owned, tmp_path):
    database = bookshelf_owned
    assert run_module("alembic_migration", args(database, BOOKSHELF, target=CHAIN[-1])).get("changed") is True
    project = project_copy(tmp_path)
    versions = project / "migrations" / "versions"
    (versions / "8a7b8c9d0e1f_keeps.py").write_text(KEEPS_EVERY_VALUE)

    def online():
        return run_playbook("deploy_migration.yml", server, database, tmp_path, "-i", str(BOOKSHELF / "inventory"),
                            "-e", f"pgops_alembic_project_dir={project}", "-e", "pgops_deploy_mode=online")

    status = run_module("alembic_migration", args(database, project, state="status"))
    assert [(step["revision"], step["destructive"]) for step in status["pending"]] == [("8a7b8c9d0e1f", [])], \
        status["pending"]
    deployed = online()
    assert play_recap(deployed)["failed"] == 0, deployed.stdout[-3000:]
    assert recorded(database) == "8a7b8c9d0e1f" and "withdrawn" in enum_values(database)

    (versions / "9b8c9d0e1f2a_loses.py").write_text(LOSES_A_LABEL)
    refused = online()
    assert play_recap(refused)["failed"] == 1 and recorded(database) == "8a7b8c9d0e1f"
    assert "Revision(s) 9b8c9d0e1f2a cannot be rolled back by a downgrade (9b8c9d0e1f2a: ALTER TABLE books ALTER " \
           "COLUMN status TYPE book_status USING status::text::book_status (rewrites column status from enum " \
           "book_status to book_status, which has no label archived, withdrawn))" in refused.stdout, \
        refused.stdout[-3000:]
