output "api_url" {
  description = "The HTTP API (Backstage's JITGATE_URL)."
  value       = google_cloud_run_v2_service.jitgate["api"].uri
}

output "runtime_service_account" {
  description = "The runtime and grant identity."
  value       = google_service_account.runtime.email
}

output "runtime_unique_id" {
  description = "Subject of the Entra federated identity credential (when an admin adds it by hand)."
  value       = google_service_account.runtime.unique_id
}

output "grant_condition" {
  description = "The condition on the grant identity's bindings, as generated from the policy."
  value       = local.allowed.condition
}
