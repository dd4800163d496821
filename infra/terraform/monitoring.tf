resource "azurerm_log_analytics_workspace" "this" {
  name                = "log-${var.name}"
  location            = var.location
  resource_group_name = azurerm_resource_group.this.name
  sku                 = "PerGB2018"
  retention_in_days   = var.log_retention_days
  tags                = var.tags
}

resource "azurerm_application_insights" "this" {
  name                          = "appi-${var.name}"
  location                      = var.location
  resource_group_name           = azurerm_resource_group.this.name
  application_type              = "web"
  workspace_id                  = azurerm_log_analytics_workspace.this.id
  local_authentication_disabled = true
  tags                          = var.tags
}

resource "azurerm_monitor_action_group" "this" {
  name                = "ag-${var.name}"
  resource_group_name = azurerm_resource_group.this.name
  short_name          = substr("jit${var.name}", 0, 12)
  enabled             = true
  tags                = var.tags

  email_receiver {
    name                    = "jitgate-operators"
    email_address           = var.alert_email
    use_common_alert_schema = true
  }
}

# A dead-lettered message is a request nobody decided on or a grant/revoke that was never applied.
resource "azurerm_monitor_metric_alert" "dead_letters" {
  name                = "alert-${var.name}-dead-letters"
  resource_group_name = azurerm_resource_group.this.name
  scopes              = [azurerm_servicebus_namespace.this.id]
  description         = "A jitgate queue holds dead-lettered messages: a request or a grant/revoke command was not processed. Inspect the dead-letter queue and the audit trail."
  severity            = 1
  enabled             = true
  auto_mitigate       = true
  frequency           = "PT5M"
  window_size         = "PT5M"
  tags                = var.tags

  criteria {
    metric_namespace = "Microsoft.ServiceBus/namespaces"
    metric_name      = "DeadletteredMessages"
    aggregation      = "Maximum"
    operator         = "GreaterThan"
    threshold        = 0

    dimension {
      name     = "EntityName"
      operator = "Include"
      values   = [local.requests_queue, local.lifecycle_queue, local.revocations_queue]
    }
  }

  action {
    action_group_id = azurerm_monitor_action_group.this.id
  }
}

# Routes each subscription's Activity Log to the workspace (table AzureActivity), where jitgate correlates
# what a grantee did while holding a role.
resource "azurerm_monitor_diagnostic_setting" "activity_log" {
  for_each = toset(local.activity_log_subscriptions)

  name                       = "jitgate-${var.name}-activity-log"
  target_resource_id         = "/subscriptions/${each.value}"
  log_analytics_workspace_id = azurerm_log_analytics_workspace.this.id

  dynamic "enabled_log" {
    for_each = local.activity_log_categories
    content {
      category = enabled_log.value
    }
  }
}

# Who read which secret, next to the Activity Log.
resource "azurerm_monitor_diagnostic_setting" "vault_audit" {
  name                       = "jitgate-audit"
  target_resource_id         = azurerm_key_vault.this.id
  log_analytics_workspace_id = azurerm_log_analytics_workspace.this.id

  enabled_log {
    category = "AuditEvent"
  }
}

# Who read or wrote the audit archive.
resource "azurerm_monitor_diagnostic_setting" "archive_audit" {
  name                       = "jitgate-audit"
  target_resource_id         = "${azurerm_storage_account.archive.id}/blobServices/default"
  log_analytics_workspace_id = azurerm_log_analytics_workspace.this.id

  enabled_log {
    category = "StorageRead"
  }
  enabled_log {
    category = "StorageWrite"
  }
  enabled_log {
    category = "StorageDelete"
  }
}
