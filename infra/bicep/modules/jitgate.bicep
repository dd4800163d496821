// Everything jitgate runs on inside its resource group. Identity-based access only: no connection
// strings, no account keys, local auth off wherever the service allows it.
targetScope = 'resourceGroup'

@description('Short environment name; resource names derive from it.')
param name string

@description('Azure region.')
param location string

@description('Tags for every resource.')
param tags object

@description('Application (client) id of the Entra app registration protecting the API.')
param authClientId string

@description('Scopes where jitgate grants roles (and reconciles).')
param grantScopes array

@description('Entra object id of every group the policy names, by the policy\'s group name.')
param groupObjectIds object

@description('E-mail address that receives the dead-letter alert.')
param alertEmail string

@description('Teams Workflows webhook URL.')
@secure()
param teamsWebhookUrl string

@description('Teams outgoing-webhook HMAC secret (base64).')
@secure()
param teamsSecret string

@description('Name of the Teams outgoing webhook approvers @mention to answer.')
param teamsWebhookName string

@description('Base URL of the portal (Backstage) that has a page per request; empty: no link.')
param portalUrl string

@description('Days an archived audit blob stays immutable.')
param archiveRetentionDays int

@description('Days the Log Analytics workspace keeps logs.')
param logRetentionDays int

@description('Upper bound on Flex Consumption instances.')
param maximumInstanceCount int

@description('Path of the policy inside the deployed package (the one allowed-roles.json was generated from).')
param policyPath string

@description('Existing Azure Database for PostgreSQL flexible servers jitgate grants on (postgres).')
param postgresServerIds array

@description('Existing Azure SQL logical servers jitgate grants on (azure-sql).')
param sqlServerIds array

@description('Existing Cosmos DB accounts jitgate grants data roles on (cosmos-data).')
param cosmosAccountIds array

@description('Path of the servers file inside the deployed package; empty: no postgres or azure-sql.')
param databasesFile string

// ---------------------------------------------------------------- shared settings (kept equal to infra/terraform)

var requestsQueue = 'access-requests'
var lifecycleQueue = 'access-lifecycle'
// Revokes have their own queue (and trigger), so that no backlog of grants delays one (docs/architecture.md §3).
var revocationsQueue = 'access-revocations'

// NB. lockSeconds and maxDeliveryCount are also app settings (JITGATE_LOCK_SECONDS, JITGATE_MAX_DELIVERIES):
// the handlers and the queues must agree on them.
var lockSeconds = 60
var queueSettings = {
  lockDuration: 'PT1M'
  maxDeliveryCount: 10
  requiresDuplicateDetection: true
  duplicateDetectionHistoryTimeWindow: 'PT1H'
  deadLetteringOnMessageExpiration: true
  defaultMessageTimeToLive: 'P14D'
}
var reconcileSeconds = 300
var reconcileSchedule = '0 */5 * * * *' // the reconcile timer (NCRONTAB), every reconcileSeconds

// The grant providers this deployment serves (JITGATE_PROVIDERS): azure-rbac, and each database provider it was
// pointed at (postgres and azure-sql need the servers file too).
var grantProviders = join(concat(['azure-rbac'], empty(databasesFile) || empty(postgresServerIds) ? [] : ['postgres'], empty(databasesFile) || empty(sqlServerIds) ? [] : ['azure-sql'], empty(cosmosAccountIds) ? [] : ['cosmos-data']), ',')
var groupObjectIdPairs = [for group in items(groupObjectIds): '${group.key}=${group.value}']

// Partition keys: a request's record and its audit chain live together in `audit`, in the request's
// partition, so a state change and its events are one transactional batch (docs/architecture.md §6). Each
// grant key is one document in `ledger`, partitioned by the key (GrantKey.assignment_name(), a UUIDv5) and
// written only under If-Match on its etag (§5). `requests` holds records written before they moved to
// `audit`: read, never written; jitgate moves each on its next write. Kept so that no update of this
// template deletes them; it may go once it is empty.
var cosmosContainers = [
  { name: 'requests', partitionKey: '/requestId' }
  { name: 'ledger', partitionKey: '/grantKey' }
  { name: 'audit', partitionKey: '/requestId' }
]
var cosmosDataContributor = '00000000-0000-0000-0000-000000000002' // Cosmos DB Built-in Data Contributor

