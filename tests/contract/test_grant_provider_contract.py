"""The GrantProvider contract, written once and run against every adapter (the `postgres` one against a
real, throwaway PostgreSQL server, `azure-sql` against a fake database that parses every statement as T-SQL,
`azure-rbac` and `cosmos-data` against a fake ARM); then what only simulated planes offer (seed, fault
injection), LocalRbac's persistence, and the notifier side: Teams cards and the outbox."""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import pytest

from shared.adapters.azure.roles import AZURE_BUILTIN_ROLES
from shared.adapters.embedded.outbox import OutboxNotifier, read_outbox
from shared.adapters.embedded.rbac import LocalRbac
from shared.cards import ADAPTIVE_CARD_CONTENT_TYPE, adaptive_card, render_text, teams_message
from shared.domain.errors import AssignmentExists, PermanentError, TransientError
from shared.domain.ledger import MARKER_PREFIX, Assignment, GrantKey, marker_for
from shared.ports import GrantProvider, Notice
from tests.azure import fake_arm, sql_world
from tests.azure.fake_arm_cosmos import DATA_CONTRIBUTOR, DATA_READER
from tests.fakes.clock import FakeClock
from tests.fakes.grants import FakeDirectory, FakeGrantProvider, FakeNotifier

CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
SCOPE = "/subscriptions/00000000-0000-0000-0000-00000000c0de/resourceGroups/rg-payments-prod"
REQUEST_ID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"


class SimulatedPlane(GrantProvider, Protocol):
    def seed(
        self, principal_id: str, role: str, scope: str, principal_type: str = "User", name: str | None = None
    ) -> Assignment: ...

    def all_assignments(self) -> list[Assignment]: ...

    def inject_fault(self, operation: str, error: Exception, times: int = 1) -> None: ...


@dataclass(frozen=True)
class Profile:
    """What the contract needs to know of a plane: two scopes, two roles (as a request names them and as
    the provider resolves them), and whether it follows ARM further (GUID names, a role catalog, principal
    types it remembers, the requesting request in each assignment's description)."""

    scope: str = SCOPE
    other_scope: str = SCOPE + "-dr"
    role_name: str = "Contributor"
    role: str = CONTRIBUTOR
    other_role: str = READER
    arm: bool = True


ARM = Profile()
POSTGRES = Profile(scope="pg-main/payments", other_scope="pg-dr/payments", role_name="payments_write",
                   role="payments_write", other_role="payments_read", arm=False)
AZURE_SQL = Profile(scope=sql_world.SCOPE, other_scope=sql_world.OTHER_SCOPE, role_name="PAYMENTS_WRITE",
                    role="payments_write", other_role="payments_read", arm=False)
COSMOS_DATA = Profile(scope=fake_arm.CONTRACT_COSMOS, other_scope=f"{fake_arm.CONTRACT_COSMOS}/dbs/payments",
                      role_name="cosmos db built-in data contributor", role=DATA_CONTRIBUTOR, other_role=DATA_READER,
                      arm=False)


@dataclass(frozen=True)
class Plane:
    provider: GrantProvider
    profile: Profile


def _postgres(request: pytest.FixtureRequest, tmp: Path) -> GrantProvider:
    world = request.getfixturevalue("pg_world")
    return world.provider()  # type: ignore[no-any-return]


# Every adapter the contract runs against. A cloud adapter joins with one line (its factory may skip
# when its test subscription is not configured).
PROVIDERS: dict[str, tuple[Callable[[pytest.FixtureRequest, Path], GrantProvider], Profile]] = {
    "fake": (lambda request, tmp: FakeGrantProvider(), ARM),
    "local": (lambda request, tmp: LocalRbac(tmp / "rbac.sqlite"), ARM),
    "azure-rbac": (lambda request, tmp: fake_arm.fake_rbac(tmp), ARM),
    "cosmos-data": (lambda request, tmp: fake_arm.fake_cosmos_data()[0], COSMOS_DATA),
    "postgres": (_postgres, POSTGRES),
    "azure-sql": (lambda request, tmp: sql_world.SqlWorld().provider(), AZURE_SQL),
}
SIMULATED: dict[str, Callable[[Path], SimulatedPlane]] = {
    "fake": lambda tmp: FakeGrantProvider(),
    "local": lambda tmp: LocalRbac(tmp / "rbac.sqlite"),
}


