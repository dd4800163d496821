-- One-time setup of an Azure Database for PostgreSQL flexible server for jitgate (docs/databases.md,
-- infra/README.md "Databases").
--
-- Do not run this file as it is: `jitgate infra sql` prints it for one server of the servers file, with that
-- server's values and the managed identity's object id set at the top and, at the end, one GRANT per role the
-- policy lets jitgate grant there. Run what it prints as a Microsoft Entra administrator of the server (a member
-- of the group the infrastructure made its Entra administrator), signed in with an Entra token:
--
--   jitgate infra sql --server payments-azure --identity-object-id <identityPrincipalId> > setup.sql
--   PGPASSWORD="$(az account get-access-token --resource-type oss-rdbms --query accessToken -o tsv)" \
--     psql "host=pg-payments.postgres.database.azure.com dbname=payments user=<the admin group's name> sslmode=require" \
--     -f setup.sql
--
-- jitgate's identity is NOT made an Entra administrator of the server (that would make it a member of
-- azure_pg_admin, with CREATEDB and every right Azure gives its administrators). It gets what it uses:

\set ON_ERROR_STOP on
\if :{?jitgate_object_id}
\else
  DO $$ BEGIN RAISE EXCEPTION 'jitgate_object_id is not set: run the script `jitgate infra sql --server <name> --identity-object-id <id>` prints'; END $$;
\endif

-- Its login, bound to the managed identity (a regular Entra principal: isAdmin false, no MFA claim).
SELECT * FROM pgaadauth_create_principal_with_oid(:'jitgate_user', :'jitgate_object_id', 'service', false, false)
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'jitgate_user');

-- Creating and dropping the logins it grants to. The logins of people are Entra principals, and Microsoft's
-- "Manage Microsoft Entra roles" says only a role whose pgaadauth security label carries `admin` may create and
-- drop those: this label lets jitgate manage Entra logins without joining azure_pg_admin. Leave the statement
-- out to keep jitgate from creating logins: then create each person's login yourself, once
-- (pgaadauth_create_principal_with_oid), and jitgate only grants and revokes memberships.
ALTER ROLE :"jitgate_user" CREATEROLE;
SELECT format('SECURITY LABEL FOR "pgaadauth" ON ROLE %I IS %L', :'jitgate_user',
              'aadauth,oid=' || :'jitgate_object_id' || ',type=service,admin') \gexec

-- Ending the sessions of a login whose grant ended.
GRANT pg_signal_backend TO :"jitgate_user";
