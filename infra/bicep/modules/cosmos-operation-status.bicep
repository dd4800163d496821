// Reading the status of Cosmos DB's long-running operations, in a resource group that holds accounts jitgate grants
// on. A role assignment's PUT and DELETE answer 202 with an Azure-AsyncOperation URL under
// /subscriptions/<id>/providers/Microsoft.DocumentDB/locations/<region>/operationsStatus/<id>, which is not below
// the account: Azure Resource Manager's "Track asynchronous Azure operations" says tracking needs permission at the
// resource group. The custom role (jitgate <name> Cosmos DB operation status) holds only
// Microsoft.DocumentDB/locations/operationsStatus/read.
targetScope = 'resourceGroup'

@description('Object id of the function app\'s user-assigned identity.')
param principalId string

@description('Resource id of the custom role definition.')
param roleDefinitionId string

@description('Why the assignment exists, shown in the portal.')
param assignmentDescription string

resource operationStatus 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, principalId, roleDefinitionId)
  properties: {
    roleDefinitionId: roleDefinitionId
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: assignmentDescription
  }
}
