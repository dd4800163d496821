"""The Backstage pages in a real browser (issue #14): a Backstage app built with the plugin (the new frontend system's
`createApp`, backstage/plugins/jitgate/dev), served next to a running `jitgate serve`, driven by headless Chromium
from Debian's `chromium` package through Playwright (no browser download). The walk: Jane's request waits for
approval → Alice approves it on "Waiting for me" → Jane sees it active with its time left → "I'm done" ends it; then
the request's own page (where Teams cards link) and the audit tab. Every page passes axe-core's WCAG 2.1 A/AA rules.

In CI (`CI` or `JITGATE_REQUIRE_BROWSER` set) a missing browser, Playwright or dev app build fails the test instead of
skipping it. With `JITGATE_UPDATE_SCREENSHOTS=1` the screenshots are written to docs/screenshots/.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from shared.notices import request_page
from tests.e2e.conftest import ALICE, AUDITOR, HOST, JANE, PROD_SUB, JitgateServer, free_port, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "backstage" / "plugins" / "jitgate"
DEV_APP = PLUGIN / "dev" / "build"
AXE = PLUGIN / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = ROOT / "docs" / "screenshots"
PROD_RG = f"/subscriptions/{PROD_SUB}/resourceGroups/rg-payments-prod"
WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}


def browser_required() -> bool:
    """In CI a missing browser fails the `browser` tests; elsewhere they skip."""
    return bool(os.environ.get("CI") or os.environ.get("JITGATE_REQUIRE_BROWSER"))


def unavailable(reason: str) -> None:
    if browser_required():
        pytest.fail(f"CI needs the browser test's parts: {reason}")
    pytest.skip(reason)


def chromium_path() -> str:
    found = os.environ.get("JITGATE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        unavailable("no chromium on PATH (apt-get install chromium; or set JITGATE_CHROMIUM)")
    return str(found)


def dev_app() -> Path:
    """The built dev app; built here (a few seconds) when the plugin's packages are installed but it is not."""
    if not (DEV_APP / "index.html").exists():
        if not (PLUGIN / "node_modules" / "esbuild").exists():
            unavailable("the plugin's packages are not installed (cd backstage/plugins/jitgate && npm ci)")
        subprocess.run(["node", "dev/build.mjs"], cwd=PLUGIN, check=True, timeout=300)
    if not AXE.exists():
        unavailable(f"axe-core is not installed ({AXE})")
    return DEV_APP


class _AppServer(BaseHTTPRequestHandler):
    """The dev app's files, and /api/* passed on to jitgate: one origin, as a proxy in front of both would make it."""

    static: Path
    upstream: str

    def log_message(self, format: str, *args: Any) -> None:  # NB. quiet: the test reports what matters
        return

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        if self.path.startswith("/api/"):
            self._forward()
            return
        path = urlsplit(self.path).path.lstrip("/")
        file = (self.static / path).resolve()
        if not path or not file.is_file() or self.static not in file.parents:
            file = self.static / "index.html"  # the app routes every other path itself
        body = file.read_bytes()
        kind = TYPES.get(file.suffix, "application/octet-stream")
        self.send_response(200)
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        target = urlsplit(self.upstream)
        connection = http.client.HTTPConnection(target.hostname or HOST, target.port, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        connection.request(self.command, self.path, body=body, headers=headers)
        answer = connection.getresponse()
        payload = answer.read()
        self.send_response(answer.status)
        for key, value in answer.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length", "date", "server"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        connection.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JitgateServer]:
    with running_server(tmp_path_factory.mktemp("jitgate-pages")) as running:
        yield running


@pytest.fixture(scope="module")
def app_url(server: JitgateServer) -> Iterator[str]:
    static = dev_app()
    handler = type("Handler", (_AppServer,), {"static": static.resolve(), "upstream": server.url})
    httpd = ThreadingHTTPServer((HOST, free_port()), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def page(app_url: str) -> Iterator[Any]:
    executable = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright for Python is not installed (pip install -r requirements-dev.txt)")
    with sync_playwright() as playwright:
        # NB. --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start; --disable-dev-shm-usage: a
        # container's small /dev/shm crashes its renderer.
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=["--no-sandbox", "--disable-dev-shm-usage"])
        context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=app_url)
        tab = context.new_page()
        errors: list[str] = []
        tab.on("pageerror", lambda error: errors.append(str(error)))
        tab.set_default_timeout(20_000)
        yield tab
        context.close()
        browser.close()
        assert not errors, f"the app threw in the browser: {errors}"


def sign_in_as(page: Any, principal: str, roles: str = "") -> None:
    """Enter Backstage, and set the development identity the app calls jitgate as (local storage; only a local jitgate
    accepts it). NB. The dev app has no Backstage backend, so Backstage's own sign-in is its guest, with the token the
    frontend makes itself when asked (the "legacy guest token"); what counts for jitgate is the identity set here."""
    page.goto("/jitgate")
    tabs, enter = page.get_by_role("tablist", name="Access"), page.get_by_role("button", name="Enter")
    tabs.or_(enter).first.wait_for()
    if enter.is_visible():
        page.once("dialog", lambda d: d.accept() if "legacy guest token" in d.message else d.dismiss())
        enter.click()
        tabs.wait_for()
    page.evaluate("([p, r]) => { localStorage.setItem('jitgate.devPrincipal', p);"
                  " localStorage.setItem('jitgate.devRoles', r); }", [principal, roles])