def _plane(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Plane]:
    factory, profile = PROVIDERS[request.param]
    built = factory(request, tmp_path)
    yield Plane(built, profile)
    if isinstance(built, LocalRbac):
        built.close()


@pytest.fixture(params=[pytest.param(name, marks=[pytest.mark.postgres] if name == "postgres" else [])
                        for name in sorted(PROVIDERS)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Plane]:
    yield from _plane(request, tmp_path)


@pytest.fixture(params=sorted(name for name, (_, profile) in PROVIDERS.items() if profile.arm))
def arm_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Plane]:
    """The planes with ARM's further semantics (see Profile)."""
    yield from _plane(request, tmp_path)


@pytest.fixture(params=sorted(SIMULATED))
def plane(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SimulatedPlane]:
    built = SIMULATED[request.param](tmp_path)
    yield built
    if isinstance(built, LocalRbac):
        built.close()


def grant_key(provider: GrantProvider, role_id: str = CONTRIBUTOR, scope: str = SCOPE,
              principal_id: str | None = None) -> GrantKey:
    return GrantKey.of(provider.name, principal_id or str(uuid.uuid4()), role_id, scope)


def key_in(target: Plane, other_role: bool = False, other_scope: bool = False,
           principal_id: str | None = None) -> GrantKey:
    p = target.profile
    return grant_key(target.provider, p.other_role if other_role else p.role,
                     p.other_scope if other_scope else p.scope, principal_id)


def create(provider: GrantProvider, key: GrantKey, request_id: str = REQUEST_ID) -> Assignment:
    return provider.create_assignment(key, key.assignment_name(), marker_for(request_id))


# ---------------------------------------------------------------- contract: roles


def test_resolve_role_by_its_name(target: Plane) -> None:
    assert target.provider.resolve_role(target.profile.scope, target.profile.role_name) == target.profile.role


@pytest.mark.parametrize("role", ["Contributor", "contributor", "CONTRIBUTOR", " Contributor "])
def test_resolve_role_by_name_ignores_case(arm_target: Plane, role: str) -> None:
    assert arm_target.provider.resolve_role(SCOPE, role) == CONTRIBUTOR


def test_resolve_role_knows_the_catalog(arm_target: Plane) -> None:
    for name, role_id in AZURE_BUILTIN_ROLES.items():
        assert arm_target.provider.resolve_role(SCOPE, name.lower()) == role_id


@pytest.mark.parametrize("role", [
    CONTRIBUTOR.upper(),
    f"/providers/Microsoft.Authorization/roleDefinitions/{CONTRIBUTOR}",
    f"/subscriptions/00000000-0000-0000-0000-00000000c0de/providers/Microsoft.Authorization/roleDefinitions/{CONTRIBUTOR}",
])
def test_resolve_role_by_id_returns_the_lower_cased_guid(arm_target: Plane, role: str) -> None:
    assert arm_target.provider.resolve_role(SCOPE, role) == CONTRIBUTOR


@pytest.mark.parametrize("role", ["Chief Wizard", "00000000-0000-0000-0000-000000000000", ""])
def test_resolve_unknown_role_is_permanent_and_names_the_role(target: Plane, role: str) -> None:
    with pytest.raises(PermanentError, match=f"unknown role '{role}'"):
        target.provider.resolve_role(target.profile.scope, role)


# ---------------------------------------------------------------- contract: assignments


def test_created_assignment_is_visible_by_name_by_key_and_as_marked(target: Plane) -> None:
    provider, scope = target.provider, target.profile.scope
    # GIVEN a grant key
    key = key_in(target)
    # WHEN it is created under its deterministic name with jitgate's marker
    created = create(provider, key)
    # THEN it can be read back every way
    assert created.name == key.assignment_name()
    assert created.key == key
    assert created.description.startswith(MARKER_PREFIX)
    assert provider.get_assignment(scope, key.assignment_name()) == created
    assert provider.find_assignment(key) == created
    assert provider.list_marked() == [created]


