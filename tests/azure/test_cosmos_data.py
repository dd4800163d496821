"""The `cosmos-data` provider against the fake ARM's Cosmos DB data-plane RBAC (tests/azure/fake_arm_cosmos.py):
the documented body under the deterministic name, long-running operations followed to their end, roles by
name or id, access granted outside jitgate left alone, what the spec does not say handled both ways, failures
told transient or permanent, tokens kept on ARM, and the lifecycle granting, revoking and reconciling through it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from shared.adapters.azure.arm import ArmClient, ArmFailure
from shared.adapters.azure.cosmos_data import COSMOS_API_VERSION, CosmosDataGrants
from shared.domain.errors import AssignmentExists, PermanentError, TransientError
from shared.domain.ledger import GrantKey, marker_for
from shared.domain.policy import Policy
from tests.azure import fake_arm
from tests.azure.fake_arm import FakeArm, Tenant
from tests.azure.fake_arm_cosmos import DATA_CONTRIBUTOR, DATA_READER
from tests.azure.fake_http import Reply, error
from tests.fakes.world import JANE, World, access_request

SUB = "/subscriptions/11111111-1111-4111-8111-111111111111"
ACCOUNT = f"{SUB}/resourceGroups/rg-payments-prod/providers/Microsoft.DocumentDB/databaseAccounts/cosmos-payments"
OTHER_ACCOUNT = ACCOUNT.replace("cosmos-payments", "cosmos-orders")
CONTAINER = f"{ACCOUNT}/dbs/Payments/colls/Ledger"
REQUEST_ID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"


@pytest.fixture
def arm() -> Iterator[FakeArm]:
    server = FakeArm()
    yield server
    server.close()


@pytest.fixture
def tenant(arm: FakeArm) -> tuple[Tenant, str]:
    made = arm.new_tenant()
    for account in (ACCOUNT, OTHER_ACCOUNT):
        arm.seed_cosmos_account(made[0].cosmos, account)
        arm.seed_cosmos_database(made[0].cosmos, account, "Payments", ("Ledger", "audit"))
    return made


@pytest.fixture
def cosmos(tenant: tuple[Tenant, str]) -> Iterator[CosmosDataGrants]:
    provider = CosmosDataGrants(lambda: fake_arm.TOKEN, tenant[1], accounts=[ACCOUNT], poll_interval=0.0)
    yield provider
    provider.close()


def key(role: str = DATA_READER, scope: str = ACCOUNT, principal: str | None = None) -> GrantKey:
    return GrantKey.of("cosmos-data", principal or str(uuid.uuid4()), role, scope)


def create(cosmos: CosmosDataGrants, k: GrantKey) -> Any:
    return cosmos.create_assignment(k, k.assignment_name(), marker_for(REQUEST_ID))


def test_a_grant_puts_the_documented_body_and_follows_the_operation_to_its_end(
        arm: FakeArm, tenant: tuple[Tenant, str], cosmos: CosmosDataGrants) -> None:
    # GIVEN the service answers a PUT with 202 and an operation that reports InProgress twice
    tenant[0].cosmos.polls = 2
    k = key(scope=CONTAINER)
    # WHEN jitgate grants Data Reader on a container
    created = create(cosmos, k)
    # THEN it PUT the spec's body under the grant's deterministic name, the scope spelt as the account spells its
    # database and container (Cosmos DB ids are case-sensitive; the grant key is lower-case)
    [put] = arm.calls_to("PUT", "/sqlRoleAssignments/")
    assert put.path.endswith(f"{ACCOUNT}/sqlRoleAssignments/{k.assignment_name()}")
    assert put.query["api-version"] == COSMOS_API_VERSION == "2024-11-15"
    assert k.scope == CONTAINER.lower()
    assert put.json() == {"properties": {"roleDefinitionId": f"{ACCOUNT}/sqlRoleDefinitions/{DATA_READER}",
                                         "scope": CONTAINER, "principalId": k.principal_id}}
    # AND followed the operation status (not the Location) until it succeeded, then read the assignment back
    assert len(arm.calls_to("GET", "/operationsStatus/")) == 3 and not arm.calls_to("GET", "/operationResults/")
    assert created.key == k and created.name == k.assignment_name() and created.description.startswith("jitgate:")
    assert cosmos.list_marked() == [created]


@pytest.mark.parametrize(("scope", "problem"), [
    (f"{ACCOUNT}/dbs/orders", "has no database 'orders'"),
    (f"{ACCOUNT}/dbs/payments/colls/journal", "has no container of database Payments 'journal'"),
    (f"{ACCOUNT}/dbs/PAYMENTS/colls/AUDIT", None),
])
def test_a_database_or_container_is_found_in_any_case_and_a_missing_one_is_refused(
        arm: FakeArm, cosmos: CosmosDataGrants, scope: str, problem: str | None) -> None:
    k = key(scope=scope)
    if problem is None:
        assert create(cosmos, k).scope == f"{ACCOUNT}/dbs/Payments/colls/audit"
        return
    with pytest.raises(PermanentError, match=problem):
        create(cosmos, k)
    assert not arm.calls_to("PUT")


def test_ids_that_differ_only_in_case_are_refused(arm: FakeArm, tenant: tuple[Tenant, str],
                                                  cosmos: CosmosDataGrants) -> None:
    arm.seed_cosmos_database(tenant[0].cosmos, ACCOUNT, "payments")
    with pytest.raises(PermanentError, match="databases Payments, payments, which differ only in case"):
        create(cosmos, key(scope=f"{ACCOUNT}/dbs/Payments"))


def test_a_service_that_answers_at_once_is_read_back_too(tenant: tuple[Tenant, str], cosmos: CosmosDataGrants) -> None:
    tenant[0].cosmos.asynchronous = False
    k = key()
    assert create(cosmos, k).key == k
    cosmos.delete_assignment(ACCOUNT, k.assignment_name())
    assert cosmos.find_assignment(k) is None


def test_an_operation_followed_by_its_location_only(arm: FakeArm, tenant: tuple[Tenant, str],
                                                    cosmos: CosmosDataGrants) -> None:
    # GIVEN an answer that names only a Location (the other header of ARM's async pattern)
    k = key()
    path = f"/t/{tenant[1].rsplit('/', 1)[-1]}{ACCOUNT}/sqlRoleAssignments/{k.assignment_name()}"
    op = f"{tenant[1]}{SUB}/providers/Microsoft.DocumentDB/locations/westeurope/operationResults/x"
    arm.fail("PUT", path, Reply(202, None, {"Location": f"{op}?api-version={COSMOS_API_VERSION}"}))
    arm.fail("GET", "/operationResults/x", Reply(202, None, {"Retry-After": "0"}))
    arm.fail("GET", "/operationResults/x", Reply(200, {}))
    # WHEN jitgate grants THEN it waits on the Location, and what it reads back decides (nothing was made)
    with pytest.raises(TransientError, match="accepted but not visible yet"):
        create(cosmos, k)
    assert len(arm.calls_to("GET", "/operationResults/x")) == 2


@pytest.mark.parametrize(("code", "kind"), [("BadRequest", PermanentError), ("InternalServerError", TransientError)])
def test_a_failed_operation_is_its_error(tenant: tuple[Tenant, str], cosmos: CosmosDataGrants, code: str,
                                         kind: type[Exception]) -> None:
    tenant[0].cosmos.fail_next_operation = (code, "it went wrong")
    with pytest.raises(kind, match=f"the operation failed: {code}: it went wrong"):
        create(cosmos, key())
    assert cosmos.list_marked() == []


def test_an_operation_still_running_after_the_timeout_is_transient(tenant: tuple[Tenant, str]) -> None:
    tenant[0].cosmos.polls = 10_000
    slow = CosmosDataGrants(lambda: fake_arm.TOKEN, tenant[1], accounts=[ACCOUNT], operation_timeout=0.2,
                            poll_interval=0.05)
    with pytest.raises(TransientError, match="still running after 0 s"):
        create(slow, key())


@pytest.mark.parametrize(("role", "expected"), [
    ("Cosmos DB Built-in Data Reader", DATA_READER), ("cosmos db built-in data contributor", DATA_CONTRIBUTOR),
    (DATA_READER, DATA_READER), (f"{ACCOUNT}/sqlRoleDefinitions/{DATA_CONTRIBUTOR}", DATA_CONTRIBUTOR),
    ("Ledger Auditor", "a1b2c3d4-0000-4000-8000-000000000001"), ("A1B2C3D4-0000-4000-8000-000000000001",
                                                                 "a1b2c3d4-0000-4000-8000-000000000001"),
])
def test_roles_by_name_in_any_case_or_by_id(arm: FakeArm, tenant: tuple[Tenant, str], cosmos: CosmosDataGrants,
                                           role: str, expected: str) -> None:
    arm.seed_cosmos_role(tenant[0].cosmos, ACCOUNT, "a1b2c3d4-0000-4000-8000-000000000001", "Ledger Auditor")
    assert cosmos.resolve_role(CONTAINER, role) == expected
    calls = len(arm.calls)
    assert cosmos.resolve_role(ACCOUNT, role) == expected  # found once per account, then kept
    assert len(arm.calls) == calls


@pytest.mark.parametrize("scope", [
    OTHER_ACCOUNT, f"{SUB}/resourceGroups/rg-payments-prod", f"{ACCOUNT}/colls/ledger", f"{ACCOUNT}/../x",
])
def test_only_scopes_in_the_configured_accounts_are_served(arm: FakeArm, cosmos: CosmosDataGrants,
                                                          scope: str) -> None:
    calls = len(arm.calls)
    with pytest.raises(PermanentError, match=r"JITGATE_COSMOS_ACCOUNTS|InvalidScope"):
        cosmos.resolve_role(scope, DATA_READER)
    assert len(arm.calls) == calls


def test_access_granted_outside_jitgate_is_preexisting_and_never_touched(
        arm: FakeArm, tenant: tuple[Tenant, str], cosmos: CosmosDataGrants) -> None:
    k = key(scope=CONTAINER)
    seeded = arm.seed_cosmos_assignment(tenant[0].cosmos, CONTAINER, k.principal_id, DATA_READER)

    with pytest.raises(AssignmentExists) as raised:
        create(cosmos, k)

    assert raised.value.existing_name == seeded["name"]
    assert cosmos.list_marked() == []
    cosmos.delete_assignment(CONTAINER, k.assignment_name())
    assert list(tenant[0].cosmos.accounts[ACCOUNT.lower()].assignments.values()) == [seeded]
    assert not arm.calls_to("PUT") and not arm.calls_to("DELETE")


def test_the_same_grant_given_between_jitgates_look_and_its_put(
        arm: FakeArm, tenant: tuple[Tenant, str], cosmos: CosmosDataGrants) -> None:
    # GIVEN someone assigns the grant under their own id while jitgate is looking (its first list sees nothing)
    k = key()
    seeded = arm.seed_cosmos_assignment(tenant[0].cosmos, ACCOUNT, k.principal_id, DATA_READER)
    arm.fail("GET", r"/sqlRoleAssignments$", Reply(200, {"value": []}))
    # WHEN the service refuses a second assignment of one grant (409) THEN the hold is preexisting
    with pytest.raises(AssignmentExists) as raised:
        create(cosmos, k)
    assert raised.value.existing_name == seeded["name"]
    # AND WHEN it stores both instead THEN jitgate's is jitgate's, revoked alone, and the other stays
    tenant[0].cosmos.duplicates = "allowed"
    arm.fail("GET", r"/sqlRoleAssignments$", Reply(200, {"value": []}))
    created = create(cosmos, k)
    assert cosmos.find_assignment(k) == created and cosmos.list_marked() == [created]
    cosmos.delete_assignment(ACCOUNT, k.assignment_name())
    assert cosmos.find_assignment(k) is not None and cosmos.find_assignment(k).name == seeded["name"]  # type: ignore[union-attr]


def test_names_must_be_guids_and_another_grants_name_is_refused_without_a_put(
        arm: FakeArm, cosmos: CosmosDataGrants) -> None:
    k = key()
    create(cosmos, k)
    other = key(DATA_CONTRIBUTOR, principal=k.principal_id)
    with pytest.raises(PermanentError, match="InvalidRoleAssignmentId"):
        cosmos.create_assignment(other, "not-a-guid", marker_for(REQUEST_ID))
    with pytest.raises(PermanentError, match="RoleAssignmentUpdateNotPermitted"):
        cosmos.create_assignment(other, k.assignment_name(), marker_for(REQUEST_ID))
    assert len(arm.calls_to("PUT")) == 1


def test_throttling_is_transient_with_the_services_wait(arm: FakeArm, cosmos: CosmosDataGrants) -> None:
    arm.fail("PUT", "/sqlRoleAssignments/", error(429, "TooManyRequests", "slow down", {"Retry-After": "7"}))
    with pytest.raises(TransientError) as raised:
        create(cosmos, key())
    assert raised.value.retry_after == 7.0


def test_a_delete_is_read_back_before_it_counts(arm: FakeArm, cosmos: CosmosDataGrants) -> None:
    k = key()
    create(cosmos, k)
    arm.fail("DELETE", "/sqlRoleAssignments/", Reply(200))  # answers OK and changes nothing
    with pytest.raises(TransientError, match="still present after the delete"):
        cosmos.delete_assignment(ACCOUNT, k.assignment_name())
    cosmos.delete_assignment(ACCOUNT, k.assignment_name())
    assert cosmos.get_assignment(ACCOUNT, k.assignment_name()) is None


def test_an_operation_url_off_arm_gets_no_token(arm: FakeArm, tenant: tuple[Tenant, str],
                                                cosmos: CosmosDataGrants) -> None:
    arm.fail("PUT", "/sqlRoleAssignments/", Reply(202, None, {"Azure-AsyncOperation": "http://evil.example/op"}))
    with pytest.raises(PermanentError, match=r"refusing to send a token to http://evil\.example"):
        create(cosmos, key())


def test_regional_arm_endpoints_may_be_polled_other_hosts_may_not() -> None:
    client = ArmClient(lambda: "t")
    assert client.may_reach(httpx.URL("https://westeurope.management.azure.com/subscriptions/x"))
    assert client.may_reach(httpx.URL("https://management.azure.com/subscriptions/x"))
    for url in ("https://management.azure.com.evil.example/x", "http://westeurope.management.azure.com/x",
                "https://evilmanagement.azure.com/x", "https://westeurope.management.azure.com:8443/x"):
        assert not client.may_reach(httpx.URL(url)), url


def test_an_error_with_its_code_at_the_top_is_read_as_well() -> None:
    response = httpx.Response(400, json={"code": "BadRequest", "message": "Failed to parse the incoming request"})
    failure = ArmFailure.of(response)
    assert (failure.code, failure.message) == ("BadRequest", "Failed to parse the incoming request")
    assert isinstance(failure.error("create"), PermanentError)


def test_a_scope_outside_the_account_is_refused_by_the_service_in_its_words(
        arm: FakeArm, tenant: tuple[Tenant, str]) -> None:
    # NB. jitgate never sends one (its scopes are checked first); this pins what the fake answers, as reported.
    response = httpx.put(f"{tenant[1]}{ACCOUNT}/sqlRoleAssignments/{uuid.uuid4()}?api-version={COSMOS_API_VERSION}",
                         headers={"Authorization": f"Bearer {fake_arm.TOKEN}"},
                         json={"properties": {"roleDefinitionId": f"{ACCOUNT}/sqlRoleDefinitions/{DATA_READER}",
                                              "scope": f"{ACCOUNT}{ACCOUNT}", "principalId": str(uuid.uuid4())}})
    assert response.status_code == 400
    said = response.json()["error"]["message"]
    assert "Expected path segment [dbs] at position [0] but found [subscriptions]" in said


# ---------------------------------------------------------------- through the lifecycle

COSMOS_POLICY = f"""\
version: 1
groups:
  engineers: ["{JANE}"]
