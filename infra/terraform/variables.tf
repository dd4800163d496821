# The same parameters as infra/bicep/main.bicep (snake_case here, camelCase there), plus subscription_id,
# which Bicep takes from `az deployment sub create`.

variable "subscription_id" {
  description = "Subscription that holds the jitgate resource group (Bicep: the deployment's subscription)."
  type        = string
}

variable "name" {
  description = "Short environment name, 3-11 lowercase letters and digits; every resource name derives from it (globally unique names: st<name>func, kv-<name>, ...)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]{3,11}$", var.name))
    error_message = "name must be 3-11 lowercase letters and digits."
  }
}

variable "location" {
  description = "Azure region of the resource group and every resource in it."
  type        = string
}

variable "resource_group_name" {
  description = "Resource group to create and deploy into; defaults to rg-<name>."
  type        = string
  default     = null
}

variable "grant_scopes" {
  description = "Scopes where jitgate grants roles: subscription ids (/subscriptions/<id>) and resource group ids (/subscriptions/<id>/resourceGroups/<name>). The function identity gets Role Based Access Control Administrator there, constrained to the policy's roles."
  type        = list(string)

  validation {
    condition     = alltrue([for s in var.grant_scopes : can(regex("^(?i)/subscriptions/[0-9a-f-]{36}(/resourcegroups/[-\\w.()]+)?$", s))])
    error_message = "Each grant scope must be /subscriptions/<id> or /subscriptions/<id>/resourceGroups/<name>."
  }
}

variable "auth_client_id" {
  description = "Application (client) id of the Entra app registration that protects the API and defines the app roles Jit.Auditor and Jit.Admin (created outside this configuration, see infra/README.md)."
  type        = string
}

variable "group_object_ids" {
  description = "Entra object id of every group the policy names (approver and requester groups), by the policy's group name. jitgate resolves groups by these ids only, never by display name."
  type        = map(string)
}

variable "alert_email" {
  description = "E-mail address that receives the dead-letter alert."
  type        = string
}

variable "teams_webhook_url" {
  description = "Teams Workflows webhook URL (approval cards are posted there). Stored in Key Vault, never in Terraform state."
  type        = string
  sensitive   = true
}

variable "teams_secret" {
  description = "Teams outgoing-webhook HMAC secret, base64 as Teams shows it. Stored in Key Vault, never in Terraform state."
  type        = string
  sensitive   = true
}

variable "teams_webhook_name" {
  description = "Name of the Teams outgoing webhook approvers answer by @mentioning it (docs/teams.md); the cards show it."
  type        = string
  default     = "jitgate"
}

variable "portal_url" {
  description = "Base URL of the portal (Backstage) where each request has a page at /jitgate/requests/<id>; empty: cards carry no link."
  type        = string
  default     = ""
}

variable "archive_retention_days" {
  description = "Days an archived audit blob stays immutable (time-based retention on the archive container)."
  type        = number
  default     = 2557

  validation {
    condition     = var.archive_retention_days >= 1 && var.archive_retention_days <= 146000
    error_message = "archive_retention_days must be between 1 and 146000."
  }
}

variable "log_retention_days" {
  description = "Days the Log Analytics workspace keeps logs (Activity Log, Key Vault audit, Application Insights)."
  type        = number
  default     = 365

  validation {
    condition     = var.log_retention_days >= 30 && var.log_retention_days <= 730
    error_message = "log_retention_days must be between 30 and 730."
  }
}

variable "maximum_instance_count" {
  description = "Upper bound on Flex Consumption instances."
  type        = number
  default     = 40

  validation {
    condition     = var.maximum_instance_count >= 40 && var.maximum_instance_count <= 1000
    error_message = "maximum_instance_count must be between 40 and 1000."
  }
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}

# ---------------------------------------------------------------- databases (infra/README.md "Databases")

variable "postgres_server_ids" {
  description = "ARM ids of existing Azure Database for PostgreSQL flexible servers jitgate grants on (the servers file's `platform: azure` entries). Azure gives jitgate nothing there: it signs in with an Entra token, and an admin runs the setup script `jitgate infra sql` prints."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for id in var.postgres_server_ids : can(regex("^(?i)/subscriptions/[0-9a-f-]{36}/resourcegroups/[-\\w.()]+/providers/microsoft\\.dbforpostgresql/flexibleservers/[a-z0-9-]+$", id))])
    error_message = "Each PostgreSQL server id must be /subscriptions/<id>/resourceGroups/<rg>/providers/Microsoft.DBforPostgreSQL/flexibleServers/<name>."
  }
}

variable "sql_server_ids" {
  description = "ARM ids of existing Azure SQL logical servers jitgate grants on (the servers file's `platform: azure-sql` entries). As for PostgreSQL, everything jitgate needs is given inside each database by the setup script."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for id in var.sql_server_ids : can(regex("^(?i)/subscriptions/[0-9a-f-]{36}/resourcegroups/[-\\w.()]+/providers/microsoft\\.sql/servers/[a-z0-9-]+$", id))])
    error_message = "Each Azure SQL server id must be /subscriptions/<id>/resourceGroups/<rg>/providers/Microsoft.Sql/servers/<name>."
  }
}

variable "cosmos_account_ids" {
  description = "ARM ids of existing Cosmos DB accounts (API for NoSQL) the cosmos-data provider grants on (JITGATE_COSMOS_ACCOUNTS). The function identity gets, at each account, a custom role that allows data-plane role assignments and nothing else."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for id in var.cosmos_account_ids : can(regex("^(?i)/subscriptions/[0-9a-f-]{36}/resourcegroups/[-\\w.()]+/providers/microsoft\\.documentdb/databaseaccounts/[a-z0-9-]+$", id))])
    error_message = "Each Cosmos DB account id must be /subscriptions/<id>/resourceGroups/<rg>/providers/Microsoft.DocumentDB/databaseAccounts/<name>."
  }
}

variable "database_admin_group" {
  description = "Entra group made Microsoft Entra administrator of every server in postgres_server_ids and sql_server_ids; its members run the setup scripts. null: the servers' administrators are left as they are. An Azure SQL server has one Entra administrator, which this replaces."
  type = object({
    object_id    = string
    display_name = string
  })
  default = null
}

variable "databases_file" {
  description = "Path of the servers file inside the deployed package (JITGATE_DATABASES_FILE, docs/databases.md). The app serves postgres and azure-sql when it is set and postgres_server_ids or sql_server_ids names servers."
  type        = string
  default     = ""
}
