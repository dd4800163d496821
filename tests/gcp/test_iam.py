"""The `gcp-iam` provider against the IAM fake: what a conditional binding looks like, parallel writers that never
lose each other's bindings, access from outside jitgate left alone, expiry that holds while jitgate is down,
Google's limits, and the fake's own fidelity to the documented API (version 1 reads, blind and stale writes)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from shared.adapters.gcp.iam import (
    GRANT_TITLE,
    LAYER_TITLE,
    GcpIam,
    expiry_expression,
    iam_role_id,
)
from shared.domain.errors import AssignmentExists, PermanentError, TransientError
from shared.domain.ledger import GrantKey, marker_for
from tests.azure.fake_http import Reply
from tests.gcp.fake_iam import CONTRACT_PROJECT, TOKEN, FakeIam, Resource, World, fake_gcp_iam, shared_iam

pytestmark = pytest.mark.gcp

PROJECT = CONTRACT_PROJECT
JANE = "user:jane@example.com"
REQUEST = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
LATER = "2b4e28ba-2fa1-11d2-883f-0016d3cca427"
NOW = datetime.now(UTC).replace(microsecond=0)


until = expiry_expression


def key(member: str = JANE, role: str = "roles/viewer", scope: str = PROJECT) -> GrantKey:
    return GrantKey.of("gcp-iam", member, iam_role_id(role), scope)


def grant(provider: GcpIam, k: GrantKey, until: datetime, request: str = REQUEST) -> Any:
    return provider.create_assignment(k, k.assignment_name(), marker_for(request), "GoogleUser", until)


def post(base: str, path: str, body: Any, token: str = TOKEN) -> httpx.Response:
    return httpx.post(f"{base}{path}", json=body, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def iam() -> tuple[GcpIam, World]:
    return fake_gcp_iam()  # type: ignore[no-any-return]


def test_a_grant_is_one_conditional_binding_marked_with_its_key_and_request(iam: tuple[GcpIam, World]) -> None:
    provider, world = iam
    k = key(role="roles/cloudsql.instanceUser")
    # WHEN jitgate grants for an hour
    created = grant(provider, k, NOW + timedelta(hours=1))
    # THEN the policy has one binding for the member, ending by itself, titled with the key's name
    [binding] = shared_iam().bindings(world, PROJECT)
    assert binding == {
        "role": "roles/cloudsql.instanceUser",
        "members": ["user:jane@example.com"],
        "condition": {"title": GRANT_TITLE + k.assignment_name(), "description": marker_for(REQUEST),
                      "expression": expiry_expression(NOW + timedelta(hours=1))},
    }
    assert binding["condition"]["expression"].startswith('request.time < timestamp("')
    assert created.key == k and created.marked_request_id == REQUEST
    # AND it was written as version 3 with the etag read, after a version 3 read
    calls = shared_iam().calls_to("POST", r"/v3/projects/jitgate-payments:(get|set)IamPolicy$")
    reads = [c.json() for c in calls if c.path.endswith("getIamPolicy")]
    writes = [c.json()["policy"] for c in calls if c.path.endswith("setIamPolicy")]
    assert all(r == {"options": {"requestedPolicyVersion": 3}} for r in reads)
    assert writes and all(w["version"] == 3 and w["etag"] for w in writes)


def test_the_member_is_written_as_iam_spells_it(iam: tuple[GcpIam, World]) -> None:
    provider, world = iam
    k = key(member="serviceAccount:Deployer@jitgate-payments.iam.gserviceaccount.com")
    provider.create_assignment(k, k.assignment_name(), marker_for(REQUEST), "GoogleServiceAccount",
                               NOW + timedelta(hours=1))
    [binding] = shared_iam().bindings(world, PROJECT)
    assert binding["members"] == ["serviceAccount:deployer@jitgate-payments.iam.gserviceaccount.com"]
    with pytest.raises(PermanentError, match="UnmatchedPrincipalType"):
        provider.create_assignment(k, k.assignment_name(), marker_for(REQUEST), "GoogleUser", NOW)


def test_an_entra_principal_or_no_expiry_is_refused_before_anything_is_written(iam: tuple[GcpIam, World]) -> None:
    provider, world = iam
    entra = GrantKey.of("gcp-iam", "3f2c0000-0000-4000-8000-000000000001", "roles/viewer", PROJECT)
    with pytest.raises(PermanentError, match="not a Google principal"):
        grant(provider, entra, NOW + timedelta(hours=1))
    with pytest.raises(PermanentError, match="only with an expiry"):
        provider.create_assignment(key(), key().assignment_name(), marker_for(REQUEST), "GoogleUser", None)
    assert shared_iam().bindings(world, PROJECT) == []


def test_parallel_grants_never_lose_each_others_bindings() -> None:
    # GIVEN twelve grants on one project at once, each its own read-modify-write, whose reads overlap, backing off
    # between tries as they do in production
    provider, world = fake_gcp_iam(sleep=time.sleep)
    world.read_delay = 0.05
    keys = [key(member=f"user:dev{i}@example.com") for i in range(12)]
    start = threading.Barrier(len(keys))
    errors: list[BaseException] = []

    def run(k: GrantKey) -> None:
        start.wait()
        try:
            grant(provider, k, NOW + timedelta(hours=1))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # THEN every one of them is in the policy: the losers of each etag race read again and redid their change
    assert errors == []
    members = sorted(m for b in shared_iam().bindings(world, PROJECT) for m in b["members"])
    assert members == sorted(f"user:dev{i}@example.com" for i in range(12))
    assert world.refused_writes > 0, "the writers never raced: this test proves nothing"


def test_a_write_based_on_a_stale_read_is_redone_and_keeps_the_other_writers_binding(iam: tuple[GcpIam, World]) -> None:
    provider, world = iam
    fake = shared_iam()

    # GIVEN an admin who adds a binding between jitgate's read and jitgate's write, once
    def admin(name: str, resource: Resource) -> bool:
        fake.commit(resource, [*resource.bindings, {"role": "roles/editor", "members": ["group:ops@example.com"]}])
        return False

    fake.meddle(world, admin)
    # WHEN jitgate grants
    grant(provider, key(), NOW + timedelta(hours=1))
    # THEN its first write was refused (409 ABORTED), and the second kept the admin's binding
    assert world.refused_writes == 1
    roles = sorted(b["role"] for b in fake.bindings(world, PROJECT))
    assert roles == ["roles/editor", "roles/viewer"]


def test_a_policy_that_never_stops_changing_is_a_transient_error(iam: tuple[GcpIam, World]) -> None:
    provider, world = iam
    fake = shared_iam()
    fake.meddle(world, lambda name, resource: (fake.commit(resource, list(resource.bindings)), True)[1])
    with pytest.raises(TransientError, match="kept changing"):
        grant(provider, key(), NOW + timedelta(hours=1))
    assert world.refused_writes == provider.attempts
    world.meddlers.clear()


def test_an_unconditional_binding_is_access_from_outside_and_never_touched(iam: tuple[GcpIam, World]) -> None:
    provider, world = iam
    fake = shared_iam()
    # GIVEN Jane already holds the role without a condition
    fake.seed(world, PROJECT, "roles/viewer", JANE)
    k = key()
    # THEN a grant learns it exists outside jitgate (the hold is preexisting) and writes nothing
    with pytest.raises(AssignmentExists) as raised:
        grant(provider, k, NOW + timedelta(hours=1))
    assert raised.value.existing_name == "unconditional:roles/viewer"
    found = provider.find_assignment(k)
    assert found is not None and found.marked_request_id is None
    # AND deleting jitgate's binding (there is none) leaves the admin's alone
    provider.delete_assignment(PROJECT, k.assignment_name())
    assert fake.bindings(world, PROJECT) == [{"role": "roles/viewer", "members": [JANE]}]
    assert provider.list_marked() == []


def test_someone_elses_conditional_binding_is_not_the_role_and_is_left_alone(iam: tuple[GcpIam, World]) -> None:
    provider, world = iam
    fake = shared_iam()
    theirs = {"title": "business hours", "expression": "request.time.getHours('Europe/Berlin') < 18"}
    fake.seed(world, PROJECT, "roles/viewer", JANE, theirs)
    k = key()
    created = grant(provider, k, NOW + timedelta(hours=1))
    provider.delete_assignment(PROJECT, created.name)
    assert fake.bindings(world, PROJECT) == [{"role": "roles/viewer", "members": [JANE], "condition": theirs}]


def test_a_later_hold_moves_the_expiry_out_never_in(iam: tuple[GcpIam, World]) -> None:
    provider, world = iam
    fake = shared_iam()
    k = key()
    grant(provider, k, NOW + timedelta(hours=2))
    # WHEN a second request on the same key ends earlier, THEN the binding keeps the later end
    again = grant(provider, k, NOW + timedelta(hours=1), request=LATER)
    assert again.marked_request_id == LATER
    assert fake.has_access(world, PROJECT, "roles/viewer", JANE, NOW + timedelta(minutes=90))
    # WHEN one ends later, THEN the binding ends then
    grant(provider, k, NOW + timedelta(hours=3), request=LATER)
    assert fake.has_access(world, PROJECT, "roles/viewer", JANE, NOW + timedelta(minutes=170))
    assert len(fake.bindings(world, PROJECT)) == 1


def test_access_ends_at_expiry_even_if_jitgate_never_comes_back(iam: tuple[GcpIam, World]) -> None:
    provider, world = iam
    fake = shared_iam()
    grant(provider, key(), NOW + timedelta(minutes=30))
    # jitgate is gone from here on: nothing revokes
    assert fake.has_access(world, PROJECT, "roles/viewer", JANE, NOW + timedelta(minutes=29))
    assert not fake.has_access(world, PROJECT, "roles/viewer", JANE, NOW + timedelta(minutes=30))


def test_expired_bindings_are_still_listed_so_reconcile_removes_them(iam: tuple[GcpIam, World]) -> None:
    provider, world = iam
    # GIVEN a jitgate binding that expired while nobody removed it (the pile-up other tools leave)
    k = key()
    grant(provider, k, NOW - timedelta(minutes=5))
    # THEN reconcile sees it, and removing it empties the policy
    assert [a.key for a in provider.list_marked()] == [k]
    provider.delete_assignment(PROJECT, k.assignment_name())
    assert shared_iam().bindings(world, PROJECT) == []


def test_sweeping_removes_only_expired_bindings_of_the_prefix(iam: tuple[GcpIam, World]) -> None:
    provider, world = iam
    fake = shared_iam()
    provider.put_titled(PROJECT, LAYER_TITLE + "old", JANE, ["roles/cloudsql.client"], "d", NOW - timedelta(hours=1))
    provider.put_titled(PROJECT, LAYER_TITLE + "new", JANE, ["roles/cloudsql.client"], "d", NOW + timedelta(hours=1))
    grant(provider, key(), NOW - timedelta(hours=1))
    assert provider.sweep_expired(PROJECT, NOW) == 1
    titles = sorted(b["condition"]["title"] for b in fake.bindings(world, PROJECT))
    assert titles == sorted([LAYER_TITLE + "new", GRANT_TITLE + key().assignment_name()])


def test_other_bindings_and_audit_configs_survive_every_change(iam: tuple[GcpIam, World]) -> None:
    provider, world = iam
    fake = shared_iam()
    fake.seed(world, PROJECT, "roles/owner", "user:admin@example.com")
    world.resources[PROJECT].audit_configs = [{"service": "allServices", "auditLogConfigs": [{"logType": "DATA_READ"}]}]
    created = grant(provider, key(), NOW + timedelta(hours=1))
    provider.delete_assignment(PROJECT, created.name)
    assert fake.bindings(world, PROJECT) == [{"role": "roles/owner", "members": ["user:admin@example.com"]}]
    assert world.resources[PROJECT].audit_configs[0]["service"] == "allServices"


def test_google_limits_give_an_error_that_says_which_and_writes_nothing(iam: tuple[GcpIam, World]) -> None:
    provider, world = iam
    fake = shared_iam()
    resource = world.resources[PROJECT]
    fake.commit(resource, [{"role": "roles/viewer", "members": [f"user:u{i}@example.com" for i in range(1500)]}])
    with pytest.raises(PermanentError, match=r"would name 1,501 principals; Google allows 1,500"):
        grant(provider, key(role="roles/browser"), NOW + timedelta(hours=1))
    fake.commit(resource, [{"role": "roles/viewer", "members": [JANE],
                            "condition": {"title": f"t{i}", "expression": until(datetime(2030, 1, i + 1, tzinfo=UTC))}}
                           for i in range(20)])
    with pytest.raises(PermanentError, match="would have 21 bindings of roles/viewer"):
        grant(provider, key(), NOW + timedelta(hours=1))
    assert resource.writes == 2  # the two commits above, nothing from jitgate


def test_transient_and_permanent_answers(iam: tuple[GcpIam, World]) -> None:
    provider, _ = iam
    fake = shared_iam()
    fake.fail("POST", r"/v3/projects/jitgate-payments:getIamPolicy$",
              Reply(503, {"error": {"code": 503, "message": "The service is currently unavailable.",
                                    "status": "UNAVAILABLE"}}, {"Retry-After": "3"}))
    with pytest.raises(TransientError, match="503 UNAVAILABLE") as raised:
        provider.find_assignment(key())
    assert raised.value.retry_after == 3.0
    fake.fail("POST", r"/v3/projects/jitgate-payments:setIamPolicy$",
              Reply(403, {"error": {"code": 403, "message": "Permission 'resourcemanager.projects.setIamPolicy' "
                                    "denied", "status": "PERMISSION_DENIED"}}))
    with pytest.raises(PermanentError, match="PERMISSION_DENIED"):
        grant(provider, key(), NOW + timedelta(hours=1))


def test_an_unknown_role_is_refused_by_name(iam: tuple[GcpIam, World]) -> None:
    provider, _ = iam
    with pytest.raises(PermanentError, match=r"unknown role 'roles/chief\.wizard'"):
        provider.resolve_role(PROJECT, "roles/chief.wizard")
    assert provider.resolve_role(PROJECT, "roles/cloudsql.instanceUser") == "roles/cloudsql.instance%55ser"


# ---------------------------------------------------------------- the fake keeps Google's rules


@pytest.fixture
def world() -> tuple[FakeIam, World, str]:
    fake = shared_iam()
    w, base = fake.new_world(PROJECT)
    fake.seed(w, PROJECT, "roles/viewer", JANE, {"title": "t", "expression": until(datetime(2030, 1, 1, tzinfo=UTC))})
    return fake, w, base


def test_the_fake_shows_a_version_1_reader_withcond_roles_and_no_conditions(world: tuple[FakeIam, World, str]) -> None:
    _, _, base = world
    v1 = post(base, f"/v3/{PROJECT}:getIamPolicy", {"options": {"requestedPolicyVersion": 1}}).json()
    assert v1["version"] == 1 and "condition" not in v1["bindings"][0]
    assert v1["bindings"][0]["role"].startswith("roles/viewer_withcond_")
    v3 = post(base, f"/v3/{PROJECT}:getIamPolicy", {"options": {"requestedPolicyVersion": 3}}).json()
    assert v3["version"] == 3 and v3["bindings"][0]["condition"]["title"] == "t"
    bad = post(base, f"/v3/{PROJECT}:getIamPolicy", {"options": {"requestedPolicyVersion": 2}})
    assert bad.status_code == 400 and bad.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_the_fake_refuses_what_google_refuses(world: tuple[FakeIam, World, str]) -> None:
    _, w, base = world
    v1 = post(base, f"/v3/{PROJECT}:getIamPolicy", {"options": {"requestedPolicyVersion": 1}}).json()
    v3 = post(base, f"/v3/{PROJECT}:getIamPolicy", {"options": {"requestedPolicyVersion": 3}}).json()

    def status(policy: dict[str, Any]) -> tuple[int, str]:
        answer = post(base, f"/v3/{PROJECT}:setIamPolicy", {"policy": policy})
        return answer.status_code, answer.json().get("error", {}).get("status", "OK")

    # a version 1 read-modify-write of a conditional policy, with its etag
    assert status(v1) == (400, "INVALID_ARGUMENT")
    # a condition in a version 1 policy
    assert status({**v3, "version": 1}) == (400, "INVALID_ARGUMENT")
    # conditions that do not parse, or have no title
    for condition in ({"title": "x", "expression": "request.time < timestamp(\"2030-01-01\")"},
                      {"title": "x", "expression": "request.time < (timestamp(\"2030-01-01T00:00:00Z\")"},
                      {"expression": "request.time < timestamp(\"2030-01-01T00:00:00Z\")"}):
        binding = {"role": "roles/viewer", "members": [JANE], "condition": condition}
        assert status({**v3, "bindings": [binding]}) == (400, "INVALID_ARGUMENT")
    # a stale etag, then the right one
    assert status({**v3, "etag": "BwWWja0YfJA="}) == (409, "ABORTED")
    assert status(v3) == (200, "OK")
    # no token
    assert post(base, f"/v3/{PROJECT}:getIamPolicy", {}, token="wrong").status_code == 401
    assert post(base, "/v3/projects/someone-elses:getIamPolicy", {}).status_code == 403
    assert w.refused_writes == 1


def test_a_blind_version_1_write_drops_the_conditions_as_google_warns(world: tuple[FakeIam, World, str]) -> None:
    fake, w, base = world
    answer = post(base, f"/v3/{PROJECT}:setIamPolicy",
                  {"policy": {"version": 1, "bindings": [{"role": "roles/viewer", "members": [JANE]}]}})
    assert answer.status_code == 200
    assert fake.bindings(w, PROJECT) == [{"role": "roles/viewer", "members": [JANE]}]


class FakeCredentials:
    """google-auth's Credentials as GoogleToken uses them: token, expiry, refresh(request)."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.token: str | None = None
        self.expiry: datetime | None = None
        self.refreshed = 0
        self.fail = fail

    def refresh(self, request: object) -> None:
        if self.fail is not None:
            raise self.fail
        self.refreshed += 1
        self.token = f"token-{self.refreshed}"
        self.expiry = (datetime.now(UTC) + timedelta(hours=1)).replace(tzinfo=None)


