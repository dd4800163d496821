# main.py on Cloud Run under functions-framework: one service per function target, one image. Only the HTTP API takes
# traffic from outside Google (IAM still decides who may call it); the others take Pub/Sub pushes, Cloud Tasks and
# Cloud Scheduler, which Cloud Run's internal ingress admits from the same project.
resource "google_cloud_run_v2_service" "jitgate" {
  for_each            = local.services
  name                = "jitgate-${replace(each.key, "_", "-")}"
  location            = var.region
  ingress             = each.value.public ? "INGRESS_TRAFFIC_ALL" : "INGRESS_TRAFFIC_INTERNAL_ONLY"
  deletion_protection = true
  # The API's callers bring Google ID tokens for one of these audiences; Cloud Run's IAM check and jitgate both verify
  # them (custom audiences: the service's own URL is not known before it exists).
  custom_audiences = each.value.public ? var.api_audiences : null

  template {
    service_account                  = google_service_account.runtime.email
    timeout                          = "300s"
    max_instance_request_concurrency = 16

    scaling {
      min_instance_count = 0
      max_instance_count = 20
    }

    containers {
      image = var.image

      env {
        name  = "FUNCTION_TARGET"
        value = each.key
      }
      env {
        name  = "JITGATE_MODE"
        value = "gcp"
      }
      env {
        name  = "JITGATE_PROVIDERS"
        value = "gcp-iam"
      }
      env {
        name  = "JITGATE_GCP_GRANT_SCOPES"
        value = join(",", local.grant_scopes)
      }
      env {
        name  = "JITGATE_GCP_GROUPS"
        value = join(",", [for name, group in var.gcp_groups : "${name}=${group}"])
      }
      env {
        name  = "JITGATE_GCP_PROJECT"
        value = var.project_id
      }
      env {
        name  = "JITGATE_TASKS_QUEUE"
        value = google_cloud_tasks_queue.revocations.id
      }
      # A scheduled message is a task that publishes it to its topic at its time, with this account's OAuth token.
      env {
        name  = "JITGATE_TASKS_SERVICE_ACCOUNT"
        value = google_service_account.invoker.email
      }
      # The API's callers (docs/architecture.md §7.2): the audience jitgate checks in their Google ID tokens, and the
      # roles Google tokens do not carry.
      env {
        name  = "JITGATE_GCP_API_AUDIENCE"
        value = join(",", var.api_audiences)
      }
      env {
        name  = "JITGATE_GCP_ROLES"
        value = join(",", flatten([for role, members in var.api_roles : [for m in members : "${role}=${m}"]]))
      }
      env {
        name  = "JITGATE_COSMOS_ENDPOINT"
        value = var.cosmos_endpoint
      }
      # Workload identity federation: the runtime's Google ID token is exchanged for an Entra token of this app.
      env {
        name  = "JITGATE_ENTRA_TENANT_ID"
        value = var.entra_tenant_id
      }
      env {
        name  = "JITGATE_ENTRA_CLIENT_ID"
        value = var.entra_client_id
      }

      dynamic "env" {
        for_each = var.teams_webhook_secret_id == "" ? [] : [var.teams_webhook_secret_id]
        content {
          name = "JITGATE_TEAMS_WEBHOOK_URL"
          value_source {
            secret_key_ref {
              secret  = env.value
              version = "latest"
            }
          }
        }
      }

      resources {
        limits = {
          cpu    = "1"
          memory = "512Mi"
        }
      }
    }
  }
}

resource "google_secret_manager_secret_iam_member" "runtime_reads_teams_webhook" {
  count     = var.teams_webhook_secret_id == "" ? 0 : 1
  secret_id = var.teams_webhook_secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.runtime.member
}
