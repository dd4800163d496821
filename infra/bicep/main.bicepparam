// Example parameters; copy and adjust. Secrets come from the environment, never from this file:
//   export JITGATE_TEAMS_WEBHOOK_URL=... JITGATE_TEAMS_SECRET=...
//   az deployment sub create --location westeurope --template-file infra/bicep/main.bicep \
//     --parameters infra/bicep/main.bicepparam
using 'main.bicep'

param name = 'jitgatedev'
param location = 'westeurope'
param grantScopes = [
  '/subscriptions/11111111-1111-4111-8111-111111111111'
  '/subscriptions/22222222-2222-4222-8222-222222222222/resourceGroups/rg-payments-prod'
]
param groupObjectIds = {
  'platform-approvers': 'aaaaaaaa-1111-4111-8111-111111111111'
  oncall: 'bbbbbbbb-2222-4222-8222-222222222222'
  engineers: 'cccccccc-3333-4333-8333-333333333333'
}
param authClientId = '00000000-0000-0000-0000-000000000000' // the jitgate API app registration (infra/README.md)
param alertEmail = 'platform-oncall@example.com'
param teamsWebhookUrl = readEnvironmentVariable('JITGATE_TEAMS_WEBHOOK_URL')
param teamsSecret = readEnvironmentVariable('JITGATE_TEAMS_SECRET')
param tags = {
  app: 'jitgate'
}

// Databases (infra/README.md "Databases"): existing servers and accounts jitgate grants on; all optional.
// param postgresServerIds = ['/subscriptions/22222222-2222-4222-8222-222222222222/resourceGroups/rg-payments-prod/providers/Microsoft.DBforPostgreSQL/flexibleServers/pg-payments']
// param sqlServerIds = ['/subscriptions/22222222-2222-4222-8222-222222222222/resourceGroups/rg-payments-prod/providers/Microsoft.Sql/servers/sql-payments']
// param cosmosAccountIds = ['/subscriptions/22222222-2222-4222-8222-222222222222/resourceGroups/rg-payments-prod/providers/Microsoft.DocumentDB/databaseAccounts/cosmos-payments-prod']
// param databaseAdminGroup = { objectId: 'dddddddd-4444-4444-8444-444444444444', displayName: 'payments-db-admins' }
// param databasesFile = 'databases/servers.yaml'
