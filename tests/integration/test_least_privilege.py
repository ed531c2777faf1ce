"""The runbooks run with the documented least-privilege accounts (docs/sql/least-privilege.sql), not a superuser:
the deploy role deploys, guards and ends the application's sessions; the backup role backs up and drills, and
writes nothing."""

import json
import pathlib
import subprocess

import psycopg2
import pytest

from conftest import (APP, BACKUP_ROLE, DEPLOY_ROLE, HEAD, PASSWORD, application_role, artifacts,
                      assert_application_survived, connect_as, create_accounts, database_params, libpq_env, query,
                      run_playbook)
from test_deploy_playbook import assert_quiet, playbook, revision


def role_facts(params, role):
    return query(params, """
        SELECT r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolreplication, r.rolbypassrls,
               ARRAY(SELECT g.rolname::text FROM pg_catalog.pg_auth_members m
                       JOIN pg_catalog.pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid ORDER BY 1)
          FROM pg_catalog.pg_roles r WHERE r.rolname = %s""", (role,))[0]


def as_role(server, params, role):
    return dict(params, login_user=server[role + "_user"], login_password=server[role + "_password"])


def test_the_accounts_file_is_idempotent_and_grants_only_what_is_documented(server, migrated):
    create_accounts(server, migrated["login_db"])  # a second run: no error, no notice
    # No CREATEDB: a restore drill restores into a server of its own, never the database's.
    assert role_facts(migrated, DEPLOY_ROLE) == (False, False, False, False, False,
                                                 ["pg_read_all_stats", "pg_signal_backend"])
    assert role_facts(migrated, BACKUP_ROLE) == (False, False, False, False, False, [])
    assert query(migrated, "SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_catalog.pg_database "
                           "WHERE datname = current_database()")[0][0] == DEPLOY_ROLE
    backup = connect_as(as_role(server, migrated, "backup"))
    try:
        with backup.cursor() as cur:
            cur.execute("SELECT count(*) FROM public.job_applications")
            assert cur.fetchone()[0] > 0
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("DELETE FROM public.job_applications")
    finally:
        backup.close()


def test_the_backup_role_reads_its_own_database_and_nothing_else(server, migrated, database):
    """pg_dump as the backup role dumps what existed when the file ran and what the deploy role created after it
    (a new schema, table and sequence); it cannot read the password verifiers, nor another database's table."""
    deployer, backup = as_role(server, migrated, "deploy"), as_role(server, migrated, "backup")
    query(deployer, "CREATE SCHEMA reports")
    query(deployer, "CREATE TABLE reports.daily (id bigint GENERATED ALWAYS AS IDENTITY, total int)")
    query(deployer, "INSERT INTO reports.daily (total) VALUES (41), (42)")
    query(migrated, "SELECT lo_from_bytea(424242, 'a large object')")
    create_accounts(server, migrated["login_db"])  # run again: the large object is readable from now on
    dump = subprocess.run([str(pathlib.Path(server["bindir"]) / "pg_dump"), "--data-only", "--table=reports.daily",
                           "--table=public.companies", "-b"],
                          env=libpq_env(backup), capture_output=True, text=True, check=False)
    assert dump.returncode == 0, dump.stderr
    assert "COPY reports.daily (id, total) FROM stdin;\n1\t41\n2\t42" in dump.stdout
    assert "COPY public.companies " in dump.stdout and "lo_open('424242'" in dump.stdout

    query(database, "CREATE TABLE elsewhere (secret text)")
    for params, statement in ((backup, "SELECT rolpassword FROM pg_catalog.pg_authid"),
                              (dict(backup, login_db=database["login_db"]), "SELECT * FROM public.elsewhere")):
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            query(params, statement)


def test_revoke_public_connect_lets_only_the_granted_roles_in(server, migrated):
    query(migrated, "CREATE ROLE pgops_stranger LOGIN PASSWORD 'stranger-pw'")
    try:
        create_accounts(server, migrated["login_db"], "revoke_public_connect=yes")
        with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
            connect_as(migrated, "pgops_stranger", "stranger-pw")
        for role in ("deploy", "backup"):
            connect_as(as_role(server, migrated, role)).close()
    finally:
        query(migrated, "DROP ROLE pgops_stranger")


def test_a_deployment_as_the_deploy_role_ends_the_application_sessions_and_owns_what_it_creates(
        server, deployable, tmp_path, live_writer):
    writer = live_writer(deployable)
    early = connect_as(deployable, APP, PASSWORD, application_name="app-before-the-guard")
    early.autocommit = True
    early.cursor().execute("SELECT 1")
    settings = {"pgops_app_roles": [APP], "write_guard_grace_period": 1}
    result, recap = playbook(server, deployable, tmp_path, "-e", json.dumps(settings))
    assert recap["failed"] == 0, result.stdout[-3000:]
    assert_quiet(result)
    assert revision(deployable) == HEAD
    with pytest.raises(psycopg2.OperationalError):
        early.cursor().execute("SELECT 1")  # ended by the deploy role, which is no superuser
    owners = query(deployable, """
        SELECT DISTINCT pg_catalog.pg_get_userbyid(c.relowner) FROM pg_catalog.pg_class c
         WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'i', 'S', 'v', 'm')""")
    assert owners == [(DEPLOY_ROLE,)], owners
    (record,) = (tmp_path / "reports").glob("deploy-*.json")
    assert json.loads(record.read_text())["outcome"] == "deployed"
    # Its sessions ended too: it reconnected, and lost nothing.
    assert_application_survived(writer, deployable, json.loads(record.read_text())["write_off_seconds"])


def backup_and_drill(server, backup_login, tmp_path):
    """backup.yml, then restore_drill.yml in check mode and for real, as the backup role."""
    return (run_playbook("backup.yml", server, backup_login, tmp_path),
            run_playbook("restore_drill.yml", server, backup_login, tmp_path, "--check"),
            run_playbook("restore_drill.yml", server, backup_login, tmp_path))


def test_backups_and_the_restore_drill_run_as_the_read_only_backup_role(server, migrated, tmp_path, live_writer):
    with application_role(migrated):
        # The application writes all along: a backup and a drill never cost it a write.
        writer = live_writer(migrated)
        backed_up, foreseen, drill = backup_and_drill(server, as_role(server, migrated, "backup"), tmp_path)
        assert_application_survived(writer, migrated)
    assert backed_up.returncode == 0, backed_up.stdout[-3000:]
    assert_quiet(backed_up)
    assert foreseen.returncode == 0, foreseen.stdout[-3000:]
    assert "Check mode: would restore the newest verified backup of " in foreseen.stdout
    assert drill.returncode == 0, drill.stdout[-3000:]
    assert "row counts match the manifest" in drill.stdout
    (manifest,) = artifacts(backed_up)["pgops_backups"].values()
    (drilled,) = artifacts(drill)["pgops_restore_drills"].values()
    assert drilled["backup"] == manifest["path"] and drilled["rto_seconds"] > 0
    scratch = query(database_params(server, "postgres"),
                    "SELECT datname FROM pg_catalog.pg_database WHERE datname LIKE %s",
                    (migrated["login_db"] + "%",))
    assert scratch == [(migrated["login_db"],)], "the drill's scratch copy is gone"