def test_creating_the_same_name_again_is_a_no_op(target: Plane) -> None:
    key = key_in(target)
    first = create(target.provider, key)

    again = create(target.provider, key)

    assert again == first
    assert target.provider.list_marked() == [first]


def test_an_assignment_names_the_request_that_made_it(arm_target: Plane) -> None:
    created = create(arm_target.provider, key_in(arm_target))
    assert created.marked_request_id == REQUEST_ID


def test_the_same_name_again_for_another_request_moves_the_marker_to_it(arm_target: Plane) -> None:
    provider = arm_target.provider
    # GIVEN jitgate's assignment for one request
    key = key_in(arm_target)
    first = create(provider, key)
    # WHEN a second request holding the same grant creates it again (as ARM lets a PUT change a description)
    again = create(provider, key, request_id="2b4e28ba-2fa1-11d2-883f-0016d3cca427")
    # THEN it is the same assignment, now marked for the second request
    assert (again.name, again.key) == (first.name, first.key)
    assert again.marked_request_id == "2b4e28ba-2fa1-11d2-883f-0016d3cca427"
    assert provider.list_marked() == [again]


def test_a_principal_type_other_than_the_principals_own_is_refused_for_good(arm_target: Plane) -> None:
    provider = arm_target.provider
    # GIVEN a group holding one role through jitgate
    key = grant_key(provider)
    provider.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID), "Group")
    other = grant_key(provider, role_id=READER, principal_id=key.principal_id)
    # WHEN it is assigned another role as a user, THEN that is refused and nothing is created
    with pytest.raises(PermanentError, match="UnmatchedPrincipalType"):
        provider.create_assignment(other, other.assignment_name(), marker_for(REQUEST_ID), "User")
    assert provider.find_assignment(other) is None
    # AND once its assignment is gone it is still a group: only as one is it assigned again
    provider.delete_assignment(SCOPE, key.assignment_name())
    with pytest.raises(PermanentError, match="UnmatchedPrincipalType"):
        provider.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID), "User")
    again = provider.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID), "Group")
    assert again.principal_type == "Group"


def test_the_same_grant_under_another_name_raises_assignment_exists(target: Plane) -> None:
    key = key_in(target)
    first = create(target.provider, key)

    with pytest.raises(AssignmentExists) as raised:
        target.provider.create_assignment(key, str(uuid.uuid4()), marker_for("another-request"))

    assert raised.value.existing_name == first.name
    assert target.provider.list_marked() == [first]


def test_the_same_name_for_another_grant_is_refused_for_good(target: Plane) -> None:
    key = key_in(target)
    create(target.provider, key)
    other = key_in(target, other_role=True, principal_id=key.principal_id)

    with pytest.raises(PermanentError):
        target.provider.create_assignment(other, key.assignment_name(), marker_for(REQUEST_ID))

    assert target.provider.find_assignment(other) is None


def test_the_same_name_for_another_grant_is_refused_as_arm_does(arm_target: Plane) -> None:
    key = key_in(arm_target)
    create(arm_target.provider, key)
    other = key_in(arm_target, other_role=True, principal_id=key.principal_id)

    with pytest.raises(PermanentError, match="RoleAssignmentUpdateNotPermitted"):
        arm_target.provider.create_assignment(other, key.assignment_name(), marker_for(REQUEST_ID))


def test_access_granted_outside_jitgate_blocks_the_grant_and_is_not_marked(arm_target: Plane) -> None:
    provider = arm_target.provider
    # GIVEN someone already holds the role through an assignment jitgate did not make
    key = grant_key(provider)
    manual_name = str(uuid.uuid4())
    provider.create_assignment(key, manual_name, "granted by the platform team")
    # WHEN jitgate tries to grant the same
    with pytest.raises(AssignmentExists) as raised:
        create(provider, key)
    # THEN it learns the existing name, and the assignment is never taken for one of jitgate's
    assert raised.value.existing_name == manual_name
    assert provider.list_marked() == []
    found = provider.find_assignment(key)
    assert found is not None and found.marked_request_id is None


