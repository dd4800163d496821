"""infra/bicep and infra/terraform deploy the same Azure side, and both grant exactly what the policy allows.

Nothing here talks to Azure: the templates are parsed (pycep-parser, python-hcl2) and compared in the
canonical form of tests/infra/templates.py.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.domain.durations import parse_duration
from shared.domain.errors import PolicyError
from shared.domain.policy import Policy
from shared.infra_roles import (
    ALLOWED_ROLES_FILE,
    PRINCIPAL_TYPES,
    allowed_role_ids,
    cosmos_data_roles,
    grant_condition,
    render,
    write_allowed_roles,
)

from . import templates
from .templates import (
    ALLOWED_ROLES,
    BICEP_ONLY_KINDS,
    GRANT_SCOPE,
    ROOT,
    Inventory,
    bicep_inventory,
    terraform_inventory,
)

RBAC_ADMINISTRATOR = "f58310d9-a9f6-439a-9e8d-f62e7b41a168"
COSMOS_DATA_CONTRIBUTOR = "00000000-0000-0000-0000-000000000002"
SERVICE_BUS_DATA_SENDER = "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39"
SERVICE_BUS_DATA_RECEIVER = "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0"
IDENTITY = "${Microsoft.ManagedIdentity/userAssignedIdentities:id-${param:name}}"


@pytest.fixture(scope="module")
def bicep() -> Inventory:
    return bicep_inventory()


@pytest.fixture(scope="module")
def terraform() -> Inventory:
    return terraform_inventory()


@pytest.fixture(scope="module")
def allowed_roles() -> dict[str, Any]:
    return dict(json.loads(ALLOWED_ROLES_FILE.read_text(encoding="utf-8")))


def policy_of(text: str) -> Policy:
    return Policy.from_text(text, source="test-policy.yaml")


def one_rule(roles: str, providers: str = "[azure-rbac]") -> str:
    return f"""
version: 1
groups:
  engineers: [dddddddd-0000-4000-8000-00000000000d]
rules:
  - name: the-rule
    match:
      providers: {providers}
      roles: {roles}
      scopes: ["/subscriptions/*/**"]
      requesterGroups: [engineers]
    outcome: auto
    maxDuration: PT1H