rules:
  - name: ledger-read
    match: {{providers: [cosmos-data], roles: [Cosmos DB Built-in Data Reader], requesterGroups: [engineers],
             scopes: ["{SUB}/resourceGroups/*/providers/Microsoft.DocumentDB/databaseAccounts/cosmos-*/**"]}}
    outcome: auto
    maxDuration: PT1H
"""


def cosmos_world(cosmos: CosmosDataGrants) -> World:
    world = World()
    world.backends.providers = {**world.backends.providers, "cosmos-data": cosmos}
    world.backends.policy = Policy.from_text(COSMOS_POLICY)
    return world


def test_the_lifecycle_grants_revokes_and_reconciles_through_cosmos(tenant: tuple[Tenant, str],
                                                                     cosmos: CosmosDataGrants) -> None:
    world = cosmos_world(cosmos)
    doc = access_request(principal=JANE, role="Cosmos DB Built-in Data Reader", scope=CONTAINER, duration="PT1H")
    doc["target"]["provider"] = "cosmos-data"
    # WHEN Jane asks for an hour of Data Reader on the ledger container THEN it is assigned, under jitgate's name
    request_id = world.submit(doc)
    assert world.state(request_id) == "active"
    [assigned] = tenant[0].cosmos.accounts[ACCOUNT.lower()].assignments.values()
    assert assigned["properties"]["principalId"] == JANE
    # AND an assignment jitgate made that no hold explains is found by reconcile and removed
    orphan = key(scope=f"{ACCOUNT}/dbs/payments")
    create(cosmos, orphan)
    report = world.lifecycle.reconcile()
    assert report.orphans_removed == [orphan.assignment_name()]
    assert cosmos.find_assignment(orphan) is None
    # AND when the hour is up Jane's is deleted and confirmed gone
    world.advance(3600)
    assert world.state(request_id) == "revoked"
    assert tenant[0].cosmos.accounts[ACCOUNT.lower()].assignments == {}
    assert world.chains_ok()
    assert json.dumps(world.store.chain(f"orphan:{orphan.assignment_name()}")[0].data)