var roleIds = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  serviceBusDataSender: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
  serviceBusDataReceiver: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  logAnalyticsReader: '73c42c96-874c-492b-b04d-ab87d138a893'
}

// Reachable without an Entra token: the Teams outgoing webhook proves itself with an HMAC, and health is public.
var unauthenticatedPaths = [
  '/api/teams/webhook'
  '/api/health'
]

var deploymentContainerName = 'app-package'
var archiveContainerName = 'audit-archive'
var functionAppName = 'func-${name}'

// ---------------------------------------------------------------- identity

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${name}'
  location: location
  tags: tags
}

// ---------------------------------------------------------------- monitoring

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${name}'
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: logRetentionDays
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${name}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: true
  }
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: 'ag-${name}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: take('jit${name}', 12)
    enabled: true
    emailReceivers: [
      {
        name: 'jitgate-operators'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// A dead-lettered message is a request nobody decided on or a grant/revoke that was never applied.
resource deadLetterAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'alert-${name}-dead-letters'
  location: 'global'
  tags: tags
  properties: {
    description: 'A jitgate queue holds dead-lettered messages: a request or a grant/revoke command was not processed. Inspect the dead-letter queue and the audit trail.'
    severity: 1
    enabled: true
    autoMitigate: true
    scopes: [
      serviceBus.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'dead-lettered'
          metricNamespace: 'Microsoft.ServiceBus/namespaces'
          metricName: 'DeadletteredMessages'
          timeAggregation: 'Maximum'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [
            {
              name: 'EntityName'
              operator: 'Include'
              values: [
                requestsQueue
                lifecycleQueue
                revocationsQueue
              ]
            }
          ]
        }
      ]
    }
    actions: [
      {
        actionGroupId: actionGroup.id
      }
    ]
  }
}

// ---------------------------------------------------------------- storage: Functions host and deployment package

resource functionStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: no VNet in this deployment; a Flex app without VNet integration reaches storage from shared outbound IPs. Access is Entra-only (shared keys off).
  // checkov:skip=CKV_AZURE_59: no VNet in this deployment; a Flex app without VNet integration reaches storage from shared outbound IPs. Access is Entra-only (shared keys off).
  // checkov:skip=CKV_AZURE_206: zone-redundant (ZRS); the account holds only host leases and the deployment package, which a redeploy recreates.
  // checkov:skip=CKV_AZURE_43: the name is st<name>func, 9-17 lowercase letters and digits given the name parameter's limits; checkov cannot evaluate the interpolation.
  name: 'st${name}func'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_ZRS'
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    sasPolicy: {
      sasExpirationPeriod: '0.01:00:00'
      expirationAction: 'Log'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
        }
        file: {
          enabled: true
        }
      }
    }
  }
}

resource functionBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: functionStorage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: functionBlobs
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

// ---------------------------------------------------------------- storage: immutable audit archive

resource archiveStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: no VNet in this deployment; the function app writes the archive over the public endpoint with its Entra identity (shared keys off).
  // checkov:skip=CKV_AZURE_59: no VNet in this deployment; the function app writes the archive over the public endpoint with its Entra identity (shared keys off).
  // checkov:skip=CKV_AZURE_43: the name is st<name>audit, 10-18 lowercase letters and digits given the name parameter's limits; checkov cannot evaluate the interpolation.
  name: 'st${name}audit'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_GRS'
  }
  properties: {
    accessTier: 'Cool'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    sasPolicy: {
      sasExpirationPeriod: '0.01:00:00'
      expirationAction: 'Log'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
        }
        file: {
          enabled: true
        }
      }
    }
  }
}

resource archiveBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: archiveStorage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource archiveContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: archiveBlobs
  name: archiveContainerName
  properties: {
    publicAccess: 'None'
  }
}

// Who read or wrote the audit archive.
resource archiveAudit 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'jitgate-audit'
  scope: archiveBlobs
  properties: {
    workspaceId: workspace.id
    logs: [
      {
        category: 'StorageRead'
        enabled: true
      }
      {
        category: 'StorageWrite'
        enabled: true
      }
      {
        category: 'StorageDelete'
        enabled: true
      }
    ]
  }
}

