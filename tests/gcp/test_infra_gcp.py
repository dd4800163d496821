"""infra/terraform/gcp and the grant identity's condition generated from the policy: the inventory that must hold,
and the condition doing what it says against the IAM fake (which enforces `modifiedGrantsByRole` as Google does)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import pytest

from shared.adapters.gcp.iam import CLOUD_SQL_ROLES, iam_role_id
from shared.domain.errors import PermanentError, PolicyError
from shared.domain.ledger import GrantKey, marker_for
from shared.domain.policy import Policy
from shared.infra_roles import ALLOWED_ROLES_FILE, google_grant_condition, google_roles, render
from tests.gcp.fake_iam import fake_gcp_iam

pytestmark = pytest.mark.gcp

GCP = Path(__file__).resolve().parents[2] / "infra" / "terraform" / "gcp"
QUEUES = {"access-requests", "access-lifecycle", "access-revocations"}


def _plain(value: Any) -> Any:
    """python-hcl2's output with string literals unquoted and its block markers dropped."""
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items() if k != "__is_block__"}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"')
    return value


@cache
def terraform() -> dict[str, dict[str, Any]]:
    """Every resource of infra/terraform/gcp: type → name → body."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(GCP.glob("*.tf")):
        with path.open() as handle:
            for block in _plain(hcl2.load(handle)).get("resource", []):
                for kind, named in block.items():
                    for name, body in named.items():
                        found.setdefault(kind, {})[name] = body
    return found


def policy(rules: str) -> Policy:
    return Policy.from_text(f"version: 1\ngroups: {{}}\nrules:\n{rules}")


def test_the_committed_condition_is_the_example_policys() -> None:
    document = json.loads(ALLOWED_ROLES_FILE.read_text())
    assert document == json.loads(render(Policy.load("policies/example.yaml")))
    gcp = document["gcp"]
    assert gcp["roles"] == sorted({"roles/viewer", "roles/logging.viewer", "roles/editor", *CLOUD_SQL_ROLES})
    assert gcp["condition"] == ("api.getAttribute('iam.googleapis.com/modifiedGrantsByRole', []).hasOnly(["
                                + ", ".join(f"'{r}'" for r in gcp["roles"]) + "])")


def test_roles_that_could_escape_the_rules_or_any_role_are_refused_with_the_rule() -> None:
    with pytest.raises(PolicyError) as raised:
        google_roles(policy(
            "  - {name: any, match: {providers: [gcp-iam], roles: '*', scopes: [projects/a-b-c-d]}, outcome: auto, "
            "maxDuration: PT1H}\n"
            "  - {name: own, match: {providers: [gcp-iam], roles: [roles/owner], scopes: [projects/a-b-c-d]}, "
            "outcome: auto, maxDuration: PT1H}\n"
            "  - {name: deny, match: {providers: [gcp-iam], roles: [roles/iam.securityAdmin], scopes: ['**']}, "
            "outcome: deny, reason: never}\n"))
    assert [e.split(": ", 1)[1] for e in raised.value.errors] == [
        "rule 'any' allows any role ('*') for gcp-iam; the grant identity's condition needs explicit roles: "
        "list them in the rule",
        "rule 'own' allows 'roles/owner', a role that can change allow policies; jitgate never grants it",
    ]


def test_the_condition_lets_jitgate_grant_the_policys_roles_and_nothing_else() -> None:
    # GIVEN the grant identity bound under the condition generated from the example policy
    allowed = google_roles(Policy.load("policies/example.yaml"))
    roles = frozenset(re.findall(r"'(roles/[^']+)'", str(allowed["condition"])))
    assert roles == frozenset(allowed["roles"])  # type: ignore[arg-type]
    provider, world = fake_gcp_iam()
    world.may_modify = roles
    until = datetime.now(UTC) + timedelta(hours=1)

    def grant(role: str) -> None:
        key = GrantKey.of("gcp-iam", "user:jane@example.com", iam_role_id(role), "projects/jitgate-payments")
        provider.create_assignment(key, key.assignment_name(), marker_for("r"), "GoogleUser", until)
        provider.delete_assignment(key.scope, key.assignment_name())

    # THEN the policy's roles are granted and revoked, Cloud SQL's sign-in roles too
    for role in ("roles/viewer", *CLOUD_SQL_ROLES):
        grant(role)
    # AND a role the policy does not name is refused by Google, not only by jitgate
    with pytest.raises(PermanentError, match=r"PERMISSION_DENIED.*roles/browser"):
        grant("roles/browser")
    assert google_grant_condition([]) == "api.getAttribute('iam.googleapis.com/modifiedGrantsByRole', []).hasOnly([])"


def test_three_queues_each_with_a_dead_letter_topic_a_push_subscription_and_an_ack_deadline() -> None:
    tf = terraform()
    assert "for_each" in tf["google_pubsub_topic"]["queue"] and "for_each" in tf["google_pubsub_topic"]["dead_letter"]
    main = (GCP / "main.tf").read_text()
    assert set(re.findall(r'"(access-[a-z]+)"\s*=', main)) == QUEUES
    subscription = tf["google_pubsub_subscription"]["queue"]
    dead_letter = subscription["dead_letter_policy"][0]
    assert dead_letter["dead_letter_topic"] == "${google_pubsub_topic.dead_letter[each.key].id}"
    assert dead_letter["max_delivery_attempts"] == 10
    assert subscription["ack_deadline_seconds"] == "${each.value.ack_deadline}"
    push = subscription["push_config"][0]
    assert push["oidc_token"][0]["service_account_email"] == "${google_service_account.invoker.email}"
    # the service agent can move dead letters
    assert tf["google_pubsub_topic_iam_member"]["agent_publishes_dead_letters"]["role"] == "roles/pubsub.publisher"
    assert tf["google_pubsub_subscription_iam_member"]["agent_acks_source"]["role"] == "roles/pubsub.subscriber"


def test_services_tasks_and_scheduler_are_private_and_called_with_the_invokers_token() -> None:
    tf = terraform()
    service = tf["google_cloud_run_v2_service"]["jitgate"]
    assert service["ingress"] == '${each.value.public ? "INGRESS_TRAFFIC_ALL" : "INGRESS_TRAFFIC_INTERNAL_ONLY"}'
    assert service["template"][0]["service_account"] == "${google_service_account.runtime.email}"
    job = tf["google_cloud_scheduler_job"]["reconcile"]
    assert job["http_target"][0]["oidc_token"][0]["service_account_email"] == "${google_service_account.invoker.email}"
    assert job["schedule"] == "*/5 * * * *"
    assert tf["google_cloud_tasks_queue"]["revocations"]["name"] == "access-revocations"
    assert tf["google_cloud_run_v2_service_iam_member"]["invoker"]["role"] == "roles/run.invoker"


def test_the_grant_identity_holds_only_policy_reads_and_writes_under_the_generated_condition() -> None:
    tf = terraform()
    role = tf["google_project_iam_custom_role"]["grants"]
    assert role["permissions"] == ["resourcemanager.projects.getIamPolicy", "resourcemanager.projects.setIamPolicy",
                                   "iam.roles.get"]
    for kind in ("google_project_iam_member", "google_folder_iam_member", "google_organization_iam_member"):
        assert tf[kind]["grants"]["condition"][0]["expression"] == "${local.grant_condition.expression}", kind
    assert "local.allowed.condition" in (GCP / "grants.tf").read_text()
    assert 'jsondecode(file("${path.module}/../../allowed-roles.json")).gcp' in (GCP / "main.tf").read_text()


def test_entra_trusts_the_runtime_service_account_through_federation() -> None:
    credential = terraform()["azuread_application_federated_identity_credential"]["gcp_runtime"]
    assert credential["issuer"] == "https://accounts.google.com"
    assert credential["subject"] == "${google_service_account.runtime.unique_id}"
    assert credential["audiences"] == ["api://AzureADTokenExchange"]


def test_the_services_are_told_every_setting_google_cloud_mode_needs_and_only_settings_jitgate_reads() -> None:
    from shared.settings import Settings

    run = (GCP / "run.tf").read_text()
    names = set(re.findall(r'^\s*name\s*=\s*"([A-Z_]+)"', run, re.M))  # the environment, static and dynamic
    assert "JITGATE_MODE" in names and "FUNCTION_TARGET" in names
    everything = Settings(mode="gcp", store="cosmos")  # nothing set: every required setting is missing
    assert set(everything.missing_gcp_settings()) <= names
    source = (Path(__file__).resolve().parents[2] / "shared" / "settings.py").read_text()
    unknown = {n for n in names if n.startswith("JITGATE_") and f'"{n}"' not in source}
    assert not unknown, f"settings jitgate does not read: {sorted(unknown)}"
    # Cloud Tasks publish scheduled commands as the invoker: it may publish to the topics that get them.
    tasks = terraform()["google_pubsub_topic_iam_member"]["tasks_publish_scheduled"]
    assert tasks["member"] == "${google_service_account.invoker.member}"
    assert 'name  = "JITGATE_TASKS_SERVICE_ACCOUNT"\n        value = google_service_account.invoker.email' in run
