"""Envoy's external authorization service on the lifecycle (fakes, and jitgate's own `envoy` plane in a temporary
file): decisions from the index of active holds, access ended at expiry without the revoke, an early revoke at once
in this process and at the next refresh in another, and usage as one `activity.summary` per grant."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.adapters.embedded.envoy_plane import EnvoyGrants
from shared.domain.envoy import entra_issuer
from shared.envoy_authz import PATH_PREFIX, EnvoyAuthorizer
from tests.fakes.world import ALICE, JANE, POLICY, World

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
AUDIENCE = "api://payments"
PORTAL = "https://backstage.example.com"
ENVOY_RULES = """
  - name: service-read
    match: {providers: [envoy], roles: [read, write], scopes: [payments-api, payments-api/**]}
    outcome: auto
    maxDuration: PT8H
"""


class EnvoyWorld(World):
    """The fakes' jitgate serving one service behind Envoy, wired as `runtime.build_local` wires it."""

    def __init__(self, plane_file: Path) -> None:
        super().__init__(policy_text=POLICY + ENVOY_RULES)
        self.authz = self.authorizer()
        self.plane = EnvoyGrants(plane_file, on_change=self.authz.changed)
        self.backends.providers["envoy"] = self.plane

    def authorizer(self) -> EnvoyAuthorizer:
        """Another process's authorizer on the same store (its own index, refreshed by polling only)."""
        return EnvoyAuthorizer(self.store, self.clock, {"payments-api": AUDIENCE}, TENANT,
                               summarize=self.lifecycle.record_usage, portal_url=PORTAL)

    def grant(self, role: str = "read", scope: str = "payments-api/invoices", duration: str = "PT1H",
              principal: str = JANE) -> str:
        return self.submit({
            "schemaVersion": 1, "requestId": str(uuid.uuid4()),
            "requester": {"principalId": principal, "displayName": "Jane"},
            "target": {"provider": "envoy", "scope": scope, "role": role},
            "duration": duration, "justification": "Reconcile the invoices of INC-1",
        })

    def payload(self, principal: str = JANE) -> str:
        claims = {"iss": entra_issuer(TENANT), "aud": AUDIENCE, "tid": TENANT, "oid": principal,
                  "exp": int((self.clock.now() + timedelta(hours=2)).timestamp())}
        return base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")

    def check(self, method: str = "GET", path: str = "/invoices/42", principal: str = JANE,
              authz: EnvoyAuthorizer | None = None) -> int:
        return (authz or self.authz).check("payments-api", method, path, self.payload(principal)).status


@pytest.fixture
def world(tmp_path: Path) -> EnvoyWorld:
    return EnvoyWorld(tmp_path / "envoy.db")


def test_without_a_grant_the_answer_is_403_and_says_where_to_ask(world: EnvoyWorld) -> None:
    answer = world.authz.check("payments-api", "GET", "/invoices", world.payload())
    assert answer.status == 403
    body = json.loads(answer.body)
    assert body["error"] == "no_active_grant"
    assert "you hold no grant on payments-api" in body["detail"]
    link = f"{PORTAL}/create/templates/default/jitgate-request-service-access?formData="
    assert body["requestAccess"].startswith(link) and link in body["detail"]
    form = json.loads(httpx.URL(body["requestAccess"]).params["formData"])
    assert form == {"service": "component:default/payments-api"}


def test_a_grant_opens_its_routes_and_methods_and_names_the_request_and_principal(world: EnvoyWorld) -> None:
    rid = world.grant(role="read", scope="payments-api/invoices")
    assert world.state(rid) == "active"
    answer = world.authz.check("payments-api", "GET", "/invoices/42?expand=lines", world.payload())
    assert answer.status == 200
    assert dict(answer.headers) == {"x-jitgate-request-id": rid, "x-jitgate-principal": JANE}
    assert world.check("POST") == 403
    assert world.check(path="/admin") == 403
    assert world.check(principal=ALICE) == 403
    assert world.authz.check("orders-api", "GET", "/invoices", world.payload()).status == 403


def test_a_group_is_refused_an_envoy_route_rather_than_granted_nothing(world: EnvoyWorld) -> None:
    rid = world.submit({
        "schemaVersion": 1, "requestId": str(uuid.uuid4()),
        "requester": {"principalId": JANE, "principalType": "Group", "displayName": "Payments team"},
        "target": {"provider": "envoy", "scope": "payments-api", "role": "read"},
        "duration": "PT1H", "justification": "Reconcile the invoices of INC-1",
    })
    assert world.state(rid) == "failed"
    [failed] = [e for e in world.store.chain(rid) if e.type.value == "grant.failed"]
    assert "names one person" in json.dumps(failed.data)


def test_a_token_for_another_audience_is_401(world: EnvoyWorld) -> None:
    world.grant()
    other = EnvoyAuthorizer(world.store, world.clock, {"payments-api": "api://orders"}, TENANT, summarize=print)
    other.refresh()
    assert other.check("payments-api", "GET", "/invoices", world.payload()).status == 401


def test_a_token_checked_once_is_still_refused_once_it_expires(world: EnvoyWorld) -> None:
    world.grant(duration="PT8H")
    payload = world.payload()  # expires in 2 hours
    assert world.authz.check("payments-api", "GET", "/invoices", payload).status == 200
    world.clock.advance(timedelta(hours=2, seconds=59))  # within the skew jwt_authn allows too
    assert world.authz.check("payments-api", "GET", "/invoices", payload).status == 200
    world.clock.advance(1)
    expired = world.authz.check("payments-api", "GET", "/invoices", payload)
    assert (expired.status, json.loads(expired.body)["detail"]) == (401, "the token has expired")


def test_access_ends_at_expiry_before_any_revoke_runs(world: EnvoyWorld) -> None:
    rid = world.grant(duration="PT10S")
    world.clock.advance(9.9)
    assert world.check() == 200
    world.clock.advance(0.1)  # no worker runs: the revoke has not happened
    assert world.state(rid) == "active"
    assert world.check() == 403
    world.advance(1)
    assert world.state(rid) == "revoked"
    assert world.check() == 403


def test_an_early_revoke_ends_access_at_once_in_this_process(world: EnvoyWorld) -> None:
    rid = world.grant()
    assert world.check() == 200
    world.lifecycle.request_revoke(rid, JANE, is_admin=False, reason="done")
    assert world.check() == 403


def test_another_process_sees_an_early_revoke_at_its_next_refresh(world: EnvoyWorld) -> None:
    rid = world.grant()
    elsewhere = world.authorizer()
    elsewhere.refresh()
    assert world.check(authz=elsewhere) == 200
    world.lifecycle.request_revoke(rid, JANE, is_admin=False, reason="done")
    # NB. Stale until it reads the ledger again: the bound is its refresh interval (measured in bench/envoy.py).
    assert world.check(authz=elsewhere) == 200
    elsewhere.refresh()
    assert world.check(authz=elsewhere) == 403


def summaries(world: EnvoyWorld, rid: str) -> list[dict[str, Any]]:
    return [e.data for e in world.store.chain(rid) if e.type.value == "activity.summary"]


def test_usage_is_one_activity_summary_per_grant_written_when_it_ends(world: EnvoyWorld) -> None:
    rid = world.grant(duration="PT1H")
    first = world.clock.now()
    for _ in range(3):
        assert world.check() == 200
        world.clock.advance(1)
    assert world.check("DELETE") == 403
    assert world.check(path="/admin") == 403
    assert summaries(world, rid) == []  # nothing per request
    world.lifecycle.request_revoke(rid, JANE, is_admin=False, reason="done")
    assert world.check() == 403  # after the grant left the index: no grant to count it against
    assert summaries(world, rid) == []  # nothing written in the revoke's path
    world.authz.write_usage()
    assert summaries(world, rid) == [{
        "source": "envoy", "service": "payments-api", "firstUse": first.isoformat(),
        "lastUse": (first + timedelta(seconds=2)).isoformat(), "allowed": 3, "denied": 2,
    }]
    assert world.event_types(rid)[-2:] == ["grant.revoked", "activity.summary"]
    assert world.chains_ok()


def test_a_stopping_process_writes_the_usage_it_has_seen_as_partial(world: EnvoyWorld) -> None:
    rid = world.grant()
    assert world.check() == 200
    world.authz.write_usage(final=False)
    [summary] = summaries(world, rid)
    assert (summary["allowed"], summary["partial"]) == (1, True)


def test_an_unused_grant_writes_no_summary(world: EnvoyWorld) -> None:
    rid = world.grant(duration="PT10S")
    world.advance(11)
    world.authz.write_usage()
    assert world.state(rid) == "revoked"
    assert summaries(world, rid) == []


def test_the_endpoint_takes_the_path_as_sent_and_trusts_no_second_payload(world: EnvoyWorld) -> None:
    rid = world.grant(scope="payments-api/invoices")
    asyncio.run(_endpoint(world, rid))


async def _endpoint(world: EnvoyWorld, rid: str) -> None:
    transport = httpx.ASGITransport(app=world.authz)
    async with httpx.AsyncClient(transport=transport, base_url="http://jitgate") as client:
        headers = {"x-jitgate-jwt-payload": world.payload()}
        ok = await client.get(f"{PATH_PREFIX}/payments-api/invoices/42", headers=headers)
        assert (ok.status_code, ok.headers["x-jitgate-request-id"]) == (200, rid)
        smuggled = await client.get(f"{PATH_PREFIX}/payments-api/invoices/..%2Fadmin", headers=headers)
        assert smuggled.status_code == 403
        twice = [("x-jitgate-jwt-payload", world.payload()), ("x-jitgate-jwt-payload", world.payload())]
        refused = await client.get(f"{PATH_PREFIX}/payments-api/invoices/42", headers=twice)
        assert refused.status_code == 401 and refused.json()["error"] == "unauthenticated"
        head = await client.head(f"{PATH_PREFIX}/payments-api/admin", headers=headers)
        assert (head.status_code, head.content) == (403, b"")
