"""Every endpoint that reads a body, against the hostile corpus and the hostile bodies, in process (issue #9).

Intake, revoke and the Teams webhook (unsigned and correctly signed) must answer every one with a 4xx and a
reason, never 5xx, and keep serving; refusals stay audited where a request id is known. Each reads only UTF-8
`application/json` (415 otherwise), and a stalled body is answered 408 within the read bound.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shared.api import create_app
from shared.runtime import Runtime, build_local
from shared.settings import Settings
from shared.teams import outgoing_payload, sign
from tests.functional.test_api import (
    ADMIN,
    ALICE,
    JANE,
    MALLORY,
    POLICY,
    PROD,
    SECRET,
    access_request,
    drain,
    refusals,
    state,
    who,
)
from tests.unit.test_hostile_corpus import ALL_BODIES as BODIES
from tests.unit.test_hostile_corpus import HOSTILE_BODIES, REVOKE_WITHOUT_REASON

REVOKE_BODIES = {name: raw for name, raw in BODIES.items() if name not in REVOKE_WITHOUT_REASON}
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    root = tmp_path_factory.mktemp("bodies")
    policy = root / "policy.yaml"
    policy.write_text(POLICY)
    return build_local(Settings(data_dir=root / "data", policy_path=policy,
                                teams_secret=base64.b64encode(SECRET).decode()))


@pytest.fixture(scope="module")
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def active(client: TestClient, runtime: Runtime) -> str:
    body = access_request()
    assert client.post("/api/access-requests", json=body, headers=who(JANE)).status_code == 202
    drain(runtime)
    assert state(runtime, body["requestId"]) == "active"
    return str(body["requestId"])


def refused_with_a_reason(response: Any, name: str) -> list[str]:
    """What is wrong with this answer to a hostile body (nothing when it is a 4xx with a reason)."""
    problems = []
    if not 400 <= response.status_code < 500:
        problems.append(f"{name}: {response.status_code} {response.text[:200]}")
    else:
        doc = response.json()
        if not (isinstance(doc.get("detail"), str) and doc["detail"] and doc.get("error")):
            problems.append(f"{name}: {response.status_code} without a reason: {response.text[:200]}")
    return problems


def serving(client: TestClient) -> bool:
    return client.get("/api/health").status_code == 200


# ---------------------------------------------------------------- the hostile bodies, at every endpoint


def test_intake_refuses_every_hostile_body_with_a_reason_and_audits_it(client: TestClient, runtime: Runtime) -> None:
    problems = []
    for name, raw in BODIES.items():
        response = client.post("/api/access-requests", content=raw, headers={**who(JANE), **JSON})
        problems += refused_with_a_reason(response, name)
        if response.status_code == 422:
            rejected = [e for e in runtime.audit.chain(response.json()["requestId"]) if e.type == "request.rejected"]
            if not rejected:
                problems.append(f"{name}: the rejection is not audited")
    assert not problems, "\n".join(problems)
    assert serving(client)


def test_revoke_refuses_every_hostile_body_with_a_reason(client: TestClient, runtime: Runtime, active: str) -> None:
    problems = []
    for name, raw in REVOKE_BODIES.items():
        response = client.post(f"/api/access-requests/{active}/revoke", content=raw, headers={**who(JANE), **JSON})
        problems += refused_with_a_reason(response, name)
        if response.status_code not in (413, 422):
            problems.append(f"{name}: {response.status_code}, not 413 or 422")
    assert not problems, "\n".join(problems)
    assert state(runtime, active) == "active", "no hostile body revoked the request"
    assert serving(client)


def test_a_stranger_revoking_with_a_hostile_body_is_refused_and_audited(client: TestClient, runtime: Runtime,
                                                                        active: str) -> None:
    for raw in HOSTILE_BODIES.values():
        response = client.post(f"/api/access-requests/{active}/revoke", content=raw,
                               headers={**who(MALLORY), **JSON})
        assert response.status_code in (403, 413), response.text
    assert [r["actor"]["principalId"] for r in refusals(runtime, active)] == [MALLORY]
    assert state(runtime, active) == "active"


def test_the_unsigned_webhook_refuses_every_hostile_body_with_401(client: TestClient) -> None:
    problems = []
    for name, raw in BODIES.items():
        response = client.post("/api/teams/webhook", content=raw, headers={"Authorization": "HMAC AAAA", **JSON})
        problems += refused_with_a_reason(response, name)
        if response.status_code not in (401, 413):
            problems.append(f"{name}: {response.status_code}, not 401 or 413")
    assert not problems, "\n".join(problems)
    assert serving(client)


def test_the_signed_webhook_refuses_every_hostile_body_with_400(client: TestClient) -> None:
    problems = []
    for name, raw in BODIES.items():
        response = client.post("/api/teams/webhook", content=raw, headers={"Authorization": sign(SECRET, raw), **JSON})
        problems += refused_with_a_reason(response, name)
        if response.status_code not in (400, 413):
            problems.append(f"{name}: {response.status_code}, not 400 or 413")
    assert not problems, "\n".join(problems)
    assert serving(client)


def test_a_forged_call_naming_a_request_is_still_audited(client: TestClient, runtime: Runtime) -> None:
    body = access_request(role="Contributor", scope=PROD)
    assert client.post("/api/access-requests", json=body, headers=who(JANE)).status_code == 202
    drain(runtime)
    forged = outgoing_payload(f"approve {body['requestId']}", ALICE, "Mallory")
    response = client.post("/api/teams/webhook", content=forged, headers={"Authorization": sign(b"guess", forged),
                                                                           **JSON})
    assert response.status_code == 401
    assert [r["data"]["action"] for r in refusals(runtime, body["requestId"])] == ["teams.webhook"]


def test_a_revoke_reason_with_a_lone_surrogate_is_422_not_500(client: TestClient, runtime: Runtime,
                                                               active: str) -> None:
    response = client.post(f"/api/access-requests/{active}/revoke", content=b'{"reason": "done \\ud800"}',
                           headers={**who(JANE), **JSON})
    assert response.status_code == 422 and "lone surrogate" in response.json()["errors"][0]["msg"]
    assert state(runtime, active) == "active"


# ---------------------------------------------------------------- Content-Type


POSTS = ["intake", "revoke", "webhook"]


def post(client: TestClient, endpoint: str, request_id: str, content_type: str | None) -> Any:
    headers = {} if content_type is None else {"Content-Type": content_type}
    if endpoint == "intake":
        raw = json.dumps(access_request()).encode()
        return client.post("/api/access-requests", content=raw, headers={**who(JANE), **headers})
    if endpoint == "revoke":
        return client.post(f"/api/access-requests/{request_id}/revoke", content=b"",
                           headers={**who(JANE), **headers})
    raw = outgoing_payload("help", ALICE, "Alice")
    return client.post("/api/teams/webhook", content=raw, headers={"Authorization": sign(SECRET, raw), **headers})


@pytest.mark.parametrize("endpoint", POSTS)
@pytest.mark.parametrize("content_type", [None, "text/plain", "text/plain; charset=utf-8", "application/xml",
                                          "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                                          "application/json; charset=iso-8859-1", "application/json; charset=utf-16",
                                          "application/jsonx", "application/problem+json"])
def test_a_body_not_sent_as_json_is_415_and_has_no_effect(client: TestClient, runtime: Runtime, endpoint: str,
                                                          content_type: str | None) -> None:
    request_id = str(uuid.uuid4())
    response = post(client, endpoint, request_id, content_type)
    assert response.status_code == 415, response.text
    doc = response.json()
    assert doc["error"] == "unsupported_media_type"
    assert "application/json" in doc["detail"] or "UTF-8" in doc["detail"]
    assert runtime.requests.get_request(request_id) is None


@pytest.mark.parametrize("endpoint", POSTS)
@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          'Application/JSON; charset="UTF-8"', "application/json;charset=utf-8"])
def test_json_with_or_without_the_utf8_charset_is_read(client: TestClient, runtime: Runtime, endpoint: str,
                                                       content_type: str) -> None:
    target = access_request()
    if endpoint == "revoke":
        assert client.post("/api/access-requests", json=target, headers=who(JANE)).status_code == 202
        drain(runtime)
    response = post(client, endpoint, target["requestId"], content_type)
    assert response.status_code in (200, 202), response.text


# ---------------------------------------------------------------- stalled and abandoned bodies


def asgi_post(app: Any, receive: Any, path: str = "/api/access-requests") -> list[dict[str, Any]]:
    """POST through the ASGI interface with a hand-made `receive`; the messages the app sent."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
             "headers": [(b"x-jitgate-dev-principal", JANE.encode()), (b"content-type", b"application/json")]}
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
    return sent


