-- One-time setup of an Azure SQL Database for jitgate (docs/databases.md, infra/README.md "Databases").
--
-- Do not run this file as it is: `jitgate infra sql` prints it for one database of the servers file, with the
-- database's values and the managed identity's object id set at the top (:setvar) and, at the end, one GRANT per
-- role the policy lets jitgate grant there, so the policy stays the one list of those roles. Run what it prints
-- in that database, as its Microsoft Entra admin (a member of the group the infrastructure made the logical
-- server's Entra admin), with sqlcmd (-G: Entra sign-in; -b: stop at the first error):
--
--   jitgate infra sql --server payments-sql --identity-object-id <identityPrincipalId> > setup.sql
--   sqlcmd -S sql-payments.database.windows.net -d payments -G -b -i setup.sql
--
-- jitgate_user is the name jitgate's identity gets in the database: it must start with the identity's name in
-- Microsoft Entra (Azure's rule for WITH OBJECT_ID), and is the servers file's `user`. The logical server's own
-- identity must be able to read Microsoft Entra ID (the Directory Readers role, or Microsoft Graph User.Read.All,
-- GroupMember.Read.All and Application.Read.All) for CREATE USER ... FROM EXTERNAL PROVIDER to work.
-- jitgate is never made db_owner nor a member of db_securityadmin (which could change any permission).

-- jitgate's own user, bound to its managed identity.
CREATE USER [$(jitgate_user)] FROM EXTERNAL PROVIDER WITH OBJECT_ID = '$(jitgate_object_id)';

-- Creating and dropping the users it grants to, and marking them (extended properties).
GRANT ALTER ANY USER TO [$(jitgate_user)];

-- Ending a person's sessions when their access ends, and seeing sessions other than its own.
GRANT KILL DATABASE CONNECTION TO [$(jitgate_user)];
GRANT VIEW DATABASE STATE TO [$(jitgate_user)];
