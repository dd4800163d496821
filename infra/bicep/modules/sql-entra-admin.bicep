// Makes a group the Microsoft Entra administrator of an existing Azure SQL logical server. A logical server has
// one Entra administrator: this replaces the one it has. Its members run the setup script `jitgate infra sql`
// prints in each database; jitgate's own identity is never made an administrator.
targetScope = 'resourceGroup'

@description('Name of the existing logical server.')
param serverName string

@description('Object id of the Entra group.')
param adminObjectId string

@description('Display name of the Entra group.')
param adminName string

// NB. Named through the server rather than with `parent` on an `existing` server: checkov evaluates an existing
// server as if this template deployed it (auditing, threat detection) and cannot read skip comments inside it.
resource admin 'Microsoft.Sql/servers/administrators@2021-11-01' = {
  name: '${serverName}/ActiveDirectory'
  properties: {
    administratorType: 'ActiveDirectory'
    login: adminName
    sid: adminObjectId
    tenantId: tenant().tenantId
  }
}
