"""End to end against a real `jitgate serve` (see conftest): HTTP only, the example policy, a fresh data dir.

Covers ARCHITECTURE §2 (every hostile body → 422 + `request.rejected`, and the server keeps serving),
§5 (revoke at expiry, early revoke), §7 (Teams HMAC and replay refusals, id reuse → 409, audit API) and the
`jitgate audit` command line. Each test uses its own resource group so that no two share a grant key.
"""

from __future__ import annotations

import csv
import io
import json
import os
import uuid
from datetime import datetime
from typing import Any

import pytest

from shared.adapters.azure.roles import AZURE_BUILTIN_ROLES
from shared.teams import sign
from tests.e2e.conftest import ALICE, BOB, DEV_SUB, JANE, PROD_SUB, STRANGER, JitgateServer
from tests.unit.test_hostile_corpus import CORPUS, HostileCase, strict_guid

pytestmark = pytest.mark.e2e

PROD_RG = f"/subscriptions/{PROD_SUB}/resourceGroups/rg-payments-prod"


def dev_rg(name: str) -> str:
    return f"/subscriptions/{DEV_SUB}/resourceGroups/{name}"


def access_request(
    scope: str,
    role: str = "Reader",
    duration: str = "PT1H",
    justification: str = "Investigate the web app settings for INC-4711",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "schemaVersion": 1,
        "requestId": str(uuid.uuid4()),
        "requester": {
            "principalId": JANE,
            "principalType": "User",
            "displayName": "Jane Doe",
            "email": "jane@example.com",
            "backstageRef": "user:default/jane",
        },
        "target": {"provider": "local", "scope": scope, "role": role},
        "duration": duration,
        "justification": justification,
        **extra,
    }


