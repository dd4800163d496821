"""`make demo`: a fresh embedded jitgate, and the whole access story played over its HTTP API.
Every step states what should happen and checks it; any surprise makes the demo exit non-zero."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from .adapters.postgres.throwaway import INSTALL_HINT, NoPostgres, ThrowawayPostgres
from .settings import DEFAULT_POLICY, Settings
from .teams import outgoing_payload, sign

ALICE = "aaaaaaaa-0000-4000-8000-00000000000a"
BOB = "bbbbbbbb-0000-4000-8000-00000000000b"
JANE = "dddddddd-0000-4000-8000-00000000000d"
AUDITOR = "eeeeeeee-0000-4000-8000-00000000000e"
DEV = "/subscriptions/11111111-1111-4111-8111-111111111111/resourceGroups"
PROD = "/subscriptions/22222222-2222-4222-8222-222222222222/resourceGroups"
NAMES = {ALICE: "Alice", BOB: "Bob", JANE: "Jane"}


class Story:
    """Narrates and checks. `failures` counts the steps that did not behave as told."""

    def __init__(self, url: str, data_dir: Path) -> None:
        self.url = url
        self.data_dir = data_dir
        self.failures = 0
        self.secret = Settings(data_dir=data_dir).resolved_teams_secret()

    def chapter(self, title: str) -> None:
        print(f"\n\033[1m== {title}\033[0m", flush=True)

    def say(self, text: str) -> None:
        print(f"   {text}", flush=True)

    def expect(self, ok: bool, text: str) -> bool:
        print(f"   {'✓' if ok else '✗ UNEXPECTED:'} {text}", flush=True)
        if not ok:
            self.failures += 1
        return ok

    def client(self, principal: str, roles: str = "") -> httpx.Client:
        headers = {"X-Jitgate-Dev-Principal": principal}
        if roles:
            headers["X-Jitgate-Dev-Roles"] = roles
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def submit(
        self,
        who: str,
        role: str,
        scope: str,
        duration: str,
        justification: str,
        ticket: str | None = None,
        provider: str = "local",
        **extra: Any,
    ) -> tuple[int, dict[str, Any]]:
        body: dict[str, Any] = {
            "schemaVersion": 1,
            "requestId": str(uuid.uuid4()),
            "requester": {
                "principalId": who,
                "principalType": "User",
                "displayName": NAMES.get(who, who),
                "email": f"{NAMES.get(who, 'x').lower()}@example.com",
                "backstageRef": f"user:default/{NAMES.get(who, 'x').lower()}",
            },
            "target": {"provider": provider, "scope": scope, "role": role},
            "duration": duration,
            "justification": justification,
            **({"ticket": ticket} if ticket else {}),
            **extra,
        }
        with self.client(who) as c:
            response = c.post("/api/access-requests", json=body)
        return response.status_code, {**response.json(), "sent": body}

    def get(self, request_id: str) -> dict[str, Any]:
        with self.client(AUDITOR, "Jit.Auditor") as c:
            response = c.get(f"/api/access-requests/{request_id}")
            response.raise_for_status()
            data: dict[str, Any] = response.json()
            return data

    def wait_state(self, request_id: str, states: set[str], timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = str(self.get(request_id)["state"])
            if state in states:
                return state
            time.sleep(0.1)
        return state

    def teams(self, who: str, text: str) -> tuple[int, str]:
        body = outgoing_payload(f"<at>jitgate</at> {text}", who, NAMES.get(who, who))
        response = httpx.post(
            f"{self.url}/api/teams/webhook",
            content=body,
            timeout=10,
            headers={"Authorization": sign(self.secret, body), "Content-Type": "application/json"},
        )
        reply = response.json()
        return response.status_code, str(reply.get("text", reply))

    def assignments(self) -> list[Any]:
        from .adapters.embedded.rbac import LocalRbac

        return list(LocalRbac(self.data_dir / "rbac.db").all_assignments())

    def marked(self) -> list[Any]:
        return [a for a in self.assignments() if a.marked_request_id]

    def events(self, request_id: str, type: str) -> list[dict[str, Any]]:
        return [e for e in self.get(request_id)["timeline"] if e["type"] == type]


def play(story: Story) -> None:
    s = story

    s.chapter("1. An auto-approved request")
    s.say("Jane asks for Reader on a dev resource group for 6 seconds. The policy auto-approves it.")
    code, auto = s.submit(JANE, "Reader", f"{DEV}/rg-web-dev", "PT6S", "Look at the web app's settings")
    s.expect(code == 202, f"POST /api/access-requests → {code} {auto.get('status')}")
    auto_id = auto["requestId"]
    s.expect(s.wait_state(auto_id, {"active"}) == "active", "the request is active within seconds")
    s.expect(
        any(a.marked_request_id == auto_id for a in s.assignments()),
        "the role assignment exists in the RBAC plane",
    )

    s.chapter("2. A production request that needs two approvals, given in Teams")
    code, prod = s.submit(
        JANE,
        "Contributor",
        f"{PROD}/rg-payments-prod",
        "PT10S",
        "Rotate the payments DB firewall rule for INC-4711",
        ticket="INC-4711",
    )
    prod_id = prod["requestId"]
    s.expect(
        s.wait_state(prod_id, {"pending_approval"}) == "pending_approval",
        "the policy asks for 2 approvals from platform-approvers",
    )
    code, reply = s.teams(JANE, f"approve {prod_id} looks fine to me")
    s.expect("own request" in reply, f"Jane tries to approve her own request → refused: “{reply}”")
    code, reply = s.teams(ALICE, f"approve {prod_id} ok for INC-4711")
    s.expect("1 of 2" in reply, f"Alice approves → “{reply}”")
    code, reply = s.teams(ALICE, f"approve {prod_id} again")
    s.expect("already counted" in reply, f"Alice approves again → “{reply}” (one person counts once)")
    code, reply = s.teams(BOB, f"approve {prod_id}")
    s.expect("approved" in reply, f"Bob approves → “{reply}”")
    s.expect(s.wait_state(prod_id, {"active"}) == "active", "the request is active")
    forged = outgoing_payload(f"approve {prod_id}", BOB, "Mallory")
    response = httpx.post(
        f"{s.url}/api/teams/webhook",
        content=forged,
        timeout=10,
        # well-formed, but signed with the wrong key
        headers={"Authorization": sign(os.urandom(32), forged), "Content-Type": "application/json"},
    )
    s.expect(response.status_code == 401, f"a forged webhook call is refused with {response.status_code}")

    s.chapter("3. Two overlapping requests for the same role")
    s.say("Bob asks twice for Reader on rg-data-dev: once for 12 s, once for 4 s.")
    _, long_ = s.submit(
        BOB, "Reader", f"{DEV}/rg-data-dev", "PT12S", "Long investigation of the data pipeline"
    )
    _, short = s.submit(BOB, "Reader", f"{DEV}/rg-data-dev", "PT4S", "Quick look at a single failed run")
    long_id, short_id = long_["requestId"], short["requestId"]
    s.expect(
        s.wait_state(long_id, {"active"}) == "active" and s.wait_state(short_id, {"active"}) == "active",
        "both are active",
    )
    same_key = [a for a in s.marked() if "rg-data-dev" in a.scope]
    s.expect(
        len(same_key) == 1, f"they share one role assignment ({len(same_key)} found): two holds, one grant"
    )
    s.expect(s.wait_state(short_id, {"revoked"}, timeout=12) == "revoked", "the short one ends at its expiry")
    revoked = s.events(short_id, "grant.revoked")
    s.expect(
        bool(revoked) and revoked[0]["data"].get("assignmentDeleted") is False,
        f"…without deleting the assignment (remaining holds: {_field(revoked, 'remainingHolds')})",
    )
    s.expect(
        s.get(long_id)["state"] == "active" and any("rg-data-dev" in a.scope for a in s.marked()),
        "the long one still has its access: the shorter request did not cut it short",
    )

    s.chapter("4. An early “I'm done” revoke")
    _, early = s.submit(
        JANE, "Contributor", f"{DEV}/rg-web-dev", "PT1H", "Deploy a hotfix to the dev web app"
    )
    early_id = early["requestId"]
    s.expect(s.wait_state(early_id, {"active"}) == "active", "Jane's one-hour Contributor grant is active")
    with s.client(JANE) as c:
        response = c.post(f"/api/access-requests/{early_id}/revoke", json={"reason": "done"})
    s.expect(
        response.status_code == 200,
        f"Jane says she is done → {response.status_code} {response.json().get('state')}",
    )
    s.expect(
        not any(a.marked_request_id == early_id for a in s.assignments()), "the assignment is gone at once"
    )
    s.expect(
        bool(s.events(early_id, "grant.revoked"))
        and "cancelledSequenceNumber" in s.events(early_id, "grant.revoked")[0]["data"],
        "the scheduled revoke at expiry was cancelled",
    )

    s.chapter("5. A denial")
    _, deny = s.submit(
        JANE,
        "Contributor",
        f"{PROD}/rg-ledger-prod",
        "PT30M",
        "Apply the ledger schema migration CHG-2001",
        ticket="CHG-2001",
    )
    deny_id = deny["requestId"]
    s.wait_state(deny_id, {"pending_approval"})
    code, reply = s.teams(BOB, f"deny {deny_id} change freeze until Monday")
    s.expect(s.wait_state(deny_id, {"denied"}) == "denied", f"Bob denies in Teams → “{reply}”")
    _, owner = s.submit(JANE, "Owner", f"{DEV}/rg-web-dev", "PT1H", "I would like to own everything please")
    state = s.wait_state(owner["requestId"], {"rejected"})
    reasons = s.get(owner["requestId"])["decision"]["reasons"] if state == "rejected" else []
    s.expect(state == "rejected", f"Owner is denied by policy: {'; '.join(reasons)}")

    s.chapter("6. An invalid message is rejected with its reasons")
    code, bad = s.submit(JANE, "Reader", f"{DEV}/../rg-web-dev", "-PT5M", "x", colour="blue")
    s.expect(code == 422, f"POST → {code}")
    for err in bad.get("errors", []):
        s.say(f"   {err['loc']}: {err['msg']}")
    s.expect(len(bad.get("errors", [])) >= 3, "every problem is named (scope, duration, unknown field)")
    with s.client(AUDITOR, "Jit.Auditor") as c:
        events = c.get(
            "/api/audit/events", params={"type": "request.rejected", "requestId": bad["sent"]["requestId"]}
        ).json()
    s.expect(len(events["events"]) == 1, "and the rejection is in the audit trail")
    with s.client(AUDITOR) as c:
        health = c.get("/api/health").json()
    s.expect(health.get("status") == "ok", "the server keeps serving")

    s.chapter("7. Revocations fire at expiry")
    for rid, label in (
        (auto_id, "Jane's Reader (6 s)"),
        (prod_id, "Jane's prod Contributor (10 s)"),
        (long_id, "Bob's long Reader (12 s)"),
    ):
        state = s.wait_state(rid, {"revoked"}, timeout=20)
        revoked = s.events(rid, "grant.revoked")
        lateness = revoked[0]["data"].get("latenessSeconds") if revoked else None
        s.expect(
            state == "revoked", f"{label}: revoked {lateness}s after its expiry, read back and confirmed gone"
        )
    left = s.marked()
    s.expect(not left, f"no jitgate assignment is left in the RBAC plane ({len(left)})")

    s.chapter("8. What the auditor sees")
    from .cli import format_events

    with s.client(AUDITOR, "Jit.Auditor") as c:
        page = c.get("/api/audit/events", params={"requestId": prod_id, "limit": 50}).json()
        print("\n".join("   " + line for line in format_events(page["events"]).splitlines()))
        verify = c.get("/api/audit/verify").json()
    s.expect(
        verify["ok"] and not verify["unanchored"],
        f"audit verify: {verify['chains']} chains, {verify['events']} events, every link intact, every chain ending "
        "where its request record says",
    )


def play_database(story: Story, pg: ThrowawayPostgres | None) -> None:
    """Chapter 9: reading a PostgreSQL database for a few seconds, on a throwaway server the demo started."""
    s = story
    s.chapter("9. Reading the payments database for a few seconds")
    if pg is None:
        s.say(f"Skipped: no PostgreSQL server here. To see this chapter: {INSTALL_HINT}, then `make demo` again.")
        return
    import psycopg

    s.say(f"A throwaway PostgreSQL {pg.version} runs on 127.0.0.1:{pg.port}; the servers file names it "
          "payments-primary, and Jane's login there 'jane'.")
    code, req = s.submit(JANE, "payments_read", "payments-primary/payments", "PT5S",
                         "Chase the double charges of INC-4711", ticket="INC-4711", provider="postgres")
    rid = req["requestId"]
    s.expect(code == 202 and s.wait_state(rid, {"active"}) == "active",
             "policy rule payments-db-read auto-approves an hour at most; the grant is active")
    s.say("jitgate created the login jane (it did not exist) and granted it payments_read. How people sign in is "
          "the server's business (certificates, LDAP, Entra): here the database admin gives jane a password.")
    pg.sql("ALTER ROLE jane PASSWORD 'demo-only'")
    conninfo = pg.admin.conninfo(dbname="payments", user="jane", password="demo-only")
    session = psycopg.connect(conninfo, autocommit=True)
    total = session.execute("SELECT count(*), sum(amount) FROM payments").fetchone()
    s.expect(total is not None, f"jane signs in and reads the payments table: {total[0]} rows, {total[1]} in all"
             if total else "jane reads the payments table")
    s.expect(s.wait_state(rid, {"revoked"}, timeout=20) == "revoked", "at expiry the grant is revoked")
    try:
        session.execute("SELECT 1")
        s.expect(False, "her open session is ended")
    except psycopg.OperationalError:
        s.expect(True, "her open session was ended at expiry (pg_terminate_backend), not at her next login")
    try:
        psycopg.connect(conninfo).close()
        s.expect(False, "a new sign-in fails")
    except psycopg.OperationalError:
        s.expect(True, "a new sign-in fails: the login jitgate created is dropped with its last grant")
    steps = [e["type"] for e in s.get(rid)["timeline"]]
    s.expect(all(t in steps for t in ("request.approved", "grant.applied", "grant.revoked")),
             "the audit trail: " + " → ".join(steps))


def start_postgres(data_dir: Path) -> ThrowawayPostgres | None:
    """A throwaway PostgreSQL for chapter 9 and the servers file naming it; None when PostgreSQL is missing."""
    try:
        pg = ThrowawayPostgres()
    except NoPostgres:
        return None
    password = uuid.uuid4().hex
    try:
        pg.start()
        pg.prepare_payments(password)
    except (OSError, subprocess.SubprocessError, ImportError) as exc:
        print(f"PostgreSQL is installed but a throwaway server did not start ({exc}); chapter 9 is skipped.")
        pg.stop()
        return None
    (data_dir / "jitgate-pg-password").write_text(password)
    (data_dir / "servers.yaml").write_text(
        f"version: 1\nlogins:\n  {JANE}: jane\nservers:\n  - name: payments-primary\n    platform: self-managed\n"
        f"    host: 127.0.0.1\n    port: {pg.port}\n    database: payments\n    user: jitgate\n"
        f"    passwordFile: {data_dir / 'jitgate-pg-password'}\n"
    )
    return pg


def _field(events: list[dict[str, Any]], name: str) -> object:
    return events[0]["data"].get(name) if events else "?"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(keep: bool = False) -> int:
    data_dir = Path(tempfile.mkdtemp(prefix="jitgate-demo-"))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "JITGATE_DATA_DIR": str(data_dir),
        "JITGATE_POLICY": str(DEFAULT_POLICY),
        "JITGATE_RECONCILE_SECONDS": "2",
        "JITGATE_MODE": "local",
    }
    log_path = data_dir / "server.log"
    pg = start_postgres(data_dir)
    if pg is not None:
        env["JITGATE_DATABASES_FILE"] = str(data_dir / "servers.yaml")
    print(f"Starting a fresh jitgate on {url} (data in {data_dir}, server log in {log_path})")
    started = time.monotonic()
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        if not _wait_healthy(url, server):
            print(log_path.read_text())
            return 1
        story = Story(url, data_dir)
        play(story)
        play_database(story, pg)
        elapsed = time.monotonic() - started
        if story.failures:
            print(f"\n✗ {story.failures} step(s) did not behave as described (server log: {log_path})")
            return 1
        print(f"\n✓ The whole story behaved as described in {elapsed:.1f}s.")
        print(
            "  Try it yourself: `jitgate serve`, then `jitgate request FILE`, `jitgate teams approve ID --as GUID`,"
            " `jitgate audit query`."
        )
        return 0
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        if pg is not None:
            pg.stop()
        if not keep:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            print(f"  Data kept in {data_dir}")


def _wait_healthy(url: str, server: subprocess.Popen[bytes], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            print(f"jitgate serve exited early with {server.returncode}")
            return False
        try:
            if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    print("jitgate serve did not become healthy in time")
    return False


if __name__ == "__main__":
    raise SystemExit(run(keep="--keep" in sys.argv))
