"""The Azure REST adapters against local servers speaking each service's REST shapes (tests/azure/fake_*.py):
ARM role assignments and PIM, Microsoft Graph, a Teams Workflows webhook and the Log Analytics query API; the
audit archive against Azurite. Nothing of jitgate's own code is patched. Live tests against Azure run only with
JITGATE_LIVE_AZURE=1 and their settings."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from shared.adapters.azure.arm import CachedToken, arm_token_provider
from shared.adapters.azure.blob_archive import BlobAuditArchive
from shared.adapters.azure.graph import GraphDirectory
from shared.adapters.azure.monitor import AzureActivity, activity_query
from shared.adapters.azure.pim import AzurePim
from shared.adapters.azure.rbac import AzureRbac
from shared.adapters.teams.workflows import TeamsNotifier
from shared.cards import teams_message
from shared.domain.audit import AuditEvent, canonical_json, verify_chain
from shared.domain.errors import AssignmentExists, PermanentError, TransientError
from shared.domain.ledger import GrantKey, marker_for
from shared.domain.policy import Policy
from shared.ports import Notice
from tests.azure import fake_arm, fake_graph, fake_loganalytics
from tests.azure.fake_arm import FakeArm, Tenant
from tests.azure.fake_graph import FakeGraph, device, directory_role, group, user
from tests.azure.fake_http import Reply, error
from tests.azure.fake_loganalytics import FakeLogAnalytics, table
from tests.azure.fake_teams import SIGNATURE, FakeTeamsWebhook
from tests.fakes.clock import FakeClock
from tests.fakes.world import JANE, World, access_request
from tests.tampering import TAMPERINGS

SUB_ID = "11111111-1111-4111-8111-111111111111"
SUB = f"/subscriptions/{SUB_ID}"
RG = f"{SUB}/resourceGroups/rg-payments-prod"
OTHER_RG = f"{SUB}/resourceGroups/rg-payments-dr"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
REQUEST_ID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
OTHER_REQUEST_ID = "2b4e28ba-2fa1-11d2-883f-0016d3cca427"
PRINCIPAL = "5a4bdd72-ab3e-4d8e-ab0f-8dd8917481a2"
WORKSPACE = "7a3c9e1f-0d2b-4c5a-9e8f-1a2b3c4d5e6f"


def principal() -> str:
    return str(uuid.uuid4())


class StaticCredential:
    """A TokenCredential handing out one token, counting how often it is asked."""

    def __init__(self, token: str, lifetime: float = 3600.0) -> None:
        self.token, self.lifetime, self.calls = token, lifetime, 0

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls += 1
        return AccessToken(self.token, int(time.time() + self.lifetime))


# ---------------------------------------------------------------- ARM fixtures


@pytest.fixture
def arm() -> Iterator[FakeArm]:
    server = FakeArm(page_size=2)
    yield server
    server.close()


@pytest.fixture
def tenant(arm: FakeArm) -> tuple[Tenant, str]:
    return arm.new_tenant()


@pytest.fixture
def rbac(tenant: tuple[Tenant, str]) -> Iterator[AzureRbac]:
    provider = AzureRbac(lambda: fake_arm.TOKEN, tenant[1], target_scopes=[SUB])
    yield provider
    provider.close()


@pytest.fixture
def pim(tenant: tuple[Tenant, str]) -> Iterator[AzurePim]:
    provider = AzurePim(lambda: fake_arm.TOKEN, tenant[1], target_scopes=[SUB])
    yield provider
    provider.close()


def rbac_key(principal_id: str = PRINCIPAL, role: str = CONTRIBUTOR, scope: str = RG) -> GrantKey:
    return GrantKey.of("azure-rbac", principal_id, role, scope)


def pim_key(principal_id: str = PRINCIPAL, role: str = CONTRIBUTOR, scope: str = RG) -> GrantKey:
    return GrantKey.of("azure-pim", principal_id, role, scope)


# ---------------------------------------------------------------- azure-rbac


def test_create_puts_the_documented_body_under_the_deterministic_name(arm: FakeArm, rbac: AzureRbac) -> None:
    key = rbac_key()

    created = rbac.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID), "ServicePrincipal")

    [put] = arm.calls_to("PUT", "/roleAssignments/")
    assert put.path.endswith(f"{RG.lower()}/providers/Microsoft.Authorization/roleAssignments/{key.assignment_name()}")
    assert put.query == {"api-version": "2022-04-01"}
    assert put.headers["authorization"] == f"Bearer {fake_arm.TOKEN}"
    assert put.json() == {"properties": {
        "roleDefinitionId": f"{SUB}/providers/Microsoft.Authorization/roleDefinitions/{CONTRIBUTOR}",
        "principalId": PRINCIPAL,
        "principalType": "ServicePrincipal",
        "description": marker_for(REQUEST_ID),
    }}
    assert created.key == key and created.name == key.assignment_name()
    assert created.role_definition_id == CONTRIBUTOR  # the GUID, as in every GrantKey
    assert created.marked_request_id == REQUEST_ID


def test_access_assigned_outside_jitgate_raises_assignment_exists_with_its_name(
    arm: FakeArm, tenant: tuple[Tenant, str], rbac: AzureRbac
) -> None:
    seeded = arm.seed_assignment(tenant[0], RG, PRINCIPAL, CONTRIBUTOR, description="break-glass owner set")
    key = rbac_key()

    with pytest.raises(AssignmentExists) as raised:
        rbac.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID))

    assert raised.value.existing_name == seeded["name"]
    assert rbac.list_marked() == []


def test_a_retried_create_is_answered_with_the_assignment_and_may_move_its_marker(
    arm: FakeArm, rbac: AzureRbac
) -> None:
    key = rbac_key()
    first = rbac.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID))

    again = rbac.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID))
    moved = rbac.create_assignment(key, key.assignment_name(), marker_for(OTHER_REQUEST_ID))

    assert again == first
    assert (moved.key, moved.marked_request_id) == (first.key, OTHER_REQUEST_ID)
    # every PUT was answered with the assignment: nothing had to be looked up
    assert len(arm.calls_to("PUT", "/roleAssignments/")) == 3
    assert arm.calls_to("GET", "/roleAssignments") == []


def test_a_principal_type_other_than_the_directory_objects_is_refused_for_good(
    arm: FakeArm, tenant: tuple[Tenant, str], rbac: AzureRbac
) -> None:
    arm.seed_principal(tenant[0], PRINCIPAL, "ServicePrincipal")
    key = rbac_key()

    with pytest.raises(PermanentError, match="400 UnmatchedPrincipalType"):
        rbac.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID), "User")

    assert tenant[0].assignments == {}
    created = rbac.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID), "ServicePrincipal")
    assert created.principal_type == "ServicePrincipal"


def test_principal_not_found_is_transient_with_a_backoff_and_a_retry_succeeds(
    tenant: tuple[Tenant, str], rbac: AzureRbac
) -> None:
    # GIVEN a principal created moments ago that ARM has not seen replicate yet
    new_principal = principal()
    tenant[0].unreplicated[new_principal] = 1
    key = rbac_key(new_principal)
    # WHEN jitgate grants THEN the first attempt is a transient error asking to wait
    with pytest.raises(TransientError, match="PrincipalNotFound") as raised:
        rbac.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID))
    assert raised.value.retry_after == 5.0
    # AND the retry (what the lifecycle's _call does) succeeds
    assert rbac.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID)).key == key


@pytest.mark.parametrize(("reply", "expected"), [
    (error(429, "TooManyRequests", headers={"Retry-After": "7"}), 7.0),
    (error(503, "ServiceUnavailable"), None),
    (error(409, "AnotherOperationInProgress"), None),
    (error(401, "ExpiredAuthenticationToken"), None),
])
def test_throttling_5xx_and_conflicts_in_flight_are_transient(
    arm: FakeArm, rbac: AzureRbac, reply: Reply, expected: float | None
) -> None:
    arm.fail("PUT", "/roleAssignments/", reply)
    key = rbac_key()

    with pytest.raises(TransientError) as raised:
        rbac.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID))

    assert raised.value.retry_after == expected
    assert rbac.find_assignment(key) is None


def test_retry_after_as_an_http_date_counts_down_from_now(arm: FakeArm, rbac: AzureRbac) -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    arm.fail("GET", "/roleAssignments$", error(429, "TooManyRequests",
                                                headers={"Retry-After": when.strftime("%a, %d %b %Y %H:%M:%S GMT")}))

    with pytest.raises(TransientError) as raised:
        rbac.list_marked()

    assert raised.value.retry_after is not None and 25 <= raised.value.retry_after <= 31


def test_forbidden_and_locked_scopes_are_permanent(arm: FakeArm, rbac: AzureRbac) -> None:
    key = rbac_key()
    arm.fail("PUT", "/roleAssignments/", error(403, "AuthorizationFailed", "The client does not have authorization"))
    with pytest.raises(PermanentError, match="403 AuthorizationFailed"):
        rbac.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID))
    arm.fail("DELETE", "/roleAssignments/", error(409, "ScopeLocked", "The scope cannot perform delete"))
    with pytest.raises(PermanentError, match="ScopeLocked"):
        rbac.delete_assignment(RG, key.assignment_name())


def test_a_timeout_is_transient(arm: FakeArm, tenant: tuple[Tenant, str]) -> None:
    impatient = AzureRbac(lambda: fake_arm.TOKEN, tenant[1], httpx.Client(timeout=0.2), target_scopes=[SUB])
    arm.fail("GET", "/roleAssignments", Reply(200, {"value": []}), delay=1.0)

    with pytest.raises(TransientError, match="Timeout"):
        impatient.find_assignment(rbac_key())


def test_a_delete_is_read_back_before_it_counts(tenant: tuple[Tenant, str], rbac: AzureRbac) -> None:
    key = rbac_key()
    rbac.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID))
    tenant[0].ghost_deletes = 1  # ARM answers 200 but a replica still has the assignment

    with pytest.raises(TransientError, match="still present"):
        rbac.delete_assignment(RG, key.assignment_name())
    rbac.delete_assignment(RG, key.assignment_name())

    assert rbac.get_assignment(RG, key.assignment_name()) is None


def test_role_names_resolve_once_per_scope_through_the_role_name_filter(arm: FakeArm, rbac: AzureRbac) -> None:
    assert rbac.resolve_role(RG, "Contributor") == CONTRIBUTOR
    assert rbac.resolve_role(RG, "contributor") == CONTRIBUTOR
    assert rbac.resolve_role(RG, f"{SUB}/providers/Microsoft.Authorization/roleDefinitions/{READER.upper()}") == READER

    lookups = arm.calls_to("GET", "/roleDefinitions")
    assert [c.query.get("$filter") for c in lookups] == ["roleName eq 'Contributor'", None]
    assert lookups[1].path.endswith(f"/roleDefinitions/{READER}")
    with pytest.raises(PermanentError, match="unknown role \"O'Brien\""):
        rbac.resolve_role(RG, "O'Brien")
    assert arm.calls_to("GET", "/roleDefinitions")[-1].query["$filter"] == "roleName eq 'O''Brien'"


def test_list_marked_pages_and_keeps_marked_assignments_at_or_below_the_target_scopes(
    arm: FakeArm, tenant: tuple[Tenant, str], rbac: AzureRbac
) -> None:
    # GIVEN jitgate's grants in two resource groups of the target subscription, among others
    keys = [rbac_key(principal()) for _ in range(3)] + [rbac_key(principal(), READER, OTHER_RG)]
    for key in keys:
        rbac.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID))
    arm.seed_assignment(tenant[0], RG, principal(), READER, description="owned by the platform team")
    elsewhere = "/subscriptions/99999999-9999-4999-8999-999999999999/resourceGroups/rg"
    arm.seed_assignment(tenant[0], elsewhere, principal(), READER, description=marker_for(REQUEST_ID))
    # WHEN listed
    marked = rbac.list_marked()
    # THEN exactly jitgate's grants under the target scope come back, read over several pages
    assert sorted(a.key for a in marked) == sorted(keys)
    pages = arm.calls_to("GET", "/roleAssignments$")
    assert len(pages) == 3 and pages[0].query == {"api-version": "2022-04-01"}
    assert all("$skiptoken" in page.query for page in pages[1:])


def test_a_next_link_to_another_host_gets_no_token(arm: FakeArm, rbac: AzureRbac) -> None:
    other = FakeArm()
    try:
        arm.fail("GET", "/roleAssignments$", Reply(200, {"value": [], "nextLink": f"{other.url}/collect?x=1"}))
        with pytest.raises(PermanentError, match="refusing to send a token"):
            rbac.list_marked()
        assert other.calls == []
    finally:
        other.close()


@pytest.mark.parametrize("scope", [
    f"{SUB}/resourceGroups/../../providers/x",
    f"{SUB}/resourceGroups/rg?$filter=x",
    "subscriptions/x",
    f"{SUB}/resourceGroups/rg one",
    f"{SUB}/resourceGroups/%2e%2e",
])
def test_scopes_that_could_leave_the_url_path_are_refused_without_a_call(
    arm: FakeArm, rbac: AzureRbac, scope: str
) -> None:
    with pytest.raises(PermanentError, match="InvalidScope"):
        rbac.create_assignment(rbac_key(scope=scope), rbac_key(scope=scope).assignment_name(), "x")
    with pytest.raises(PermanentError, match="InvalidScope"):
        rbac.get_assignment(scope, str(uuid.uuid4()))
    assert arm.calls == []


def test_a_principal_id_that_is_not_an_object_id_never_reaches_a_filter(arm: FakeArm, rbac: AzureRbac) -> None:
    with pytest.raises(PermanentError, match="not an object id"):
        rbac.find_assignment(rbac_key(principal_id="x' or principalId ne 'y"))
    assert arm.calls == []


def test_nothing_is_built_or_called_before_first_use(arm: FakeArm, tenant: tuple[Tenant, str]) -> None:
    asked: list[str] = []

    def token() -> str:
        asked.append("token")
        return fake_arm.TOKEN

    def webhook_url() -> str:
        asked.append("webhook url")
        return ""

    provider = AzureRbac(token, tenant[1], target_scopes=[SUB])
    AzurePim(token, tenant[1], target_scopes=[SUB])
    GraphDirectory(token)
    TeamsNotifier(webhook_url)
    AzureActivity(WORKSPACE, StaticCredential("t"))
    BlobAuditArchive("https://example.blob.core.windows.net")
    assert asked == [] and arm.calls == []
    assert provider.find_assignment(rbac_key()) is None
    assert asked == ["token"]


def test_importing_the_adapters_imports_no_azure_sdk() -> None:
    code = (
        "import sys\n"
        "import shared.adapters.azure.rbac, shared.adapters.azure.pim, shared.adapters.azure.graph\n"
        "import shared.adapters.teams.workflows, shared.adapters.azure.monitor, shared.adapters.azure.blob_archive\n"
        "shared.adapters.azure.arm.arm_token_provider()\n"
        "print(sorted(m for m in sys.modules if m == 'azure' or m.startswith('azure.')))\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_tokens_are_fetched_lazily_and_reused_until_close_to_expiry() -> None:
    lasting, expiring = StaticCredential("a"), StaticCredential("b", lifetime=60)
    token = arm_token_provider(lasting)
    assert lasting.calls == 0

    assert [token(), token()] == ["a", "a"] and lasting.calls == 1
    short = CachedToken("https://graph.microsoft.com/.default", expiring)
    assert [short(), short()] == ["b", "b"] and expiring.calls == 2  # within the refresh margin


def test_a_credential_that_cannot_get_a_token_is_transient() -> None:
    class Broken:
        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            raise ClientAuthenticationError("ManagedIdentityCredential: IMDS endpoint unavailable")

    with pytest.raises(TransientError, match=r"no token for https://management\.azure\.com/\.default"):
        arm_token_provider(Broken())()


# ---------------------------------------------------------------- azure-rbac under the lifecycle

AZURE_POLICY = f"""
version: 1
groups:
  approvers: ["{JANE}"]