def test_grants_differ_by_principal_role_and_scope(target: Plane) -> None:
    key = key_in(target)
    keys = [
        key,
        key_in(target),
        key_in(target, other_role=True, principal_id=key.principal_id),
        key_in(target, other_scope=True, principal_id=key.principal_id),
    ]
    for each in keys:
        create(target.provider, each)

    assert sorted(a.key for a in target.provider.list_marked()) == sorted(keys)


def test_deleted_assignment_is_gone(target: Plane) -> None:
    provider, scope = target.provider, target.profile.scope
    key = key_in(target)
    create(provider, key)

    provider.delete_assignment(scope, key.assignment_name())

    assert provider.get_assignment(scope, key.assignment_name()) is None
    assert provider.find_assignment(key) is None
    assert provider.list_marked() == []


def test_deleting_a_missing_assignment_is_a_no_op(target: Plane) -> None:
    provider, scope = target.provider, target.profile.scope
    key = key_in(target)
    other = create(provider, key_in(target))

    provider.delete_assignment(scope, key.assignment_name())
    provider.delete_assignment(scope, key.assignment_name())

    assert provider.list_marked() == [other]


def test_an_assignment_is_not_found_at_another_scope(target: Plane) -> None:
    provider, scope, elsewhere = target.provider, target.profile.scope, target.profile.other_scope
    key = key_in(target)
    create(provider, key)

    provider.delete_assignment(elsewhere, key.assignment_name())

    assert provider.get_assignment(elsewhere, key.assignment_name()) is None
    assert provider.get_assignment(scope, key.assignment_name()) is not None


def test_scopes_compare_case_insensitively(target: Plane) -> None:
    provider, scope, role = target.provider, target.profile.scope, target.profile.role
    # GIVEN an assignment created with a mixed-case scope (GrantKey() keeps case, GrantKey.of lowers it)
    principal = str(uuid.uuid4())
    mixed = GrantKey(provider.name, principal, role, scope.title())
    name = GrantKey.of(provider.name, principal, role, scope).assignment_name()
    provider.create_assignment(mixed, name, marker_for(REQUEST_ID))
    # THEN any casing of the scope finds it, and the same grant in other casing is the same grant
    assert provider.get_assignment(scope.upper(), name) is not None
    assert provider.get_assignment(scope.lower(), name) is not None
    upper = GrantKey(provider.name, principal, role, scope.upper())
    assert provider.find_assignment(upper) is not None
    with pytest.raises(AssignmentExists):
        provider.create_assignment(GrantKey.of(provider.name, principal, role, scope.upper()),
                                   str(uuid.uuid4()), marker_for(REQUEST_ID))
    # WHEN deleted through another casing THEN it is gone
    provider.delete_assignment(scope.upper(), name)
    assert provider.find_assignment(GrantKey.of(provider.name, principal, role, scope)) is None


def test_assignment_names_must_be_guids(arm_target: Plane) -> None:
    key = grant_key(arm_target.provider)

    with pytest.raises(PermanentError, match="InvalidRoleAssignmentId"):
        arm_target.provider.create_assignment(key, "not-a-guid", marker_for(REQUEST_ID))

    assert arm_target.provider.find_assignment(key) is None


def test_an_unknown_role_definition_cannot_be_assigned(target: Plane) -> None:
    role = "00000000-0000-0000-0000-000000000000" if target.profile.arm else "no_such_role"
    key = grant_key(target.provider, role_id=role, scope=target.profile.scope)

    with pytest.raises(PermanentError, match="RoleDefinitionDoesNotExist"):
        create(target.provider, key)


# ---------------------------------------------------------------- simulated planes: seed and faults


