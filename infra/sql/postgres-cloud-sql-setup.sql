-- One-time setup of a Cloud SQL for PostgreSQL instance for jitgate (docs/databases.md).
--
-- jitgate's service account signs in as an IAM database user, which the Cloud SQL Admin API creates, not SQL:
--
--   gcloud sql users create jitgate@acme-payments.iam --instance=pg-main --type=cloud_iam_service_account
--
-- Do not run this file as it is: `jitgate infra sql` prints it for one server of the servers file, with that
-- server's values set at the top and, at the end, one GRANT per role the policy lets jitgate grant there. Run what
-- it prints as a member of cloudsqlsuperuser (the postgres user), connected to the database jitgate grants in:
--
--   jitgate infra sql --server payments-gcp > setup.sql
--   psql "host=10.20.0.3 dbname=payments user=postgres sslmode=require" -f setup.sql

\set ON_ERROR_STOP on
\if :{?jitgate_user}
\else
  DO $$ BEGIN RAISE EXCEPTION 'jitgate_user is not set: run the script `jitgate infra sql --server <name>` prints'; END $$;
\endif

-- Granting roles to the IAM users of the people it grants to (jitgate never creates those on Cloud SQL).
ALTER ROLE :"jitgate_user" CREATEROLE;

-- Ending the sessions of a login whose grant ended.
GRANT pg_signal_backend TO :"jitgate_user";
