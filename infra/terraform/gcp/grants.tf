# The grant identity may change allow policies only by bindings of the roles the policy lets jitgate grant: a custom
# role with nothing but reading and writing allow policies (and reading custom roles, to resolve them), bound with the
# condition generated from the policy (`jitgate infra roles --write` → allowed-roles.json "gcp"). So a role the policy
# does not allow is one Google refuses to let jitgate grant, whatever jitgate's code does.
locals {
  grant_condition = {
    title       = "jitgate may grant only the policy's roles"
    description = "Generated from the policy by jitgate infra roles; roles: ${join(", ", local.allowed.roles)}"
    expression  = local.allowed.condition
  }
}

resource "google_project_iam_custom_role" "grants" {
  for_each    = toset(var.grant_projects)
  project     = each.value
  role_id     = "jitgateGrants"
  title       = "jitgate grants"
  description = "Read and change this project's allow policy (limited by a condition to the policy's roles)."
  permissions = ["resourcemanager.projects.getIamPolicy", "resourcemanager.projects.setIamPolicy", "iam.roles.get"]
}

resource "google_project_iam_member" "grants" {
  for_each = toset(var.grant_projects)
  project  = each.value
  role     = google_project_iam_custom_role.grants[each.value].name
  member   = google_service_account.runtime.member

  condition {
    title       = local.grant_condition.title
    description = local.grant_condition.description
    expression  = local.grant_condition.expression
  }
}

resource "google_organization_iam_custom_role" "grants" {
  count       = var.organization_id == "" ? 0 : 1
  org_id      = var.organization_id
  role_id     = "jitgateGrants"
  title       = "jitgate grants"
  description = "Read and change allow policies of folders and the organization (limited by a condition to the policy's roles)."
  permissions = [
    "resourcemanager.folders.getIamPolicy", "resourcemanager.folders.setIamPolicy",
    "resourcemanager.organizations.getIamPolicy", "resourcemanager.organizations.setIamPolicy", "iam.roles.get",
  ]
}

resource "google_folder_iam_member" "grants" {
  for_each = var.organization_id == "" ? toset([]) : toset(var.grant_folders)
  folder   = "folders/${each.value}"
  role     = google_organization_iam_custom_role.grants[0].name
  member   = google_service_account.runtime.member

  condition {
    title       = local.grant_condition.title
    description = local.grant_condition.description
    expression  = local.grant_condition.expression
  }
}

resource "google_organization_iam_member" "grants" {
  count  = var.organization_id != "" && var.grant_organization ? 1 : 0
  org_id = var.organization_id
  role   = google_organization_iam_custom_role.grants[0].name
  member = google_service_account.runtime.member

  condition {
    title       = local.grant_condition.title
    description = local.grant_condition.description
    expression  = local.grant_condition.expression
  }
}