// Time-based retention: archived audit blobs cannot be changed or deleted for archiveRetentionDays.
// No protected append writes: every archive blob is a block blob written once (one per day, If-None-Match: *),
// so nothing may be appended to an archived blob.
// NB. Left unlocked so a mistaken first deployment can be corrected; lock it once verified (infra/README.md).
resource archiveImmutability 'Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies@2023-05-01' = {
  parent: archiveContainer
  name: 'default'
  properties: {
    immutabilityPeriodSinceCreationInDays: archiveRetentionDays
    allowProtectedAppendWrites: false
  }
}

// ---------------------------------------------------------------- Service Bus

resource serviceBus 'Microsoft.ServiceBus/namespaces@2024-01-01' = {
  name: 'sb-${name}'
  location: location
  tags: tags
  sku: {
    name: 'Standard'
    tier: 'Standard'
  }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
  }
}

resource queues 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' = [for queueName in [requestsQueue, lifecycleQueue, revocationsQueue]: {
  parent: serviceBus
  name: queueName
  properties: queueSettings
}]

// ---------------------------------------------------------------- Cosmos DB

resource cosmos 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' = {
  // checkov:skip=CKV_AZURE_99: no VNet in this deployment; local (key) auth is disabled, so data access needs an Entra token and a data-plane role.
  // checkov:skip=CKV_AZURE_101: the Flex app has no VNet integration here, so it reaches Cosmos over the public endpoint with its managed identity.
  name: 'cosmos-${name}'
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    capabilities: [
      {
        name: 'EnableServerless'
      }
    ]
    locations: [
      {
        locationName: location
        failoverPriority: 0
        isZoneRedundant: false
      }
    ]
    consistencyPolicy: {
      defaultConsistencyLevel: 'Session'
    }
    backupPolicy: {
      type: 'Continuous'
      continuousModeProperties: {
        tier: 'Continuous7Days'
      }
    }
    disableLocalAuth: true
    disableKeyBasedMetadataWriteAccess: true
    minimalTlsVersion: 'Tls12'
    publicNetworkAccess: 'Enabled'
  }
}

resource cosmosDatabase 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-11-15' = {
  parent: cosmos
  name: 'jitgate'
  properties: {
    resource: {
      id: 'jitgate'
    }
  }
}

resource containers 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-11-15' = [for container in cosmosContainers: {
  parent: cosmosDatabase
  name: container.name
  properties: {
    resource: {
      id: container.name
      partitionKey: {
        paths: [
          container.partitionKey
        ]
        kind: 'Hash'
        version: 2
      }
    }
  }
}]

resource cosmosDataAccess 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-11-15' = {
  parent: cosmos
  name: guid(cosmos.id, identity.id, cosmosDataContributor)
  properties: {
    roleDefinitionId: '${cosmos.id}/sqlRoleDefinitions/${cosmosDataContributor}'
    principalId: identity.properties.principalId
    scope: cosmos.id
  }
}

// ---------------------------------------------------------------- Key Vault

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: no VNet in this deployment; App Service resolves Key Vault references from shared outbound IPs. Access is RBAC-only and audited.
  // checkov:skip=CKV_AZURE_189: no VNet in this deployment; App Service resolves Key Vault references from shared outbound IPs. Access is RBAC-only and audited.
  name: 'kv-${name}'
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enablePurgeProtection: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource teamsWebhookUrlSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  // checkov:skip=CKV_AZURE_41: the value is rotated in Teams, not on a schedule; an expiry date would only break the Key Vault reference.
  parent: vault
  name: 'jitgate-teams-webhook-url'
  properties: {
    value: teamsWebhookUrl
    contentType: 'text/uri-list'
  }
}

resource teamsSecretSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  // checkov:skip=CKV_AZURE_41: the value is rotated in Teams, not on a schedule; an expiry date would only break the Key Vault reference.
  parent: vault
  name: 'jitgate-teams-secret'
  properties: {
    value: teamsSecret
    contentType: 'application/base64'
  }
}

// Who read which secret, next to the Activity Log.
resource vaultAudit 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'jitgate-audit'
  scope: vault
  properties: {
    workspaceId: workspace.id
    logs: [
      {
        category: 'AuditEvent'
        enabled: true
      }
    ]
  }
}