def test_seeded_access_is_preexisting(plane: SimulatedPlane) -> None:
    # GIVEN access that existed before jitgate
    principal = str(uuid.uuid4())
    seeded = plane.seed(principal.upper(), "contributor", SCOPE, principal_type="Group")
    key = GrantKey.of(plane.name, principal, CONTRIBUTOR, SCOPE)
    # THEN it is found for the grant key, blocks a jitgate create, and is not jitgate's
    assert seeded.key == key and seeded.principal_type == "Group"
    assert not seeded.description.startswith(MARKER_PREFIX)
    assert plane.find_assignment(key) == seeded
    with pytest.raises(AssignmentExists) as raised:
        plane.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID), "Group")
    assert raised.value.existing_name == seeded.name
    assert plane.list_marked() == []
    assert plane.all_assignments() == [seeded]


def test_seed_with_a_name_is_repeatable(plane: SimulatedPlane) -> None:
    name = str(uuid.uuid4())
    principal = str(uuid.uuid4())

    first = plane.seed(principal, "Reader", SCOPE, name=name)
    again = plane.seed(principal, READER, SCOPE, name=name)

    assert first == again and first.name == name
    assert len(plane.all_assignments()) == 1


def test_an_injected_transient_error_surfaces_then_the_next_call_succeeds(plane: SimulatedPlane) -> None:
    key = grant_key(plane)
    plane.inject_fault("create", TransientError("429 Too Many Requests", retry_after=2.0))

    with pytest.raises(TransientError, match="429"):
        create(plane, key)
    assert plane.all_assignments() == []  # the fault struck before anything was done

    assert create(plane, key).key == key


def test_faults_count_down_and_the_wildcard_matches_every_operation(plane: SimulatedPlane) -> None:
    key = grant_key(plane)
    create(plane, key)
    plane.inject_fault("*", TransientError("503"), times=2)
    plane.inject_fault("delete", PermanentError("403 AuthorizationFailed"))

    with pytest.raises(TransientError):
        plane.get_assignment(SCOPE, key.assignment_name())
    with pytest.raises(TransientError):
        plane.list_marked()
    assert plane.find_assignment(key) is not None
    with pytest.raises(PermanentError, match="AuthorizationFailed"):
        plane.delete_assignment(SCOPE, key.assignment_name())
    plane.delete_assignment(SCOPE, key.assignment_name())
    assert plane.find_assignment(key) is None


def test_an_unknown_fault_operation_is_refused(plane: SimulatedPlane) -> None:
    with pytest.raises(ValueError, match="unknown operation"):
        plane.inject_fault("update", TransientError("x"))


# ---------------------------------------------------------------- LocalRbac: the file


def test_local_assignments_survive_a_reopen_and_faults_do_not(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "rbac.sqlite"
    first = LocalRbac(path)
    key = grant_key(first)
    created = create(first, key)
    seeded = first.seed(str(uuid.uuid4()), "Owner", SCOPE)
    first.inject_fault("*", TransientError("only in the first instance"), times=5)
    first.close()

    reopened = LocalRbac(str(path))
    try:
        assert reopened.get_assignment(SCOPE, key.assignment_name()) == created
        assert reopened.list_marked() == [created]
        assert sorted(reopened.all_assignments(), key=lambda a: a.name) == sorted([created, seeded],
                                                                                 key=lambda a: a.name)
    finally:
        reopened.close()


def test_a_local_plane_from_before_principal_types_learns_them_from_its_assignments(tmp_path: Path) -> None:
    # GIVEN a plane file whose assignments were made before it kept a directory of principal types
    path = tmp_path / "rbac.sqlite"
    old = LocalRbac(path)
    group = str(uuid.uuid4())
    old.seed(group, "Reader", SCOPE, principal_type="Group")
    old.close()
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE principals")
    # WHEN it is opened again THEN the group is known as one
    reopened = LocalRbac(path)
    try:
        key = grant_key(reopened, principal_id=group)
        with pytest.raises(PermanentError, match="UnmatchedPrincipalType"):
            reopened.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID), "User")
    finally:
        reopened.close()


