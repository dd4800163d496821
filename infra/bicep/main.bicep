// jitgate: the whole Azure side in one subscription-scope deployment.
//
//   az deployment sub create --location <region> --template-file infra/bicep/main.bicep \
//     --parameters infra/bicep/main.bicepparam
//
// infra/terraform deploys the same resources with the same settings; tests/infra checks that they agree.
// The roles jitgate may grant come from ../allowed-roles.json, generated from the policy by
// `jitgate infra roles --write`: never edit the role list here.
targetScope = 'subscription'

@description('Short environment name, 3-11 lowercase letters and digits; every resource name derives from it (globally unique names: st<name>func, kv-<name>, ...).')
@minLength(3)
@maxLength(11)
param name string

@description('Azure region of the resource group and every resource in it.')
param location string

@description('Resource group to create and deploy into.')
param resourceGroupName string = 'rg-${name}'

@description('Scopes where jitgate grants roles: subscription ids (/subscriptions/<id>) and resource group ids (/subscriptions/<id>/resourceGroups/<name>). The function identity gets Role Based Access Control Administrator there, constrained to the policy\'s roles.')
param grantScopes array

@description('Application (client) id of the Entra app registration that protects the API and defines the app roles Jit.Auditor and Jit.Admin (created outside this template, see infra/README.md).')
param authClientId string

@description('Entra object id of every group the policy names (approver and requester groups), by the policy\'s group name. jitgate resolves groups by these ids only, never by display name.')
param groupObjectIds object

@description('E-mail address that receives the dead-letter alert.')
param alertEmail string

@description('Teams Workflows webhook URL (approval cards are posted there). Stored in Key Vault.')
@secure()
param teamsWebhookUrl string

@description('Teams outgoing-webhook HMAC secret, base64 as Teams shows it. Stored in Key Vault.')
@secure()
param teamsSecret string

@description('Name of the Teams outgoing webhook approvers answer by @mentioning it (docs/teams.md); the cards show it.')
param teamsWebhookName string = 'jitgate'

@description('Base URL of the portal (Backstage) where each request has a page at /jitgate/requests/<id>; empty: cards carry no link.')
param portalUrl string = ''

@description('Days an archived audit blob stays immutable (time-based retention on the archive container).')
@minValue(1)
@maxValue(146000)
param archiveRetentionDays int = 2557

@description('Days the Log Analytics workspace keeps logs (Activity Log, Key Vault audit, Application Insights).')
@minValue(30)
@maxValue(730)
param logRetentionDays int = 365

@description('Upper bound on Flex Consumption instances.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Tags for every resource.')
param tags object = {}

// ---------------------------------------------------------------- databases (infra/README.md "Databases")
// Existing servers and accounts jitgate grants on. This deployment creates none of them and changes none of their
// settings; it adds, where asked, an Entra administrator group and the function identity's permission.

@description('ARM ids of existing Azure Database for PostgreSQL flexible servers jitgate grants on (the servers file\'s `platform: azure` entries). Azure gives jitgate nothing there: it signs in with an Entra token, and an admin runs the setup script `jitgate infra sql` prints.')
param postgresServerIds array = []

@description('ARM ids of existing Azure SQL logical servers jitgate grants on (the servers file\'s `platform: azure-sql` entries). As for PostgreSQL, everything jitgate needs is given inside each database by the setup script.')
param sqlServerIds array = []

@description('ARM ids of existing Cosmos DB accounts (API for NoSQL) the cosmos-data provider grants on (JITGATE_COSMOS_ACCOUNTS). The function identity gets, at each account, a custom role that allows data-plane role assignments and nothing else.')
param cosmosAccountIds array = []

@description('Entra group made Microsoft Entra administrator of every server in postgresServerIds and sqlServerIds, as {objectId, displayName}; its members run the setup scripts. Empty: the servers\' administrators are left as they are. An Azure SQL server has one Entra administrator, which this replaces.')
param databaseAdminGroup object = {}

@description('Path of the servers file inside the deployed package (JITGATE_DATABASES_FILE, docs/databases.md). The app serves postgres and azure-sql when it is set and postgresServerIds or sqlServerIds names servers.')
param databasesFile string = ''

var allowedRoles = loadJsonContent('../allowed-roles.json')

// NB. Only subscription and resource group scopes: a resource-level or management-group scope would be
// silently widened or rejected late, so such entries stop the deployment up front (see scopeCheck).
var subscriptionGrantScopes = filter(grantScopes, s => length(split(s, '/')) == 3 && toLower(split(s, '/')[1]) == 'subscriptions')
var resourceGroupGrantScopes = filter(grantScopes, s => length(split(s, '/')) == 5 && toLower(split(s, '/')[1]) == 'subscriptions' && toLower(split(s, '/')[3]) == 'resourcegroups')
var unsupportedGrantScopes = filter(grantScopes, s => !contains(subscriptionGrantScopes, s) && !contains(resourceGroupGrantScopes, s))