rules:
  - name: azure-payments
    match: {{providers: [azure-rbac], roles: [Contributor], scopes: ["{SUB}/resourceGroups/*"]}}
    outcome: auto
    maxDuration: PT4H
"""


def azure_world(rbac: AzureRbac) -> World:
    world = World()
    world.backends.providers = {**world.backends.providers, "azure-rbac": rbac}
    world.backends.policy = Policy.from_text(AZURE_POLICY)
    return world


def azure_request(duration: str = "PT1H") -> dict[str, Any]:
    doc = access_request(principal=JANE, role="Contributor", scope=RG, duration=duration)
    doc["target"]["provider"] = "azure-rbac"
    return doc


def test_the_lifecycle_grants_through_arm_after_a_replication_delay_and_revokes_on_time(
    tenant: tuple[Tenant, str], rbac: AzureRbac
) -> None:
    # GIVEN Jane's principal has not replicated to ARM yet
    world = azure_world(rbac)
    tenant[0].unreplicated[JANE] = 1
    # WHEN she asks for an hour of Contributor
    request_id = world.submit(azure_request())
    # THEN the grant waited out the replication delay and applied, marked as jitgate's
    assert world.state(request_id) == "active"
    assert 5.0 in world.sleeps
    [assigned] = tenant[0].assignments.values()
    assert assigned["properties"]["description"] == marker_for(request_id)
    # AND when the hour is up the assignment is deleted and confirmed gone
    world.advance(3600)
    assert world.state(request_id) == "revoked"
    assert tenant[0].assignments == {}
    assert world.chains_ok()


def test_the_lifecycle_leaves_access_granted_outside_jitgate_alone(
    arm: FakeArm, tenant: tuple[Tenant, str], rbac: AzureRbac
) -> None:
    world = azure_world(rbac)
    seeded = arm.seed_assignment(tenant[0], RG, JANE, CONTRIBUTOR, description="standing access")

    request_id = world.submit(azure_request())
    world.advance(3600)

    assert world.state(request_id) == "revoked"
    applied = next(e for e in world.store.chain(request_id) if e.type.value == "grant.applied")
    assert applied.data["preexisting"] is True
    assert list(tenant[0].assignments.values()) == [seeded]


def test_a_grant_racing_a_revoke_waits_for_the_delete_then_assigns_through_arm_as_the_group_it_is(
    arm: FakeArm, tenant: tuple[Tenant, str], rbac: AzureRbac
) -> None:
    # GIVEN a group (a group in the directory) holding Contributor, and its second request for the same
    world = azure_world(rbac)
    group = principal()
    arm.seed_principal(tenant[0], group, "Group")
    first, second = (azure_request(duration) for duration in ("PT1M", "PT1H"))
    for doc in (first, second):
        doc["requester"] = {"principalId": group, "principalType": "Group", "displayName": "Payments on-call"}
    world.submit(first)
    world.lifecycle.evaluate(json.dumps(second).encode())
    real_delete = rbac.delete_assignment

    def grant_lands_mid_revoke(scope: str, name: str) -> None:
        rbac.delete_assignment = real_delete  # type: ignore[method-assign]
        world.worker.drain()  # the second grant arrives while the first revoke deletes the assignment
        real_delete(scope, name)

    rbac.delete_assignment = grant_lands_mid_revoke  # type: ignore[method-assign]
    # WHEN the first is revoked early
    world.lifecycle.request_revoke(first["requestId"], group, is_admin=False)
    # THEN the second grant waited for the delete instead of holding a key being deleted
    assert (world.state(first["requestId"]), world.state(second["requestId"])) == ("revoked", "approved")
    assert tenant[0].assignments == {}
    # WHEN the bus delivers it again, THEN ARM has the assignment, for the second request, as a group
    world.advance(31)
    assert world.state(second["requestId"]) == "active"
    [assigned] = tenant[0].assignments.values()
    assert assigned["properties"]["principalType"] == "Group"
    assert assigned["properties"]["description"] == marker_for(second["requestId"])


# ---------------------------------------------------------------- azure-pim


def test_pim_assign_asks_azure_to_end_the_grant_after_the_hold_duration(
    arm: FakeArm, pim: AzurePim
) -> None:
    key = pim_key()
    expires_at = datetime.now(UTC) + timedelta(hours=2)

    created = pim.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID), "User", expires_at)

    [put] = arm.calls_to("PUT", "/roleAssignmentScheduleRequests/")
    assert put.query == {"api-version": "2020-10-01"}
    properties = put.json()["properties"]
    assert properties["requestType"] == "AdminAssign"
    assert properties["scheduleInfo"]["expiration"] == {"type": "AfterDuration", "duration": "PT120M",
                                                        "endDateTime": None}
    assert properties["justification"] == marker_for(REQUEST_ID)
    assert properties["roleDefinitionId"] == f"{SUB}/providers/Microsoft.Authorization/roleDefinitions/{CONTRIBUTOR}"
    assert properties["principalId"] == PRINCIPAL
    # AND the grant reads back by name, by key and as marked, named like every provider's grants
    assert created.name == key.assignment_name() and created.marked_request_id == REQUEST_ID
    found = pim.get_assignment(RG, key.assignment_name())
    assert found is not None and found.key == key and found.description == marker_for(REQUEST_ID)
    assert pim.find_assignment(key) == found
    assert pim.list_marked() == [found]


def test_pim_retries_read_back_their_first_request_instead_of_asking_again(arm: FakeArm, pim: AzurePim) -> None:
    key = pim_key()
    expires_at = datetime.now(UTC) + timedelta(hours=1)
    arm.fail("PUT", "/roleAssignmentScheduleRequests/", error(503, "ServiceUnavailable"))

    with pytest.raises(TransientError):
        pim.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID), "User", expires_at)
    first = pim.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID), "User", expires_at)
    again = pim.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID), "User", expires_at)

    assert first == again
    puts = arm.calls_to("PUT", "/roleAssignmentScheduleRequests/")
    assert len(puts) == 2 and puts[0].path == puts[1].path  # the failed attempt and its retry, one name


def pim_extends(arm: FakeArm) -> list[dict[str, Any]]:
    return [c.json()["properties"] for c in arm.calls_to("PUT", "/roleAssignmentScheduleRequests/")
            if c.json()["properties"]["requestType"] == "AdminExtend"]


def test_pim_a_later_hold_extends_jitgate_s_schedule_to_its_expiry(
    arm: FakeArm, tenant: tuple[Tenant, str], pim: AzurePim
) -> None:
    key = pim_key()
    first = pim.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID), "User",
                                  datetime.now(UTC) + timedelta(hours=1))

    later = datetime.now(UTC) + timedelta(hours=3)
    again = pim.create_assignment(key, key.assignment_name(), marker_for(str(uuid.uuid4())), "User", later)

    [extend] = pim_extends(arm)
    assert extend["principalId"] == PRINCIPAL
    assert extend["roleDefinitionId"] == f"{SUB}/providers/Microsoft.Authorization/roleDefinitions/{CONTRIBUTOR}"
    assert extend["justification"] == marker_for(REQUEST_ID)  # the grant keeps its marker
    assert extend["scheduleInfo"]["expiration"]["type"] == "AfterDuration"
    assert again == first
    # AND the one schedule now ends at the later expiry (whole minutes, rounded up) and outlives the first hold
    [schedule] = tenant[0].schedules.values()
    end = datetime.fromisoformat(schedule["properties"]["endDateTime"].replace("Z", "+00:00"))
    assert later <= end <= later + timedelta(minutes=1)
    arm.skew = timedelta(hours=2)
    assert pim.get_assignment(RG, key.assignment_name()) == first
    arm.skew = timedelta(hours=3, minutes=2)
    assert pim.get_assignment(RG, key.assignment_name()) is None


def test_pim_an_earlier_or_equal_hold_asks_pim_for_nothing(arm: FakeArm, pim: AzurePim) -> None:
    key = pim_key()
    expires_at = datetime.now(UTC) + timedelta(hours=2)
    pim.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID), "User", expires_at)
    puts = len(arm.calls_to("PUT", "/roleAssignmentScheduleRequests/"))

    for expiry in (expires_at, expires_at - timedelta(hours=1)):
        found = pim.create_assignment(key, key.assignment_name(), marker_for(str(uuid.uuid4())), "User", expiry)
        assert found.name == key.assignment_name()

    assert len(arm.calls_to("PUT", "/roleAssignmentScheduleRequests/")) == puts
    assert pim_extends(arm) == []


def test_pim_a_retried_extend_is_not_asked_twice(arm: FakeArm, pim: AzurePim) -> None:
    key = pim_key()
    pim.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID), "User",
                          datetime.now(UTC) + timedelta(hours=1))
    later = datetime.now(UTC) + timedelta(hours=3)
    arm.fail("PUT", "/roleAssignmentScheduleRequests/", error(503, "ServiceUnavailable"))

    with pytest.raises(TransientError):
        pim.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID), "User", later)
    pim.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID), "User", later)
    pim.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID), "User", later)

    extends = [c for c in arm.calls_to("PUT", "/roleAssignmentScheduleRequests/")
               if c.json()["properties"]["requestType"] == "AdminExtend"]
    assert len(extends) == 2 and extends[0].path == extends[1].path  # the failed attempt and its retry, one name
    # AND should the new end not show yet, the request that went through is read back, not sent again
    existing = pim.find_assignment(key)
    assert existing is not None
    pim._ends[key.assignment_name()] = datetime.now(UTC)  # the schedule as listed before the extend
    assert pim._extend(key, existing, later) == existing
    assert len(pim_extends(arm)) == 2
    assert arm.calls_to("GET", extends[0].path)


def test_pim_grant_ends_by_itself_when_azure_expires_it(arm: FakeArm, pim: AzurePim) -> None:
    key = pim_key()
    pim.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID), "User",
                          datetime.now(UTC) + timedelta(hours=1))

    arm.skew = timedelta(minutes=61)  # jitgate was down; Azure's clock went on

    assert pim.get_assignment(RG, key.assignment_name()) is None
    assert pim.list_marked() == []


def test_pim_revoke_is_an_admin_remove_that_is_read_back(arm: FakeArm, pim: AzurePim) -> None:
    key = pim_key()
    pim.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID), "User",
                          datetime.now(UTC) + timedelta(hours=1))

    pim.delete_assignment(RG, key.assignment_name())
    pim.delete_assignment(RG, key.assignment_name())  # nothing left: no second request

    removes = [c for c in arm.calls_to("PUT", "/roleAssignmentScheduleRequests/")
               if c.json()["properties"]["requestType"] == "AdminRemove"]
    assert len(removes) == 1
    assert removes[0].json()["properties"]["principalId"] == PRINCIPAL
    assert pim.get_assignment(RG, key.assignment_name()) is None


def test_pim_access_assigned_outside_jitgate_is_found_but_never_taken_for_jitgate_s(
    arm: FakeArm, tenant: tuple[Tenant, str], pim: AzurePim
) -> None:
    seeded = arm.seed_schedule(tenant[0], RG, PRINCIPAL, CONTRIBUTOR)
    key = pim_key()

    found = pim.find_assignment(key)
    with pytest.raises(AssignmentExists) as raised:
        pim.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID), "User",
                              datetime.now(UTC) + timedelta(hours=1))

    assert found is not None and found.name == seeded["name"] and found.marked_request_id is None
    assert raised.value.existing_name == seeded["name"]
    assert pim.list_marked() == []


def test_pim_grants_at_a_subscription_read_back_through_pim_s_scope_alias(pim: AzurePim) -> None:
    key = pim_key(scope=SUB)
    pim.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID), "User",
                          datetime.now(UTC) + timedelta(hours=1))

    found = pim.get_assignment(SUB, key.assignment_name())

    # PIM reports the scope as /providers/Microsoft.Subscription/subscriptions/{id}: the same grant key
    assert found is not None and found.key == key and found.scope.lower() == SUB.lower()
    assert [a.name for a in pim.list_marked()] == [key.assignment_name()]


def test_pim_grants_must_expire_and_policy_refusals_are_permanent(
    tenant: tuple[Tenant, str], pim: AzurePim
) -> None:
    key = pim_key()
    with pytest.raises(PermanentError, match="must expire"):
        pim.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID))
    with pytest.raises(PermanentError, match="names a grant by its key"):
        pim.create_assignment(key, str(uuid.uuid4()), marker_for(REQUEST_ID), "User", datetime.now(UTC))
    tenant[0].max_pim_duration = timedelta(hours=1)
    with pytest.raises(PermanentError, match="ExpirationRule"):
        pim.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID), "User",
                              datetime.now(UTC) + timedelta(hours=3))


# ---------------------------------------------------------------- Microsoft Graph directory


@pytest.fixture
def graph() -> Iterator[FakeGraph]:
    server = FakeGraph(page_size=2)
    yield server
    server.close()


def directory(graph: FakeGraph, **options: Any) -> GraphDirectory:
    return GraphDirectory(lambda: fake_graph.TOKEN, base_url=graph.url, **options)


def test_groups_are_the_transitive_group_memberships_across_pages(graph: FakeGraph) -> None:
    graph.users[PRINCIPAL] = [group("sre-leads"), directory_role("Global Reader"), group("dba"), group("payments")]

    assert directory(graph).groups_of(PRINCIPAL.upper()) == {"sre-leads", "dba", "payments"}

    pages = graph.calls_to("GET", "/transitiveMemberOf")
    assert len(pages) == 2
    assert pages[0].path == f"/v1.0/users/{PRINCIPAL}/transitiveMemberOf"
    assert pages[0].query == {"$select": "id,displayName", "$top": "999"}


def test_with_a_name_map_only_the_mapped_group_counts_whatever_others_are_called(graph: FakeGraph) -> None:
    real = group("sre-leads")
    graph.users[PRINCIPAL] = [group("sre-leads")]  # a look-alike anyone could have created
    member = principal()
    graph.users[member] = [real, group("dba")]

    names = directory(graph, group_names={"sre-leads": real.id.upper(), "approvers": real.id})

    assert names.groups_of(PRINCIPAL) == frozenset()
    assert names.groups_of(member) == {"sre-leads", "approvers"}
    with pytest.raises(ValueError, match="not an Entra object id"):
        directory(graph, group_names={"sre-leads": "SRE Leads"})


def test_memberships_are_cached_for_the_ttl(graph: FakeGraph) -> None:
    clock = FakeClock()
    graph.users[PRINCIPAL] = [group("dba")]
    cached = directory(graph, ttl=300, clock=clock)

    assert cached.groups_of(PRINCIPAL) == {"dba"}
    graph.users[PRINCIPAL] = [group("sre-leads")]
    clock.advance(299)
    assert cached.groups_of(PRINCIPAL) == {"dba"}
    clock.advance(2)
    assert cached.groups_of(PRINCIPAL) == {"sre-leads"}
    assert len(graph.calls) == 2


def test_a_service_principal_is_looked_up_when_no_user_has_the_id(graph: FakeGraph) -> None:
    pipeline = principal()
    graph.service_principals[pipeline] = [group("deployers")]

    assert directory(graph).groups_of(pipeline) == {"deployers"}
    assert directory(graph).groups_of(principal()) == frozenset()
    assert directory(graph).groups_of("jane@example.com") == frozenset()


def test_graph_throttling_is_transient_and_a_missing_permission_permanent(graph: FakeGraph) -> None:
    graph.users[PRINCIPAL] = [group("dba")]
    graph.fail("GET", "/transitiveMemberOf", error(429, "TooManyRequests", headers={"Retry-After": "3"}))
    with pytest.raises(TransientError) as raised:
        directory(graph).groups_of(PRINCIPAL)
    assert raised.value.retry_after == 3.0
    graph.fail("GET", "/transitiveMemberOf", error(403, "Authorization_RequestDenied"))
    with pytest.raises(PermanentError, match="Authorization_RequestDenied"):
        directory(graph).groups_of(PRINCIPAL)


def test_members_of_a_group_are_its_users_read_page_by_page_as_far_as_the_limit(graph: FakeGraph) -> None:
    approvers = group("approvers")
    people = [user(f"Person {n}") for n in range(5)]
    graph.groups[approvers.id] = [people[0], device("kiosk"), *people[1:], user(None)]  # nested groups flattened

    members = directory(graph, group_names={"platform-approvers": approvers.id}).members_of("platform-approvers", 3)

    assert [(p.principal_id, p.display_name) for p in members.people] == [(u.id, u.display_name) for u in people[:3]]
    assert members.total == 6
    pages = graph.calls_to("GET", "/transitiveMembers/")
    assert len(pages) == 2  # 2 + 1 users: the count is known, so the rest is never read
    assert pages[0].path == f"/v1.0/groups/{approvers.id}/transitiveMembers/microsoft.graph.user"
    assert pages[0].query == {"$select": "id,displayName", "$top": "3", "$count": "true"}
    assert pages[0].headers["consistencylevel"] == "eventual"


def test_a_member_graph_shows_without_a_name_has_an_empty_display_name(graph: FakeGraph) -> None:
    approvers = group("approvers")
    hidden = user(None)
    graph.groups[approvers.id] = [hidden]

    members = directory(graph, group_names={"approvers": approvers.id}).members_of("approvers", 20)

    assert [(p.principal_id, p.display_name) for p in members.people] == [(hidden.id, "")]


def test_members_are_cached_for_the_ttl(graph: FakeGraph) -> None:
    clock = FakeClock()
    approvers = group("approvers")
    graph.groups[approvers.id] = [user("Alice")]
    cached = directory(graph, group_names={"approvers": approvers.id}, ttl=300, clock=clock)

    assert cached.members_of("approvers", 20).total == 1
    graph.groups[approvers.id] = [user("Alice"), user("Bob")]
    clock.advance(299)
    assert cached.members_of("approvers", 20).total == 1
    clock.advance(2)
    assert cached.members_of("approvers", 20).total == 2
    assert len(graph.calls) == 2


def test_members_of_a_group_graph_or_the_map_does_not_know_is_a_permanent_error(graph: FakeGraph) -> None:
    gone = group("approvers")
    names = directory(graph, group_names={"approvers": gone.id})

    with pytest.raises(PermanentError, match=r"approvers.*no such group in Entra"):
        names.members_of("approvers", 20)
    with pytest.raises(PermanentError, match="oncall has no Entra object id"):
        names.members_of("oncall", 20)
    with pytest.raises(PermanentError, match="no Entra object id"):
        directory(graph).members_of("approvers", 20)  # display names are never trusted for this either
    assert len(graph.calls) == 1


def test_members_of_throttling_is_transient_and_a_missing_permission_permanent(graph: FakeGraph) -> None:
    approvers = group("approvers")
    graph.groups[approvers.id] = [user("Alice")]
    names = directory(graph, group_names={"approvers": approvers.id})
    graph.fail("GET", "/transitiveMembers/", error(429, "TooManyRequests", headers={"Retry-After": "2"}))
    with pytest.raises(TransientError) as raised:
        names.members_of("approvers", 20)
    assert raised.value.retry_after == 2.0
    graph.fail("GET", "/transitiveMembers/", error(403, "Authorization_RequestDenied"))
    with pytest.raises(PermanentError, match="Authorization_RequestDenied"):
        names.members_of("approvers", 20)


# ---------------------------------------------------------------- Teams Workflows webhook


@pytest.fixture
def webhook() -> Iterator[FakeTeamsWebhook]:
    server = FakeTeamsWebhook()
    yield server
    server.close()


def notice() -> Notice:
    return Notice(kind="approval_requested", request_id=REQUEST_ID, title="Jane asks for Contributor",
                  facts={"Target": f"Contributor at {RG}"}, reply_hints=[f"approve {REQUEST_ID}"],
                  audience=["sre-leads"])


def test_a_notice_is_posted_as_the_teams_message_and_throttling_is_retried(webhook: FakeTeamsWebhook) -> None:
    sleeps: list[float] = []
    webhook.script = [Reply(429, headers={"Retry-After": "2"}), Reply(502)]
    notifier = TeamsNotifier(lambda: webhook.webhook_url, sleep=sleeps.append)

    notifier.notify(notice())

    assert webhook.messages == [teams_message(notice())]
    assert sleeps == [2.0, 2.0]  # Retry-After first, then the doubled backoff
    assert len(webhook.calls_to("POST")) == 3


def test_persistent_failures_are_transient_and_never_show_the_webhook_url(
    webhook: FakeTeamsWebhook, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sleeps: list[float] = []
    webhook.script = [Reply(503)] * 4
    notifier = TeamsNotifier(lambda: webhook.webhook_url, sleep=sleeps.append)

    with pytest.raises(TransientError, match="503") as raised:
        notifier.notify(notice())

    assert sleeps == [1.0, 2.0, 4.0]
    assert "httpx" in {r.name for r in caplog.records}  # httpx did log each request...
    assert SIGNATURE not in caplog.text and SIGNATURE not in str(raised.value)  # ...without the signature


def test_a_refused_webhook_is_permanent_at_once(webhook: FakeTeamsWebhook) -> None:
    notifier = TeamsNotifier(lambda: webhook.webhook_url.replace(SIGNATURE, "forged"), sleep=lambda s: None)

    with pytest.raises(PermanentError, match="401") as raised:
        notifier.notify(notice())

    assert len(webhook.calls) == 1 and "forged" not in str(raised.value)


def test_an_unreachable_webhook_is_transient_and_quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/workflows/x/triggers/manual/paths/invoke?sig={SIGNATURE}"

    with pytest.raises(TransientError, match="ConnectError") as raised:
        TeamsNotifier(lambda: url, attempts=2, sleep=lambda s: None).notify(notice())

    assert SIGNATURE not in str(raised.value) and SIGNATURE not in caplog.text


def test_an_unset_webhook_url_is_permanent() -> None:
    with pytest.raises(PermanentError, match="JITGATE_TEAMS_WEBHOOK_URL"):
        TeamsNotifier(lambda: "").notify(notice())


# ---------------------------------------------------------------- AzureActivity over Log Analytics


@pytest.fixture
def logs() -> Iterator[FakeLogAnalytics]:
    server = FakeLogAnalytics(WORKSPACE)
    yield server
    server.close()


START = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
END = datetime(2026, 11, 26, 11, 0, tzinfo=UTC)


def test_the_summary_counts_operations_writes_and_failures(logs: FakeLogAnalytics) -> None:
    logs.result = {"tables": [table([
        ["MICROSOFT.COMPUTE/VIRTUALMACHINES/WRITE", 3, 1],
        ["MICROSOFT.STORAGE/STORAGEACCOUNTS/LISTKEYS/ACTION", 2, 0],
        ["MICROSOFT.COMPUTE/VIRTUALMACHINES/DELETE", 1, 0],
    ])]}
    reader = AzureActivity(WORKSPACE, StaticCredential(fake_loganalytics.TOKEN), endpoint=logs.url)

    summary = reader.summarize(PRINCIPAL.upper(), RG, START, END)

    assert summary is not None
    assert summary["operations"] == 6 and summary["writes"] == 4 and summary["failures"] == 1
    assert summary["writeOperations"] == ["MICROSOFT.COMPUTE/VIRTUALMACHINES/DELETE",
                                          "MICROSOFT.COMPUTE/VIRTUALMACHINES/WRITE"]
    assert summary["failedOperations"] == {"MICROSOFT.COMPUTE/VIRTUALMACHINES/WRITE": 1}
    assert summary["partial"] is False and summary["from"] == "2026-11-26T09:00:00.000000Z"
    [call] = logs.calls_to("POST", f"/v1/workspaces/{WORKSPACE}/query")
    sent = call.json()
    assert sent["timespan"].startswith("2026-11-26T09:00:00") and "2026-11-26T11:00:00" in sent["timespan"]
    assert sent["query"].startswith("AzureActivity\n")
    assert f"=~ '{PRINCIPAL}'" in sent["query"] and f"'{RG.lower()}'" in sent["query"]
    assert json.loads(json.dumps(summary)) == summary  # fit for an audit event


def test_a_partial_result_is_returned_marked_partial_with_its_error(logs: FakeLogAnalytics) -> None:
    logs.result = {
        "tables": [table([["MICROSOFT.WEB/SITES/RESTART/ACTION", 1, 0]])],
        "error": {"code": "PartialError", "message": "There were some errors when processing your query.",
                  "details": [{"code": "EngineError", "message": "Something went wrong processing your query",
                               "innererror": {"code": "-2133196797", "message": "Query result set has exceeded the "
                                              "internal data size limit"}}]},
    }
    reader = AzureActivity(WORKSPACE, StaticCredential(fake_loganalytics.TOKEN), endpoint=logs.url)

    summary = reader.summarize(PRINCIPAL, RG, START, END)

    assert summary is not None and summary["partial"] is True and summary["operations"] == 1
    assert summary["error"].startswith("PartialError")


def sdk_client(logs: FakeLogAnalytics) -> Any:
    from azure.core.pipeline.policies import HeadersPolicy
    from azure.monitor.query import LogsQueryClient

    return LogsQueryClient(StaticCredential("unused"), endpoint=logs.url, retry_total=0,
                           authentication_policy=HeadersPolicy({"Authorization": f"Bearer {fake_loganalytics.TOKEN}"}))


def test_a_ready_client_is_used_and_errors_become_jitgate_s(logs: FakeLogAnalytics) -> None:
    reader = AzureActivity(WORKSPACE, sdk_client(logs))
    assert reader.summarize(PRINCIPAL, RG, START, END) is not None

    logs.fail("POST", "/query", error(429, "ThrottledError", headers={"Retry-After": "4"}))
    with pytest.raises(TransientError) as raised:
        reader.summarize(PRINCIPAL, RG, START, END)
    assert raised.value.retry_after == 4.0
    logs.fail("POST", "/query", error(403, "InsufficientAccessError", "The provided credentials have insufficient "
                                      "access to perform the requested operation"))
    with pytest.raises(PermanentError, match="403"):
        reader.summarize(PRINCIPAL, RG, START, END)


def test_the_query_takes_only_an_object_id_and_quotes_the_scope() -> None:
    with pytest.raises(PermanentError, match="not an Entra object id"):
        activity_query("x' or 1 == 1 or Caller == '", RG, START, END)
    query = activity_query(PRINCIPAL, f"{SUB}/resourceGroups/rg'x", START, END)
    assert "'/subscriptions/11111111-1111-4111-8111-111111111111/resourcegroups/rg\\'x'" in query


# ---------------------------------------------------------------- the audit archive, in Azurite

AZURITE_DIR = Path(__file__).resolve().parent / ".azurite"
AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's published development key (the same for everyone), not a secret.
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@pytest.fixture(scope="session")
def azurite() -> Iterator[str]:
    """A Blob endpoint of Azurite (npm), installed under tests/azure/.azurite on first use."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm is not installed: Azurite, the Blob Storage emulator, runs on Node.js")
    program = AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob"
    if not program.exists():
        subprocess.run(["npm", "install", "--prefix", str(AZURITE_DIR), "--no-audit", "--no-fund", "azurite"],
                       check=True, capture_output=True, timeout=600)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        # NB. No --location: Azurite refuses it together with --inMemoryPersistence.
        [str(program), "--silent", "--inMemoryPersistence", "--skipApiVersionCheck", "--blobHost", "127.0.0.1",
         "--blobPort", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    output = process.stderr.read() if process.stderr else b""
                    raise RuntimeError(f"Azurite did not start: {output!r}") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
    finally:
        process.terminate()
        process.wait(timeout=10)


AZURITE_CREDENTIAL = {"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY}


def storage(azurite: str, **options: Any) -> Any:
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient(azurite, credential=AZURITE_CREDENTIAL, **options)


@pytest.fixture
def archive(azurite: str) -> BlobAuditArchive:
    container = f"audit-{uuid.uuid4().hex[:12]}"
    storage(azurite).create_container(container)
    return BlobAuditArchive(azurite, container, AZURITE_CREDENTIAL)


def read_blob(archive: BlobAuditArchive, name: str) -> tuple[bytes, dict[str, str], Any]:
    blob = storage(archive.account_url).get_blob_client(archive.container, name)
    properties = blob.get_blob_properties()
    return blob.download_blob().readall(), dict(properties.metadata), properties.etag


def closed_requests_world() -> tuple[World, list[str]]:
    """Day D (2026-11-26): r1 granted and revoked, r2 rejected by policy. Day D+1: r3 revoked just after
    midnight, r4 still active."""
    world = World()
    r1 = world.submit(access_request(duration="PT1H"))
    r2 = world.submit(access_request(role="Owner"))
    world.advance(3600)
    r3 = world.submit(access_request(duration="PT8H"))
    world.advance(timedelta(hours=14, minutes=30).total_seconds())  # 00:30 the next day: r3's revoke is late
    r4 = world.submit(access_request(duration="PT8H"))
    assert [world.state(r) for r in (r1, r2, r3, r4)] == ["revoked", "rejected", "revoked", "active"]
    return world, [r1, r2, r3, r4]


def test_each_finished_day_gets_one_blob_of_the_chains_of_requests_closed_that_day(
    archive: BlobAuditArchive,
) -> None:
    world, (r1, r2, r3, _) = closed_requests_world()
    day = datetime(2026, 11, 26, tzinfo=UTC)

    names = archive.archive_closed(world.store, day, day + timedelta(days=2, hours=1))

    assert names == ["closed-requests/2026/11/26.jsonl", "closed-requests/2026/11/27.jsonl"]
    data, metadata, _ = read_blob(archive, names[0])
    lines = data.decode().splitlines()
    events = [json.loads(line) for line in lines]
    assert [canonical_json(e) for e in events] == lines  # each line is exactly what its hash covers
    assert sorted({e["requestId"] for e in events}) == sorted([r1, r2])
    for request_id in (r1, r2):
        chain = world.store.chain(request_id)
        assert [e for e in events if e["requestId"] == request_id] == [e.document() for e in chain]
        assert verify_chain(request_id, chain).ok
    assert metadata["requests"] == "2" and metadata["events"] == str(len(lines)) and metadata["brokenchains"] == "0"
    next_day, _, _ = read_blob(archive, names[1])
    assert {json.loads(line)["requestId"] for line in next_day.decode().splitlines()} == {r3}


@pytest.mark.parametrize("tampering", ["last event rewritten, hash recomputed", "tail truncated"])
def test_a_chain_whose_end_is_not_where_its_record_says_is_archived_as_stored_and_counted_broken(
    tampering: str, archive: BlobAuditArchive, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a day with two closed requests, the first asked to revoke once more the next day (too late: refused,
    # and audited after its closing event), and its chain edited in the store so that every link still holds
    world, (r1, _, _, _) = closed_requests_world()
    world.lifecycle.request_revoke(r1, JANE, is_admin=False)
    chain = world.store.chain(r1)
    assert chain[-1].type.value == "access.refused"
    if tampering == "tail truncated":
        world.store.truncate(r1, len(chain) - 1)
    else:
        doc = chain[-1].document()
        TAMPERINGS["actor changed, hash recomputed"].edit(doc)
        world.store.rewrite(AuditEvent.model_validate(doc))
    assert verify_chain(r1, world.store.chain(r1)).ok
    day = datetime(2026, 11, 26, tzinfo=UTC)

    # WHEN the day is archived
    [name, _] = archive.archive_closed(world.store, day, day + timedelta(days=2, hours=1))

    # THEN the chains are archived as stored, and the blob says one of them is broken: r1's record disagrees
    data, metadata, _ = read_blob(archive, name)
    archived = [json.loads(line) for line in data.decode().splitlines()]
    assert [e for e in archived if e["requestId"] == r1] == [e.document() for e in world.store.chain(r1)]
    assert metadata["requests"] == "2" and metadata["brokenchains"] == "1"
    assert f"archive {name}: 1 chain(s) fail verification" in caplog.text


def test_archiving_again_keeps_the_first_blob_of_a_day(archive: BlobAuditArchive) -> None:
    world, _ = closed_requests_world()
    day = datetime(2026, 11, 26, tzinfo=UTC)
    [name] = archive.archive_closed(world.store, day, day + timedelta(days=1, minutes=15))
    first = read_blob(archive, name)

    world.submit(access_request(role="Owner"))  # more happens; the day's blob must not change
    again = archive.archive_closed(world.store, day - timedelta(days=1), day + timedelta(days=1, minutes=15))

    assert again == ["closed-requests/2026/11/25.jsonl", name]
    assert read_blob(archive, name) == first
    empty, metadata, _ = read_blob(archive, again[0])
    assert empty == b"" and metadata["requests"] == "0"  # "nothing closed" is said, not left unsaid


def test_a_day_is_archived_only_once_it_has_ended_and_settled(archive: BlobAuditArchive) -> None:
    world, _ = closed_requests_world()
    day = datetime(2026, 11, 26, tzinfo=UTC)

    assert archive.archive_closed(world.store, day, day + timedelta(days=1, minutes=5)) == []
    assert archive.archive_closed(world.store, day + timedelta(hours=12), day + timedelta(hours=23)) == []


def test_a_missing_archive_container_is_permanent(azurite: str) -> None:
    missing = BlobAuditArchive(azurite, f"missing-{uuid.uuid4().hex[:8]}", AZURITE_CREDENTIAL)
    world, _ = closed_requests_world()
    day = datetime(2026, 11, 26, tzinfo=UTC)

    with pytest.raises(PermanentError, match="does not exist"):
        missing.archive_closed(world.store, day, day + timedelta(days=1, hours=1))


def test_storage_that_cannot_be_reached_is_transient() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
    container = storage(url, retry_total=0).get_container_client("audit")
    unreachable = BlobAuditArchive(url, "audit", container_client=container)
    day = datetime(2026, 11, 26, tzinfo=UTC)

    with pytest.raises(TransientError):
        unreachable.archive_closed(World().store, day, day + timedelta(days=1, hours=1))


# ---------------------------------------------------------------- live, against a real tenant


def live(*names: str) -> dict[str, str]:
    """The named settings, or a skip saying what is missing."""
    missing = [n for n in names if not os.environ.get(n)]
    if os.environ.get("JITGATE_LIVE_AZURE") != "1" or missing:
        pytest.skip(f"live Azure tests need JITGATE_LIVE_AZURE=1 and {', '.join(names)}"
                    + (f" (missing: {', '.join(missing)})" if missing else ""))
    return {n: os.environ[n] for n in names}


def test_live_rbac_grant_read_back_and_revoke() -> None:
    env = live("JITGATE_LIVE_SCOPE", "JITGATE_LIVE_PRINCIPAL_ID")
    scope, principal_id = env["JITGATE_LIVE_SCOPE"], env["JITGATE_LIVE_PRINCIPAL_ID"]
    provider = AzureRbac(arm_token_provider(), target_scopes=[scope])
    key = GrantKey.of("azure-rbac", principal_id, provider.resolve_role(scope, "Reader"), scope)
    try:
        created = provider.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID),
                                             os.environ.get("JITGATE_LIVE_PRINCIPAL_TYPE", "User"))
        assert provider.get_assignment(scope, created.name) == created
        assert created in provider.list_marked()
    finally:
        provider.delete_assignment(scope, key.assignment_name())
    assert provider.get_assignment(scope, key.assignment_name()) is None


def test_live_graph_groups() -> None:
    from shared.adapters.azure.graph import graph_token_provider

    env = live("JITGATE_LIVE_PRINCIPAL_ID")
    assert isinstance(GraphDirectory(graph_token_provider()).groups_of(env["JITGATE_LIVE_PRINCIPAL_ID"]), frozenset)


def test_live_activity_summary() -> None:
    env = live("JITGATE_LIVE_WORKSPACE_ID", "JITGATE_LIVE_SCOPE", "JITGATE_LIVE_PRINCIPAL_ID")
    end = datetime.now(UTC)
    summary = AzureActivity(env["JITGATE_LIVE_WORKSPACE_ID"]).summarize(
        env["JITGATE_LIVE_PRINCIPAL_ID"], env["JITGATE_LIVE_SCOPE"], end - timedelta(days=1), end)
    assert summary is not None and "operations" in summary

