"""The API the Backstage pages use (issue #14): lists with filters and paging, approve and deny with the Teams
rules, extend, and who approved and who still may — over HTTP against the embedded runtime."""

from __future__ import annotations

import base64
import json
from typing import Any

from fastapi.testclient import TestClient

from shared.runtime import Runtime
from tests.functional import test_api
from tests.functional.test_api import (
    ADMIN,
    ALICE,
    AUDITOR,
    BOB,
    DEV,
    JANE,
    MALLORY,
    PROD,
    access_request,
    drain,
    refusals,
    state,
    submit,
    teams,
    who,
)

settings, runtime, client = test_api.settings, test_api.runtime, test_api.client  # the same fixtures


def listed(client: TestClient, caller: dict[str, str], **params: Any) -> dict[str, Any]:
    response = client.get("/api/access-requests", params=params, headers=caller)
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc


def ids(doc: dict[str, Any]) -> list[str]:
    return [r["requestId"] for r in doc["requests"]]


def test_an_approver_sees_what_waits_for_them_and_approves_it_in_the_api(client: TestClient, runtime: Runtime):
    # GIVEN Jane's production request, which wants two approvals
    rid = submit(client, runtime, access_request(role="Contributor", scope=PROD))
    # THEN it waits for Alice, and the list says who approved (nobody) and that she may
    waiting = listed(client, who(ALICE), waitingForMe="true")
    assert ids(waiting) == [rid]
    approval = waiting["requests"][0]["approval"]
    assert approval["youMay"] is True and approval["required"] == 2 and approval["given"] == []
    assert waiting["requests"][0]["stateInWords"].startswith("waiting for 2 more approvals")
    # WHEN Alice approves with a comment
    response = client.post(f"/api/access-requests/{rid}/approve", json={"comment": "ok for INC-4711"},
                           headers=who(ALICE))
    assert response.status_code == 200, response.text
    assert response.json()["message"] == "approval 1 of 2 recorded"
    # THEN the request shows her approval, and that Bob (not Jane, not Alice) still may
    detail = client.get(f"/api/access-requests/{rid}", headers=who(JANE)).json()
    assert [(a["approverId"], a["comment"]) for a in detail["approval"]["given"]] == [(ALICE, "ok for INC-4711")]
    assert {p["principalId"] for p in detail["approval"]["stillMay"]} == {BOB}
    assert detail["approval"]["youMay"] is False and "your own" in detail["approval"]["whyNot"]
    # AND it no longer waits for Alice; a second approval by her is not counted twice
    assert ids(listed(client, who(ALICE), waitingForMe="true")) == []
    again = client.post(f"/api/access-requests/{rid}/approve", headers=who(ALICE))
    assert again.json()["message"] == "your approval is already counted"
    # WHEN Bob approves, THEN it is granted
    assert client.post(f"/api/access-requests/{rid}/approve", headers=who(BOB)).status_code == 200
    drain(runtime)
    assert state(runtime, rid) == "active"
    assert ids(listed(client, who(JANE), mine="true", state="active")) == [rid]


def test_the_requester_and_strangers_cannot_approve_and_each_refusal_is_audited(client: TestClient,
                                                                               runtime: Runtime):
    rid = submit(client, runtime, access_request(role="Contributor", scope=PROD))
    own = client.post(f"/api/access-requests/{rid}/approve", headers=who(JANE))
    stranger = client.post(f"/api/access-requests/{rid}/deny", json={"reason": "no"}, headers=who(MALLORY))
    assert own.status_code == 403 and "your own request" in own.json()["detail"]
    assert stranger.status_code == 403 and "approver group" in stranger.json()["detail"]
    refused = [e for e in runtime.audit.chain(rid) if e.type == "approval.recorded"]
    assert [(e.actor.principal_id, e.data["verdict"], e.data["counted"]) for e in refused] == [
        (JANE, "approve", False), (MALLORY, "deny", False)]
    assert state(runtime, rid) == "pending_approval"


def test_a_service_cannot_approve_in_anyones_name(client: TestClient, runtime: Runtime):
    # GIVEN the Backstage backend's own identity (an app token: subject = object id), even in an approver group
    rid = submit(client, runtime, access_request(role="Contributor", scope=PROD))
    claims = {"claims": [{"typ": "oid", "val": ALICE}, {"typ": "sub", "val": ALICE},
                         {"typ": "roles", "val": "Jit.Submitter"}]}
    header = {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(json.dumps(claims).encode()).decode()}
    response = client.post(f"/api/access-requests/{rid}/approve", headers=header)
    assert response.status_code == 403 and "a service cannot approve" in response.json()["detail"]
    assert [r["data"]["action"] for r in refusals(runtime, rid)] == ["approve"]
    assert runtime.requests.get_request(rid).approvals == []  # type: ignore[union-attr]


def test_deny_needs_a_reason_and_ends_the_request(client: TestClient, runtime: Runtime):
    rid = submit(client, runtime, access_request(role="Contributor", scope=PROD))
    missing = client.post(f"/api/access-requests/{rid}/deny", json={}, headers=who(ALICE))
    assert missing.status_code == 422 and missing.json()["errors"][0]["loc"] == "body.reason"
    hidden = client.post(f"/api/access-requests/{rid}/deny", json={"reason": "no\u202e"}, headers=who(ALICE))
    assert hidden.status_code == 422
    denied = client.post(f"/api/access-requests/{rid}/deny", json={"reason": "not during the freeze"},
                         headers=who(ALICE))
    assert denied.status_code == 200 and denied.json()["state"] == "denied"
    assert ids(listed(client, who(JANE), state="denied")) == [rid]