// Jitgate correlates what a grantee did from AzureActivity: route the Activity Log of this subscription
// and of every subscription it grants in.
var grantSubscriptions = [for s in grantScopes: toLower(split(s, '/')[2])]
var activityLogSubscriptions = union([toLower(subscription().subscriptionId)], grantSubscriptions)

// NB. Only well-formed ids reach a module's scope; any other stops the deployment up front (databaseCheck).
var postgresServers = filter(postgresServerIds, id => length(split(id, '/')) == 9 && startsWith(toLower(id), '/subscriptions/') && contains(toLower(id), '/resourcegroups/') && contains(toLower(id), '/providers/microsoft.dbforpostgresql/flexibleservers/'))
var sqlServers = filter(sqlServerIds, id => length(split(id, '/')) == 9 && startsWith(toLower(id), '/subscriptions/') && contains(toLower(id), '/resourcegroups/') && contains(toLower(id), '/providers/microsoft.sql/servers/'))
var cosmosAccounts = filter(cosmosAccountIds, id => length(split(id, '/')) == 9 && startsWith(toLower(id), '/subscriptions/') && contains(toLower(id), '/resourcegroups/') && contains(toLower(id), '/providers/microsoft.documentdb/databaseaccounts/'))

// The cosmos-data permission, only when the policy lets cosmos-data assign some role (allowed-roles.json). Azure
// RBAC has no condition on a sqlRoleAssignments write (infra/README.md), so it is bounded by what the role allows
// and where it is assigned: these actions, at the listed accounts only.
var cosmosDataGrants = (!empty(cosmosAccounts)) && (!empty(allowedRoles.cosmosData.roleDefinitionIds))
var cosmosAccountGroups = [for id in cosmosAccounts: toLower(join(take(split(id, '/'), 5), '/'))]
var cosmosResourceGroups = union(cosmosAccountGroups, []) // each once
var cosmosDataGrantActions = [
  // read, write and delete, and Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments/operationResults/read,
  // which following an assignment's operation asks for and Azure's list of operations does not name
  'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments/*'
  'Microsoft.DocumentDB/databaseAccounts/sqlRoleDefinitions/read'
  'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/read'
  'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/read'
]
var cosmosOperationStatusActions = [
  'Microsoft.DocumentDB/locations/operationsStatus/read'
]

resource group 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: resourceGroupName
  location: location
  tags: tags
}

module scopeCheck 'modules/check-grant-scopes.bicep' = {
  name: 'jitgate-grant-scope-check'
  scope: group
  params: {
    unsupportedGrantScopes: unsupportedGrantScopes
  }
}

module databaseCheck 'modules/check-database-ids.bicep' = {
  name: 'jitgate-database-id-check'
  scope: group
  params: {
    malformedPostgresServerIds: filter(postgresServerIds, id => !contains(postgresServers, id))
    malformedSqlServerIds: filter(sqlServerIds, id => !contains(sqlServers, id))
    malformedCosmosAccountIds: filter(cosmosAccountIds, id => !contains(cosmosAccounts, id))
    incompleteDatabaseAdminGroup: empty(databaseAdminGroup) ? [] : filter(['objectId', 'displayName'], field => !contains(databaseAdminGroup, field))
  }
}

module app 'modules/jitgate.bicep' = {
  name: 'jitgate-app'
  scope: group
  params: {
    name: name
    location: location
    tags: tags
    authClientId: authClientId
    grantScopes: grantScopes
    groupObjectIds: groupObjectIds
    alertEmail: alertEmail
    teamsWebhookUrl: teamsWebhookUrl
    teamsSecret: teamsSecret
    teamsWebhookName: teamsWebhookName
    portalUrl: portalUrl
    archiveRetentionDays: archiveRetentionDays
    logRetentionDays: logRetentionDays
    maximumInstanceCount: maximumInstanceCount
    policyPath: allowedRoles.policy
    postgresServerIds: postgresServerIds
    sqlServerIds: sqlServerIds
    cosmosAccountIds: cosmosAccountIds
    databasesFile: databasesFile
  }
}

module activityLog 'modules/activity-log.bicep' = [for subscriptionId in activityLogSubscriptions: {
  name: 'jitgate-activity-log-${subscriptionId}'
  scope: subscription(subscriptionId)
  params: {
    settingName: 'jitgate-${name}-activity-log'
    workspaceId: app.outputs.workspaceResourceId
  }
}]

// The grant permission: Role Based Access Control Administrator, conditioned on allowed-roles.json.
module grantInSubscription 'modules/grant-subscription.bicep' = [for grantScope in (empty(allowedRoles.roleDefinitionIds) ? [] : subscriptionGrantScopes): {
  name: 'jitgate-grant-${uniqueString(toLower(grantScope))}'
  scope: subscription(split(grantScope, '/')[2])
  dependsOn: [scopeCheck]
  params: {
    principalId: app.outputs.identityPrincipalId
    condition: allowedRoles.condition
    conditionVersion: allowedRoles.conditionVersion
    assignmentDescription: 'jitgate ${name}: grants and revokes just-in-time role assignments allowed by ${allowedRoles.policy}'
  }
}]

