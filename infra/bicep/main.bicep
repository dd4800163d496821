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