def test_a_google_token_is_reused_until_near_its_expiry_and_a_failure_is_transient() -> None:
    from shared.adapters.gcp.rest import GoogleToken

    credentials = FakeCredentials()
    token = GoogleToken(credentials=credentials, request=object())
    assert token() == token() == "token-1"
    credentials.expiry = datetime.now(UTC).replace(tzinfo=None) + timedelta(minutes=2)  # inside the margin
    assert token() == "token-2"
    with pytest.raises(TransientError, match="no Google token: RuntimeError: metadata server"):
        GoogleToken(credentials=FakeCredentials(RuntimeError("metadata server")), request=object())()


# ---------------------------------------------------------------- Cloud Storage buckets

BUCKET = "projects/_/buckets/jitgate-payments-exports"


def test_a_bucket_grant_is_a_conditional_binding_redone_after_a_412() -> None:
    provider, world = fake_gcp_iam(BUCKET)
    fake = shared_iam()

    # GIVEN someone else writes the bucket's policy between jitgate's read and its write, once
    def admin(name: str, resource: Resource) -> bool:
        ops = {"role": "roles/storage.admin", "members": ["group:ops@example.com"]}
        fake.commit(resource, [*resource.bindings, ops])
        return False

    fake.meddle(world, admin)
    k = key(role="roles/storage.objectViewer", scope=BUCKET)
    # WHEN jitgate grants THEN Storage refused the stale write (412) and the redone one kept the other binding
    created = grant(provider, k, NOW + timedelta(hours=1))
    assert world.refused_writes == 1
    assert sorted(b["role"] for b in fake.bindings(world, BUCKET)) == ["roles/storage.admin",
                                                                      "roles/storage.objectViewer"]
    assert fake.has_access(world, BUCKET, "roles/storage.objectViewer", JANE, NOW + timedelta(minutes=59))
    # AND it was read as version 3 and written with the Storage JSON API
    reads = fake.calls_to("GET", r"/storage/v1/b/jitgate-payments-exports/iam$")
    assert reads and all(c.query == {"optionsRequestedPolicyVersion": "3"} for c in reads)
    assert fake.calls_to("PUT", r"/storage/v1/b/jitgate-payments-exports/iam$")
    provider.delete_assignment(BUCKET, created.name)
    assert [b["role"] for b in fake.bindings(world, BUCKET)] == ["roles/storage.admin"]


def test_a_bucket_without_uniform_access_takes_no_condition_and_gets_no_grant() -> None:
    provider, world = fake_gcp_iam(BUCKET)
    world.resources[BUCKET].uniform = False
    with pytest.raises(PermanentError, match="uniform bucket-level access"):
        grant(provider, key(role="roles/storage.objectViewer", scope=BUCKET), NOW + timedelta(hours=1))
    assert shared_iam().bindings(world, BUCKET) == []


def test_the_fake_bucket_refuses_a_version_1_read_of_conditions() -> None:
    provider, world = fake_gcp_iam(BUCKET)
    grant(provider, key(role="roles/storage.objectViewer", scope=BUCKET), NOW + timedelta(hours=1))
    base = f"{shared_iam().url}/w{next(n for n, w in shared_iam().worlds.items() if w is world)}"
    answer = httpx.get(f"{base}/storage/v1/b/jitgate-payments-exports/iam", params={"optionsRequestedPolicyVersion": 1},
                       headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 400
