-- One-time setup of an Azure SQL Database for jitgate (docs/databases.md). Run it in each database jitgate
-- grants in, connected to that database as its Microsoft Entra admin, with sqlcmd (-G: Entra sign-in):
--
--   sqlcmd -S sql-payments.database.windows.net -d payments -G -i infra/sql/azure-sql-setup.sql \
--          -v jitgate_user="jitgate-identity" jitgate_object_id="<the managed identity's object (principal) id>"
--
-- jitgate_user is the name jitgate's identity gets in the database: it must start with the identity's name in
-- Microsoft Entra (Azure's rule for WITH OBJECT_ID), and is the servers file's `user`. The logical server's own
-- identity must be able to read Microsoft Entra ID (the Directory Readers role, or Microsoft Graph User.Read.All,
-- GroupMember.Read.All and Application.Read.All) for CREATE USER ... FROM EXTERNAL PROVIDER to work.
--
-- Then, for each role the policy lets jitgate grant here, run the statement `jitgate databases check` prints:
--   GRANT ALTER ON ROLE::[payments_read] TO [jitgate-identity];
-- (membership in db_securityadmin would do for every custom role at once, but it may change any permission).

-- jitgate's own user, bound to its managed identity.
CREATE USER [$(jitgate_user)] FROM EXTERNAL PROVIDER WITH OBJECT_ID = '$(jitgate_object_id)';

-- Creating and dropping the users it grants to, and marking them (extended properties).
GRANT ALTER ANY USER TO [$(jitgate_user)];

-- Ending a person's sessions when their access ends, and seeing sessions other than its own.
GRANT KILL DATABASE CONNECTION TO [$(jitgate_user)];
GRANT VIEW DATABASE STATE TO [$(jitgate_user)];
