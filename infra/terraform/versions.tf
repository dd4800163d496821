terraform {
  required_version = ">= 1.6"

  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = "~> 4.42"
    }
    azapi = {
      source  = "Azure/azapi"
      version = "~> 2.4"
    }
  }
}

provider "azurerm" {
  subscription_id = var.subscription_id
  # Shared keys are off on every storage account, so the provider's own data-plane calls use Entra too.
  storage_use_azuread = true

  features {
    storage {
      # Everything storage here goes through ARM (containers by storage_account_id, no queue/website
      # properties), so plan and apply need no storage data-plane role.
      data_plane_available = false
    }
    key_vault {
      # Purge protection is on: a destroyed vault stays recoverable instead of being purged.
      purge_soft_delete_on_destroy = false
    }
  }
}

provider "azapi" {
  subscription_id = var.subscription_id
}