def accessible(page: Any, what: str) -> None:
    """axe-core (from npm, injected into the page) finds no WCAG 2.1 A/AA violation in the page's content."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("(tags) => axe.run(document, { runOnly: { type: 'tag', values: tags } })", WCAG)
    violations = [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
                  for v in result["violations"]]
    assert not violations, f"{what}: " + "; ".join(violations)
    assert result["passes"], f"{what}: axe checked nothing"


def screenshot(page: Any, name: str, tmp: Path) -> None:
    target = SCREENSHOTS if os.environ.get("JITGATE_UPDATE_SCREENSHOTS") else tmp
    target.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target / f"{name}.png"), full_page=True)


def test_request_approve_active_and_done_in_the_browser(page: Any, server: JitgateServer, app_url: str,
                                                        tmp_path: Path) -> None:
    # GIVEN Jane's request for Reader in production, which wants one approval (as the scaffolder action sends it)
    request_id = str(uuid.uuid4())
    body = {"schemaVersion": 1, "requestId": request_id,
            "requester": {"principalId": JANE, "displayName": "Jane Doe"},
            "target": {"provider": "local", "scope": PROD_RG, "role": "Reader"}, "duration": "PT1H",
            "justification": "Read the payments settings for INC-4711", "ticket": "INC-4711"}
    with server.client(JANE) as jane:
        assert jane.post("/api/access-requests", content=json.dumps(body),
                         headers={"Content-Type": "application/json"}).status_code == 202
    server.wait_state(request_id, "pending_approval")

    # THEN Jane sees it among her requests, waiting
    sign_in_as(page, JANE)
    page.goto("/jitgate")
    mine = page.get_by_role("article", name=f"Request {request_id}")
    mine.get_by_text("waiting for 1 more approval").wait_for()
    accessible(page, "My access, a request waiting")
    screenshot(page, "1-my-access-waiting", tmp_path)

    # WHEN Alice, an approver, approves it on "Waiting for me" with a comment
    sign_in_as(page, ALICE)
    page.goto("/jitgate?tab=waiting")
    card = page.get_by_role("article").filter(has_text="Read the payments settings")
    card.get_by_label("Comment (required to deny)").fill("ok for INC-4711")
    accessible(page, "Waiting for me")
    screenshot(page, "2-waiting-for-me", tmp_path)
    card.get_by_role("button", name="Approve").click()
    page.get_by_role("status").filter(has_text="Approve: approved; granting now").wait_for()
    approved = server.wait_state(request_id, "active")
    assert [(a["approverId"], a["comment"]) for a in approved["approval"]["given"]] == [(ALICE, "ok for INC-4711")]

    # THEN Jane sees it active, with its time left in words, counting down
    sign_in_as(page, JANE)
    page.goto("/jitgate")
    grant = page.get_by_role("article").filter(has=page.get_by_test_id("time-left"))
    left = grant.get_by_test_id("time-left")
    left.wait_for()
    assert left.inner_text() in ("1 hour left", "59 minutes left"), left.inner_text()
    accessible(page, "My access, an active grant")
    screenshot(page, "3-my-access-active", tmp_path)

    # WHEN she is done
    grant.get_by_role("button", name="I'm done").click()
    page.get_by_role("status").filter(has_text="I'm done: revoked (done)").wait_for()
    # THEN the grant is gone from the page, from jitgate and from the (simulated) RBAC plane
    page.get_by_text("You hold no access through jitgate right now.").wait_for()
    ended = server.wait_state(request_id, "revoked")
    assert ended["revokeReason"] == "done"
    assert server.assignments_of(request_id) == []

    # AND the request's own page, at the link Teams cards carry, tells the whole story
    page.goto(request_page(app_url, request_id))
    timeline = page.get_by_role("list", name="Timeline")
    timeline.get_by_text("Access ended").wait_for()
    for step in ("Request received", "Approver answered", "Approved", "Access granted", "End scheduled"):
        assert timeline.get_by_text(step, exact=False).count() >= 1, step
    accessible(page, "the request's page")
    screenshot(page, "4-request-page", tmp_path)

    # AND an auditor finds its events and verifies its chain
    sign_in_as(page, AUDITOR, "Jit.Auditor")
    page.goto("/jitgate?tab=audit")
    page.get_by_label("Request id").fill(request_id)
    page.get_by_role("button", name="Search").click()
    page.get_by_role("cell", name="Access ended").wait_for()
    page.get_by_role("button", name="Verify this chain").click()
    page.get_by_text("Verified: 1 chain").wait_for()
    assert page.get_by_role("link", name="Export").count() == 1
    accessible(page, "Audit")
    screenshot(page, "5-audit", tmp_path)
