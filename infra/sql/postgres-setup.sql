-- One-time setup of a self-managed PostgreSQL server for jitgate (docs/databases.md). Run as a superuser
-- (or a role with CREATEROLE and ADMIN OPTION on the roles below) in the database jitgate grants in:
--
--   psql -v jitgate_password="$(cat /run/secrets/jitgate-pg)" -v roles="payments_read,payments_write" \
--        -d payments -f infra/sql/postgres-setup.sql
--
-- Azure flexible server: instead of CREATE ROLE jitgate, make jitgate's managed identity a Microsoft Entra
-- administrator of the server; then run the GRANT lines as that administrator.
-- Cloud SQL: create jitgate's service account as an IAM database user, then run the GRANT lines.
-- `jitgate databases check` tells what is still missing, with the statement that fixes each.

\set ON_ERROR_STOP on

-- jitgate's own login: creates and drops the logins it grants to, nothing else.
SELECT format('CREATE ROLE jitgate LOGIN CREATEROLE PASSWORD %L', :'jitgate_password')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'jitgate') \gexec

-- Ending the sessions of a login whose grant ended.
GRANT pg_signal_backend TO jitgate;

-- ADMIN OPTION on each role the policy lets jitgate grant here (PostgreSQL 16 requires it; up to 15
-- CREATEROLE suffices, but jitgate checks for it on every version).
SELECT format('GRANT %I TO jitgate WITH ADMIN OPTION', trim(role))
  FROM unnest(string_to_array(:'roles', ',')) AS role \gexec
