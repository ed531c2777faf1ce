-- The accounts intowork.pgops needs, with no more than they need. Run once per database, as a superuser:
--
--   psql -v database=intowork -v deploy_role=pgops_deploy -v backup_role=pgops_backup -f least-privilege.sql
--
-- then give each login a password with psql's \password (never on a command line), and put it in the
-- inventory's vault (pgops_db_password, pgops_backup_db_password). Safe to run again. docs/security.md says
-- what each grant is for and what each account cannot do.
\set ON_ERROR_STOP on
SET client_min_messages = warning;

-- The deploy role runs the runbooks: it owns the database, so its migrations own the schema they create.
SELECT format('CREATE ROLE %I LOGIN', :'deploy_role')
 WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = :'deploy_role') \gexec
-- CREATEDB: the restore drill restores into a scratch database of its own.
ALTER ROLE :"deploy_role" LOGIN NOSUPERUSER NOCREATEROLE CREATEDB NOREPLICATION NOBYPASSRLS;
SELECT format('CREATE DATABASE %I OWNER %I', :'database', :'deploy_role')
 WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = :'database') \gexec
ALTER DATABASE :"database" OWNER TO :"deploy_role";
-- The deployment lease and the write guard's record are settings of the database (ALTER DATABASE ... SET).
GRANT SET ON PARAMETER pgops.deploy_lock, pgops.write_guard TO :"deploy_role";
-- Ending the application's sessions that began before the write guard, and a killed run's own leftovers.
GRANT pg_signal_backend TO :"deploy_role";
-- Preflight and the health report read every session's state, query and wait (pg_stat_activity).
GRANT pg_read_all_stats TO :"deploy_role";

-- The backup role takes the scheduled backups: it reads every table and writes nothing.
SELECT format('CREATE ROLE %I LOGIN', :'backup_role')
 WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = :'backup_role') \gexec
-- CREATEDB: the scheduled restore drill restores into a scratch database it owns and drops.
ALTER ROLE :"backup_role" LOGIN NOSUPERUSER NOCREATEROLE CREATEDB NOREPLICATION NOBYPASSRLS;
GRANT CONNECT ON DATABASE :"database" TO :"backup_role";
GRANT pg_read_all_data TO :"backup_role";
