"""The HTTP API against the embedded runtime (SQLite bus, store and RBAC plane in a temp directory).

The bus-driven steps (evaluate, grant) run in `drain`, which plays the worker's part in-process.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shared.api import create_app
from shared.domain.audit import canonical_json
from shared.domain.errors import ConcurrencyConflict, IllegalTransition, PermanentError, TransientError
from shared.domain.lifecycle import LifecycleCommand, RequestRecord
from shared.runtime import Runtime, build_local
from shared.settings import Settings
from shared.teams import outgoing_payload, sign
from tests.fakes.clock import FakeClock
from tests.tampering import TAMPERINGS, truncated

ALICE = "aaaaaaaa-0000-4000-8000-00000000000a"  # approver
BOB = "bbbbbbbb-0000-4000-8000-00000000000b"  # approver
JANE = "dddddddd-0000-4000-8000-00000000000d"  # requester, also an approver of others' requests
MALLORY = "cccccccc-0000-4000-8000-00000000000c"  # nobody in particular
AUDITOR = "eeeeeeee-0000-4000-8000-00000000000e"
ADMIN = "ffffffff-0000-4000-8000-00000000000f"
DEV = "/subscriptions/11111111-1111-4111-8111-111111111111/resourceGroups/rg-web-dev"
PROD = "/subscriptions/22222222-2222-4222-8222-222222222222/resourceGroups/rg-payments-prod"
SECRET = b"functional-test-webhook-secret!!"

POLICY = f"""
version: 1
groups:
  platform-approvers: ["{ALICE}", "{BOB}", "{JANE}"]
rules:
  - name: dev-reader
    match: {{providers: [local], roles: [Reader], scopes: ["{DEV.split("/resourceGroups")[0]}/**"]}}
    outcome: auto
    maxDuration: PT8H
  - name: prod-contributor
    match: {{providers: [local], roles: [Contributor], scopes: ["{PROD.split("/resourceGroups")[0]}/**"]}}
    outcome: approval
    approval: {{groups: [platform-approvers], required: 2}}
    maxDuration: PT4H
