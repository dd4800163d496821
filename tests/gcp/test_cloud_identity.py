"""Approver and requester groups from Cloud Identity (Google groups), and from the policy file for the groups that
are not mapped: the Directory contract's promises, with Google principals."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.adapters.embedded.policy_directory import PolicyDirectory
from shared.adapters.gcp.cloudidentity import CloudIdentityDirectory
from shared.domain.errors import PermanentError, TransientError
from shared.domain.policy import Policy
from tests.azure.fake_http import Reply
from tests.gcp.fake_cloudidentity import FakeCloudIdentity
from tests.gcp.fake_iam import TOKEN

pytestmark = pytest.mark.gcp

ALICE, BOB, CAROL, JANE = (f"user:{n}@example.com" for n in ("alice", "bob", "carol", "jane"))
DEPLOY = "serviceAccount:deploy@p-1234.iam.gserviceaccount.com"
ENTRA = "aaaaaaaa-0000-4000-8000-00000000000a"
POLICY = f"""
version: 1
groups:
  approvers: []
  engineers: ["{JANE}", "{ENTRA}"]
rules:
  - {{name: r, match: {{providers: '*', roles: '*', scopes: ['/**']}}, outcome: deny, reason: never}}
"""


@pytest.fixture
def server() -> Iterator[FakeCloudIdentity]:
    fake = FakeCloudIdentity(page_size=2)
    yield fake
    fake.close()


@pytest.fixture
def directory(server: FakeCloudIdentity) -> Iterator[CloudIdentityDirectory]:
    # approvers: Alice, Bob and the nested on-call group (Carol, and Alice again); an unknown nested group is skipped
    server.group("oncall1", "oncall@example.com", ("USER", CAROL[5:]), ("USER", ALICE[5:]))
    approvers = server.group("approvers1", "approvers@example.com", ("USER", "Alice@Example.com"),
                             ("USER", BOB[5:]), ("GROUP", "oncall@example.com"), ("GROUP", "gone@example.com"),
                             ("SERVICE_ACCOUNT", DEPLOY.split(":", 1)[1]))
    found = CloudIdentityDirectory(lambda: TOKEN, {"approvers": approvers, "ghost": "groups/nobody"},
                                   PolicyDirectory(Policy.from_text(POLICY)), base_url=server.url)
    yield found
    found.close()


def test_a_google_group_has_its_transitive_members_each_once(directory: CloudIdentityDirectory) -> None:
    members = directory.members_of("approvers", 20)
    assert {p.principal_id for p in members.people} == {ALICE, BOB, CAROL, DEPLOY}
    assert members.total == 4
    first = directory.members_of("approvers", 2)
    assert len(first.people) == 2 and first.total == 4


def test_groups_of_a_google_principal_come_from_google_and_the_policy(directory: CloudIdentityDirectory) -> None:
    assert directory.groups_of("user:CAROL@example.com") == {"approvers"}
    assert directory.groups_of(JANE) == {"engineers"}
    assert directory.groups_of(ENTRA) == {"engineers"}  # an Entra principal is never looked up in Google


def test_unmapped_groups_are_the_policy_files(directory: CloudIdentityDirectory) -> None:
    members = directory.members_of("engineers", 20)
    assert {p.principal_id for p in members.people} == {JANE, ENTRA}


def test_a_google_group_that_does_not_exist_is_permanent_and_named(directory: CloudIdentityDirectory) -> None:
    with pytest.raises(PermanentError, match="no group groups/nobody"):
        directory.members_of("ghost", 20)
    with pytest.raises(PermanentError, match="sre-leads"):
        directory.members_of("sre-leads", 20)


def test_cloud_identity_unavailable_is_transient(directory: CloudIdentityDirectory,
                                                 server: FakeCloudIdentity) -> None:
    server.fail("GET", r"/memberships$", Reply(503, {"error": {"code": 503, "message": "unavailable",
                                                              "status": "UNAVAILABLE"}}))
    with pytest.raises(TransientError, match="503 UNAVAILABLE"):
        directory.members_of("approvers", 20)


def test_settings_put_google_groups_before_the_policy_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from shared.runtime import build_local
    from shared.settings import Settings

    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    runtime = build_local(Settings.from_env({"JITGATE_DATA_DIR": str(tmp_path / "data"),
                                             "JITGATE_POLICY": str(policy),
                                             "JITGATE_GCP_GROUPS": "approvers=groups/approvers1"}))
    assert isinstance(runtime.backends.directory, CloudIdentityDirectory)
    assert runtime.backends.directory.groups == {"approvers": "groups/approvers1"}
    assert runtime.backend_names["directory"] == "cloud-identity"


def test_teams_cards_mention_only_entra_people_and_count_google_ones_among_the_others() -> None:
    from shared.notices import AddressedNotifier
    from shared.ports import Notice
    from tests.fakes.grants import FakeDirectory, FakeNotifier

    # GIVEN an approver group that holds an Entra person and two Google principals
    inner = FakeNotifier()
    directory = FakeDirectory({"approvers": {ENTRA, ALICE, BOB}})
    notifier = AddressedNotifier(inner, directory)
    # WHEN approvers are asked THEN only the Entra person is @mentioned (Teams mentions by object id)
    notifier.notify(Notice(kind="approval_requested", request_id="r", title="t", audience=["approvers"]))
    [sent] = inner.notices
    assert [p.principal_id for p in sent.mentions] == [ENTRA]
    assert sent.unmentioned == {"approvers": 2}
