-- The accounts intowork.pgops needs, with no more than they need. Run once per database, as a superuser:
--
--   psql -v database=intowork -v deploy_role=pgops_deploy -v backup_role=pgops_backup -f least-privilege.sql
--
-- then give each login a password with psql's \password (never on a command line), and put it in the
-- inventory's vault (pgops_db_password, pgops_backup_db_password). Safe to run again. docs/security.md says
-- what each grant is for and what each account cannot do.
--
-- Add -v revoke_public_connect=yes to let only the roles granted CONNECT into the database (the owner, the
-- backup role, and those you grant it to: GRANT CONNECT ON DATABASE ... TO the application's roles first).
\set ON_ERROR_STOP on
SET client_min_messages = warning;

-- The deploy role runs the runbooks: it owns the database, so its migrations own the schema they create.
SELECT format('CREATE ROLE %I LOGIN', :'deploy_role')
 WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = :'deploy_role') \gexec
-- No CREATEDB: a restore drill restores into a server of its own, never this one.
ALTER ROLE :"deploy_role" LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS;
SELECT format('CREATE DATABASE %I OWNER %I', :'database', :'deploy_role')
 WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = :'database') \gexec
ALTER DATABASE :"database" OWNER TO :"deploy_role";
-- The deployment lease and the write guard's record are settings of the database (ALTER DATABASE ... SET).
GRANT SET ON PARAMETER pgops.deploy_lock, pgops.write_guard TO :"deploy_role";
-- Ending the application's sessions that began before the write guard, and a killed run's own leftovers.
GRANT pg_signal_backend TO :"deploy_role";
-- Preflight and the health report read every session's state, query and wait (pg_stat_activity).
GRANT pg_read_all_stats TO :"deploy_role";

-- The backup role takes the scheduled backups: it reads this database's tables, sequences and large objects,
-- and nothing else (no other database's data, no role's password), and writes nothing.
SELECT format('CREATE ROLE %I LOGIN', :'backup_role')
 WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = :'backup_role') \gexec
-- No CREATEDB: the restore drill (scheduled or not) restores into a server of its own, never this one.
ALTER ROLE :"backup_role" LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS;
GRANT CONNECT ON DATABASE :"database" TO :"backup_role";
-- Earlier versions of this file granted pg_read_all_data, which reads every database of the server and the
-- password verifiers in pg_authid. Run this file again for each database the backup role backs up.
SELECT format('REVOKE pg_read_all_data FROM %I', :'backup_role')
  FROM pg_catalog.pg_auth_members m
 WHERE m.roleid = 'pg_read_all_data'::regrole AND m.member = :'backup_role'::regrole \gexec
\if :{?revoke_public_connect}
REVOKE CONNECT ON DATABASE :"database" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"database" TO :"deploy_role";
\endif

-- Per-database grants: what follows runs in the application's database.
-- A deployment's restore point (pgops_deploy_restore_point): a named point in the WAL, and its segment closed so
-- that it is archived at once. A function's privileges are a database's own: granted in the maintenance database,
-- where the restore_point module connects. Granted in the application's database, it would be in every dump of
-- it, and a restore by a role that is not a superuser would fail on it.
\connect postgres
GRANT EXECUTE ON FUNCTION pg_catalog.pg_create_restore_point(text), pg_catalog.pg_switch_wal() TO :"deploy_role";

\connect :"database"
SET client_min_messages = warning;
-- What exists now, in every schema but the system's, whoever owns it: pg_dump needs USAGE on each schema and
-- SELECT on each table, sequence and large object it dumps. An extension's own objects are left alone (their
-- grants would be dumped, and fail where the extension is not restored), but for its configuration tables,
-- whose rows pg_dump dumps.
SELECT format('GRANT USAGE ON SCHEMA %I TO %I', n.nspname, :'backup_role')
  FROM pg_catalog.pg_namespace n
 WHERE n.nspname NOT IN ('information_schema', 'pg_catalog', 'pg_toast') AND n.nspname !~ '^pg_(toast_)?temp_' \gexec
SELECT format('GRANT SELECT ON %s %I.%I TO %I', CASE WHEN c.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
              n.nspname, c.relname, :'backup_role')
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'm', 'f', 'S')
   AND n.nspname NOT IN ('information_schema', 'pg_catalog', 'pg_toast') AND n.nspname !~ '^pg_(toast_)?temp_'
   AND (NOT EXISTS (SELECT FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::regclass
                       AND d.objid = c.oid AND d.deptype = 'e')
        OR EXISTS (SELECT FROM pg_catalog.pg_extension e WHERE c.oid = ANY (e.extconfig))) \gexec
SELECT format('GRANT SELECT ON LARGE OBJECT %s TO %I', l.oid, :'backup_role')
  FROM pg_catalog.pg_largeobject_metadata l \gexec
-- What the deploy role creates later (its migrations): schemas, tables and sequences readable at once. Large
-- objects have no default privileges: the application's own, created after this file ran, need this file again.
ALTER DEFAULT PRIVILEGES FOR ROLE :"deploy_role" GRANT USAGE ON SCHEMAS TO :"backup_role";
ALTER DEFAULT PRIVILEGES FOR ROLE :"deploy_role" GRANT SELECT ON TABLES TO :"backup_role";
ALTER DEFAULT PRIVILEGES FOR ROLE :"deploy_role" GRANT SELECT ON SEQUENCES TO :"backup_role";