"""


# ---------------------------------------------------------------- the same resources


def test_both_templates_deploy_the_same_kinds_of_resource(bicep: Inventory, terraform: Inventory) -> None:
    # GIVEN the ARM types each template creates, Bicep's stand-alone child resources set in Terraform
    # through an argument of their parent left aside
    bicep_kinds = bicep.kinds - set(BICEP_ONLY_KINDS)

    # THEN they are the same, and every Terraform resource type is one the comparison knows
    assert bicep_kinds == terraform.kinds
    assert set(BICEP_ONLY_KINDS) <= bicep.kinds
    assert not {k for k in terraform.kinds if not k.startswith("Microsoft.")}


def test_the_queues_are_the_same_and_safe_under_redelivery(bicep: Inventory, terraform: Inventory) -> None:
    assert bicep.queues == terraform.queues
    assert set(bicep.queues) == {"access-requests", "access-lifecycle", "access-revocations"}
    for settings in bicep.queues.values():
        assert settings["requires_duplicate_detection"] is True
        assert parse_duration(settings["duplicate_detection_history_time_window"]) >= timedelta(minutes=10)
        assert settings["dead_lettering_on_message_expiration"] is True
        assert 1 < settings["max_delivery_count"] <= 100
        assert timedelta(seconds=5) <= parse_duration(settings["lock_duration"]) <= timedelta(minutes=5)


@pytest.mark.parametrize("inventory", [bicep_inventory, terraform_inventory], ids=["bicep", "terraform"])
def test_the_handlers_are_told_the_queue_settings_they_run_under(inventory: Any) -> None:
    inv: Inventory = inventory()
    settings = inv.app_settings
    for name, queue in inv.queues.items():
        assert int(settings["JITGATE_LOCK_SECONDS"]) == parse_duration(queue["lock_duration"]).total_seconds(), name
        assert int(settings["JITGATE_MAX_DELIVERIES"]) == queue["max_delivery_count"], name
    names = ("JITGATE_REQUESTS_QUEUE", "JITGATE_LIFECYCLE_QUEUE", "JITGATE_REVOCATIONS_QUEUE")
    assert sorted(settings[name] for name in names) == sorted(inv.queues)


@pytest.mark.parametrize("inventory", [bicep_inventory, terraform_inventory], ids=["bicep", "terraform"])
def test_the_reconcile_timer_fires_every_reconcile_interval(inventory: Any) -> None:
    settings = inventory().app_settings
    every = re.fullmatch(r"0 \*/(\d+) \* \* \* \*", settings["JITGATE_RECONCILE_SCHEDULE"])
    assert every is not None, settings["JITGATE_RECONCILE_SCHEDULE"]
    assert int(every[1]) * 60 == int(settings["JITGATE_RECONCILE_SECONDS"])


def test_the_cosmos_containers_and_partition_keys_are_the_same(bicep: Inventory, terraform: Inventory) -> None:
    assert bicep.cosmos_database == terraform.cosmos_database
    assert bicep.cosmos_database.endswith(":jitgate}")
    assert bicep.cosmos_containers == terraform.cosmos_containers == {
        "requests": "/requestId",
        "ledger": "/grantKey",
        "audit": "/requestId",  # ARCHITECTURE §6
    }


def test_only_the_function_identity_gets_cosmos_data_access(bicep: Inventory, terraform: Inventory) -> None:
    assert bicep.cosmos_data_roles == terraform.cosmos_data_roles
    [(role_id, scope, principal)] = bicep.cosmos_data_roles
    assert role_id == COSMOS_DATA_CONTRIBUTOR
    assert scope.startswith("${Microsoft.DocumentDB/databaseAccounts:")
    assert principal == IDENTITY


def test_the_role_assignments_are_the_same(bicep: Inventory, terraform: Inventory) -> None:
    assert bicep.role_assignments == terraform.role_assignments
    assert {principal for _, _, _, principal in bicep.role_assignments} == {IDENTITY}
    assert {kind for _, _, kind, _ in bicep.role_assignments} == {"ServicePrincipal"}
    by_role = {role_id: scope for role_id, scope, _, _ in bicep.role_assignments}
    assert by_role[RBAC_ADMINISTRATOR] == GRANT_SCOPE
    assert by_role["ba92f5b4-2d11-453d-a403-e96b0029c9fe"].startswith(  # Storage Blob Data Contributor
        "${Microsoft.Storage/storageAccounts/blobServices/containers:audit-archive"
    )
    assert by_role["4633458b-17de-408a-b874-0445c86b69e6"].startswith("${Microsoft.KeyVault/vaults:")
    # The identity sends to (intake, the handlers) and receives from (the three triggers) every queue, and the
    # namespace holds jitgate's queues only: both data roles sit on the namespace, the revocations queue included.
    namespace = "${Microsoft.ServiceBus/namespaces:sb-${param:name}}"
    assert by_role[SERVICE_BUS_DATA_SENDER] == by_role[SERVICE_BUS_DATA_RECEIVER] == namespace


def test_the_grant_permission_is_conditioned_on_allowed_roles_json(bicep: Inventory, terraform: Inventory) -> None:
    # GIVEN each template's Role Based Access Control Administrator assignments
    grants = {json.dumps(g, sort_keys=True) for g in bicep.grants}

    # THEN both take the condition and its version from allowed-roles.json, and nothing else
    assert grants == {json.dumps(g, sort_keys=True) for g in terraform.grants}
    assert [json.loads(g) for g in grants] == [
        {"role": RBAC_ADMINISTRATOR, "condition": f"{ALLOWED_ROLES}:condition",
         "version": f"{ALLOWED_ROLES}:conditionVersion"}
    ]
    # and Bicep deploys one module per kind of scope (subscription, resource group)
    assert len(bicep.grants) == 2


def test_both_templates_load_the_committed_allowed_roles(allowed_roles: dict[str, Any]) -> None:
    main = (templates.BICEP / "main.bicep").read_text(encoding="utf-8")
    terraform = (templates.TERRAFORM / "main.tf").read_text(encoding="utf-8")
    assert "loadJsonContent('../allowed-roles.json')" in main
    assert 'jsondecode(file("${path.module}/../allowed-roles.json"))' in terraform


def test_the_condition_allows_exactly_the_allowed_roles_for_users_and_groups(allowed_roles: dict[str, Any]) -> None:
    # GIVEN the condition both templates put on the grant permission
    condition = allowed_roles["condition"]

    # THEN writing and deleting are each limited to the allowed role definitions and to users and groups
    for action, source in (("write", "Request"), ("delete", "Resource")):
        clause = re.search(
            rf"ActionMatches\{{'Microsoft\.Authorization/roleAssignments/{action}'\}}\)\) OR \((.*?)\)\)", condition
        )
        assert clause is not None, action
        roles = re.search(
            rf"@{source}\[[^]]+:RoleDefinitionId\] ForAnyOfAnyValues:GuidEquals \{{([^}}]*)\}}", clause[1]
        )
        types = re.search(
            rf"@{source}\[[^]]+:PrincipalType\] ForAnyOfAnyValues:StringEqualsIgnoreCase \{{([^}}]*)\}}", clause[1]
        )
        assert roles is not None and types is not None, action
        assert roles[1].split(", ") == allowed_roles["roleDefinitionIds"]
        assert types[1].split(", ") == ["'User'", "'Group'"]
    assert allowed_roles["principalTypes"] == list(PRINCIPAL_TYPES) == ["User", "Group"]
    assert allowed_roles["conditionVersion"] == "2.0"
    assert condition == grant_condition(allowed_roles["roleDefinitionIds"])


# ---------------------------------------------------------------- one source of truth for the roles


def test_allowed_roles_json_is_generated_from_the_example_policy(allowed_roles: dict[str, Any]) -> None:
    # Fails when the policy changed and `jitgate infra roles --write` was not run (or the file was edited).
    expected = render(Policy.load(ROOT / "policies" / "example.yaml"))
    assert ALLOWED_ROLES_FILE.read_text(encoding="utf-8") == expected
    assert allowed_roles["policy"] == "policies/example.yaml"


def test_the_example_policy_allows_reader_and_contributor() -> None:
    policy = Policy.load(ROOT / "policies" / "example.yaml")
    assert allowed_role_ids(policy) == [
        "acdd72a7-3385-48ef-bd42-f606fba81ae7",  # Reader
        "b24988ac-6180-42a0-ab88-20f7382dd24c",  # Contributor
    ]


def test_role_names_resolve_and_role_ids_pass_through() -> None:
    # GIVEN a rule naming a built-in role in any case, and a custom role by its GUID
    policy = policy_of(one_rule("[reader, 11111111-2222-4333-8444-555555555555]", "[azure-rbac, local]"))

    # THEN the name becomes its id and the GUID stays as it is
    assert allowed_role_ids(policy) == ["11111111-2222-4333-8444-555555555555", "acdd72a7-3385-48ef-bd42-f606fba81ae7"]


def test_a_wildcard_role_is_refused() -> None:
    with pytest.raises(PolicyError, match=r"test-policy\.yaml:\d+: rule 'the-rule' allows any role \('\*'\)"):
        allowed_role_ids(policy_of(one_rule('"*"')))


def test_an_unknown_role_name_is_refused() -> None:
    with pytest.raises(PolicyError, match="names role 'Contributer', which is not an Azure built-in role name"):
        render(policy_of(one_rule("[Contributer]")))


def test_a_role_that_can_assign_roles_is_refused_even_when_a_rule_allows_it() -> None:
    with pytest.raises(PolicyError, match="a role that can assign roles"):
        allowed_role_ids(policy_of(one_rule("[User Access Administrator]")))


def test_deny_rules_and_other_clouds_do_not_widen_the_grant() -> None:
    # GIVEN a deny rule naming Owner and a GCP rule allowing any role
    policy = policy_of(
        one_rule("[Reader]")
        + """
  - name: never-owner
    match:
      providers: "*"
      roles: [Owner]
      scopes: ["**"]
    outcome: deny
    reason: Never.
  - name: gcp-anything
    match:
      providers: [gcp-iam]
      roles: "*"
      scopes: [projects/acme-*]
    outcome: auto
    maxDuration: PT1H
