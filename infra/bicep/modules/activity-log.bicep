// Routes a subscription's Activity Log to the jitgate workspace (table AzureActivity), where jitgate
// correlates what a grantee did while holding a role.
targetScope = 'subscription'

@description('Name of the subscription diagnostic setting.')
param settingName string

@description('Resource id of the Log Analytics workspace.')
param workspaceId string

var categories = [
  'Administrative'
  'Security'
  'ServiceHealth'
  'Alert'
  'Recommendation'
  'Policy'
  'Autoscale'
  'ResourceHealth'
]

resource activityLog 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: settingName
  properties: {
    workspaceId: workspaceId
    logs: [for category in categories: {
      category: category
      enabled: true
    }]
  }
}
