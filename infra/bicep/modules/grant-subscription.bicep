// The grant permission at a subscription: Role Based Access Control Administrator for the function
// identity, constrained by the ABAC condition generated from the policy (infra/allowed-roles.json).
targetScope = 'subscription'

@description('Object id of the function app\'s user-assigned identity.')
param principalId string

@description('ABAC condition: which role definitions and principal types the identity may assign and remove.')
param condition string

@description('ABAC condition version.')
param conditionVersion string

@description('Why the assignment exists, shown in the portal.')
param assignmentDescription string

var rbacAdministrator = 'f58310d9-a9f6-439a-9e8d-f62e7b41a168' // Role Based Access Control Administrator

resource grant 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, principalId, rbacAdministrator)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', rbacAdministrator)
    principalId: principalId
    principalType: 'ServicePrincipal'
    condition: condition
    conditionVersion: conditionVersion
    description: assignmentDescription
  }
}
