resource "azurerm_servicebus_namespace" "this" {
  # checkov:skip=CKV_AZURE_201: customer-managed keys need the Premium tier; Standard encrypts with Microsoft-managed keys.
  # checkov:skip=CKV_AZURE_199: double encryption is part of customer-managed keys, which need the Premium tier.
  # checkov:skip=CKV_AZURE_202: a namespace identity only serves customer-managed keys (Premium); clients authenticate with their own identities.
  # checkov:skip=CKV_AZURE_204: no VNet in this deployment (private endpoints need Premium); local auth is off, so every client needs an Entra token.
  name                          = "sb-${var.name}"
  location                      = var.location
  resource_group_name           = azurerm_resource_group.this.name
  sku                           = "Standard"
  local_auth_enabled            = false
  minimum_tls_version           = "1.2"
  public_network_access_enabled = true
  tags                          = var.tags
}

resource "azurerm_servicebus_queue" "this" {
  for_each = toset([local.requests_queue, local.lifecycle_queue, local.revocations_queue])

  name                                    = each.value
  namespace_id                            = azurerm_servicebus_namespace.this.id
  lock_duration                           = local.queue_settings.lock_duration
  max_delivery_count                      = local.queue_settings.max_delivery_count
  requires_duplicate_detection            = local.queue_settings.requires_duplicate_detection
  duplicate_detection_history_time_window = local.queue_settings.duplicate_detection_history_time_window
  dead_lettering_on_message_expiration    = local.queue_settings.dead_lettering_on_message_expiration
  default_message_ttl                     = local.queue_settings.default_message_ttl
}
