# jitgate: the whole Azure side. infra/bicep deploys the same resources with the same settings;
# tests/infra checks that the two agree. The roles jitgate may grant come from ../allowed-roles.json,
# generated from the policy by `jitgate infra roles --write`: never edit the role list here.

data "azurerm_client_config" "current" {}

locals {
  allowed_roles = jsondecode(file("${path.module}/../allowed-roles.json"))

  resource_group_name = coalesce(var.resource_group_name, "rg-${var.name}")
  function_app_name   = "func-${var.name}"

  # Revokes have their own queue (and trigger), so that no backlog of grants delays one (docs/architecture.md §3).
  requests_queue    = "access-requests"
  lifecycle_queue   = "access-lifecycle"
  revocations_queue = "access-revocations"

  # NB. lock_seconds and max_delivery_count are also app settings (JITGATE_LOCK_SECONDS, JITGATE_MAX_DELIVERIES):
  # the handlers and the queues must agree on them.
  lock_seconds = 60
  queue_settings = {
    lock_duration                           = "PT1M"
    max_delivery_count                      = 10
    requires_duplicate_detection            = true
    duplicate_detection_history_time_window = "PT1H"
    dead_lettering_on_message_expiration    = true
    default_message_ttl                     = "P14D"
  }
  reconcile_seconds  = 300
  reconcile_schedule = "0 */5 * * * *" # the reconcile timer (NCRONTAB), every reconcile_seconds

  # Partition keys: a request's record and its audit chain live together in `audit`, in the request's
  # partition, so a state change and its events are one transactional batch (docs/architecture.md §6). Each
  # grant key is one document in `ledger`, partitioned by the key (GrantKey.assignment_name(), a UUIDv5) and
  # written only under If-Match on its etag (§5). `requests` holds records written before they moved to
  # `audit`: read, never written; jitgate moves each on its next write. Kept so that no apply destroys
  # them; it may go once it is empty.
  cosmos_containers = {
    requests = "/requestId"
    ledger   = "/grantKey"
    audit    = "/requestId"
  }
  cosmos_data_contributor = "00000000-0000-0000-0000-000000000002" # Cosmos DB Built-in Data Contributor

  role_ids = {
    storage_blob_data_owner       = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
    storage_blob_data_contributor = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
    service_bus_data_sender       = "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39"
    service_bus_data_receiver     = "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0"
    key_vault_secrets_user        = "4633458b-17de-408a-b874-0445c86b69e6"
    monitoring_metrics_publisher  = "3913510d-42f4-4e42-8a64-420c390055eb"
    log_analytics_reader          = "73c42c96-874c-492b-b04d-ab87d138a893"
    rbac_administrator            = "f58310d9-a9f6-439a-9e8d-f62e7b41a168"
  }

  # Reachable without an Entra token: the Teams outgoing webhook proves itself with an HMAC, and health is public.
  unauthenticated_paths = ["/api/teams/webhook", "/api/health"]

  deployment_container_name = "app-package"
  archive_container_name    = "audit-archive"

  activity_log_categories = [
    "Administrative",
    "Security",
    "ServiceHealth",
    "Alert",
    "Recommendation",
    "Policy",
    "Autoscale",
    "ResourceHealth",
  ]

  # Jitgate correlates what a grantee did from AzureActivity: route the Activity Log of this subscription
  # and of every subscription it grants in.
  activity_log_subscriptions = distinct(concat(
    [lower(var.subscription_id)],
    [for s in var.grant_scopes : lower(split("/", s)[2])],
  ))

  # Every setting the app reads (local.settings.example.json lists them; tests/infra checks both templates).
  app_settings = {
    AzureWebJobsStorage__accountName              = azurerm_storage_account.function.name
    AzureWebJobsStorage__credential               = "managedidentity"
    AzureWebJobsStorage__clientId                 = azurerm_user_assigned_identity.this.client_id
    APPLICATIONINSIGHTS_CONNECTION_STRING         = azurerm_application_insights.this.connection_string
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING     = "ClientId=${azurerm_user_assigned_identity.this.client_id};Authorization=AAD"
    AZURE_CLIENT_ID                               = azurerm_user_assigned_identity.this.client_id
    ServiceBusConnection__fullyQualifiedNamespace = "${azurerm_servicebus_namespace.this.name}.servicebus.windows.net"
    ServiceBusConnection__credential              = "managedidentity"
    ServiceBusConnection__clientId                = azurerm_user_assigned_identity.this.client_id
    JITGATE_MODE                                  = "azure"
    JITGATE_POLICY                                = local.allowed_roles.policy
    JITGATE_REQUESTS_QUEUE                        = local.requests_queue
    JITGATE_LIFECYCLE_QUEUE                       = local.lifecycle_queue
    JITGATE_REVOCATIONS_QUEUE                     = local.revocations_queue
    JITGATE_LOCK_SECONDS                          = tostring(local.lock_seconds)
    JITGATE_MAX_DELIVERIES                        = tostring(local.queue_settings.max_delivery_count)
    JITGATE_RECONCILE_SECONDS                     = tostring(local.reconcile_seconds)
    JITGATE_STALE_SECONDS                         = "60"
    JITGATE_RECONCILE_SCHEDULE                    = local.reconcile_schedule
    # NB. From the name: the app cannot read its own hostname into its own settings without a cycle.
    JITGATE_PUBLIC_URL            = "https://${local.function_app_name}.azurewebsites.net"
    JITGATE_COSMOS_ENDPOINT       = azurerm_cosmosdb_account.this.endpoint
    JITGATE_COSMOS_DATABASE       = azurerm_cosmosdb_sql_database.this.name
    JITGATE_TEAMS_WEBHOOK_URL     = "@Microsoft.KeyVault(SecretUri=${azurerm_key_vault.this.vault_uri}secrets/${azapi_resource.teams_webhook_url.name})"
    JITGATE_TEAMS_SECRET          = "@Microsoft.KeyVault(SecretUri=${azurerm_key_vault.this.vault_uri}secrets/${azapi_resource.teams_secret.name})"
    JITGATE_TEAMS_WEBHOOK_NAME    = var.teams_webhook_name
    JITGATE_PORTAL_URL            = var.portal_url
    JITGATE_ARCHIVE_ACCOUNT_URL   = azurerm_storage_account.archive.primary_blob_endpoint
    JITGATE_ARCHIVE_CONTAINER     = azurerm_storage_container.archive.name
    JITGATE_ACTIVITY_WORKSPACE_ID = azurerm_log_analytics_workspace.this.workspace_id
    JITGATE_GRANT_SCOPES          = join(",", var.grant_scopes)
    JITGATE_GROUP_OBJECT_IDS      = join(",", [for name, id in var.group_object_ids : "${name}=${id}"])
    JITGATE_COSMOS_ACCOUNTS       = join(",", var.cosmos_account_ids)
    JITGATE_DATABASES_FILE        = var.databases_file
    # The grant providers this deployment serves: azure-rbac, and each database provider it was pointed at
    # (postgres and azure-sql need the servers file too).
    JITGATE_PROVIDERS = join(",", concat(
      ["azure-rbac"],
      var.databases_file == "" || length(var.postgres_server_ids) == 0 ? [] : ["postgres"],
      var.databases_file == "" || length(var.sql_server_ids) == 0 ? [] : ["azure-sql"],
      length(var.cosmos_account_ids) == 0 ? [] : ["cosmos-data"],
    ))
  }
}

resource "azurerm_resource_group" "this" {
  name     = local.resource_group_name
  location = var.location
  tags     = var.tags
}

resource "azurerm_user_assigned_identity" "this" {
  name                = "id-${var.name}"
  location            = var.location
  resource_group_name = azurerm_resource_group.this.name
  tags                = var.tags
}