"""


# ---------------------------------------------------------------- wiring


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    return Settings(data_dir=tmp_path / "data", policy_path=policy,
                    teams_secret=base64.b64encode(SECRET).decode())


@pytest.fixture
def runtime(settings: Settings) -> Runtime:
    return build_local(settings)


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    # NB. JSON, as every real client sends it (Backstage, Teams, the CLI); the 415 tests send other types.
    with TestClient(create_app(runtime), headers={"Content-Type": "application/json"}) as c:
        yield c


def drain(runtime: Runtime) -> int:
    """Deliver every due message on both queues, as the worker would; returns how many."""
    handled = 0
    lifecycle = runtime.lifecycle
    queues = {runtime.settings.requests_queue: lifecycle.evaluate,
              runtime.settings.lifecycle_queue: lifecycle.handle_command}
    while True:
        batch = 0
        for queue, handler in queues.items():
            for message in runtime.bus.receive(queue, 10):
                handler(message.body)
                runtime.bus.complete(message)
                batch += 1
        if not batch:
            return handled
        handled += batch


def who(principal: str, roles: str = "") -> dict[str, str]:
    headers = {"X-Jitgate-Dev-Principal": principal}
    if roles:
        headers["X-Jitgate-Dev-Roles"] = roles
    return headers


def access_request(requester: str = JANE, role: str = "Reader", scope: str = DEV, duration: str = "PT1H",
                   **extra: Any) -> dict[str, Any]:
    return {
        "schemaVersion": 1,
        "requestId": str(uuid.uuid4()),
        "requester": {"principalId": requester, "displayName": "Jane Doe"},
        "target": {"provider": "local", "scope": scope, "role": role},
        "duration": duration,
        "justification": "Look at the settings for INC-4711",
        **extra,
    }


def submit(client: TestClient, runtime: Runtime, body: dict[str, Any]) -> str:
    response = client.post("/api/access-requests", json=body, headers=who(body["requester"]["principalId"]))
    assert response.status_code == 202, response.text
    drain(runtime)
    return str(body["requestId"])


def test_people_request_only_for_themselves_and_a_submitting_service_for_anyone(client: TestClient,
                                                                                 runtime: Runtime):
    # GIVEN a request for Jane
    body = access_request()
    # WHEN Bob submits it, THEN he is refused: he may only ask for himself
    refused = client.post("/api/access-requests", json=body, headers=who(BOB))
    assert refused.status_code == 403 and "yourself" in refused.json()["detail"]
    assert runtime.requests.get_request(body["requestId"]) is None
    # WHEN the Backstage service (Jit.Submitter) submits it, THEN it is accepted
    service = "5e7d0c1a-0000-4000-8000-0000000000b5"
    accepted = client.post("/api/access-requests", json=body, headers=who(service, "Jit.Submitter"))
    assert accepted.status_code == 202, accepted.text


def teams(client: TestClient, sender: str, text: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    body = outgoing_payload(text, sender, "Someone", **kwargs)
    response = client.post("/api/teams/webhook", content=body,
                           headers={"Authorization": sign(SECRET, body), "Content-Type": "application/json"})
    return response.status_code, response.json()


def record(runtime: Runtime, request_id: str) -> RequestRecord:
    found = runtime.requests.get_request(request_id)
    assert found is not None
    return found


def state(runtime: Runtime, request_id: str) -> str:
    return record(runtime, request_id).state.value


def refusals(runtime: Runtime, request_id: str) -> list[dict[str, Any]]:
    return [e.document() for e in runtime.audit.chain(request_id) if e.type == "access.refused"]


# ---------------------------------------------------------------- intake


def test_intake_accepts_a_valid_request_and_the_worker_activates_it(client: TestClient, runtime: Runtime):
    # GIVEN a valid auto-approvable request
    body = access_request()
    # WHEN it is posted
    response = client.post("/api/access-requests", json=body, headers=who(JANE))
    # THEN it is accepted and queued, and the bus-driven steps make it active
    assert response.status_code == 202
    assert response.json()["requestId"] == body["requestId"]
    assert response.json()["status"] == "received"
    drain(runtime)
    assert state(runtime, body["requestId"]) == "active"


def test_intake_same_id_same_body_is_the_same_request(client: TestClient, runtime: Runtime):
    body = access_request()
    request_id = submit(client, runtime, body)
    again = client.post("/api/access-requests", json=body, headers=who(JANE))
    assert again.status_code == 202
    assert again.json()["status"] == "active"
    assert drain(runtime) == 0
    assert len(runtime.backends.ledger.holds_for_request(request_id)) == 1


def test_intake_refuses_an_invalid_request_with_every_field_error(client: TestClient, runtime: Runtime):
    body = access_request(scope="/subscriptions/11111111-1111-4111-8111-111111111111/../rg", duration="-PT5M",
                          colour="blue")
    response = client.post("/api/access-requests", json=body, headers=who(JANE))
    assert response.status_code == 422
    doc = response.json()
    assert doc["requestId"] == body["requestId"]
    locs = {e["loc"] for e in doc["errors"]}
    assert {"target.scope", "duration", "colour"} <= locs
    assert doc["detail"]
    # and the rejection is audited (by submit) and visible
    assert [e.type.value for e in runtime.audit.chain(body["requestId"])] == ["request.rejected"]


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1,2,3]", b"\xff\xfe\x00", b'{"schemaVersion": 1}'])
def test_intake_never_crashes_on_garbage(client: TestClient, raw: bytes):
    response = client.post("/api/access-requests", content=raw, headers=who(JANE))
    assert response.status_code == 422
    assert response.json()["errors"]


def test_intake_refuses_id_reuse_with_another_body(client: TestClient, runtime: Runtime):
    body = access_request()
    submit(client, runtime, body)
    response = client.post("/api/access-requests", json={**body, "justification": "something else"},
                           headers=who(JANE))
    assert response.status_code == 409
    assert "different body" in response.json()["detail"]
    rejected = runtime.audit.chain(body["requestId"])[-1]
    assert rejected.type.value == "request.rejected"
    assert (rejected.actor.principal_id, rejected.actor.kind, rejected.data["actorVerified"]) == (JANE, "user", True)


def test_a_service_reusing_an_id_or_sending_an_invalid_body_for_it_is_named_in_the_trail(
        client: TestClient, runtime: Runtime):
    # GIVEN Jane's request, and the Backstage service (Jit.Submitter)
    body = access_request()
    submit(client, runtime, body)
    service = "5e7d0c1a-0000-4000-8000-0000000000b5"
    # WHEN the service sends another body under her request id, and then an invalid one
    reused = client.post("/api/access-requests", json={**body, "duration": "PT2H"},
                         headers=who(service, "Jit.Submitter"))
    invalid = client.post("/api/access-requests", json={**body, "duration": "P99D"},
                          headers=who(service, "Jit.Submitter"))
    assert (reused.status_code, invalid.status_code) == (409, 422)
    # THEN her trail names the service, not jitgate; the second rejection within the minute adds nothing
    rejected = [e for e in runtime.audit.chain(body["requestId"]) if e.type.value == "request.rejected"]
    assert [(e.actor.principal_id, e.data["actorVerified"]) for e in rejected] == [(service, True)]
    assert state(runtime, body["requestId"]) == "active"


def test_intake_rejects_a_body_over_64_kib_from_its_first_bytes(runtime: Runtime):
    # GIVEN a client that would stream 10 MiB in 1 KiB chunks (straight ASGI: TestClient buffers bodies)
    app = create_app(runtime)
    chunks_read = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal chunks_read
        chunks_read += 1
        return {"type": "http.request", "body": b"x" * 1024, "more_body": chunks_read < 10 * 1024}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/api/access-requests", "raw_path": b"/api/access-requests",
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
             "headers": [(b"x-jitgate-dev-principal", JANE.encode()), (b"content-type", b"application/json")]}
    # WHEN it is posted
    asyncio.run(app(scope, receive, send))
    # THEN it is rejected as an invalid message once past the limit, without reading the rest, and audited
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))
    assert start["status"] == 422
    assert body["errors"] == [{"loc": "body", "msg": "the body is 65537 bytes; the limit is 65536"}]
    assert chunks_read == 65
    assert [e.type.value for e in runtime.audit.chain(body["requestId"])] == ["request.rejected"]


def test_intake_oversize_json_is_filed_under_a_stable_synthetic_id(client: TestClient):
    body = json.dumps(access_request(justification="x" * (70 * 1024))).encode()
    first = client.post("/api/access-requests", content=body, headers=who(JANE))
    again = client.post("/api/access-requests", content=body + b" ", headers=who(JANE))
    assert first.status_code == again.status_code == 422
    assert first.json()["requestId"] == again.json()["requestId"]
    assert "the limit is 65536" in first.json()["errors"][0]["msg"]


def test_intake_requires_an_authenticated_caller(client: TestClient):
    response = client.post("/api/access-requests", json=access_request())
    assert response.status_code == 401
    assert response.json()["error"] == "unauthenticated"


# ---------------------------------------------------------------- reading a request


def test_requester_reads_state_holds_and_timeline(client: TestClient, runtime: Runtime):
    request_id = submit(client, runtime, access_request())
    response = client.get(f"/api/access-requests/{request_id}", headers=who(JANE))
    assert response.status_code == 200
    doc = response.json()
    assert doc["requestId"] == request_id
    assert doc["state"] == "active"
    assert doc["request"]["requester"]["principalId"] == JANE
    assert doc["decision"]["outcome"] == "auto" and doc["decision"]["rule"] == "dev-reader"
    assert doc["expiresAt"] and doc["grantKey"]["principalId"] == JANE
    assert [h["requestId"] for h in doc["holds"]] == [request_id]
    assert doc["holds"][0]["status"] == "active"
    types = [e["type"] for e in doc["timeline"]]
    assert types[:3] == ["request.received", "policy.evaluated", "request.approved"]
    assert "grant.applied" in types
    assert not {"version", "pendingEvents", "auditHead", "fingerprint", "revokeSequence", "revokeQueue"} & set(doc)


def test_stranger_is_refused_and_the_refusal_is_audited(client: TestClient, runtime: Runtime):
    request_id = submit(client, runtime, access_request())
    response = client.get(f"/api/access-requests/{request_id}", headers=who(MALLORY))
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    [refusal] = refusals(runtime, request_id)
    assert refusal["actor"] == {"principalId": MALLORY, "kind": "user"}
    assert refusal["data"]["action"] == "read"


def test_unauthenticated_read_is_refused_with_401_and_audited(client: TestClient, runtime: Runtime):
    request_id = submit(client, runtime, access_request())
    response = client.get(f"/api/access-requests/{request_id}")
    assert response.status_code == 401
    [refusal] = refusals(runtime, request_id)
    assert refusal["actor"]["principalId"] == "anonymous"


def test_auditor_admin_and_approver_may_read(client: TestClient, runtime: Runtime):
    request_id = submit(client, runtime, access_request(role="Contributor", scope=PROD))
    assert state(runtime, request_id) == "pending_approval"
    for headers in (who(AUDITOR, "Jit.Auditor"), who(ADMIN, "Jit.Admin"), who(ALICE)):
        assert client.get(f"/api/access-requests/{request_id}", headers=headers).status_code == 200
    assert refusals(runtime, request_id) == []


def test_unknown_request_is_404(client: TestClient):
    for rid in (str(uuid.uuid4()), "not-a-guid", "x" * 5000):
        response = client.get(f"/api/access-requests/{rid}", headers=who(AUDITOR, "Jit.Auditor"))
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"


def test_a_rejected_invalid_request_is_readable_by_auditors(client: TestClient, runtime: Runtime):
    body = access_request(duration="P99D")
    assert client.post("/api/access-requests", json=body, headers=who(JANE)).status_code == 422
    doc = client.get(f"/api/access-requests/{body['requestId']}", headers=who(AUDITOR, "Jit.Auditor")).json()
    assert doc["state"] == "rejected"
    assert doc["request"] is None
    assert doc["errors"][0]["loc"] == "duration"


# ---------------------------------------------------------------- revoke


def test_requester_revokes_early(client: TestClient, runtime: Runtime):
    request_id = submit(client, runtime, access_request())
    response = client.post(f"/api/access-requests/{request_id}/revoke", json={"reason": "done"},
                           headers=who(JANE))
    assert response.status_code == 200
    assert response.json()["state"] == "revoked"
    assert runtime.rbac is not None
    assert not [a for a in runtime.rbac.all_assignments() if a.marked_request_id == request_id]
    revoked = [e for e in runtime.audit.chain(request_id) if e.type == "grant.revoked"]
    assert revoked[0].data["reason"] == "done"
    assert revoked[0].actor.principal_id == JANE


def test_admin_revokes_without_a_body(client: TestClient, runtime: Runtime):
    request_id = submit(client, runtime, access_request())
    response = client.post(f"/api/access-requests/{request_id}/revoke", headers=who(ADMIN, "Jit.Admin"))
    assert response.status_code == 200
    assert state(runtime, request_id) == "revoked"


def test_others_may_not_revoke_even_auditors(client: TestClient, runtime: Runtime):
    request_id = submit(client, runtime, access_request())
    for headers in (who(MALLORY), who(AUDITOR, "Jit.Auditor"), who(ALICE)):
        response = client.post(f"/api/access-requests/{request_id}/revoke", headers=headers)
        assert response.status_code == 403
    assert state(runtime, request_id) == "active"
    assert [r["data"]["action"] for r in refusals(runtime, request_id)] == ["revoke"] * 3


@pytest.mark.parametrize("raw", [b"nope", b"[]", b'{"reason": 5}', b'{"reason": "x", "extra": 1}',
                                 json.dumps({"reason": "x" * 501}).encode()])
def test_revoke_refuses_a_bad_body(client: TestClient, runtime: Runtime, raw: bytes):
    request_id = submit(client, runtime, access_request())
    response = client.post(f"/api/access-requests/{request_id}/revoke", content=raw, headers=who(JANE))
    assert response.status_code == 422
    assert state(runtime, request_id) == "active"


def test_revoke_and_webhook_refuse_oversize_bodies_with_413(client: TestClient, runtime: Runtime):
    request_id = submit(client, runtime, access_request())
    revoke = client.post(f"/api/access-requests/{request_id}/revoke",
                         content=json.dumps({"reason": "x" * 5000}).encode(), headers=who(JANE))
    assert revoke.status_code == 413 and revoke.json()["error"] == "too_large"
    body = outgoing_payload("help " + "x" * 70_000, ALICE, "Alice")
    webhook = client.post("/api/teams/webhook", content=body, headers={"Authorization": sign(SECRET, body)})
    assert webhook.status_code == 413
    assert state(runtime, request_id) == "active"


def test_a_revoke_after_expiry_is_answered_with_how_the_request_ended_and_audited(client: TestClient,
                                                                                  runtime: Runtime):
    # GIVEN a grant that was revoked at its expiry
    clock = FakeClock(datetime.now(UTC))
    runtime.backends.clock = clock
    request_id = submit(client, runtime, access_request(duration="PT1M"))
    clock.advance(60)
    assert runtime.lifecycle.handle_command(LifecycleCommand(command="revoke", request_id=request_id).body())
    # WHEN the requester says she is done
    response = client.post(f"/api/access-requests/{request_id}/revoke", json={"reason": "done"},
                           headers=who(JANE))
    # THEN she is told it had already ended at expiry, and her attempt is on the request's trail
    assert response.status_code == 200
    assert response.json()["state"] == "revoked"
    assert response.json()["message"].startswith("already ended at expiry")
    assert re.fullmatch(r"already ended at expiry: revoked at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(just now\)",
                        response.json()["message"])
    [attempt] = refusals(runtime, request_id)
    assert attempt["actor"]["principalId"] == JANE and attempt["data"]["action"] == "revoke"


def test_revoke_of_an_unknown_request_is_404(client: TestClient):
    response = client.post(f"/api/access-requests/{uuid.uuid4()}/revoke", headers=who(JANE))
    assert response.status_code == 404


# ---------------------------------------------------------------- Teams webhook


@pytest.fixture
def pending(client: TestClient, runtime: Runtime) -> str:
    request_id = submit(client, runtime, access_request(role="Contributor", scope=PROD))
    assert state(runtime, request_id) == "pending_approval"
    return request_id


def test_two_approvals_in_teams_grant_the_request(client: TestClient, runtime: Runtime, pending: str):
    code, answer = teams(client, ALICE, f"approve {pending} ok for INC-4711")
    assert code == 200 and answer["type"] == "message"
    assert "1 of 2" in answer["text"]
    code, answer = teams(client, ALICE, f"approve {pending} again")
    assert "already counted" in answer["text"]
    code, answer = teams(client, BOB, f"<at>jitgate</at>&nbsp;APPROVE {pending.upper()}")
    assert code == 200 and "approved" in answer["text"]
    drain(runtime)
    assert state(runtime, pending) == "active"


def test_deny_in_teams(client: TestClient, runtime: Runtime, pending: str):
    code, answer = teams(client, BOB, f"deny {pending} change freeze until Monday")
    assert code == 200
    assert "denied" in answer["text"] and "change freeze" in answer["text"]
    assert state(runtime, pending) == "denied"
    denial = record(runtime, pending).denial or {}
    assert (denial.get("by"), denial.get("reason")) == (BOB, "change freeze until Monday")


def test_status_in_teams(client: TestClient, pending: str):
    code, answer = teams(client, ALICE, f"status {pending}")
    assert code == 200
    # Words for people: the request id once, the state as a sentence, the deadline to the second with its zone.
    assert re.fullmatch(
        rf"Request {pending} \(Contributor at /subscriptions/\S+/resourceGroups/rg-payments-prod for Jane Doe\) "
        r"is waiting for 2 more approvals \(deadline \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)\.",
        answer["text"],
    ), answer["text"]


def test_status_in_teams_is_refused_to_strangers(client: TestClient, runtime: Runtime, pending: str):
    code, answer = teams(client, MALLORY, f"status {pending}")
    assert code == 200
    assert answer["text"].startswith("Refused")
    assert refusals(runtime, pending)[0]["data"]["action"] == "teams.status"


def test_requester_cannot_approve_their_own_request(client: TestClient, runtime: Runtime, pending: str):
    # Jane is in the approver group, but this is her own request.
    code, answer = teams(client, JANE, f"approve {pending}")
    assert code == 200
    assert "own request" in answer["text"]
    assert state(runtime, pending) == "pending_approval"
    refused = [e for e in runtime.audit.chain(pending) if e.type == "approval.recorded"]
    assert refused[0].data["counted"] is False


def test_non_approver_is_refused_in_the_reply(client: TestClient, runtime: Runtime, pending: str):
    code, answer = teams(client, MALLORY, f"approve {pending}")
    assert code == 200
    assert answer["text"] == "Refused: you are not in platform-approvers, the approver group of this request."
    assert state(runtime, pending) == "pending_approval"


def test_unknown_request_bad_command_and_help_are_answered(client: TestClient):
    code, answer = teams(client, ALICE, f"approve {uuid.uuid4()}")
    assert code == 200 and "no request" in answer["text"]
    code, answer = teams(client, ALICE, "grant me everything")
    assert code == 200 and "do not know" in answer["text"]
    code, answer = teams(client, ALICE, "help")
    assert code == 200 and "approve <request id>" in answer["text"]


def test_sender_without_object_id_is_answered(client: TestClient, pending: str):
    code, answer = teams(client, "", f"approve {pending}")
    assert code == 200 and "no Entra object id" in answer["text"]


def test_a_sender_whose_object_id_is_the_nil_guid_is_answered_and_counts_for_nothing(client: TestClient,
                                                                                      runtime: Runtime, pending: str):
    code, answer = teams(client, "00000000-0000-0000-0000-000000000000", f"approve {pending}")
    assert code == 200 and "nil GUID" in answer["text"]
    assert record(runtime, pending).approvals == []


def test_forged_signature_is_401_and_audited(client: TestClient, runtime: Runtime, pending: str):
    body = outgoing_payload(f"approve {pending}", ALICE, "Mallory")
    response = client.post("/api/teams/webhook", content=body, headers={"Authorization": sign(b"guessed", body)})
    assert response.status_code == 401
    assert "does not match" in response.json()["detail"]
    assert state(runtime, pending) == "pending_approval"
    [refusal] = refusals(runtime, pending)
    assert refusal["actor"]["principalId"] == "unauthenticated"
    assert ALICE in refusal["data"]["reason"]


def test_a_flood_of_forged_calls_adds_one_refusal_and_leaves_the_record_as_it_was(
        client: TestClient, runtime: Runtime, settings: Settings, pending: str):
    # GIVEN a request pending approval, and a clock that stands still while the flood lasts
    clock = FakeClock(datetime.now(UTC))
    runtime.backends.clock = clock

    def stored_size() -> int:
        with sqlite3.connect(settings.data_dir / "store.db") as db:
            (size,) = db.execute("SELECT length(doc) FROM requests WHERE request_id = ?", (pending,)).fetchone()
        return int(size)

    def forged_call() -> None:
        # a random signature and a random claimed sender: nothing in it can be verified
        body = outgoing_payload(f"approve {pending}", str(uuid.uuid4()), "Mallory")
        response = client.post("/api/teams/webhook", content=body,
                               headers={"Authorization": sign(os.urandom(32), body)})
        assert response.status_code == 401

    # WHEN anyone sends 1,000 forged webhook calls naming it
    forged_call()
    size_after_first = stored_size()
    for _ in range(999):
        forged_call()
    # THEN one refusal is audited, and the stored record has not grown by a byte
    assert len(refusals(runtime, pending)) == 1
    assert stored_size() == size_after_first
    # AND once the minute has passed, the next forged call is audited again (collapsed, not silenced)
    clock.advance(61)
    forged_call()
    assert len(refusals(runtime, pending)) == 2
    assert state(runtime, pending) == "pending_approval"


def test_missing_and_malformed_authorization_are_401(client: TestClient, runtime: Runtime, pending: str):
    body = outgoing_payload(f"approve {pending}", ALICE, "Alice")
    missing = client.post("/api/teams/webhook", content=body)
    malformed = client.post("/api/teams/webhook", content=body, headers={"Authorization": "HMAC %%%"})
    assert missing.status_code == 401 and "missing" in missing.json()["detail"]
    assert malformed.status_code == 401 and "malformed" in malformed.json()["detail"]
    # one unauthenticated refusal of this endpoint a minute is audited, whatever its reason
    [refusal] = refusals(runtime, pending)
    assert refusal["actor"]["principalId"] == "unauthenticated" and "missing" in refusal["data"]["reason"]
    assert state(runtime, pending) == "pending_approval"


def test_a_replayed_call_is_refused(client: TestClient, runtime: Runtime, pending: str):
    body = outgoing_payload(f"approve {pending}", ALICE, "Alice")
    headers = {"Authorization": sign(SECRET, body)}
    first = client.post("/api/teams/webhook", content=body, headers=headers)
    replayed = client.post("/api/teams/webhook", content=body, headers=headers)
    assert first.status_code == 200 and "1 of 2" in first.json()["text"]
    assert replayed.status_code == 401 and "replay" in replayed.json()["detail"]
    assert refusals(runtime, pending)[0]["actor"]["principalId"] == ALICE


def test_a_stale_call_is_refused(client: TestClient, runtime: Runtime, pending: str):
    code, answer = teams(client, ALICE, f"approve {pending}", timestamp=datetime.now(UTC) - timedelta(minutes=6))
    assert code == 401 and "more than 5 minutes" in answer["detail"]
    assert state(runtime, pending) == "pending_approval"
    assert record(runtime, pending).approvals == []


def test_signed_garbage_is_a_400_not_a_crash(client: TestClient):
    for body in (b"not json", b"[]", b'{"type":"invoke"}'):
        response = client.post("/api/teams/webhook", content=body, headers={"Authorization": sign(SECRET, body)})
        assert response.status_code == 400


def test_webhook_replies_before_teams_gives_up(client: TestClient, runtime: Runtime, pending: str):
    # GIVEN a directory that has become very slow
    slow = SlowDirectory(runtime.backends.directory, delay=1.0)
    runtime.backends.directory = slow
    app = client.app
    assert isinstance(app, FastAPI)
    app.state.teams_deadline = 0.2
    # WHEN an approval arrives
    code, answer = teams(client, ALICE, f"approve {pending}")
    # THEN Teams gets an answer in time, and the approval still lands
    assert code == 200 and "Still working" in answer["text"]
    assert slow.called.wait(5)
    deadline = time.monotonic() + 5
    while not record(runtime, pending).approvals and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [a.approver_id for a in record(runtime, pending).approvals] == [ALICE]


class SlowDirectory:
    """A Directory that answers after a delay."""

    def __init__(self, inner: Any, delay: float) -> None:
        self.inner = inner
        self.delay = delay
        self.called = threading.Event()

    def groups_of(self, principal_id: str) -> frozenset[str]:
        self.called.set()
        time.sleep(self.delay)
        return frozenset(self.inner.groups_of(principal_id))


def test_webhook_without_a_configured_secret_is_unavailable(tmp_path: Path, settings: Settings):
    azure = replace(settings, mode="azure", teams_secret="")
    with TestClient(create_app(build_local(azure))) as c:
        body = outgoing_payload("help", ALICE, "Alice")
        response = c.post("/api/teams/webhook", content=body,
                          headers={"Authorization": sign(SECRET, body), "Content-Type": "application/json"})
    assert response.status_code == 503
    assert "JITGATE_TEAMS_SECRET" in response.json()["detail"]


# ---------------------------------------------------------------- audit


def test_audit_events_filters_and_pages(client: TestClient, runtime: Runtime):
    first = submit(client, runtime, access_request())
    second = submit(client, runtime, access_request(requester=BOB))
    auditor = who(AUDITOR, "Jit.Auditor")

    by_request = client.get("/api/audit/events", params={"requestId": first}, headers=auditor).json()
    assert {e["requestId"] for e in by_request["events"]} == {first}
    assert by_request["continuation"] is None

    by_type = client.get("/api/audit/events", params={"type": "grant.applied"}, headers=auditor).json()
    assert sorted(e["requestId"] for e in by_type["events"]) == sorted([first, second])

    by_principal = client.get("/api/audit/events", params={"principalId": BOB.upper()}, headers=auditor).json()
    assert {e["requestId"] for e in by_principal["events"]} == {second}

    everything = client.get("/api/audit/events", params={"limit": 1000}, headers=auditor).json()["events"]
    pages: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 3}
    while True:
        page = client.get("/api/audit/events", params=params, headers=auditor).json()
        assert len(page["events"]) <= 3
        pages.extend(page["events"])
        if not page["continuation"]:
            break
        params["continuation"] = page["continuation"]
    assert [e["id"] for e in pages] == [e["id"] for e in everything]
    assert len(everything) > 6

    middle = everything[len(everything) // 2]["at"]
    later = client.get("/api/audit/events", params={"since": middle, "limit": 1000}, headers=auditor).json()
    earlier = client.get("/api/audit/events", params={"until": middle, "limit": 1000}, headers=auditor).json()
    assert all(e["at"] >= middle for e in later["events"])
    assert all(e["at"] < middle for e in earlier["events"])
    assert len(later["events"]) + len(earlier["events"]) == len(everything)


def test_audit_since_accepts_an_offset_whose_plus_was_not_encoded(client: TestClient, runtime: Runtime):
    submit(client, runtime, access_request())
    response = client.get("/api/audit/events?since=2000-01-01T00:00:00+00:00",
                          headers=who(AUDITOR, "Jit.Auditor"))
    assert response.status_code == 200
    assert response.json()["events"]


@pytest.mark.parametrize("params", [
    {"limit": 0}, {"limit": 1001}, {"limit": "many"}, {"type": "grant.everything"},
    {"since": "yesterday"}, {"until": "2026-11-26T09:00:00"}, {"continuation": "garbage"},
])
def test_audit_events_bad_filters_are_422(client: TestClient, params: dict[str, Any]):
    response = client.get("/api/audit/events", params=params, headers=who(AUDITOR, "Jit.Auditor"))
    assert response.status_code == 422
    assert response.json()["errors"]


def test_audit_is_for_auditors_and_admins_only(client: TestClient, runtime: Runtime):
    request_id = submit(client, runtime, access_request())
    assert client.get("/api/audit/events", headers=who(ADMIN, "Jit.Admin")).status_code == 200
    assert client.get("/api/audit/events").status_code == 401
    # the requester may read her request, but not query the audit trail
    response = client.get("/api/audit/events", params={"requestId": request_id, "limit": 0}, headers=who(JANE))
    assert response.status_code == 403
    assert client.get("/api/audit/verify", headers=who(JANE)).status_code == 403
    assert [r["data"]["action"] for r in refusals(runtime, request_id)] == ["audit.events"]


def test_audit_verify_passes_then_names_a_tampered_event(client: TestClient, runtime: Runtime,
                                                         settings: Settings):
    first = submit(client, runtime, access_request())
    second = submit(client, runtime, access_request(requester=BOB))
    auditor = who(AUDITOR, "Jit.Auditor")
    verified = client.get("/api/audit/verify", headers=auditor).json()
    assert verified["ok"] is True and verified["chains"] == 2 and verified["broken"] == []
    assert verified["events"] == len(runtime.audit.chain(first)) + len(runtime.audit.chain(second))

    # WHEN someone edits an event in the database directly
    with sqlite3.connect(settings.data_dir / "store.db") as db:
        (doc,) = db.execute("SELECT doc FROM audit_events WHERE request_id = ? AND seq = 1", (second,)).fetchone()
        tampered = json.loads(doc)
        tampered["data"]["rule"] = "someone-else"
        db.execute("UPDATE audit_events SET doc = ? WHERE request_id = ? AND seq = 1", (json.dumps(tampered), second))

    # THEN verification names the request and the link
    result = client.get("/api/audit/verify", headers=auditor).json()
    assert result["ok"] is False
    assert result["broken"] == [{"requestId": second, "events": 2, "ok": False, "brokenSeq": 1,
                                 "brokenEventId": f"{second}:000001",
                                 "reason": "hash does not match the event's content", "anchored": True}]
    one = client.get("/api/audit/verify", params={"requestId": first}, headers=auditor).json()
    assert one["ok"] is True and one["chains"] == 1
    assert client.get("/api/audit/verify", params={"requestId": str(uuid.uuid4())}, headers=auditor).status_code == 404


@pytest.mark.parametrize("where", ["middle", "last"])
@pytest.mark.parametrize("name", sorted(TAMPERINGS))
def test_audit_verify_names_an_event_rewritten_by_someone_who_can_recompute_hashes(
        name: str, where: str, client: TestClient, runtime: Runtime, settings: Settings):
    # GIVEN two granted requests
    rid = submit(client, runtime, access_request())
    submit(client, runtime, access_request(requester=BOB))
    chain = runtime.audit.chain(rid)
    seq = 1 if where == "middle" else len(chain) - 1  # policy.evaluated, or the chain's last event

    # WHEN one event is rewritten in the database, in the canonical form the store writes
    with sqlite3.connect(settings.data_dir / "store.db") as db:
        (doc,) = db.execute("SELECT doc FROM audit_events WHERE request_id = ? AND seq = ?", (rid, seq)).fetchone()
        tampered = json.loads(doc)
        TAMPERINGS[name].edit(tampered)
        db.execute("UPDATE audit_events SET doc = ? WHERE request_id = ? AND seq = ?",
                   (canonical_json(tampered), rid, seq))

    # THEN verifying every chain, or this one, names the request, the first broken link and its event id
    expected = TAMPERINGS[name].expected(rid, seq, tampered, head=chain[-1].hash, last=len(chain) - 1).as_dict()
    assert expected["brokenEventId"] == f"{rid}:{expected['brokenSeq']:06d}"
    auditor = who(AUDITOR, "Jit.Auditor")
    for params in ({}, {"requestId": rid}):
        result = client.get("/api/audit/verify", params=params, headers=auditor).json()
        assert (result["ok"], result["broken"]) == (False, [expected])


@pytest.mark.parametrize("kept", [1, 0])
def test_audit_verify_names_a_chain_whose_tail_was_cut_off(kept: int, client: TestClient, runtime: Runtime,
                                                             settings: Settings):
    # GIVEN two granted requests
    rid = submit(client, runtime, access_request())
    other = submit(client, runtime, access_request(requester=BOB))
    chain = runtime.audit.chain(rid)

    # WHEN every event of one chain after the first `kept` is deleted from the database
    with sqlite3.connect(settings.data_dir / "store.db") as db:
        db.execute("DELETE FROM audit_events WHERE request_id = ? AND seq >= ?", (rid, kept))

    # THEN verifying it names the first missing event and where its request record says the chain ends
    expected = truncated(rid, kept, head=chain[-1].hash, last=len(chain) - 1).as_dict()
    auditor = who(AUDITOR, "Jit.Auditor")
    one = client.get("/api/audit/verify", params={"requestId": rid}, headers=auditor).json()
    assert (one["ok"], one["broken"]) == (False, [expected])
    # AND verifying every chain does too, while the chain is still listed (a chain with no event left is found
    # by asking for it, and by `jitgate audit verify --data-dir`, which reads the records too)
    every = client.get("/api/audit/verify", headers=auditor).json()
    assert (every["ok"], every["broken"]) == ((False, [expected]) if kept else (True, []))
    assert every["unanchored"] == 0 and every["chains"] == (2 if kept else 1)
    assert client.get("/api/audit/verify", params={"requestId": other}, headers=auditor).json()["ok"] is True


# ---------------------------------------------------------------- errors


class FailingDirectory:
    """A Directory whose backend fails with a given error."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def groups_of(self, principal_id: str) -> frozenset[str]:
        raise self.error