def test_local_instances_sharing_a_file_see_each_other(tmp_path: Path) -> None:
    one, two = LocalRbac(tmp_path / "rbac.sqlite"), LocalRbac(tmp_path / "rbac.sqlite")
    try:
        key = grant_key(one)
        create(one, key)
        assert two.find_assignment(key) is not None
        two.delete_assignment(SCOPE, key.assignment_name())
        assert one.find_assignment(key) is None
    finally:
        one.close()
        two.close()


def test_local_concurrent_creates_of_one_grant_make_one_assignment(tmp_path: Path) -> None:
    # GIVEN several threads, each with its own instance and connection, racing on one grant,
    # half of them under the deterministic name and half under names of their own
    path = tmp_path / "rbac.sqlite"
    LocalRbac(path).close()
    key = GrantKey.of("local", str(uuid.uuid4()), CONTRIBUTOR, SCOPE)
    outcomes: list[str] = []
    start = threading.Barrier(8)

    def race(i: int) -> None:
        rbac = LocalRbac(path)
        name = key.assignment_name() if i % 2 == 0 else str(uuid.uuid4())
        start.wait()
        try:
            outcomes.append(rbac.create_assignment(key, name, marker_for(REQUEST_ID)).name)
        except AssignmentExists as exc:
            outcomes.append(exc.existing_name)
        finally:
            rbac.close()

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # THEN exactly one assignment exists and every racer was told its name
    rbac = LocalRbac(path)
    try:
        everything = rbac.all_assignments()
        assert len(everything) == 1
        assert outcomes == [everything[0].name] * 8
    finally:
        rbac.close()


# ---------------------------------------------------------------- Teams cards


def approval_notice(**overrides: Any) -> Notice:
    fields: dict[str, Any] = {
        "kind": "approval_requested",
        "request_id": REQUEST_ID,
        "title": "Jane Doe asks for Contributor on rg-payments-prod",
        "facts": {
            "requester": "Jane Doe (jane@example.com)",
            "target": f"Contributor on {SCOPE}",
            "duration": "PT2H",
            "justification": "Rotate the payments DB firewall rule for INC-4711",
            "ticket": "INC-4711",
            "matched rule": "prod-contributor",
        },
        "reply_hints": [f"approve {REQUEST_ID} [comment]", f"deny {REQUEST_ID} <reason>"],
        "audience": ["sre-leads"],
    }
    return Notice(**{**fields, **overrides})


def card_elements(card: dict[str, Any]) -> Iterator[dict[str, Any]]:
    stack = list(card["body"])
    while stack:
        element = stack.pop(0)
        yield element
        stack.extend(element.get("items", []))


def test_teams_message_has_the_shape_a_workflows_webhook_accepts() -> None:
    message = teams_message(approval_notice())

    assert message["type"] == "message"
    assert len(message["attachments"]) == 1
    attachment = message["attachments"][0]
    assert attachment["contentType"] == ADAPTIVE_CARD_CONTENT_TYPE
    assert ADAPTIVE_CARD_CONTENT_TYPE == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard"
    assert card["version"] in ("1.4", "1.5")
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert json.loads(json.dumps(message)) == message


def test_card_shows_the_title_and_every_fact_in_order() -> None:
    notice = approval_notice()
    card = adaptive_card(notice)

    texts = [e["text"] for e in card_elements(card) if e["type"] == "TextBlock"]
    assert notice.title in texts
    assert any(REQUEST_ID in text for text in texts)
    [fact_set] = [e for e in card_elements(card) if e["type"] == "FactSet"]
    assert [f["value"] for f in fact_set["facts"]] == list(notice.facts.values())
    assert [f["title"].lower() for f in fact_set["facts"]] == list(notice.facts)


def test_card_shows_the_exact_replies_in_monospace() -> None:
    notice = approval_notice()

    blocks = [e for e in card_elements(adaptive_card(notice)) if e["type"] == "RichTextBlock"]
    runs = [run for block in blocks for run in block["inlines"]]

    assert [run["text"] for run in runs] == notice.reply_hints
    assert all(run["fontType"] == "Monospace" for run in runs)


def test_a_notice_without_replies_asks_for_none() -> None:
    card = adaptive_card(approval_notice(kind="granted", reply_hints=[], audience=[]))

    assert not [e for e in card_elements(card) if e["type"] in ("RichTextBlock", "Container")]
    assert "reply" not in json.dumps(card).lower()


