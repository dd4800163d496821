-- One-time setup of a self-managed PostgreSQL server for jitgate (docs/databases.md, infra/README.md).
--
-- Do not run this file as it is: `jitgate infra sql` prints it for one server of the servers file, with that
-- server's values set at the top and, at the end, one GRANT per role the policy lets jitgate grant there, so the
-- policy stays the one list of those roles. Run what it prints as a superuser (or a role with CREATEROLE and
-- ADMIN OPTION on those roles), connected to the database jitgate grants in:
--
--   jitgate infra sql --server payments-primary > setup.sql
--   psql -v jitgate_password="$(cat /run/secrets/jitgate-pg)" -d payments -f setup.sql
--
-- `jitgate databases check` then tells what is still missing, with the statement that fixes each.

\set ON_ERROR_STOP on
\if :{?jitgate_user}
\else
  DO $$ BEGIN RAISE EXCEPTION 'jitgate_user is not set: run the script `jitgate infra sql --server <name>` prints'; END $$;
\endif
\if :{?jitgate_password}
\else
  DO $$ BEGIN RAISE EXCEPTION 'pass jitgate''s password: psql -v jitgate_password=...'; END $$;
\endif

-- jitgate's own login: creates and drops the logins it grants to, nothing else. The password is passed with
-- -v jitgate_password=... and never written into a file; an existing login keeps its password.
SELECT format('CREATE ROLE %I LOGIN CREATEROLE PASSWORD %L', :'jitgate_user', :'jitgate_password')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'jitgate_user') \gexec
ALTER ROLE :"jitgate_user" CREATEROLE;

-- Ending the sessions of a login whose grant ended.
GRANT pg_signal_backend TO :"jitgate_user";
