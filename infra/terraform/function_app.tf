resource "azurerm_service_plan" "this" {
  # checkov:skip=CKV_AZURE_225: Flex Consumption zone redundancy exists only in some regions; jitgate is regional and its state (Cosmos, Service Bus) survives an instance loss.
  # checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero by design; queued work waits on Service Bus and the reconcile timer catches up, so no instance is kept warm.
  name                = "plan-${var.name}"
  location            = var.location
  resource_group_name = azurerm_resource_group.this.name
  os_type             = "Linux"
  sku_name            = "FC1"
  tags                = var.tags
}

resource "azurerm_function_app_flex_consumption" "this" {
  name                = local.function_app_name
  location            = var.location
  resource_group_name = azurerm_resource_group.this.name
  service_plan_id     = azurerm_service_plan.this.id
  tags                = var.tags

  storage_container_type            = "blobContainer"
  storage_container_endpoint        = "${azurerm_storage_account.function.primary_blob_endpoint}${azurerm_storage_container.deployment.name}"
  storage_authentication_type       = "UserAssignedIdentity"
  storage_user_assigned_identity_id = azurerm_user_assigned_identity.this.id
  runtime_name                      = "python"
  runtime_version                   = "3.11"
  maximum_instance_count            = var.maximum_instance_count
  instance_memory_in_mb             = 2048

  https_only                                     = true
  client_certificate_enabled                     = false
  public_network_access_enabled                  = true
  webdeploy_publish_basic_authentication_enabled = false

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.this.id]
  }

  # The provider keeps APPLICATIONINSIGHTS_CONNECTION_STRING in site_config, the rest in app_settings.
  app_settings = { for k, v in local.app_settings : k => v if k != "APPLICATIONINSIGHTS_CONNECTION_STRING" }

  site_config {
    minimum_tls_version                    = "1.2"
    http2_enabled                          = true
    application_insights_connection_string = local.app_settings.APPLICATIONINSIGHTS_CONNECTION_STRING

    # The Backstage pages call the API from the browser with the person's own token (docs/architecture.md
    # section 7.1): only the portal's origin may, and without cookies.
    cors {
      allowed_origins     = var.portal_url == "" ? [] : [var.portal_url]
      support_credentials = false
    }
  }

  # App Service authentication: Entra tokens for the app registration; its app roles (Jit.Auditor,
  # Jit.Admin) reach the app in X-MS-CLIENT-PRINCIPAL.
  auth_settings_v2 {
    auth_enabled           = true
    require_authentication = true
    unauthenticated_action = "Return401"
    excluded_paths         = local.unauthenticated_paths
    require_https          = true

    active_directory_v2 {
      client_id            = var.auth_client_id
      tenant_auth_endpoint = "https://login.microsoftonline.com/${data.azurerm_client_config.current.tenant_id}/v2.0"
      allowed_audiences    = ["api://${var.auth_client_id}", var.auth_client_id]
    }

    login {
      token_store_enabled = false
    }
  }

  depends_on = [
    azurerm_role_assignment.function_host_storage,
    azurerm_role_assignment.vault_secrets_user,
  ]
}

# NB. azurerm_function_app_flex_consumption has no argument for these two site properties; Bicep sets
# them on the site directly.
resource "azapi_update_resource" "key_vault_reference_identity" {
  type        = "Microsoft.Web/sites@2024-04-01"
  resource_id = azurerm_function_app_flex_consumption.this.id

  body = {
    properties = {
      # Key Vault references in app settings resolve with the user-assigned identity.
      keyVaultReferenceIdentity = azurerm_user_assigned_identity.this.id
    }
  }
}

resource "azapi_update_resource" "ftps_disabled" {
  type        = "Microsoft.Web/sites/config@2024-04-01"
  resource_id = "${azurerm_function_app_flex_consumption.this.id}/config/web"

  body = {
    properties = {
      ftpsState = "Disabled"
    }
  }
}