def test_requester_text_cannot_become_a_hidden_link() -> None:
    facts = {"justification": "see [INC-4711](https://evil.example/login)"}

    card = adaptive_card(approval_notice(facts=facts))

    [fact_set] = [e for e in card_elements(card) if e["type"] == "FactSet"]
    value = fact_set["facts"][0]["value"]
    assert "](" not in value
    assert value.replace("\u200b", "") == facts["justification"]


def test_render_text_is_one_short_line_with_the_replies() -> None:
    line = render_text(approval_notice(title="Jane Doe asks\nfor Contributor"))

    assert "\n" not in line
    assert "approval_requested" in line and REQUEST_ID in line and "Jane Doe asks for Contributor" in line
    assert f"deny {REQUEST_ID} <reason>" in line


# ---------------------------------------------------------------- outbox notifier


def test_outbox_appends_one_parsable_line_per_notice_and_echoes(tmp_path: Path) -> None:
    # GIVEN an outbox in a directory that does not exist yet
    outbox = tmp_path / "var" / "outbox.jsonl"
    clock = FakeClock()
    echoed: list[str] = []
    notifier = OutboxNotifier(outbox, echo=echoed.append, clock=clock)
    first, second = approval_notice(), approval_notice(kind="granted", reply_hints=[])
    # WHEN two notices are sent
    notifier.notify(first)
    clock.advance(timedelta(minutes=1))
    notifier.notify(second)
    # THEN each is one line holding the Teams message, and each was echoed
    assert len(outbox.read_text(encoding="utf-8").splitlines()) == 2
    records = read_outbox(outbox)
    assert [r["kind"] for r in records] == ["approval_requested", "granted"]
    assert [r["requestId"] for r in records] == [REQUEST_ID, REQUEST_ID]
    assert records[0]["at"] == "2026-11-26T09:00:00.000000Z"
    assert records[1]["at"] == "2026-11-26T09:01:00.000000Z"
    assert records[0]["card"] == teams_message(first)
    assert echoed == [render_text(first), render_text(second)]


def test_outbox_lines_from_many_threads_never_interleave(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox.jsonl"
    notifier = OutboxNotifier(outbox, echo=None)
    big = "x" * 20_000  # larger than any write buffer, so a split write would show

    def send(thread: int) -> None:
        for i in range(25):
            notifier.notify(approval_notice(request_id=f"{thread}-{i}", facts={"justification": big}))

    threads = [threading.Thread(target=send, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    records = read_outbox(outbox)
    assert sorted(r["requestId"] for r in records) == sorted(f"{t}-{i}" for t in range(8) for i in range(25))


def test_a_missing_outbox_reads_as_empty(tmp_path: Path) -> None:
    assert read_outbox(tmp_path / "nothing-yet.jsonl") == []


def test_an_outbox_that_cannot_be_written_is_a_transient_error(tmp_path: Path) -> None:
    notifier = OutboxNotifier(tmp_path, echo=None)  # a directory, not a file

    with pytest.raises(TransientError, match="outbox"):
        notifier.notify(approval_notice())


# ---------------------------------------------------------------- the other fakes


def test_fake_notifier_keeps_notices_and_can_fail() -> None:
    notifier = FakeNotifier()
    notifier.inject_fault(TransientError("webhook 502"))

    with pytest.raises(TransientError):
        notifier.notify(approval_notice())
    notifier.notify(approval_notice())

    assert notifier.notices == [approval_notice()]
    assert notifier.of_kind("approval_requested") == [approval_notice()]


def test_fake_directory_lists_the_groups_a_principal_is_in() -> None:
    directory = FakeDirectory({"sre-leads": {"AAA", "bbb"}, "dba": {"bbb"}, "empty": set()})

    assert directory.groups_of("aaa") == frozenset({"sre-leads"})
    assert directory.groups_of("BBB") == frozenset({"sre-leads", "dba"})
    assert directory.groups_of("ccc") == frozenset()
