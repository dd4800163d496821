"""The Teams side as people meet it, on a local runtime built from settings: the card an approver receives
(@mentioned, told to @mention the outgoing webhook, linked to the portal) and the replies they type."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shared.adapters.embedded.outbox import read_outbox
from shared.api import create_app
from shared.runtime import Runtime, build_local
from shared.settings import Settings
from shared.teams import outgoing_payload, sign

ALICE = "aaaaaaaa-0000-4000-8000-00000000000a"
BOB = "bbbbbbbb-0000-4000-8000-00000000000b"
JANE = "dddddddd-0000-4000-8000-00000000000d"
PROD = "/subscriptions/22222222-2222-4222-8222-222222222222/resourceGroups/rg-payments-prod"
SECRET = b"functional-test-webhook-secret!!"
PORTAL = "https://backstage.example.com"

POLICY = f"""
version: 1
groups:
  platform-approvers: ["{ALICE}", "{BOB}"]
rules:
  - name: prod-contributor
    match: {{providers: [local], roles: [Contributor], scopes: ["/subscriptions/*/resourceGroups/*"]}}
    outcome: approval
    approval: {{groups: [platform-approvers], required: 2, deadline: PT4H}}
    maxDuration: PT4H
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    return Settings(data_dir=tmp_path / "data", policy_path=policy, teams_secret=base64.b64encode(SECRET).decode(),
                    teams_webhook_name="JIT Gate", portal_url=PORTAL)


@pytest.fixture
def runtime(settings: Settings) -> Runtime:
    return build_local(settings)


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime)) as c:
        yield c


def submit(client: TestClient, runtime: Runtime) -> str:
    request_id = str(uuid.uuid4())
    body = {
        "schemaVersion": 1,
        "requestId": request_id,
        "requester": {"principalId": JANE, "displayName": "Jane Doe"},
        "target": {"provider": "local", "scope": PROD, "role": "Contributor"},
        "duration": "PT1H30M",
        "justification": "Rotate the payments DB firewall rule for INC-4711",
    }
    response = client.post("/api/access-requests", json=body, headers={"X-Jitgate-Dev-Principal": JANE})
    assert response.status_code == 202, response.text
    for message in runtime.bus.receive(runtime.settings.requests_queue, 10):
        runtime.lifecycle.evaluate(message.body)
        runtime.bus.complete(message)
    return request_id


def teams(client: TestClient, sender: str, text: str) -> str:
    body = outgoing_payload(text, sender, "Someone")
    response = client.post("/api/teams/webhook", content=body,
                           headers={"Authorization": sign(SECRET, body), "Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    answer: str = response.json()["text"]
    return answer


def approval_card(runtime: Runtime, request_id: str) -> dict[str, Any]:
    [record] = [r for r in read_outbox(runtime.settings.data_dir / "outbox.jsonl")
                if r["requestId"] == request_id and r["kind"] == "approval_requested"]
    card: dict[str, Any] = record["card"]["attachments"][0]["content"]
    return card


def test_the_approval_card_mentions_the_approvers_names_the_webhook_and_links_the_portal(
    client: TestClient, runtime: Runtime
) -> None:
    request_id = submit(client, runtime)
    card = approval_card(runtime, request_id)
    text = json.dumps(card, ensure_ascii=False)

    # The policy names people by object id only: the start of the id stands in for their name.
    assert card["msteams"]["entities"] == [
        {"type": "mention", "text": "<at>aaaaaaaa…</at>", "mentioned": {"id": ALICE, "name": "aaaaaaaa…"}},
        {"type": "mention", "text": "<at>bbbbbbbb…</at>", "mentioned": {"id": BOB, "name": "bbbbbbbb…"}},
    ]
    assert "Approvers: <at>aaaaaaaa…</at> and <at>bbbbbbbb…</at>" in text
    assert f"@JIT Gate approve {request_id} [comment]" in text
    assert f"@JIT Gate deny {request_id} <reason>" in text
    assert "Type @JIT Gate and pick JIT Gate from the list" in text
    assert card["actions"] == [{"type": "Action.OpenUrl", "title": "Open in Backstage",
                                "url": f"{PORTAL}/jitgate/requests/{request_id}"}]
    assert "1 hour 30 minutes" in text and "PT1H30M" not in text


def test_without_a_portal_the_card_has_no_button(settings: Settings) -> None:
    runtime = build_local(replace(settings, portal_url=""))
    with TestClient(create_app(runtime)) as client:
        request_id = submit(client, runtime)
    assert "actions" not in approval_card(runtime, request_id)


def test_the_lines_copied_from_the_card_do_what_they_say(client: TestClient, runtime: Runtime) -> None:
    request_id = submit(client, runtime)

    refused = teams(client, BOB, f"deny {request_id} &lt;reason&gt;")
    assert refused.startswith("a denial needs a real reason the requester can act on")
    answer = teams(client, ALICE, f"approve\u200b {request_id} [comment]")
    assert answer == f"Request {request_id}: approval 1 of 2 recorded."
    record = runtime.requests.get_request(request_id)
    assert record is not None and record.state.value == "pending_approval"
    assert [(a.approver_id, a.comment) for a in record.approvals] == [(ALICE, "")]
    assert teams(client, ALICE, f"status {request_id}").startswith(
        f"Request {request_id} (Contributor at {PROD} for Jane Doe) is waiting for 1 more approval (deadline "
    )


def test_help_tells_people_to_mention_the_webhook_by_its_configured_name(client: TestClient) -> None:
    answer = teams(client, ALICE, "help")
    assert answer.startswith("Start each command with @JIT Gate: type @JIT Gate and pick JIT Gate from the list")
    for line in ("approve <request id> [comment]", "deny <request id> <reason>", "status <request id>", "help"):
        assert f"`@JIT Gate {line}`" in answer
