"""`jitgate` commands that talk to a server say in one line why they could not, and exit non-zero: no server
listening, a real `jitgate serve` refusing the caller (401, 403), a server failing (5xx, a proxy's page). Each
runs as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.e2e.conftest import ALICE, DEV_SUB, HOST, JANE, STRANGER, JitgateServer, clean_env, free_port

RID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"


def jitgate(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        env=clean_env(JITGATE_URL=url, JITGATE_MODE="local"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def request_file(tmp_path: Path, requester: str = JANE) -> Path:
    path = tmp_path / "request.json"
    path.write_text(json.dumps({
        "schemaVersion": 1,
        "requestId": RID,
        "requester": {"principalId": requester, "displayName": "Jane Doe"},
        "target": {"provider": "local", "scope": f"/subscriptions/{DEV_SUB}/resourceGroups/rg-cli-dev",
                   "role": "Reader"},
        "duration": "PT1H",
        "justification": "Read the dev logs for INC-4711",
    }))
    return path


def commands(tmp_path: Path) -> dict[str, list[str]]:
    """Every command that talks to a server, as a person would type it."""
    teams = ["--as", ALICE, "--data-dir", str(tmp_path / "data")]
    return {
        "teams approve": ["teams", "approve", RID, *teams, "looks", "good"],
        "teams deny": ["teams", "deny", RID, *teams, "change", "freeze"],
        "teams status": ["teams", "status", RID, *teams],
        "request": ["request", str(request_file(tmp_path))],
        "audit query": ["audit", "query", "--request-id", RID],
        "audit verify": ["audit", "verify"],
    }


def assert_one_line(run: subprocess.CompletedProcess[str], line: str) -> None:
    assert run.returncode == 1, (run.stdout, run.stderr)
    assert "Traceback" not in run.stderr and run.stdout == "", (run.stdout, run.stderr)
    assert run.stderr == f"jitgate: {line}\n", run.stderr


@pytest.mark.parametrize("command", ["teams approve", "teams deny", "teams status", "request", "audit query",
                                     "audit verify"])
def test_no_server_listening_is_one_line_asking_whether_jitgate_serve_runs(command: str, tmp_path: Path) -> None:
    url = f"http://{HOST}:{free_port()}"  # nothing listens there
    run = jitgate(url, *commands(tmp_path)[command])
    assert_one_line(run, f"cannot reach jitgate at {url}: connection refused — is `jitgate serve` running?")


def test_a_running_server_refusing_the_caller_is_one_line_with_its_reason(
    jitgate_server: JitgateServer, tmp_path: Path
) -> None:
    s = jitgate_server
    hint = " (call as someone else with --principal-as and --roles locally, --token in Azure)"
    # A stranger asks for the audit trail: 403, with jitgate's reason
    run = s.cli("audit", "query", "--principal-as", STRANGER, "--roles", "")
    assert run.returncode == 1 and run.stdout == "" and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.startswith("jitgate: audit query: jitgate answered 403 Forbidden: "), run.stderr
    assert run.stderr.endswith(f"{hint}\n") and run.stderr.count("\n") == 1, run.stderr
    run = s.cli("audit", "verify", "--principal-as", STRANGER, "--roles", "")
    assert run.stderr.startswith("jitgate: audit verify: jitgate answered 403 Forbidden: "), run.stderr
    assert run.returncode == 1 and run.stderr.count("\n") == 1, run.stderr
    # A stranger submits in Jane's name: 403
    run = s.cli("request", str(request_file(tmp_path)), "--principal-as", STRANGER, "--roles", "")
    assert run.stderr.startswith("jitgate: request: jitgate answered 403 Forbidden: "), run.stderr
    assert run.returncode == 1 and run.stdout == "" and run.stderr.count("\n") == 1, run.stderr
    # A bearer token, which a local jitgate does not take: 401
    run = s.cli("audit", "query", "--token", "not-a-token")
    assert run.stderr.startswith("jitgate: audit query: jitgate answered 401 Unauthorized: "), run.stderr
    assert run.returncode == 1 and run.stderr.count("\n") == 1, run.stderr
    # A Teams command signed with another data dir's secret: 401, and no advice about identities
    run = s.cli(*commands(tmp_path)["teams status"])
    assert run.stderr == ("jitgate: teams: jitgate answered 401 Unauthorized: the HMAC signature does not match the "
                          "body: not signed with this webhook's secret (the unverified body claims sender "
                          f"{ALICE})\n"), run.stderr
    assert run.returncode == 1 and run.stdout == ""
    # AND the same commands, allowed, still work
    assert s.cli("audit", "verify").returncode == 0


class Failing(BaseHTTPRequestHandler):
    """Answers every request as a failing server or a proxy in front of one would."""

    answers = {
        "/api/audit/events": (500, "application/json", b'{"error": "internal", "detail": "the store is gone"}'),
        "/api/audit/verify": (502, "text/html", b"<html>\n<body><h1>502 Bad Gateway</h1></body>\n</html>\n"),
        "/api/access-requests": (503, "application/json", b'{"error": "unavailable", "detail": "try again"}'),
        "/api/teams/webhook": (504, "text/plain", b""),
    }

    def _answer(self) -> None:
        status, content_type, body = self.answers[self.path.split("?")[0]]
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def failing_server() -> Iterator[str]:
    server = ThreadingHTTPServer((HOST, 0), Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("command", "line"), [
    ("audit query", "audit query: jitgate answered 500 Internal Server Error: the store is gone"),
    ("audit verify", "audit verify: jitgate answered 502 Bad Gateway: <html> <body><h1>502 Bad Gateway</h1></body> "
                     "</html>"),
    ("request", "request: jitgate answered 503 Service Unavailable: try again"),
    ("teams approve", "teams: jitgate answered 504 Gateway Timeout: no body"),
])
def test_a_failing_server_is_one_line_with_its_status(command: str, line: str, failing_server: str,
                                                     tmp_path: Path) -> None:
    assert_one_line(jitgate(failing_server, *commands(tmp_path)[command]), line)