// ---------------------------------------------------------------- Function App (Flex Consumption)

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Flex Consumption zone redundancy exists only in some regions; jitgate is regional and its state (Cosmos, Service Bus) survives an instance loss.
  name: 'plan-${name}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_17: callers (Backstage, Teams) do not present client certificates; Entra tokens (App Service auth) and the Teams HMAC authenticate them.
  // checkov:skip=CKV_AZURE_222: Backstage and the Teams outgoing webhook call the API from outside any VNet; App Service authentication guards every path but the HMAC-checked webhook and health.
  // checkov:skip=CKV_AZURE_213: platform health-check eviction is for long-lived instances on dedicated plans; Flex Consumption instances come and go with demand (GET /api/health serves operators' probes).
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero by design; queued work waits on Service Bus and the reconcile timer catches up, so no instance is kept warm.
  name: functionAppName
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    keyVaultReferenceIdentity: identity.id
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      // Every setting the app reads (local.settings.example.json lists them; tests/infra checks both templates).
      appSettings: [
        {
          name: 'AzureWebJobsStorage__accountName'
          value: functionStorage.name
        }
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: identity.properties.clientId
        }
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: appInsights.properties.ConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'ClientId=${identity.properties.clientId};Authorization=AAD'
        }
        {
          name: 'AZURE_CLIENT_ID'
          value: identity.properties.clientId
        }
        {
          name: 'ServiceBusConnection__fullyQualifiedNamespace'
          value: '${serviceBus.name}.servicebus.windows.net'
        }
        {
          name: 'ServiceBusConnection__credential'
          value: 'managedidentity'
        }
        {
          name: 'ServiceBusConnection__clientId'
          value: identity.properties.clientId
        }
        {
          name: 'JITGATE_MODE'
          value: 'azure'
        }
        {
          name: 'JITGATE_POLICY'
          value: policyPath
        }
        {
          name: 'JITGATE_REQUESTS_QUEUE'
          value: requestsQueue
        }
        {
          name: 'JITGATE_LIFECYCLE_QUEUE'
          value: lifecycleQueue
        }
        {
          name: 'JITGATE_REVOCATIONS_QUEUE'
          value: revocationsQueue
        }
        {
          name: 'JITGATE_LOCK_SECONDS'
          value: string(lockSeconds)
        }
        {
          name: 'JITGATE_MAX_DELIVERIES'
          value: string(queueSettings.maxDeliveryCount)
        }
        {
          name: 'JITGATE_RECONCILE_SECONDS'
          value: string(reconcileSeconds)
        }
        {
          name: 'JITGATE_RECONCILE_SCHEDULE'
          value: reconcileSchedule
        }
        {
          name: 'JITGATE_STALE_SECONDS'
          value: '60'
        }
        // NB. From the name, as infra/terraform must (a Terraform app cannot read its own hostname into its settings).
        {
          name: 'JITGATE_PUBLIC_URL'
          value: 'https://${functionAppName}.azurewebsites.net'
        }
        {
          name: 'JITGATE_COSMOS_ENDPOINT'
          value: cosmos.properties.documentEndpoint
        }
        {
          name: 'JITGATE_COSMOS_DATABASE'
          value: cosmosDatabase.name
        }
        {
          name: 'JITGATE_TEAMS_WEBHOOK_URL'
          value: '@Microsoft.KeyVault(SecretUri=${teamsWebhookUrlSecret.properties.secretUri})'
        }
        {
          name: 'JITGATE_TEAMS_SECRET'
          value: '@Microsoft.KeyVault(SecretUri=${teamsSecretSecret.properties.secretUri})'
        }
        {
          name: 'JITGATE_TEAMS_WEBHOOK_NAME'
          value: teamsWebhookName
        }
        {
          name: 'JITGATE_PORTAL_URL'
          value: portalUrl
        }
        {
          name: 'JITGATE_ARCHIVE_ACCOUNT_URL'
          value: archiveStorage.properties.primaryEndpoints.blob
        }
        {
          name: 'JITGATE_ARCHIVE_CONTAINER'
          value: archiveContainer.name
        }
        {
          name: 'JITGATE_ACTIVITY_WORKSPACE_ID'
          value: workspace.properties.customerId
        }
        {
          name: 'JITGATE_PROVIDERS'
          value: grantProviders
        }
        {
          name: 'JITGATE_GRANT_SCOPES'
          value: join(grantScopes, ',')
        }
        {
          name: 'JITGATE_GROUP_OBJECT_IDS'
          value: join(groupObjectIdPairs, ',')
        }
        {
          name: 'JITGATE_COSMOS_ACCOUNTS'
          value: join(cosmosAccountIds, ',')
        }
        {
          name: 'JITGATE_DATABASES_FILE'
          value: databasesFile
        }
      ]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${functionStorage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: 2048
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
  dependsOn: [
    functionHostStorage
    vaultSecretsUser
  ]

  // App Service authentication: Entra tokens for the app registration; its app roles (Jit.Auditor,
  // Jit.Admin) reach the app in X-MS-CLIENT-PRINCIPAL.
  resource authentication 'config' = {
    // NB. checkov runs its `web` config checks on every Microsoft.Web/sites/config; this one is authsettingsV2.
    // checkov:skip=CKV_AZURE_13: this is authsettingsV2 with platform.enabled and requireAuthentication true; the check reads the v1 `enabled` property.
    // checkov:skip=CKV_AZURE_63: HTTP logging is a `web` config setting (App Service file-system logs, absent on Flex Consumption); requests are logged to Application Insights.
    // checkov:skip=CKV_AZURE_65: detailed error pages are a `web` config setting, absent on Flex Consumption; errors are logged to Application Insights.
    // checkov:skip=CKV_AZURE_66: failed request tracing is a `web` config setting, absent on Flex Consumption; failures are logged to Application Insights.
    // checkov:skip=CKV_AZURE_80: .NET Framework version is a `web` config setting; jitgate runs on Python 3.11.
    // checkov:skip=CKV_AZURE_88: Azure Files content shares do not exist on Flex Consumption; the package is in blob storage.
    // checkov:skip=CKV_AZURE_222: public network access is a site property, set and justified on functionApp.
    name: 'authsettingsV2'
    properties: {
      platform: {
        enabled: true
      }
      globalValidation: {
        requireAuthentication: true
        unauthenticatedClientAction: 'Return401'
        excludedPaths: unauthenticatedPaths
      }
      httpSettings: {
        requireHttps: true
      }
      identityProviders: {
        azureActiveDirectory: {
          enabled: true
          registration: {
            clientId: authClientId
            openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
          }
          validation: {
            allowedAudiences: [
              'api://${authClientId}'
              authClientId
            ]
          }
        }
      }
      login: {
        tokenStore: {
          enabled: false
        }
      }
    }
  }
}

