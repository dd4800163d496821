# Functions host storage and the deployment package.
resource "azurerm_storage_account" "function" {
  # checkov:skip=CKV_AZURE_35: no VNet in this deployment; a Flex app without VNet integration reaches storage from shared outbound IPs. Access is Entra-only (shared keys off).
  # checkov:skip=CKV_AZURE_59: no VNet in this deployment; a Flex app without VNet integration reaches storage from shared outbound IPs. Access is Entra-only (shared keys off).
  # checkov:skip=CKV2_AZURE_33: no VNet in this deployment, so no private endpoint; access is Entra-only (shared keys off).
  # checkov:skip=CKV_AZURE_206: zone-redundant (ZRS); the account holds only host leases and the deployment package, which a redeploy recreates.
  # checkov:skip=CKV_AZURE_33: no queues are used on this account (Service Bus carries the messages); queue_properties is data plane, which this configuration keeps out of Terraform.
  # checkov:skip=CKV2_AZURE_1: Microsoft-managed keys with infrastructure encryption; the account holds only host leases and the deployment package.
  name                              = "st${var.name}func"
  location                          = var.location
  resource_group_name               = azurerm_resource_group.this.name
  account_kind                      = "StorageV2"
  account_tier                      = "Standard"
  account_replication_type          = "ZRS"
  access_tier                       = "Hot"
  shared_access_key_enabled         = false
  default_to_oauth_authentication   = true
  allow_nested_items_to_be_public   = false
  cross_tenant_replication_enabled  = false
  min_tls_version                   = "TLS1_2"
  https_traffic_only_enabled        = true
  public_network_access_enabled     = true
  infrastructure_encryption_enabled = true
  tags                              = var.tags

  network_rules {
    default_action = "Allow"
    bypass         = ["AzureServices"]
  }

  sas_policy {
    expiration_period = "0.01:00:00"
    expiration_action = "Log"
  }

  blob_properties {
    delete_retention_policy {
      days = 7
    }
    container_delete_retention_policy {
      days = 7
    }
  }
}

resource "azurerm_storage_container" "deployment" {
  # checkov:skip=CKV2_AZURE_21: holds only the deployment package, read by the platform on every cold start; logging those reads adds cost, not insight.
  name                  = local.deployment_container_name
  storage_account_id    = azurerm_storage_account.function.id
  container_access_type = "private"
}

# The immutable audit archive.
resource "azurerm_storage_account" "archive" {
  # checkov:skip=CKV_AZURE_35: no VNet in this deployment; the function app writes the archive over the public endpoint with its Entra identity (shared keys off).
  # checkov:skip=CKV_AZURE_59: no VNet in this deployment; the function app writes the archive over the public endpoint with its Entra identity (shared keys off).
  # checkov:skip=CKV2_AZURE_33: no VNet in this deployment, so no private endpoint; access is Entra-only (shared keys off).
  # checkov:skip=CKV_AZURE_33: no queues are used on this account; queue_properties is data plane, which this configuration keeps out of Terraform.
  # checkov:skip=CKV2_AZURE_1: Microsoft-managed keys with infrastructure encryption; the archive's integrity comes from the immutability policy and the hash chain, not from key ownership.
  name                              = "st${var.name}audit"
  location                          = var.location
  resource_group_name               = azurerm_resource_group.this.name
  account_kind                      = "StorageV2"
  account_tier                      = "Standard"
  account_replication_type          = "GRS"
  access_tier                       = "Cool"
  shared_access_key_enabled         = false
  default_to_oauth_authentication   = true
  allow_nested_items_to_be_public   = false
  cross_tenant_replication_enabled  = false
  min_tls_version                   = "TLS1_2"
  https_traffic_only_enabled        = true
  public_network_access_enabled     = true
  infrastructure_encryption_enabled = true
  tags                              = var.tags

  network_rules {
    default_action = "Allow"
    bypass         = ["AzureServices"]
  }

  sas_policy {
    expiration_period = "0.01:00:00"
    expiration_action = "Log"
  }

  blob_properties {
    delete_retention_policy {
      days = 7
    }
    container_delete_retention_policy {
      days = 7
    }
  }
}

resource "azurerm_storage_container" "archive" {
  # checkov:skip=CKV2_AZURE_21: reads, writes and deletes are logged by the archive blob service's diagnostic setting (archive_audit); storage insights would need an account key, and keys are off.
  name                  = local.archive_container_name
  storage_account_id    = azurerm_storage_account.archive.id
  container_access_type = "private"
}

# Time-based retention: archived audit blobs cannot be changed or deleted for archive_retention_days.
# No protected append writes: every archive blob is a block blob written once (one per day, If-None-Match: *),
# so nothing may be appended to an archived blob.
# NB. Left unlocked so a mistaken first deployment can be corrected; lock it once verified (infra/README.md).
resource "azurerm_storage_container_immutability_policy" "archive" {
  storage_container_resource_manager_id = azurerm_storage_container.archive.id
  immutability_period_in_days           = var.archive_retention_days
  protected_append_writes_enabled       = false

  lifecycle {
    # Locking is a one-way operator action (infra/README.md); Terraform must not try to undo it.
    ignore_changes = [locked]
  }
}
