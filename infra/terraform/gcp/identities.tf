# Three identities, each with only what it uses:
# - runtime: the identity main.py runs as; it publishes, enqueues revocations, signs in to Entra (federation) and is
#   the grant identity, whose allow-policy changes are limited to the policy's roles (grants.tf);
# - invoker: what Pub/Sub push, Cloud Tasks and Cloud Scheduler present (an OIDC token) to the private services;
# - the Pub/Sub service agent (Google's), which mints the push tokens and moves dead letters.
resource "google_service_account" "runtime" {
  account_id   = "jitgate-runtime"
  display_name = "jitgate runtime and grant identity"
}

resource "google_service_account" "invoker" {
  account_id   = "jitgate-invoker"
  display_name = "jitgate push, task and scheduler invoker"
}

# Pub/Sub makes the push requests' OIDC tokens as the invoker.
resource "google_service_account_iam_member" "pubsub_mints_invoker_tokens" {
  service_account_id = google_service_account.invoker.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent
}

# The runtime enqueues tasks that publish as the invoker, with its OAuth token (Cloud Tasks requires actAs on it).
resource "google_service_account_iam_member" "runtime_acts_as_invoker" {
  service_account_id = google_service_account.invoker.name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.runtime.member
}

resource "google_cloud_run_v2_service_iam_member" "invoker" {
  for_each = { for name, s in local.services : name => s if !s.public }
  name     = google_cloud_run_v2_service.jitgate[each.key].name
  location = var.region
  role     = "roles/run.invoker"
  member   = google_service_account.invoker.member
}

# Who may reach the API at all (Cloud Run's IAM check); jitgate then decides what each caller may do.
resource "google_cloud_run_v2_service_iam_member" "api_callers" {
  for_each = toset(var.api_invokers)
  name     = google_cloud_run_v2_service.jitgate["api"].name
  location = var.region
  role     = "roles/run.invoker"
  member   = each.value
}
