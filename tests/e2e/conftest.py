"""A real `jitgate serve` process for the end-to-end tests: fresh data dir, free port, 127.0.0.1 only.

Tests talk to it over HTTP (httpx) and read only what a local operator could read: the simulated RBAC
plane (`rbac.db`) and the `jitgate` command line. When a test fails, its report carries the tail of the
server log.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.adapters.embedded.rbac import LocalRbac
from shared.domain.ledger import Assignment
from shared.settings import DEFAULT_POLICY, Settings
from shared.teams import outgoing_payload, sign

HOST = "127.0.0.1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

JANE = "dddddddd-0000-4000-8000-00000000000d"
ALICE = "aaaaaaaa-0000-4000-8000-00000000000a"
BOB = "bbbbbbbb-0000-4000-8000-00000000000b"
AUDITOR = "eeeeeeee-0000-4000-8000-00000000000e"
STRANGER = "ffffffff-0000-4000-8000-00000000000f"
DEV_SUB = "11111111-1111-4111-8111-111111111111"
PROD_SUB = "22222222-2222-4222-8222-222222222222"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without any JITGATE_* setting (which would point elsewhere), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JITGATE_")}
    return {**env, **extra}


@dataclass
class JitgateServer:
    """One running `jitgate serve` and the ways a test reaches it."""

    url: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    def client(self, principal: str | None = JANE, roles: str = "", timeout: float = 10) -> httpx.Client:
        headers = {}
        if principal is not None:
            headers["X-Jitgate-Dev-Principal"] = principal
        if roles:
            headers["X-Jitgate-Dev-Roles"] = roles
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def auditor(self) -> httpx.Client:
        return self.client(AUDITOR, "Jit.Auditor")

    def find(self, request_id: str) -> dict[str, Any] | None:
        """The request as an auditor sees it; None while it is unknown (404)."""
        with self.auditor() as c:
            response = c.get(f"/api/access-requests/{request_id}")
        if response.status_code == 404:
            return None
        assert response.status_code == 200, f"GET request {request_id}: {response.status_code} {response.text}"
        doc: dict[str, Any] = response.json()
        return doc

    def get(self, request_id: str) -> dict[str, Any]:
        doc = self.find(request_id)
        assert doc is not None, f"request {request_id} is unknown (404)"
        return doc

    def wait_state(self, request_id: str, wanted: str, timeout: float = 10) -> dict[str, Any]:
        """Poll until the request is in `wanted` (a 202 is answered before the worker has stored the request,
        so it may be unknown at first); fails with the last seen state and timeline at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            doc = self.find(request_id)
            if doc is not None and doc["state"] == wanted:
                return doc
            if time.monotonic() >= deadline:
                if doc is None:
                    pytest.fail(f"request {request_id} is still unknown (404) after {timeout}s")
                timeline = [e["type"] for e in doc.get("timeline", [])]
                pytest.fail(f"request {request_id} is {doc['state']}, not {wanted}, after {timeout}s: {timeline}")
            time.sleep(0.05)

    def events(self, request_id: str, type: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"requestId": request_id, "limit": 1000}
        if type:
            params["type"] = type
        with self.auditor() as c:
            response = c.get("/api/audit/events", params=params)
        assert response.status_code == 200, f"audit query: {response.status_code} {response.text}"
        events: list[dict[str, Any]] = response.json()["events"]
        return events

    def assignments(self) -> list[Assignment]:
        rbac = LocalRbac(self.data_dir / "rbac.db")
        try:
            return list(rbac.all_assignments())
        finally:
            rbac.close()

    def assignments_of(self, request_id: str) -> list[Assignment]:
        return [a for a in self.assignments() if a.marked_request_id == request_id]

    def healthy(self) -> bool:
        try:
            response = httpx.get(f"{self.url}/api/health", timeout=5)
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and response.json().get("status") == "ok"

    # ---- Teams

    def teams_secret(self) -> bytes:
        return Settings(data_dir=self.data_dir).resolved_teams_secret()

    def teams_body(self, who: str, text: str, name: str = "Approver") -> bytes:
        return outgoing_payload(text, who, name)

    def post_teams(self, body: bytes, authorization: str | None) -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        if authorization is not None:
            headers["Authorization"] = authorization
        return httpx.post(f"{self.url}/api/teams/webhook", content=body, headers=headers, timeout=10)

    def teams(self, who: str, text: str) -> httpx.Response:
        body = self.teams_body(who, text)
        return self.post_teams(body, sign(self.teams_secret(), body))

    # ---- the process

    def log_tail(self, lines: int = 80) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no server log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """`jitgate ...` as a subprocess, pointed at this server (admin dev identity by default)."""
        return subprocess.run(
            [sys.executable, "-m", "shared.cli", *args],
            env=clean_env(JITGATE_URL=self.url, JITGATE_MODE="local"),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


_RUNNING: list[JitgateServer] = []


@contextmanager
def running_server(data_dir: Path, **env: str) -> Iterator[JitgateServer]:
    """A `jitgate serve` on a free port with its own data dir (and `env` settings), stopped on exit."""
    log_path = data_dir / "server.log"
    port = free_port()
    environment = clean_env(
        JITGATE_DATA_DIR=str(data_dir),
        JITGATE_POLICY=str(DEFAULT_POLICY),
        JITGATE_RECONCILE_SECONDS="1",
        JITGATE_MODE="local",
        PYTHONUNBUFFERED="1",
        **env,
    )
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "serve", "--host", HOST, "--port", str(port)],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
        )
    server = JitgateServer(f"http://{HOST}:{port}", data_dir, log_path, process)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not server.healthy():
            if process.poll() is not None:
                pytest.fail(f"jitgate serve exited with {process.returncode}:\n{server.log_tail(200)}")
            if time.monotonic() >= deadline:
                pytest.fail(f"jitgate serve not healthy after {START_TIMEOUT}s:\n{server.log_tail(200)}")
            time.sleep(0.1)
        _RUNNING.append(server)
        yield server
        died = process.poll()
        if died is not None:
            pytest.fail(f"jitgate serve died during the tests (exit {died}):\n{server.log_tail(200)}")
    finally:
        if server in _RUNNING:
            _RUNNING.remove(server)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)


@pytest.fixture(scope="session")
def jitgate_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JitgateServer]:
    with running_server(tmp_path_factory.mktemp("jitgate-e2e")) as server:
        yield server


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failing e2e test shows the tail of the server log next to its traceback."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed and _RUNNING and "jitgate_server" in getattr(item, "fixturenames", ()):
        report.sections.append(("jitgate serve log (tail)", _RUNNING[-1].log_tail()))