@pytest.mark.parametrize(("error", "status", "code"), [
    (TransientError("Graph throttled", retry_after=2.2), 503, "unavailable"),
    (PermanentError("Graph says the tenant is gone"), 502, "backend_refused"),
    (ConcurrencyConflict("lost the race"), 409, "conflict"),
    (IllegalTransition("cannot go there"), 409, "conflict"),
    (RuntimeError("a bug"), 500, "internal"),
])
def test_backend_errors_map_to_statuses(runtime: Runtime, pending: str, error: Exception, status: int, code: str):
    # GIVEN a directory that fails, and a caller whose access depends on it (an approver candidate)
    runtime.backends.directory = FailingDirectory(error)
    with TestClient(create_app(runtime), raise_server_exceptions=False) as c:
        # WHEN the caller reads the request
        response = c.get(f"/api/access-requests/{pending}", headers=who(MALLORY))
    # THEN the failure kind decides the status, with a JSON body
    assert response.status_code == status
    assert response.json()["error"] == code
    if status == 503:
        assert response.headers["Retry-After"] == "3"
    if status == 500:
        assert "a bug" not in response.text


# ---------------------------------------------------------------- health, docs, identity modes


def test_health_is_public(client: TestClient):
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "mode": "local", "backends": {
        "bus": "sqlite", "store": "sqlite", "grants": "local", "notifier": "outbox", "directory": "policy"}}