def test_the_requester_extends_an_active_grant_within_the_rule(client: TestClient, runtime: Runtime):
    rid = submit(client, runtime, access_request(duration="PT1H"))
    before = client.get(f"/api/access-requests/{rid}", headers=who(JANE)).json()["expiresAt"]
    response = client.post(f"/api/access-requests/{rid}/extend", json={"duration": "PT30M", "reason": "long job"},
                           headers=who(JANE))
    assert response.status_code == 200, response.text
    assert response.json()["message"].startswith("extended: active until ")
    after = client.get(f"/api/access-requests/{rid}", headers=who(JANE)).json()
    assert after["expiresAt"] > before and after["holds"][0]["expiresAt"] == after["expiresAt"]
    assert [e["type"] for e in after["timeline"]][-2:] == ["grant.extended", "revoke.scheduled"]
    too_long = client.post(f"/api/access-requests/{rid}/extend", json={"duration": "PT8H"}, headers=who(JANE))
    assert too_long.status_code == 422 and "longer than this rule allows" in too_long.json()["detail"]
    for bad in ({}, {"duration": "soon"}, {"duration": 3600}, {"duration": "PT1H", "until": "x"}):
        assert client.post(f"/api/access-requests/{rid}/extend", json=bad, headers=who(JANE)).status_code == 422
    other = client.post(f"/api/access-requests/{rid}/extend", json={"duration": "PT1H"}, headers=who(ALICE))
    assert other.status_code == 403
    assert [r["data"]["action"] for r in refusals(runtime, rid)] == ["extend"]


def test_lists_show_only_what_the_caller_may_read_filtered_and_paged(client: TestClient, runtime: Runtime):
    mine = [submit(client, runtime, access_request(duration="PT1H")) for _ in range(5)]
    alices = submit(client, runtime, access_request(requester=ALICE))
    # Jane sees her own, not Alice's dev request (she is no approver of it); an auditor sees all
    assert ids(listed(client, who(JANE))) == list(reversed(mine))
    assert ids(listed(client, who(AUDITOR, "Jit.Auditor")))[:1] == [alices]
    assert ids(listed(client, who(MALLORY))) == []
    # by target (any case), by state, and pages that add up to the whole without a repeat
    seen: list[str] = []
    params: dict[str, Any] = {"scope": DEV.upper(), "role": "reader", "provider": "local", "state": "active",
                              "limit": 2}
    while True:
        page = listed(client, who(ADMIN, "Jit.Admin"), **params)
        assert len(page["requests"]) <= 2
        seen += ids(page)
        if not page["continuation"]:
            break
        params["continuation"] = page["continuation"]
    assert seen == [alices, *reversed(mine)]


def test_bad_list_filters_are_422(client: TestClient):
    for params in ({"state": "asleep"}, {"limit": 0}, {"limit": 101}, {"continuation": "garbage"},
                   {"mine": "perhaps"}):
        response = client.get("/api/access-requests", params=params, headers=who(JANE))
        assert response.status_code == 422, (params, response.text)
    assert client.get("/api/access-requests").status_code == 401


def test_the_openapi_document_describes_the_pages_endpoints(client: TestClient):
    doc = client.get("/api/openapi.json").json()
    paths = doc["paths"]
    listing = {p["name"] for p in paths["/api/access-requests"]["get"]["parameters"]}
    assert {"mine", "waitingForMe", "state", "provider", "scope", "role", "limit", "continuation"} <= listing
    for verb, required in (("approve", []), ("deny", ["reason"]), ("extend", ["duration"])):
        post = paths[f"/api/access-requests/{{request_id}}/{verb}"]["post"]
        schema = post["requestBody"]["content"]["application/json"]["schema"]
        assert schema["required"] == required and schema["additionalProperties"] is False
        assert {"413", "415"} <= set(post["responses"])


def test_more_time_the_rule_wants_approved_is_approved_on_the_page_and_in_teams(client: TestClient, runtime: Runtime):
    # GIVEN Jane's active production grant (two approvals)
    rid = submit(client, runtime, access_request(role="Contributor", scope=PROD))
    for approver in (ALICE, BOB):
        assert client.post(f"/api/access-requests/{rid}/approve", headers=who(approver)).status_code == 200
    drain(runtime)
    before = client.get(f"/api/access-requests/{rid}", headers=who(JANE)).json()
    assert before["state"] == "active"
    # WHEN she asks for more time, THEN it waits for the approvers, and shows on their "waiting for me"
    asked = client.post(f"/api/access-requests/{rid}/extend", json={"duration": "PT1H", "reason": "long job"},
                        headers=who(JANE))
    assert asked.status_code == 200 and "waits for 2 approvals" in asked.json()["message"]
    waiting = listed(client, who(ALICE), waitingForMe="true")
    assert ids(waiting) == [rid] and waiting["requests"][0]["extension"]["reason"] == "long job"
    # WHEN Alice approves on the page and Bob in Teams, THEN the grant ends an hour later
    first = client.post(f"/api/access-requests/{rid}/approve", json={"comment": "fine"}, headers=who(ALICE))
    assert first.json()["message"] == "approval 1 of 2 for more time recorded"
    code, answer = teams(client, BOB, f"approve {rid}")
    assert code == 200 and "extended: active until" in answer["text"]
    after = client.get(f"/api/access-requests/{rid}", headers=who(JANE)).json()
    assert after["extension"] is None and after["expiresAt"] > before["expiresAt"]
