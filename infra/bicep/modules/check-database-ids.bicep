// Stops the deployment when a database id is not the ARM id of the kind of resource its parameter names, or the
// database admin group lacks a field. Bicep has no per-item validation for array parameters, so each check is a
// parameter that must stay empty.
targetScope = 'resourceGroup'

@description('postgresServerIds entries that are not /subscriptions/<id>/resourceGroups/<rg>/providers/Microsoft.DBforPostgreSQL/flexibleServers/<name>; must be empty.')
@maxLength(0)
param malformedPostgresServerIds array

@description('sqlServerIds entries that are not /subscriptions/<id>/resourceGroups/<rg>/providers/Microsoft.Sql/servers/<name>; must be empty.')
@maxLength(0)
param malformedSqlServerIds array

@description('cosmosAccountIds entries that are not /subscriptions/<id>/resourceGroups/<rg>/providers/Microsoft.DocumentDB/databaseAccounts/<name>; must be empty.')
@maxLength(0)
param malformedCosmosAccountIds array

@description('What databaseAdminGroup lacks (it needs objectId and displayName, or nothing at all); must be empty.')
@maxLength(0)
param incompleteDatabaseAdminGroup array

output checked int = length(malformedPostgresServerIds) + length(malformedSqlServerIds) + length(malformedCosmosAccountIds) + length(incompleteDatabaseAdminGroup)
