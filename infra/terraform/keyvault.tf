resource "azurerm_key_vault" "this" {
  # checkov:skip=CKV_AZURE_109: no VNet in this deployment; App Service resolves Key Vault references from shared outbound IPs. Access is RBAC-only and audited.
  # checkov:skip=CKV_AZURE_189: no VNet in this deployment; App Service resolves Key Vault references from shared outbound IPs. Access is RBAC-only and audited.
  # checkov:skip=CKV2_AZURE_32: no VNet in this deployment, so no private endpoint; access is RBAC-only and audited.
  name                          = "kv-${var.name}"
  location                      = var.location
  resource_group_name           = azurerm_resource_group.this.name
  tenant_id                     = data.azurerm_client_config.current.tenant_id
  sku_name                      = "standard"
  rbac_authorization_enabled    = true
  purge_protection_enabled      = true
  soft_delete_retention_days    = 90
  public_network_access_enabled = true
  tags                          = var.tags

  network_acls {
    bypass         = "AzureServices"
    default_action = "Allow"
  }
}

# NB. Written through ARM (as Bicep does), not the Key Vault data plane: the deployer needs no secrets role,
# and sensitive_body keeps the values out of Terraform state.
resource "azapi_resource" "teams_webhook_url" {
  type      = "Microsoft.KeyVault/vaults/secrets@2023-07-01"
  name      = "jitgate-teams-webhook-url"
  parent_id = azurerm_key_vault.this.id

  body = {
    properties = {
      contentType = "text/uri-list"
    }
  }
  sensitive_body = {
    properties = {
      value = var.teams_webhook_url
    }
  }
}

resource "azapi_resource" "teams_secret" {
  type      = "Microsoft.KeyVault/vaults/secrets@2023-07-01"
  name      = "jitgate-teams-secret"
  parent_id = azurerm_key_vault.this.id

  body = {
    properties = {
      contentType = "application/base64"
    }
  }
  sensitive_body = {
    properties = {
      value = var.teams_secret
    }
  }
}
