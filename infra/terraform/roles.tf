# Data-plane roles of the function identity, each on the narrowest scope that works.

resource "azurerm_role_assignment" "function_host_storage" {
  scope              = azurerm_storage_account.function.id
  role_definition_id = "/subscriptions/${var.subscription_id}/providers/Microsoft.Authorization/roleDefinitions/${local.role_ids.storage_blob_data_owner}"
  principal_id       = azurerm_user_assigned_identity.this.principal_id
  principal_type     = "ServicePrincipal"
}

resource "azurerm_role_assignment" "archive_writer" {
  scope              = azurerm_storage_container.archive.id
  role_definition_id = "/subscriptions/${var.subscription_id}/providers/Microsoft.Authorization/roleDefinitions/${local.role_ids.storage_blob_data_contributor}"
  principal_id       = azurerm_user_assigned_identity.this.principal_id
  principal_type     = "ServicePrincipal"
}

resource "azurerm_role_assignment" "service_bus_sender" {
  scope              = azurerm_servicebus_namespace.this.id
  role_definition_id = "/subscriptions/${var.subscription_id}/providers/Microsoft.Authorization/roleDefinitions/${local.role_ids.service_bus_data_sender}"
  principal_id       = azurerm_user_assigned_identity.this.principal_id
  principal_type     = "ServicePrincipal"
}

resource "azurerm_role_assignment" "service_bus_receiver" {
  scope              = azurerm_servicebus_namespace.this.id
  role_definition_id = "/subscriptions/${var.subscription_id}/providers/Microsoft.Authorization/roleDefinitions/${local.role_ids.service_bus_data_receiver}"
  principal_id       = azurerm_user_assigned_identity.this.principal_id
  principal_type     = "ServicePrincipal"
}

resource "azurerm_role_assignment" "vault_secrets_user" {
  scope              = azurerm_key_vault.this.id
  role_definition_id = "/subscriptions/${var.subscription_id}/providers/Microsoft.Authorization/roleDefinitions/${local.role_ids.key_vault_secrets_user}"
  principal_id       = azurerm_user_assigned_identity.this.principal_id
  principal_type     = "ServicePrincipal"
}

resource "azurerm_role_assignment" "telemetry_publisher" {
  scope              = azurerm_application_insights.this.id
  role_definition_id = "/subscriptions/${var.subscription_id}/providers/Microsoft.Authorization/roleDefinitions/${local.role_ids.monitoring_metrics_publisher}"
  principal_id       = azurerm_user_assigned_identity.this.principal_id
  principal_type     = "ServicePrincipal"
}

resource "azurerm_role_assignment" "activity_reader" {
  scope              = azurerm_log_analytics_workspace.this.id
  role_definition_id = "/subscriptions/${var.subscription_id}/providers/Microsoft.Authorization/roleDefinitions/${local.role_ids.log_analytics_reader}"
  principal_id       = azurerm_user_assigned_identity.this.principal_id
  principal_type     = "ServicePrincipal"
}

# The grant permission: Role Based Access Control Administrator on each grant scope, conditioned on
# allowed-roles.json (the policy's roles, users and groups only).
resource "azurerm_role_assignment" "grant" {
  for_each = length(local.allowed_roles.roleDefinitionIds) > 0 ? toset(var.grant_scopes) : toset([])

  scope              = each.value
  role_definition_id = "/subscriptions/${split("/", each.value)[2]}/providers/Microsoft.Authorization/roleDefinitions/${local.role_ids.rbac_administrator}"
  principal_id       = azurerm_user_assigned_identity.this.principal_id
  principal_type     = "ServicePrincipal"
  condition          = local.allowed_roles.condition
  condition_version  = local.allowed_roles.conditionVersion
  description        = "jitgate ${var.name}: grants and revokes just-in-time role assignments allowed by ${local.allowed_roles.policy}"
}