def submit(server: JitgateServer, doc: dict[str, Any] | bytes, expected: int = 202) -> dict[str, Any]:
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    with server.client(JANE) as c:
        response = c.post("/api/access-requests", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == expected, f"POST → {response.status_code} {response.text[:500]}"
    answer: dict[str, Any] = response.json()
    return answer


def types_of(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


# ---------------------------------------------------------------- the hostile corpus over HTTP


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_hostile_body_gets_422_is_audited_and_the_server_keeps_serving(
    jitgate_server: JitgateServer, case: HostileCase
) -> None:
    s = jitgate_server
    with s.client(JANE) as c:
        response = c.post("/api/access-requests", content=case.raw, headers={"Content-Type": "application/json"})
    assert s.healthy(), "the server must answer /api/health after this body"
    # NB. ARCHITECTURE §2/§7: an oversize body is an invalid message like any other (422 + request.rejected),
    # so 413 is not accepted here.
    assert response.status_code == 422, f"{case.name}: {response.status_code} {response.text[:500]}"
    doc = response.json()
    got = [(e["loc"], e["msg"]) for e in doc["errors"]]
    assert {loc for loc, _ in got} == case.locs, f"error locations: {got}"
    for loc, fragment in case.errors:
        assert any(fragment in msg for where, msg in got if where == loc), f"{loc}: no {fragment!r} in {got}"

    request_id = doc.get("requestId")
    if case.body_request_id:
        assert request_id == case.body_request_id, "the rejection is filed under the body's own requestId"
    assert strict_guid(request_id), f"rejection filed under {request_id!r}"

    with s.auditor() as c:
        audit = c.get("/api/audit/events", params={"type": "request.rejected", "requestId": request_id})
    assert audit.status_code == 200, audit.text
    rejected = audit.json()["events"]
    assert len(rejected) == 1, f"one request.rejected event for {request_id}: {rejected}"
    assert {e["loc"] for e in rejected[0]["data"]["errors"]} == case.locs
    assert s.get(request_id)["state"] == "rejected"
    assert not s.assignments_of(request_id), "nothing was granted"


# ---------------------------------------------------------------- grants


def test_auto_approved_request_goes_active_and_is_revoked_at_expiry(jitgate_server: JitgateServer) -> None:
    s = jitgate_server
    doc = access_request(dev_rg("rg-expiry-dev"), duration="PT2S")
    rid = doc["requestId"]
    answer = submit(s, doc)
    assert answer["requestId"] == rid

    active = s.wait_state(rid, "active")
    assert active["decision"]["outcome"] == "auto", active["decision"]
    [assignment] = s.assignments_of(rid)
    assert assignment.principal_id == JANE
    assert assignment.role_definition_id == AZURE_BUILTIN_ROLES["Reader"]
    assert assignment.scope.lower() == dev_rg("rg-expiry-dev").lower()

    revoked = s.wait_state(rid, "revoked", timeout=15)
    assert not s.assignments_of(rid), "the role assignment is gone after expiry"
    assert datetime.fromisoformat(revoked["revokedAt"]) >= datetime.fromisoformat(revoked["expiresAt"]), (
        "not revoked before its expiry"
    )
    [event] = s.events(rid, "grant.revoked")
    # NB. This server reconciles every second: on a busy machine its pass may find the grant due a few ms before
    # the scheduled revoke is handled, and revoke it itself ("expired (reconcile)"). Either way it ended at expiry.
    assert event["data"]["reason"] in ("expired", "expired (reconcile)"), event["data"]
    assert types_of(s.events(rid))[:1] == ["request.received"]


def test_a_request_for_a_provider_the_local_jitgate_does_not_serve_fails_visibly(jitgate_server: JitgateServer) -> None:
    # GIVEN the example policy, which approves Reader in the dev subscription on azure-rbac at once, and a local
    # jitgate, which serves only the `local` provider
    s = jitgate_server
    doc = access_request(dev_rg("rg-unserved-dev"))
    doc["target"]["provider"] = "azure-rbac"
    rid = doc["requestId"]
    submit(s, doc)
    # THEN the request fails (it is not left `approved`), says why to its requester, and the audit trail has it
    failed = s.wait_state(rid, "failed")
    assert "provider 'azure-rbac' is not configured in this deployment (it serves: local)" in failed["failure"]
    with s.client(JANE) as c:
        mine = c.get(f"/api/access-requests/{rid}")
    assert (mine.status_code, mine.json()["state"]) == (200, "failed")
    [event] = s.events(rid, "grant.failed")
    assert "azure-rbac" in event["data"]["error"]
    assert not s.assignments_of(rid)
    assert "Grant failed" in s.log_tail(400) and rid in s.log_tail(400)


def test_two_approvals_over_the_signed_teams_webhook_and_refused_calls(jitgate_server: JitgateServer) -> None:
    s = jitgate_server
    doc = access_request(
        PROD_RG,
        role="Contributor",
        duration="PT1M",
        justification="Rotate the payments DB firewall rule for INC-4711",
        ticket="INC-4711",
    )
    rid = doc["requestId"]
    submit(s, doc)
    pending = s.wait_state(rid, "pending_approval")
    assert pending["decision"]["requiredApprovals"] == 2, pending["decision"]
    secret = s.teams_secret()

    def refusals() -> int:
        return len(s.events(rid, "access.refused"))

    audited_reasons: set[str] = set()

    def assert_unchanged(approvals: list[str], refused_before: int, label: str) -> None:
        record = s.get(rid)
        assert record["state"] == "pending_approval", f"{label}: state {record['state']}"
        assert [a["approverId"] for a in record["approvals"]] == approvals, f"{label}: {record['approvals']}"
        assert not s.assignments_of(rid), f"{label}: nothing may be granted"
        reasons = {e["data"]["reason"] for e in s.events(rid, "access.refused")}
        # A refusal is audited against the request, once a minute per action and verified caller: every
        # unauthenticated caller counts as one (anyone can provoke refusals; they must not flood the chain).
        expected = refused_before + (0 if reasons <= audited_reasons else 1)
        assert refusals() == expected, f"{label}: the refusal is audited against the request"
        audited_reasons.update(reasons)

    alice_body = s.teams_body(ALICE, f"approve {rid} ok for INC-4711", "Alice")
    other_body = s.teams_body(ALICE, f"approve {rid} ok for INC-9999", "Alice")
    refused_calls = {
        "forged signature (another key)": (alice_body, sign(os.urandom(32), alice_body)),
        "missing Authorization header": (alice_body, None),
        "malformed header (wrong scheme)": (alice_body, "Bearer " + sign(secret, alice_body).split(" ", 1)[1]),
        "malformed header (not base64)": (alice_body, "HMAC not*base64!"),
        "malformed header (truncated signature)": (alice_body, sign(secret, alice_body)[:-8]),
        "signature over a different body": (alice_body, sign(secret, other_body)),
    }
    for label, (body, authorization) in refused_calls.items():
        before = refusals()
        response = s.post_teams(body, authorization)
        assert response.status_code == 401, f"{label}: {response.status_code} {response.text}"
        assert_unchanged([], before, label)

    response = s.teams(JANE, f"approve {rid} looks fine to me")
    assert response.status_code == 200, response.text
    assert s.get(rid)["approvals"] == [], "the requester cannot approve her own request"
    [own] = s.events(rid, "approval.recorded")
    assert own["data"]["counted"] is False and own["actor"]["principalId"] == JANE, own["data"]

    alice_auth = sign(secret, alice_body)
    response = s.post_teams(alice_body, alice_auth)
    assert response.status_code == 200, response.text
    assert "1 of 2" in response.json()["text"], response.json()
    record = s.get(rid)
    assert record["state"] == "pending_approval"
    assert [a["approverId"] for a in record["approvals"]] == [ALICE]

    before = refusals()
    replay = s.post_teams(alice_body, alice_auth)
    assert replay.status_code == 401, f"byte-identical replay: {replay.status_code} {replay.text}"
    assert_unchanged([ALICE], before, "replay")

    response = s.teams(BOB, f"approve {rid}")
    assert response.status_code == 200, response.text
    assert "approved" in response.json()["text"], response.json()
    s.wait_state(rid, "active")
    [assignment] = s.assignments_of(rid)
    assert assignment.principal_id == JANE
    assert assignment.role_definition_id == AZURE_BUILTIN_ROLES["Contributor"]
    assert assignment.scope.lower() == PROD_RG.lower()
    [approved] = s.events(rid, "request.approved")
    assert sorted(approved["data"]["approvers"]) == sorted([ALICE, BOB])
    counted = [e["data"]["approver"] for e in s.events(rid, "approval.recorded") if e["data"]["counted"]]
    assert counted == [ALICE, BOB], "each approver counted once, the replay not at all"


def test_request_id_reused_with_another_body_is_409(jitgate_server: JitgateServer) -> None:
    s = jitgate_server
    doc = access_request(dev_rg("rg-idem-dev"))
    rid = doc["requestId"]
    raw = json.dumps(doc).encode()
    assert submit(s, raw)["requestId"] == rid
    assert submit(s, raw)["requestId"] == rid, "the same id with the same body is the same request"
    s.wait_state(rid, "active")

    conflict = submit(s, {**doc, "duration": "PT30M"}, expected=409)
    assert conflict["error"] == "conflict", conflict
    record = s.get(rid)
    assert record["state"] == "active"
    assert record["request"]["duration"] == "PT1H", "the first body stands"
    assert len(s.assignments_of(rid)) == 1, "one grant, however often the id is sent"
    rejected = s.events(rid, "request.rejected")
    assert len(rejected) == 1 and "reused" in rejected[0]["data"]["reason"], rejected
    assert len(s.events(rid, "grant.applied")) == 1


def test_early_revoke_by_the_requester_and_not_by_a_stranger(jitgate_server: JitgateServer) -> None:
    s = jitgate_server
    doc = access_request(dev_rg("rg-revoke-dev"), role="Contributor", justification="Deploy a hotfix to dev")
    rid = doc["requestId"]
    submit(s, doc)
    s.wait_state(rid, "active")
    assert len(s.assignments_of(rid)) == 1

    with s.client(STRANGER) as c:
        refused = c.post(f"/api/access-requests/{rid}/revoke", json={"reason": "mine now"})
    assert refused.status_code == 403, f"{refused.status_code} {refused.text}"
    assert s.get(rid)["state"] == "active"
    assert len(s.assignments_of(rid)) == 1, "a stranger's revoke changes nothing"
    assert s.events(rid, "access.refused"), "the refusal is audited"

    with s.client(JANE) as c:
        response = c.post(f"/api/access-requests/{rid}/revoke", json={"reason": "done"})
    assert response.status_code == 200, f"{response.status_code} {response.text}"
    assert response.json()["state"] == "revoked"
    assert not s.assignments_of(rid), "the assignment is gone at once"
    assert s.get(rid)["state"] == "revoked"
    [event] = s.events(rid, "grant.revoked")
    assert event["actor"]["principalId"] == JANE
    assert "cancelledSequenceNumber" in event["data"], "the scheduled revoke at expiry was cancelled"


# ---------------------------------------------------------------- the audit trail (keep last)


def test_audit_trail_verifies_and_the_cli_queries_it(jitgate_server: JitgateServer) -> None:
    s = jitgate_server
    doc = access_request(dev_rg("rg-audit-dev"))
    rid = doc["requestId"]
    submit(s, doc)
    s.wait_state(rid, "active")
    bad = access_request(dev_rg("rg-audit-dev"), duration="P1Y")
    assert submit(s, bad, expected=422)["requestId"] == bad["requestId"]

    with s.auditor() as c:
        verify = c.get("/api/audit/verify")
    assert verify.status_code == 200, verify.text
    report = verify.json()
    assert report["ok"] is True and report["broken"] == [], report
    assert report["chains"] >= 2 and report["events"] >= report["chains"], report

    offline = s.cli("audit", "verify", "--data-dir", str(s.data_dir))
    assert offline.returncode == 0, offline.stdout + offline.stderr
    assert "OK" in offline.stdout

    as_json = s.cli("audit", "query", "--json", "--request-id", rid, "--limit", "1000")
    assert as_json.returncode == 0, as_json.stdout + as_json.stderr
    events = json.loads(as_json.stdout)["events"]
    assert {e["requestId"] for e in events} == {rid}
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert {"request.received", "policy.evaluated", "grant.applied"} <= set(types_of(events)), types_of(events)

    as_csv = s.cli("audit", "query", "--csv", "--request-id", rid, "--limit", "1000")
    assert as_csv.returncode == 0, as_csv.stdout + as_csv.stderr
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [(r["requestId"], int(r["seq"]), r["type"], r["hash"]) for r in rows] == [
        (e["requestId"], e["seq"], e["type"], e["hash"]) for e in events
    ]

    rejected = s.cli("audit", "query", "--json", "--type", "request.rejected", "--request-id", bad["requestId"])
    assert rejected.returncode == 0, rejected.stdout + rejected.stderr
    [event] = json.loads(rejected.stdout)["events"]
    assert [e["loc"] for e in event["data"]["errors"]] == ["duration"]


def test_the_readme_teams_command_takes_its_comment_after_the_options(jitgate_server: JitgateServer) -> None:
    # GIVEN a request waiting for two approvals
    s = jitgate_server
    doc = access_request(f"/subscriptions/{PROD_SUB}/resourceGroups/rg-cli-prod", role="Contributor",
                         duration="PT1M", justification="Rotate the cli DB firewall rule for INC-4711",
                         ticket="INC-4711")
    rid = submit(s, doc)["requestId"]
    s.wait_state(rid, "pending_approval")
    # WHEN Alice approves as the README writes it: `jitgate teams approve ID --as OBJECT_ID [comment]`
    approved = s.cli("teams", "approve", rid, "--data-dir", str(s.data_dir), "--as", ALICE, "looks", "good")
    # THEN it is counted, with her comment
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert [(a["approverId"], a["comment"]) for a in s.get(rid)["approvals"]] == [(ALICE, "looks good")]