def test_openapi_document_and_docs(client: TestClient):
    doc = client.get("/api/openapi.json").json()
    assert {"/api/access-requests", "/api/access-requests/{request_id}", "/api/access-requests/{request_id}/revoke",
            "/api/teams/webhook", "/api/audit/events", "/api/audit/verify", "/api/health"} <= set(doc["paths"])
    body = doc["paths"]["/api/access-requests"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/AccessRequestV1"}
    assert "requester" in doc["components"]["schemas"]["AccessRequestV1"]["properties"]
    assert {"Requester", "Target"} <= set(doc["components"]["schemas"])
    assert "$id" not in doc["components"]["schemas"]["AccessRequestV1"]
    assert client.get("/api/docs").status_code == 200


def test_dev_identity_is_refused_outside_local_mode(settings: Settings):
    azure = replace(settings, mode="azure")
    with TestClient(create_app(build_local(azure))) as c:
        response = c.post("/api/access-requests", json=access_request(), headers=who(JANE, "Jit.Admin"))
        assert response.status_code == 401
        assert "development identity is refused outside local mode" in response.json()["detail"]
        assert c.get("/api/audit/events", headers=who(AUDITOR, "Jit.Auditor")).status_code == 401
        assert c.get("/api/health").json()["mode"] == "azure"
        # App Service authentication is how callers are identified there
        principal = {"auth_typ": "aad", "claims": [{"typ": "oid", "val": AUDITOR},
                                                   {"typ": "roles", "val": "Jit.Auditor"}]}
        header = base64.b64encode(json.dumps(principal).encode()).decode()
        assert c.get("/api/audit/events", headers={"X-MS-CLIENT-PRINCIPAL": header}).status_code == 200