resource publishingCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

// ---------------------------------------------------------------- data-plane roles of the function identity

resource functionHostStorage 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(functionStorage.id, identity.id, roleIds.storageBlobDataOwner)
  scope: functionStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageBlobDataOwner)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource archiveWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(archiveContainer.id, identity.id, roleIds.storageBlobDataContributor)
  scope: archiveContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageBlobDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource serviceBusSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(serviceBus.id, identity.id, roleIds.serviceBusDataSender)
  scope: serviceBus
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.serviceBusDataSender)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource serviceBusReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(serviceBus.id, identity.id, roleIds.serviceBusDataReceiver)
  scope: serviceBus
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.serviceBusDataReceiver)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource vaultSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, identity.id, roleIds.keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.keyVaultSecretsUser)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource telemetryPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, identity.id, roleIds.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.monitoringMetricsPublisher)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource activityReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, identity.id, roleIds.logAnalyticsReader)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.logAnalyticsReader)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

output functionAppName string = functionApp.name
output functionAppUrl string = 'https://${functionApp.properties.defaultHostName}'
output identityClientId string = identity.properties.clientId
output identityPrincipalId string = identity.properties.principalId
output serviceBusNamespace string = '${serviceBus.name}.servicebus.windows.net'
output cosmosEndpoint string = cosmos.properties.documentEndpoint
output keyVaultName string = vault.name
output workspaceId string = workspace.properties.customerId
output workspaceResourceId string = workspace.id
output archiveContainerUrl string = '${archiveStorage.properties.primaryEndpoints.blob}${archiveContainerName}'
