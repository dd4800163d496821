resource "azurerm_cosmosdb_account" "this" {
  # checkov:skip=CKV_AZURE_99: no VNet in this deployment; local (key) auth is disabled, so data access needs an Entra token and a data-plane role.
  # checkov:skip=CKV_AZURE_101: the Flex app has no VNet integration here, so it reaches Cosmos over the public endpoint with its managed identity.
  # checkov:skip=CKV_AZURE_100: Microsoft-managed keys; a customer-managed key adds a Key Vault key lifecycle, and the audit trail's integrity comes from its hash chain.
  name                               = "cosmos-${var.name}"
  location                           = var.location
  resource_group_name                = azurerm_resource_group.this.name
  offer_type                         = "Standard"
  kind                               = "GlobalDocumentDB"
  local_authentication_disabled      = true
  access_key_metadata_writes_enabled = false
  minimal_tls_version                = "Tls12"
  public_network_access_enabled      = true
  tags                               = var.tags

  capabilities {
    name = "EnableServerless"
  }

  consistency_policy {
    consistency_level = "Session"
  }

  geo_location {
    location          = var.location
    failover_priority = 0
    zone_redundant    = false
  }

  backup {
    type = "Continuous"
    tier = "Continuous7Days"
  }
}

resource "azurerm_cosmosdb_sql_database" "this" {
  name                = "jitgate"
  resource_group_name = azurerm_resource_group.this.name
  account_name        = azurerm_cosmosdb_account.this.name
}

resource "azurerm_cosmosdb_sql_container" "this" {
  for_each = local.cosmos_containers

  name                  = each.key
  resource_group_name   = azurerm_resource_group.this.name
  account_name          = azurerm_cosmosdb_account.this.name
  database_name         = azurerm_cosmosdb_sql_database.this.name
  partition_key_paths   = [each.value]
  partition_key_kind    = "Hash"
  partition_key_version = 2
}

resource "azurerm_cosmosdb_sql_role_assignment" "data_contributor" {
  resource_group_name = azurerm_resource_group.this.name
  account_name        = azurerm_cosmosdb_account.this.name
  role_definition_id  = "${azurerm_cosmosdb_account.this.id}/sqlRoleDefinitions/${local.cosmos_data_contributor}"
  principal_id        = azurerm_user_assigned_identity.this.principal_id
  scope               = azurerm_cosmosdb_account.this.id
}
