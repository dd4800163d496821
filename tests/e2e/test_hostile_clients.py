"""Hostile bodies and hostile clients against a real `jitgate serve`, over HTTP and raw sockets (issue #9).

Every endpoint that reads a body refuses what it cannot read with a 4xx and a reason, never a 5xx; a body not
sent as JSON is 415; a connection that stalls its request head or body is closed within the read bound, one log
line each and no traceback, while the server keeps serving everyone else.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from shared.teams import sign
from tests.e2e.conftest import HOST, JANE, STRANGER, JitgateServer, running_server
from tests.e2e.test_serve_http import access_request, dev_rg, submit
from tests.unit.test_hostile_corpus import ALL_BODIES as BODIES
from tests.unit.test_hostile_corpus import HOSTILE_BODIES, REVOKE_WITHOUT_REASON

pytestmark = pytest.mark.e2e

NOT_A_REVOKE = {name: raw for name, raw in BODIES.items() if name not in REVOKE_WITHOUT_REASON}
JSON = {"Content-Type": "application/json"}


def refusal_problems(health: httpx.Client, name: str, response: httpx.Response, allowed: set[int]) -> list[str]:
    """What is wrong with this answer to a hostile body, and whether the server still answers after it."""
    if response.status_code not in allowed:
        return [f"{name}: {response.status_code} {response.text[:200]}"]
    doc = response.json()
    if not (doc.get("error") and isinstance(doc.get("detail"), str) and doc["detail"]):
        return [f"{name}: no reason in {response.text[:200]}"]
    return [] if health.get("/api/health").status_code == 200 else [f"{name}: the server stopped answering"]


def test_revoke_and_the_webhook_refuse_every_hostile_body_with_a_4xx(jitgate_server: JitgateServer) -> None:
    s = jitgate_server
    doc = access_request(dev_rg("rg-hostile-revoke"))
    submit(s, doc)
    rid = doc["requestId"]
    s.wait_state(rid, "active")
    secret = s.teams_secret()
    problems: list[str] = []
    with s.client(JANE) as jane, s.client(STRANGER) as stranger, s.client(None) as teams:
        for name, raw in NOT_A_REVOKE.items():
            response = jane.post(f"/api/access-requests/{rid}/revoke", content=raw, headers=JSON)
            problems += refusal_problems(teams, f"revoke {name}", response, {413, 422})
        for name, raw in HOSTILE_BODIES.items():
            response = stranger.post(f"/api/access-requests/{rid}/revoke", content=raw, headers=JSON)
            problems += refusal_problems(teams, f"stranger's revoke {name}", response, {403, 413})
        for name, raw in BODIES.items():
            unsigned = teams.post("/api/teams/webhook", content=raw, headers={"Authorization": "HMAC AAAA", **JSON})
            problems += refusal_problems(teams, f"unsigned webhook {name}", unsigned, {401, 413})
            signed = teams.post("/api/teams/webhook", content=raw, headers={"Authorization": sign(secret, raw), **JSON})
            problems += refusal_problems(teams, f"signed webhook {name}", signed, {400, 413})
    assert not problems, "\n".join(problems)
    assert s.get(rid)["state"] == "active", "no hostile body revoked the request"
    assert [e["actor"]["principalId"] for e in s.events(rid, "access.refused")] == [STRANGER]
    assert "Traceback" not in s.log_tail(10_000)


def test_the_hostile_bodies_at_intake_are_refused_and_audited(jitgate_server: JitgateServer) -> None:
    s = jitgate_server
    problems: list[str] = []
    with s.client(JANE) as c:
        for name, raw in HOSTILE_BODIES.items():
            response = c.post("/api/access-requests", content=raw, headers=JSON)
            problems += refusal_problems(c, name, response, {422})
            if response.status_code == 422 and not s.events(response.json()["requestId"], "request.rejected"):
                problems.append(f"{name}: the rejection is not audited")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/xml"])
def test_an_access_request_not_sent_as_json_is_415_and_unknown(jitgate_server: JitgateServer,
                                                               content_type: str | None) -> None:
    s = jitgate_server
    doc = access_request(dev_rg("rg-content-type"))
    headers = {} if content_type is None else {"Content-Type": content_type}
    with s.client(JANE) as c:
        response = c.post("/api/access-requests", content=json.dumps(doc).encode(), headers=headers)
    assert response.status_code == 415, response.text
    assert response.json()["error"] == "unsupported_media_type"
    assert s.find(doc["requestId"]) is None


# ---------------------------------------------------------------- stalled and abandoned connections

BOUND = 2.0  # JITGATE_REQUEST_READ_SECONDS of the server below
SLACK = 3.0  # a shared 2-core machine


@pytest.fixture(scope="module")
def bounded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JitgateServer]:
    with running_server(tmp_path_factory.mktemp("stalls"), JITGATE_REQUEST_READ_SECONDS=str(BOUND)) as server:
        yield server


def connect(server: JitgateServer) -> socket.socket:
    return socket.create_connection((HOST, int(server.url.rsplit(":", 1)[1])), timeout=30)


def request_head(length: int) -> bytes:
    return (f"POST /api/access-requests HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
            f"X-Jitgate-Dev-Principal: {JANE}\r\nContent-Length: {length}\r\n\r\n").encode()


def read_until_closed(sock: socket.socket, deadline: float) -> tuple[bytes, float]:
    """Everything the server sent until it closed the connection, and when it closed it."""
    received = b""
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return received, float("inf")
        except ConnectionResetError:
            return received, time.monotonic()
        if not chunk:
            return received, time.monotonic()
        received += chunk


def log_lines(server: JitgateServer, marker: str) -> list[str]:
    return [line for line in server.log_path.read_text(errors="replace").splitlines() if marker in line]


def test_stalled_uploads_are_closed_within_the_bound_and_the_server_keeps_serving(
    bounded_server: JitgateServer,
) -> None:
    s = bounded_server
    # GIVEN 30 clients that sent a request head and the start of a body, then stalled
    bodies = [connect(s) for _ in range(30)]
    started = time.monotonic()
    for sock in bodies:
        sock.sendall(request_head(1000) + b'{"schemaVersion": 1, ')
    # AND 10 that stalled in the middle of their request head, and 5 that connected and sent nothing
    heads = [connect(s) for _ in range(10)]
    for sock in heads:
        sock.sendall(f"POST /api/access-requests HTTP/1.1\r\nHost: {HOST}\r\nContent-Ty".encode())
    silent = [connect(s) for _ in range(5)]
    try:
        # WHEN a well-behaved client calls meanwhile, THEN it is served at once
        before = time.monotonic()
        assert s.healthy()
        assert time.monotonic() - before < BOUND, "not held up by the stalled connections"
        # THEN each stalled body is answered 408 and closed, each stalled head closed, within the bound
        deadline = started + BOUND + SLACK
        answers = [read_until_closed(sock, deadline) for sock in bodies]
        closings = [read_until_closed(sock, deadline) for sock in heads + silent]
    finally:
        for sock in bodies + heads + silent:
            sock.close()
    late = [round(at - started, 2) for _, at in answers + closings if at - started > BOUND + SLACK]
    assert not late, f"closed after {late} s; the bound is {BOUND} s"
    assert all(data.startswith(b"HTTP/1.1 408 ") for data, _ in answers), {data[:60] for data, _ in answers}
    assert all(b"request_timeout" in data for data, _ in answers)
    assert all(data == b"" for data, _ in closings), "a stalled head is closed without an answer"
    assert s.healthy()
    # AND the log has one line per closed connection and no traceback
    time.sleep(0.2)
    assert len(log_lines(s, "did not arrive within 2 s")) == 30
    assert len(log_lines(s, "no complete request within 2 s")) == 15
    assert not log_lines(s, "Traceback")


def test_clients_that_hang_up_mid_body_are_one_log_line_each(bounded_server: JitgateServer) -> None:
    s = bounded_server
    for _ in range(5):
        with connect(s) as sock:
            sock.sendall(request_head(1000) + b'{"schemaVersion": 1, ')
            time.sleep(0.1)
    deadline = time.monotonic() + 5
    while len(log_lines(s, "disconnected before its body was complete")) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(log_lines(s, "disconnected before its body was complete")) == 5
    assert not log_lines(s, "Traceback")
    assert s.healthy()


def read_answer(sock: socket.socket) -> bytes:
    """The status line and headers of the server's answer."""
    sock.settimeout(10)
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def test_a_slow_but_steady_request_within_the_bound_is_served(bounded_server: JitgateServer) -> None:
    # GIVEN a head and a body that each trickle in over about half the bound (the bound is not per byte)
    s = bounded_server
    raw = json.dumps(access_request(dev_rg("rg-slow-body"))).encode()
    head = request_head(len(raw))
    with connect(s) as sock:
        for part in (head, raw):
            step = len(part) // 5 + 1
            for start in range(0, len(part), step):
                sock.sendall(part[start:start + step])
                time.sleep(BOUND / 2 / 5)
        answer = read_answer(sock)
    # THEN it is answered as any other
    assert answer.startswith(b"HTTP/1.1 202 "), answer[:200]
