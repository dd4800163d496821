output "resource_group_name" {
  value = azurerm_resource_group.this.name
}

output "function_app_name" {
  value = azurerm_function_app_flex_consumption.this.name
}

output "function_app_url" {
  value = "https://${azurerm_function_app_flex_consumption.this.default_hostname}"
}

output "identity_client_id" {
  value = azurerm_user_assigned_identity.this.client_id
}

output "identity_principal_id" {
  value = azurerm_user_assigned_identity.this.principal_id
}

output "service_bus_namespace" {
  value = "${azurerm_servicebus_namespace.this.name}.servicebus.windows.net"
}

output "cosmos_endpoint" {
  value = azurerm_cosmosdb_account.this.endpoint
}

output "key_vault_name" {
  value = azurerm_key_vault.this.name
}

output "workspace_id" {
  value = azurerm_log_analytics_workspace.this.workspace_id
}

output "archive_container_url" {
  value = "${azurerm_storage_account.archive.primary_blob_endpoint}${azurerm_storage_container.archive.name}"
}

output "allowed_role_definition_ids" {
  value = local.allowed_roles.roleDefinitionIds
}