module grantInResourceGroup 'modules/grant-resource-group.bicep' = [for grantScope in (empty(allowedRoles.roleDefinitionIds) ? [] : resourceGroupGrantScopes): {
  name: 'jitgate-grant-${uniqueString(toLower(grantScope))}'
  scope: resourceGroup(split(grantScope, '/')[2], split(grantScope, '/')[4])
  dependsOn: [scopeCheck]
  params: {
    principalId: app.outputs.identityPrincipalId
    condition: allowedRoles.condition
    conditionVersion: allowedRoles.conditionVersion
    assignmentDescription: 'jitgate ${name}: grants and revokes just-in-time role assignments allowed by ${allowedRoles.policy}'
  }
}]

// ---------------------------------------------------------------- databases

module postgresAdmins 'modules/postgres-entra-admin.bicep' = [for serverId in (empty(databaseAdminGroup) ? [] : postgresServers): {
  name: 'jitgate-pg-admin-${uniqueString(toLower(serverId))}'
  scope: resourceGroup(split(serverId, '/')[2], split(serverId, '/')[4])
  dependsOn: [databaseCheck]
  params: {
    serverName: last(split(serverId, '/'))
    adminObjectId: databaseAdminGroup.objectId
    adminName: databaseAdminGroup.displayName
  }
}]

module sqlAdmins 'modules/sql-entra-admin.bicep' = [for serverId in (empty(databaseAdminGroup) ? [] : sqlServers): {
  name: 'jitgate-sql-admin-${uniqueString(toLower(serverId))}'
  scope: resourceGroup(split(serverId, '/')[2], split(serverId, '/')[4])
  dependsOn: [databaseCheck]
  params: {
    serverName: last(split(serverId, '/'))
    adminObjectId: databaseAdminGroup.objectId
    adminName: databaseAdminGroup.displayName
  }
}]

resource cosmosDataGrantRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (cosmosDataGrants) {
  name: guid(subscription().id, name, 'jitgate-cosmos-data-grants')
  properties: {
    roleName: 'jitgate ${name} Cosmos DB data-plane grants'
    description: 'Lets jitgate ${name} read, create and delete Cosmos DB data-plane role assignments (and read the role definitions, databases and containers they name). No data access, no keys, no account settings.'
    type: 'CustomRole'
    permissions: [
      {
        actions: cosmosDataGrantActions
        notActions: []
      }
    ]
    assignableScopes: cosmosResourceGroups
  }
}

resource cosmosOperationStatusRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (cosmosDataGrants) {
  name: guid(subscription().id, name, 'jitgate-cosmos-operation-status')
  properties: {
    roleName: 'jitgate ${name} Cosmos DB operation status'
    description: 'Lets jitgate ${name} follow the Cosmos DB operations it started (the status of long-running operations).'
    type: 'CustomRole'
    permissions: [
      {
        actions: cosmosOperationStatusActions
        notActions: []
      }
    ]
    assignableScopes: cosmosResourceGroups
  }
}

module cosmosDataGrant 'modules/cosmos-data-grant.bicep' = [for accountId in (cosmosDataGrants ? cosmosAccounts : []): {
  name: 'jitgate-cosmos-data-${uniqueString(toLower(accountId))}'
  scope: resourceGroup(split(accountId, '/')[2], split(accountId, '/')[4])
  dependsOn: [databaseCheck]
  params: {
    accountName: last(split(accountId, '/'))
    principalId: app.outputs.identityPrincipalId
    roleDefinitionId: cosmosDataGrantRole.id
    assignmentDescription: 'jitgate ${name}: grants and revokes the Cosmos DB data roles ${join(allowedRoles.cosmosData.roleDefinitionIds, ', ')} allowed by ${allowedRoles.policy}'
  }
}]

module cosmosOperationStatus 'modules/cosmos-operation-status.bicep' = [for groupId in (cosmosDataGrants ? cosmosResourceGroups : []): {
  name: 'jitgate-cosmos-status-${uniqueString(groupId)}'
  scope: resourceGroup(split(groupId, '/')[2], split(groupId, '/')[4])
  dependsOn: [databaseCheck]
  params: {
    principalId: app.outputs.identityPrincipalId
    roleDefinitionId: cosmosOperationStatusRole.id
    assignmentDescription: 'jitgate ${name}: follows the Cosmos DB role assignments it makes'
  }
}]

output resourceGroupName string = group.name
output functionAppName string = app.outputs.functionAppName
output functionAppUrl string = app.outputs.functionAppUrl
output identityClientId string = app.outputs.identityClientId
output identityPrincipalId string = app.outputs.identityPrincipalId
output serviceBusNamespace string = app.outputs.serviceBusNamespace
output cosmosEndpoint string = app.outputs.cosmosEndpoint
output keyVaultName string = app.outputs.keyVaultName
output workspaceId string = app.outputs.workspaceId
output archiveContainerUrl string = app.outputs.archiveContainerUrl
output allowedRoleDefinitionIds array = allowedRoles.roleDefinitionIds
