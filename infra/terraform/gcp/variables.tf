variable "project_id" {
  description = "Project that runs jitgate (its service, topics, queue and scheduler job)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project id."
  }
}

variable "region" {
  description = "Region of the Cloud Run services, the Cloud Tasks queue and the Cloud Scheduler job."
  type        = string
  default     = "europe-west1"
}

variable "image" {
  description = "Container image of jitgate (main.py under functions-framework), by digest: <region>-docker.pkg.dev/<project>/<repo>/jitgate@sha256:..."
  type        = string

  validation {
    condition     = can(regex("@sha256:[0-9a-f]{64}$", var.image))
    error_message = "image must be pinned by digest (…@sha256:<64 hex>), so what runs is what was reviewed."
  }
}

variable "grant_projects" {
  description = "Projects where jitgate grants roles (gcp-iam, and Cloud SQL sign-in). The grant identity may change their allow policies, for the policy's roles only."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for p in var.grant_projects : can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", p))])
    error_message = "Each grant project must be a project id."
  }
}

variable "grant_folders" {
  description = "Folders (numbers) where jitgate grants roles; needs organization_id for the custom role."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for f in var.grant_folders : can(regex("^[0-9]{1,20}$", f))])
    error_message = "Each grant folder must be a folder number."
  }
}

variable "organization_id" {
  description = "Organization (number) that holds the custom role for folder grants, and is itself a grant scope when grant_organization is true. Empty: no folder or organization grants."
  type        = string
  default     = ""
}

variable "grant_organization" {
  description = "Whether jitgate grants roles on the organization itself."
  type        = bool
  default     = false
}

variable "cosmos_endpoint" {
  description = "The Cosmos DB account (https://<account>.documents.azure.com:443/) that keeps state and audit for both clouds."
  type        = string
}

variable "entra_tenant_id" {
  description = "Entra tenant of the app that the Google service account signs in as (workload identity federation)."
  type        = string
}

variable "entra_client_id" {
  description = "Client (application) id of that Entra app; it holds the Cosmos DB data-plane role on the account."
  type        = string
}

variable "entra_application_object_id" {
  description = "Object id of the same Entra app. Set: Terraform adds the federated identity credential that trusts the runtime service account. Empty: an Entra admin adds it (infra/README.md, Google Cloud)."
  type        = string
  default     = ""
}

variable "teams_webhook_secret_id" {
  description = "Secret Manager secret (projects/<p>/secrets/<name>) holding the Teams Workflows webhook URL; empty: no notices."
  type        = string
  default     = ""
}

variable "gcp_groups" {
  description = "Policy group name -> Cloud Identity group (groups/<id>) whose members stand for it."
  type        = map(string)
  default     = {}
}

variable "alert_email" {
  description = "Who hears of dead-lettered messages (a Cloud Monitoring e-mail channel); empty: no alert."
  type        = string
  default     = ""
}

variable "api_audiences" {
  description = "Audiences of the Google ID tokens the API accepts (Cloud Run custom audiences): jitgate-api for services, and the OAuth client id people sign in to Backstage with."
  type        = list(string)
  default     = ["jitgate-api"]
}

variable "api_invokers" {
  description = "IAM members who may call the API (roles/run.invoker), e.g. domain:example.com, group:engineers@example.com and Backstage's service account."
  type        = list(string)
  default     = []
}

variable "api_roles" {
  description = "jitgate role (Jit.Submitter, Jit.Auditor, Jit.Admin) -> members: user:<email>, serviceAccount:<email>, or group:<policy group>."
  type        = map(list(string))
  default     = {}
}
