# Workload identity federation to Entra, no secret anywhere: the Entra app trusts ID tokens Google issues for the
# runtime service account (issuer accounts.google.com, subject its unique id), and jitgate exchanges one for an Entra
# token to reach Cosmos DB, the one audit store of both clouds. The app holds the Cosmos DB data-plane role on the
# account (infra/terraform's cosmos role assignments, or an admin's).
resource "azuread_application_federated_identity_credential" "gcp_runtime" {
  # checkov:skip=CKV_AZURE_249: the check reads GitHub Actions subjects (repo:<org>/<repo>:...); this issuer is Google and the subject one service account's immutable unique id, no wildcard.
  count          = var.entra_application_object_id == "" ? 0 : 1
  application_id = "/applications/${var.entra_application_object_id}"
  display_name   = "jitgate-gcp-${var.project_id}"
  description    = "jitgate on Google Cloud (${google_service_account.runtime.email})"
  audiences      = ["api://AzureADTokenExchange"]
  issuer         = "https://accounts.google.com"
  subject        = google_service_account.runtime.unique_id
}