"""
    )

    # THEN only the Azure rule's role is allowed
    assert allowed_role_ids(policy) == ["acdd72a7-3385-48ef-bd42-f606fba81ae7"]


def test_the_cosmos_data_roles_are_listed_from_the_policy_for_the_data_plane_permission() -> None:
    # GIVEN the example policy: Data Reader and Data Contributor, each by name and by id
    cosmos = render_json(Policy.load(ROOT / "policies" / "example.yaml"))["cosmosData"]
    assert cosmos["roleDefinitionIds"] == ["00000000-0000-0000-0000-000000000001",
                                           "00000000-0000-0000-0000-000000000002"]
    assert cosmos["roles"]["Cosmos DB Built-in Data Reader"] == "00000000-0000-0000-0000-000000000001"
    # AND a custom role passes by id, a rule for every provider gives only what can be a Cosmos DB role
    policy = policy_of(one_rule("[cosmos db built-in data reader, 11111111-2222-4333-8444-555555555555]",
                                "[cosmos-data]").replace("/subscriptions/*/**", "/subscriptions/*/**"))
    assert cosmos_data_roles(policy)["roleDefinitionIds"] == ["00000000-0000-0000-0000-000000000001",
                                                              "11111111-2222-4333-8444-555555555555"]
    assert cosmos_data_roles(policy_of(one_rule("[Reader]", '"*"')))["roleDefinitionIds"] == []


@pytest.mark.parametrize(("roles", "problem"), [
    ('"*"', r"allows any role \('\*'\) for cosmos-data"),
    ("[Cosmos DB Data Reader]", "names role 'Cosmos DB Data Reader', which is not a Cosmos DB built-in role name"),
])
def test_cosmos_data_rules_must_name_roles_it_can_resolve(roles: str, problem: str) -> None:
    with pytest.raises(PolicyError, match=problem):
        render(policy_of(one_rule(roles, "[cosmos-data]")))


def render_json(policy: Policy) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(render(policy))
    return loaded


def test_write_allowed_roles_reports_whether_the_file_changed(tmp_path: Path) -> None:
    policy = policy_of(one_rule("[Reader]"))
    target = tmp_path / "allowed-roles.json"
    assert write_allowed_roles(policy, target) is True
    assert write_allowed_roles(policy, target) is False
    assert json.loads(target.read_text(encoding="utf-8"))["roleDefinitionIds"] == [
        "acdd72a7-3385-48ef-bd42-f606fba81ae7"
    ]


# ---------------------------------------------------------------- the same settings


def test_every_app_setting_is_set_by_both_templates_to_the_same_value(bicep: Inventory, terraform: Inventory) -> None:
    # GIVEN the settings the app reads, as the example lists them
    example = json.loads((ROOT / "local.settings.example.json").read_text(encoding="utf-8"))
    deployed = set(example["Values"]) - set(example["LocalOnly"])

    # THEN both templates set exactly those, to the same values
    assert set(bicep.app_settings) == deployed
    assert set(terraform.app_settings) == deployed
    assert bicep.app_settings == terraform.app_settings
    assert set(example["LocalOnly"]) <= set(example["Values"])


def test_the_example_lists_every_setting_the_settings_object_reads() -> None:
    example = json.loads((ROOT / "local.settings.example.json").read_text(encoding="utf-8"))
    source = (ROOT / "shared" / "settings.py").read_text(encoding="utf-8")
    read = set(re.findall(r'\be\.get\("(\w+)"', source))
    assert "JITGATE_MODE" in read
    assert read <= set(example["Values"])


def test_secrets_reach_the_app_only_as_key_vault_references(bicep: Inventory) -> None:
    settings = bicep.app_settings
    assert settings["JITGATE_TEAMS_WEBHOOK_URL"] == "@Microsoft.KeyVault(jitgate-teams-webhook-url)"
    assert settings["JITGATE_TEAMS_SECRET"] == "@Microsoft.KeyVault(jitgate-teams-secret)"
    assert settings["JITGATE_POLICY"] == f"{ALLOWED_ROLES}:policy"
    for name, value in settings.items():
        assert not re.search(r"AccountKey=|SharedAccessKey|Password=", str(value)), name
    for connection in ("AzureWebJobsStorage", "ServiceBusConnection"):
        assert settings[f"{connection}__credential"] == "managedidentity"
        assert settings[f"{connection}__clientId"] == IDENTITY
    assert settings["AZURE_CLIENT_ID"] == IDENTITY


def test_identity_based_access_and_the_same_service_settings(bicep: Inventory, terraform: Inventory) -> None:
    assert bicep.settings == terraform.settings
    settings = bicep.settings
    assert settings["storage shared keys"] == [False, False]
    assert settings["storage public blobs"] == [False, False]
    assert not settings["service bus local auth"]
    assert settings["service bus sku"] == "Standard"
    assert not settings["cosmos local auth"]
    assert settings["cosmos capabilities"] == ["EnableServerless"]
    assert not settings["app insights local auth"]
    assert settings["key vault rbac"] and settings["key vault purge protection"]
    # NB. Every archive blob is a block blob written once; nothing may ever be appended to one.
    assert settings["archive protected appends"] is False
    assert settings["archive retention days"] == "${param:archiveretentiondays}"
    assert settings["key vault reference identity"] == settings["site identity"][0] == IDENTITY
    assert settings["runtime"] == "python 3.11"
    assert settings["deployment storage auth"] == "UserAssignedIdentity"
    assert settings["basic publishing credentials"] is False


def test_app_service_authentication_is_the_same(bicep: Inventory, terraform: Inventory) -> None:
    assert bicep.authentication == terraform.authentication
    auth = bicep.authentication
    assert auth["enabled"] and auth["require authentication"]
    assert auth["unauthenticated action"] == "Return401"
    # Only the HMAC-checked Teams webhook and health skip Entra authentication.
    assert auth["excluded paths"] == ["/api/teams/webhook", "/api/health"]
    assert auth["audiences"] == ["api://${param:authclientid}", "${param:authclientid}"]


def test_the_dead_letter_alert_is_the_same(bicep: Inventory, terraform: Inventory) -> None:
    assert bicep.alert == terraform.alert
    assert bicep.alert["metric"] == "Microsoft.ServiceBus/namespaces:DeadletteredMessages"
    assert bicep.alert["dimension"] == "EntityName"
    assert bicep.alert["entities"] == sorted(bicep.queues)
    assert (bicep.alert["operator"], bicep.alert["threshold"]) == ("GreaterThan", 0)


def test_the_activity_log_of_every_granting_subscription_reaches_the_workspace(
    bicep: Inventory, terraform: Inventory
) -> None:
    assert bicep.activity_log_categories == terraform.activity_log_categories
    assert {"Administrative", "Security", "Policy"} <= bicep.activity_log_categories
    assert "${param:grantscopes}" in bicep.activity_log_subscriptions
    assert "subscription" in bicep.activity_log_subscriptions
    assert "var.grant_scopes" in terraform.activity_log_subscriptions
    assert "var.subscription_id" in terraform.activity_log_subscriptions
    activity = (templates.BICEP / "modules" / "activity-log.bicep").read_text(encoding="utf-8")
    assert "targetScope = 'subscription'" in activity


def test_parameters_and_outputs_correspond(bicep: Inventory, terraform: Inventory) -> None:
    # Terraform needs the subscription for its provider; Bicep takes it from `az deployment sub create`.
    assert bicep.parameters == terraform.parameters - {"subscriptionid"}
    assert bicep.outputs == terraform.outputs


# ---------------------------------------------------------------- checkov skips


def test_every_checkov_skip_gives_its_reason() -> None:
    # GIVEN every skip comment in both template folders
    skips = []
    for path in sorted([*templates.BICEP.rglob("*.bicep"), *templates.TERRAFORM.glob("*.tf")]):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "checkov:skip" in line:
                skips.append((f"{path.relative_to(ROOT)}:{number}", line.strip()))

    # THEN each names one check and says why, in a sentence
    assert skips
    for where, line in skips:
        assert re.fullmatch(r"(//|#) checkov:skip=CKV2?_AZURE_\d+: \S.{20,}", line), where


def test_the_app_registration_manifest_defines_the_api_roles() -> None:
    # The app registration is created outside the templates (infra/README.md) from this manifest.
    roles = json.loads((templates.INFRA / "app-roles.json").read_text(encoding="utf-8"))
    assert {"Jit.Auditor", "Jit.Admin"} <= {role["value"] for role in roles}  # ARCHITECTURE §7
    assert len({role["id"] for role in roles}) == len(roles)
    assert all(role["isEnabled"] and role["allowedMemberTypes"] for role in roles)
