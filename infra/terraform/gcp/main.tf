data "google_project" "this" {}

locals {
  allowed = jsondecode(file("${path.module}/../../allowed-roles.json")).gcp
  # NB. The three queues as in docs/architecture.md §3. Ack deadlines exceed a handler's longest run (provider calls
  # retried with backoff up to ~60 s); a revoke waits its turn behind nothing, so its deadline is the same.
  queues = {
    "access-requests"    = { target = "access_requests", ack_deadline = 120 }
    "access-lifecycle"   = { target = "access_lifecycle", ack_deadline = 300 }
    "access-revocations" = { target = "access_revocations", ack_deadline = 300 }
  }
  # One image, one Cloud Run service per functions-framework target of main.py.
  services = merge(
    { for queue, q in local.queues : q.target => { public = false } },
    { api = { public = true }, reconcile = { public = false } },
  )
  pubsub_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  grant_scopes = concat(
    [for p in var.grant_projects : "projects/${p}"],
    [for f in var.grant_folders : "folders/${f}"],
    var.grant_organization ? ["organizations/${var.organization_id}"] : [],
  )
}
