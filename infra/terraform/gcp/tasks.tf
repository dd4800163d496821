# Scheduled revocations: a task per revoke at expiresAt, named after the revoke's message id, so that a second create
# of the same name is refused and cancelling is deleting it. Further out than Cloud Tasks' 30 days, reconcile revokes.
resource "google_cloud_tasks_queue" "revocations" {
  name     = "access-revocations"
  location = var.region

  rate_limits {
    max_dispatches_per_second = 50
    max_concurrent_dispatches = 20
  }

  retry_config {
    max_attempts  = -1
    min_backoff   = "1s"
    max_backoff   = "60s"
    max_doublings = 5
  }

  stackdriver_logging_config {
    sampling_ratio = 1.0
  }
}

resource "google_cloud_tasks_queue_iam_member" "runtime_enqueues" {
  name     = google_cloud_tasks_queue.revocations.name
  location = var.region
  role     = "roles/cloudtasks.enqueuer"
  member   = google_service_account.runtime.member
}

# Deleting a task cancels an early-revoked request's scheduled revoke.
resource "google_cloud_tasks_queue_iam_member" "runtime_deletes_tasks" {
  name     = google_cloud_tasks_queue.revocations.name
  location = var.region
  role     = "roles/cloudtasks.taskDeleter"
  member   = google_service_account.runtime.member
}

# Reconcile every five minutes: overdue holds, orphans (expired jitgate bindings included), stale requests.
resource "google_cloud_scheduler_job" "reconcile" {
  name             = "jitgate-reconcile"
  region           = var.region
  schedule         = "*/5 * * * *"
  time_zone        = "Etc/UTC"
  attempt_deadline = "300s"

  retry_config {
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = google_cloud_run_v2_service.jitgate["reconcile"].uri

    oidc_token {
      service_account_email = google_service_account.invoker.email
      audience              = google_cloud_run_v2_service.jitgate["reconcile"].uri
    }
  }
}
