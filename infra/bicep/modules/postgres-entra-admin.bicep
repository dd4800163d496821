// Makes a group the Microsoft Entra administrator of an existing Azure Database for PostgreSQL flexible server
// (one more administrator: a flexible server may have several). Its members run the setup script
// `jitgate infra sql` prints; jitgate's own identity is never made an administrator. The server must already
// accept Microsoft Entra authentication (authConfig.activeDirectoryAuth), which this template does not change.
targetScope = 'resourceGroup'

@description('Name of the existing flexible server.')
param serverName string

@description('Object id of the Entra group.')
param adminObjectId string

@description('Display name of the Entra group (the role name its members sign in with).')
param adminName string

resource server 'Microsoft.DBforPostgreSQL/flexibleServers@2022-12-01' existing = {
  name: serverName
}

resource admin 'Microsoft.DBforPostgreSQL/flexibleServers/administrators@2022-12-01' = {
  parent: server
  name: adminObjectId
  properties: {
    principalName: adminName
    principalType: 'Group'
    tenantId: tenant().tenantId
  }
}