@pytest.fixture
def quick(runtime: Runtime) -> Any:
    """The app of `runtime` with a read bound of 0.3 s."""
    settings = replace(runtime.settings, request_read_timeout=timedelta(seconds=0.3))
    return create_app(replace(runtime, settings=settings))


def test_a_stalled_body_is_answered_408_and_the_connection_closed(quick: Any, caplog: pytest.LogCaptureFixture) -> None:
    # GIVEN a client that sends the first bytes of its body and then nothing
    chunks = 0

    async def receive() -> dict[str, Any]:
        nonlocal chunks
        chunks += 1
        if chunks == 1:
            return {"type": "http.request", "body": b'{"schemaVersion": 1,', "more_body": True}
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    # WHEN it is posted
    started = time.monotonic()
    with caplog.at_level(logging.INFO):
        sent = asgi_post(quick, receive)
    # THEN the answer is 408 with Connection: close, at the bound, in one log line and no traceback
    assert 0.3 <= time.monotonic() - started < 3
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 408
    assert (b"connection", b"close") in start["headers"]
    body = json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))
    assert body == {"error": "request_timeout", "detail": "the body did not arrive within 0.3 s"}
    lines = [r for r in caplog.records if "did not arrive" in r.getMessage()]
    assert len(lines) == 1 and "127.0.0.1:50000" in lines[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info]


