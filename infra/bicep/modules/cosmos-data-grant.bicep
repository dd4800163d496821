// The cosmos-data permission on one existing Cosmos DB account: the custom role that allows only data-plane role
// assignments (jitgate <name> Cosmos DB data-plane grants), for the function identity, at the account and nowhere
// wider, so that jitgate cannot touch the data-plane access of any other account.
targetScope = 'resourceGroup'

@description('Name of the existing Cosmos DB account.')
param accountName string

@description('Object id of the function app\'s user-assigned identity.')
param principalId string

@description('Resource id of the custom role definition.')
param roleDefinitionId string

@description('Why the assignment exists, shown in the portal.')
param assignmentDescription string

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' existing = {
  name: accountName
}

resource grant 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, principalId, roleDefinitionId)
  scope: account
  properties: {
    roleDefinitionId: roleDefinitionId
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: assignmentDescription
  }
}
