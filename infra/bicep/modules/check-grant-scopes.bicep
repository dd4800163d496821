// Stops the deployment when a grant scope is neither a subscription nor a resource group id. Bicep has no
// per-item validation for array parameters, so the check is a parameter that must stay empty.
targetScope = 'resourceGroup'

@description('Grant scopes that are neither /subscriptions/<id> nor /subscriptions/<id>/resourceGroups/<name>; must be empty.')
@maxLength(0)
param unsupportedGrantScopes array

output checked int = length(unsupportedGrantScopes)
