# jitgate on Google Cloud (issue #12): Pub/Sub topics with dead-letter topics for the three queues, the service
# built from main.py on Cloud Run (functions-framework), the Cloud Tasks queue of scheduled revocations, the Cloud
# Scheduler job for reconcile, the service accounts, the grant identity's bindings limited to the policy's roles
# (infra/allowed-roles.json "gcp", from `jitgate infra roles --write`), and workload identity federation to Entra
# for the Cosmos DB audit store.
terraform {
  required_version = ">= 1.6"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.8"
    }
    azuread = {
      source  = "hashicorp/azuread"
      version = "~> 3.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}

# Only used when entra_application_object_id is set (the federated identity credential).
provider "azuread" {
  tenant_id = var.entra_tenant_id
}
