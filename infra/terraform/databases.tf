# Existing database servers and Cosmos DB accounts jitgate grants on (infra/README.md "Databases"). This
# configuration creates none of them and changes none of their settings; it adds, where asked, an Entra
# administrator group and the function identity's permission. azapi writes the administrators, so that a server in
# another subscription is reached by its id, as Bicep reaches it by its scope.

locals {
  # The cosmos-data permission, only when the policy lets cosmos-data assign some role (allowed-roles.json). Azure
  # RBAC has no condition on a sqlRoleAssignments write (infra/README.md), so it is bounded by what the role allows
  # and where it is assigned: these actions, at the listed accounts only.
  cosmos_data_grants     = length(var.cosmos_account_ids) > 0 && length(local.allowed_roles.cosmosData.roleDefinitionIds) > 0
  cosmos_resource_groups = distinct([for id in var.cosmos_account_ids : lower(join("/", slice(split("/", id), 0, 5)))])
  cosmos_data_grant_actions = [
    # read, write and delete, and Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments/operationResults/read,
    # which following an assignment's operation asks for and Azure's list of operations does not name
    "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments/*",
    "Microsoft.DocumentDB/databaseAccounts/sqlRoleDefinitions/read",
    "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/read",
    "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/read",
  ]
  cosmos_operation_status_actions = [
    "Microsoft.DocumentDB/locations/operationsStatus/read",
  ]
}

# ---------------------------------------------------------------- Entra administrators

# One more administrator of each flexible server (a flexible server may have several). The server must already
# accept Microsoft Entra authentication (authConfig.activeDirectoryAuth), which this configuration does not change.
resource "azapi_resource" "postgres_admin" {
  for_each = var.database_admin_group == null ? toset([]) : toset(var.postgres_server_ids)

  type      = "Microsoft.DBforPostgreSQL/flexibleServers/administrators@2022-12-01"
  name      = var.database_admin_group.object_id
  parent_id = each.value
  body = {
    properties = {
      principalName = var.database_admin_group.display_name
      principalType = "Group"
      tenantId      = data.azurerm_client_config.current.tenant_id
    }
  }
}

# A logical server has one Entra administrator: this replaces the one it has.
resource "azapi_resource" "sql_admin" {
  for_each = var.database_admin_group == null ? toset([]) : toset(var.sql_server_ids)

  type      = "Microsoft.Sql/servers/administrators@2021-11-01"
  name      = "ActiveDirectory"
  parent_id = each.value
  body = {
    properties = {
      administratorType = "ActiveDirectory"
      login             = var.database_admin_group.display_name
      sid               = var.database_admin_group.object_id
      tenantId          = data.azurerm_client_config.current.tenant_id
    }
  }
}

# ---------------------------------------------------------------- the cosmos-data permission

resource "azurerm_role_definition" "cosmos_data_grants" {
  count = local.cosmos_data_grants ? 1 : 0

  name              = "jitgate ${var.name} Cosmos DB data-plane grants"
  scope             = "/subscriptions/${var.subscription_id}"
  description       = "Lets jitgate ${var.name} read, create and delete Cosmos DB data-plane role assignments (and read the role definitions, databases and containers they name). No data access, no keys, no account settings."
  assignable_scopes = local.cosmos_resource_groups

  permissions {
    actions     = local.cosmos_data_grant_actions
    not_actions = []
  }
}

# Following the operations: a role assignment's PUT and DELETE answer 202 with an Azure-AsyncOperation URL under
# /subscriptions/<id>/providers/Microsoft.DocumentDB/locations/<region>/operationsStatus/<id>, which is not below
# the account; Azure Resource Manager's "Track asynchronous Azure operations" says tracking needs permission at the
# resource group.
resource "azurerm_role_definition" "cosmos_operation_status" {
  count = local.cosmos_data_grants ? 1 : 0

  name              = "jitgate ${var.name} Cosmos DB operation status"
  scope             = "/subscriptions/${var.subscription_id}"
  description       = "Lets jitgate ${var.name} follow the Cosmos DB operations it started (the status of long-running operations)."
  assignable_scopes = local.cosmos_resource_groups

  permissions {
    actions     = local.cosmos_operation_status_actions
    not_actions = []
  }
}

resource "azurerm_role_assignment" "cosmos_data_grants" {
  for_each = local.cosmos_data_grants ? toset(var.cosmos_account_ids) : toset([])

  scope              = each.value
  role_definition_id = azurerm_role_definition.cosmos_data_grants[0].role_definition_resource_id
  principal_id       = azurerm_user_assigned_identity.this.principal_id
  principal_type     = "ServicePrincipal"
  description        = "jitgate ${var.name}: grants and revokes the Cosmos DB data roles ${join(", ", local.allowed_roles.cosmosData.roleDefinitionIds)} allowed by ${local.allowed_roles.policy}"
}

resource "azurerm_role_assignment" "cosmos_operation_status" {
  for_each = local.cosmos_data_grants ? toset(local.cosmos_resource_groups) : toset([])

  scope              = each.value
  role_definition_id = azurerm_role_definition.cosmos_operation_status[0].role_definition_resource_id
  principal_id       = azurerm_user_assigned_identity.this.principal_id
  principal_type     = "ServicePrincipal"
  description        = "jitgate ${var.name}: follows the Cosmos DB role assignments it makes"
}