def test_a_client_that_hangs_up_mid_body_is_one_log_line(quick: Any, caplog: pytest.LogCaptureFixture) -> None:
    messages = iter([{"type": "http.request", "body": b'{"schemaVersion"', "more_body": True},
                     {"type": "http.disconnect"}])

    async def receive() -> dict[str, Any]:
        return next(messages)

    with caplog.at_level(logging.INFO):
        asgi_post(quick, receive)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO] == [
        "POST /api/access-requests from 127.0.0.1:50000: the client disconnected before its body was complete"]
    assert not [r for r in caplog.records if r.exc_info]


def test_a_body_that_arrives_in_time_is_read(quick: Any) -> None:
    # GIVEN a body that arrives at once, THEN the answer is the endpoint's own, however short the bound
    raw = json.dumps(access_request()).encode()
    delivered = iter([{"type": "http.request", "body": raw, "more_body": False}])

    async def receive() -> dict[str, Any]:
        return next(delivered)

    sent = asgi_post(quick, receive)
    assert next(m for m in sent if m["type"] == "http.response.start")["status"] == 202


def test_an_admin_revoke_with_an_empty_json_body_is_read(client: TestClient, runtime: Runtime) -> None:
    body = access_request()
    assert client.post("/api/access-requests", json=body, headers=who(JANE)).status_code == 202
    drain(runtime)
    response = client.post(f"/api/access-requests/{body['requestId']}/revoke",
                           headers={**who(ADMIN, "Jit.Admin"), **JSON})
    assert response.status_code == 200 and response.json()["state"] == "revoked"
