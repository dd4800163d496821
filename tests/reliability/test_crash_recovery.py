"""Crash recovery of the REAL `jitgate serve` process (project issue 3, item 2).

Each scenario starts serve with `JITGATE_CRASHPOINT=<point>` on a fresh data directory, drives an
auto-approved request over HTTP until the process SIGKILLs itself at that point, checks on disk that it died
exactly there, starts serve again on the same directory without the crash point and polls until the system
has converged. Then the invariants of ARCHITECTURE §3-§6 must hold:

- the request ends `revoked`, after its expiry (or at once for an early revoke);
- nothing is lost or doubled: one `grant.applied`, one `grant.revoked`, no event twice, every chain verifies
  (read from `store.db` directly and through `GET /api/audit/verify`), no audit event left in an outbox;
- nothing is left granted: no marked assignment in `rbac.db`, no active hold, no deletion intent left standing;
- no message is left on either queue and both dead-letter queues are empty.

The lost-message scenarios remove a message from the bus while serve is down (a scheduled revoke cancelled
by its sequence number; an evaluation consumed) to show that reconcile alone still converges. Revoke lateness
(expiresAt → confirmed revoke, `latenessSeconds` of `grant.revoked`) is printed for the fast path (the
scheduled message) and for the reconcile path (terminal summary: "jitgate revoke timing").

The scenarios are mostly waiting, so they run side by side (threads, one data directory and port each) from
the first test of the module on; each test waits for its own scenario, whose assertions raise there.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.adapters.embedded.bus import SqliteBus
from shared.adapters.embedded.rbac import LocalRbac
from shared.adapters.embedded.store import SqliteStore
from shared.clock import SystemClock
from shared.domain.audit import AuditEvent, canonical_json, verify_chain
from shared.domain.ledger import Assignment, Grant, Hold, HoldStatus
from shared.domain.lifecycle import RequestRecord, RequestState
from shared.lifecycle import LIFECYCLE_QUEUE, REQUESTS_QUEUE, REVOCATIONS_QUEUE
from shared.ports import DeadLetter, QueueSettings
from tests.e2e.conftest import DEV_SUB, JANE, JitgateServer
from tests.reliability.conftest import RECONCILE_SECONDS, Launcher, wait_for_death

pytestmark = pytest.mark.e2e

QUEUES = (REQUESTS_QUEUE, LIFECYCLE_QUEUE, REVOCATIONS_QUEUE)
KILLED = -signal.SIGKILL
CONVERGE_TIMEOUT = 20.0  # seconds after the restart (plus the duration when the expiry is still ahead)
EARLY_TIMEOUT = 10.0  # seconds after the restart for an interrupted early revoke (reconcile runs every second)
STALE_APPROVED_AFTER = 60.0  # Backends.stale_approved_after: when reconcile re-drives an approved request
ONCE = (
    "request.received",
    "policy.evaluated",
    "request.approved",
    "grant.applied",
    "revoke.scheduled",
    "grant.revoked",
)
# A crash between releasing the hold and deleting the assignment leaves a marked assignment without an
# active hold: once the deletion intent's lease has run out, reconcile may remove it as an orphan before
# the redelivered revoke takes it over. Audited, once.
TOLERATED = ("reconcile.orphan_removed",)


# ---------------------------------------------------------------- what is on disk


@dataclass
class Snapshot:
    """One request as the data directory holds it (read with the adapters, as a local operator could)."""

    record: RequestRecord | None
    chain: list[AuditEvent]
    holds: list[Hold]
    grants: list[Grant]  # the documents of the request's grant keys
    all_active_holds: list[Hold]
    marked: list[Assignment]
    queued: dict[str, int]
    scheduled: dict[str, int]
    dead: dict[str, list[DeadLetter]] = field(default_factory=dict)

    @property
    def state(self) -> RequestState | None:
        return None if self.record is None else self.record.state

    @property
    def pending(self) -> list[str]:
        return [] if self.record is None else [e.type.value for e in self.record.pending_events]

    @property
    def types(self) -> list[str]:
        return [e.type.value for e in self.chain]

    @property
    def deleting(self) -> bool:
        return any(g.deleting is not None for g in self.grants)

    def mine(self, request_id: str) -> list[Assignment]:
        return [a for a in self.marked if a.marked_request_id == request_id]

    def converged(self) -> bool:
        return (
            self.state is RequestState.REVOKED
            and not self.pending
            and all(h.status is HoldStatus.RELEASED for h in self.holds)
            and not self.deleting
            and not self.all_active_holds
            and not self.marked
            and not any(self.queued.values())
        )

    def describe(self) -> str:
        return json.dumps(
            {
                "state": None if self.state is None else self.state.value,
                "pendingEvents": self.pending,
                "auditChain": self.types,
                "holds": [f"{h.status.value}, expires {h.expires_at.isoformat()}" for h in self.holds],
                "deletionIntents": [g.deleting.model_dump(mode="json") for g in self.grants if g.deleting],
                "activeHoldsAnywhere": len(self.all_active_holds),
                "markedAssignments": [a.description for a in self.marked],
                "messages": self.queued,
                "scheduled": self.scheduled,
                "deadLetters": {q: [(d.message_id, d.reason) for d in ds] for q, ds in self.dead.items()},
            },
            indent=1,
        )


def snapshot(data_dir: Path, request_id: str) -> Snapshot:
    clock = SystemClock()
    with (
        closing(SqliteStore(data_dir / "store.db")) as store,
        closing(LocalRbac(data_dir / "rbac.db")) as rbac,
        closing(SqliteBus(data_dir / "bus.db", clock)) as bus,
    ):
        holds = store.holds_for_request(request_id)
        return Snapshot(
            record=store.get_request(request_id),
            chain=store.chain(request_id),
            holds=holds,
            grants=[g for g in (store.get_grant(k) for k in {h.key for h in holds}) if g is not None],
            all_active_holds=store.all_active_holds(),
            marked=[a for a in rbac.all_assignments() if a.marked_request_id],
            queued={q: bus.active_count(q) + bus.scheduled_count(q) for q in QUEUES},
            scheduled={q: bus.scheduled_count(q) for q in QUEUES},
            dead={q: bus.dead_letters(q) for q in QUEUES},
        )


def watch_assignment_creation(data_dir: Path) -> None:
    """From now on, note every assignment the simulated RBAC plane creates, with the time (like the activity
    log of a real one). Installed while serve is down; an observer only, serve never reads it."""
    with closing(sqlite3.connect(data_dir / "rbac.db")) as conn:
        conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS test_assignments_created (
                name TEXT NOT NULL, description TEXT NOT NULL,
                at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')));
            CREATE TRIGGER IF NOT EXISTS test_note_assignment_created AFTER INSERT ON role_assignments
            BEGIN INSERT INTO test_assignments_created (name, description) VALUES (NEW.name, NEW.description); END;
            """
        )


def assignments_created(data_dir: Path, request_id: str) -> list[str]:
    """When assignments marked for this request were created since `watch_assignment_creation`."""
    with closing(sqlite3.connect(data_dir / "rbac.db")) as conn:
        rows = conn.execute("SELECT description, at FROM test_assignments_created ORDER BY at").fetchall()
    return [at for description, at in rows if request_id in description]


def all_chains(data_dir: Path) -> list[tuple[str, list[AuditEvent]]]:
    with closing(SqliteStore(data_dir / "store.db")) as store:
        return list(store.iter_chains())


# ---------------------------------------------------------------- talking to serve


def dev_rg(name: str) -> str:
    return f"/subscriptions/{DEV_SUB}/resourceGroups/{name}"


def access_request(scope: str, duration: str) -> dict[str, Any]:
    """Jane asks for Reader in the dev subscription: the example policy auto-approves it (rule dev-reader)."""
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
        "target": {"provider": "local", "scope": scope, "role": "Reader"},
        "duration": duration,
        "justification": "Crash-recovery test of the grant lifecycle",
    }


def submit(server: JitgateServer, doc: dict[str, Any], may_crash: bool = False) -> None:
    """POST the request as Jane. With `may_crash` the worker may kill the process before the 202 is written
    (the evaluation races the response); the crash inspection then proves the request was stored."""
    try:
        with server.client(JANE) as c:
            response = c.post("/api/access-requests", json=doc)
    except httpx.TransportError:
        if may_crash:
            return
        raise
    assert response.status_code == 202, f"POST → {response.status_code} {response.text[:500]}"


def early_revoke(server: JitgateServer, request_id: str) -> None:
    """Jane says she is done. The process dies inside this call, so no answer is expected."""
    try:
        with server.client(JANE) as c:
            response = c.post(f"/api/access-requests/{request_id}/revoke", json={"reason": "done"})
    except httpx.TransportError:
        return
    pytest.fail(f"the early revoke answered {response.status_code} {response.text[:300]} instead of crashing")


def converge(ctx: Ctx, request_id: str, timeout: float) -> Snapshot:
    """Poll the data directory until the request has converged (see `Snapshot.converged`)."""
    deadline = time.monotonic() + timeout
    while True:
        snap = snapshot(ctx.data_dir, request_id)
        if snap.converged():
            return snap
        if time.monotonic() >= deadline or ctx.stop.is_set():
            pytest.fail(f"request {request_id} did not converge within {timeout:.0f}s:\n{snap.describe()}")
        time.sleep(0.1)


def parse_instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def only(chain: list[AuditEvent], type: str) -> AuditEvent:
    found = [e for e in chain if e.type.value == type]
    assert len(found) == 1, f"{len(found)} {type} events in {[e.type.value for e in chain]}"
    return found[0]


def assert_recovered(server: JitgateServer, request_id: str) -> Snapshot:
    """The invariants after convergence; returns the final snapshot."""
    data_dir = server.data_dir
    snap = snapshot(data_dir, request_id)
    assert snap.converged(), snap.describe()
    record = snap.record
    assert record is not None

    # Nothing lost, nothing doubled.
    types = Counter(snap.types)
    for type in ONCE:
        assert types[type] == 1, f"{types[type]} x {type} in {snap.types}"
    assert set(types) <= {*ONCE, *TOLERATED}, f"unexpected events: {sorted(set(types) - {*ONCE, *TOLERATED})}"
    assert all(types[t] <= 1 for t in TOLERATED), snap.types
    contents = [(e.type.value, canonical_json(e.data)) for e in snap.chain]
    assert len(set(contents)) == len(contents), f"an event is recorded twice: {snap.types}"
    assert not record.pending_events, "audit events left in the record's outbox"
    assert record.audit_seq == len(snap.chain), f"record says {record.audit_seq} events, store has {len(snap.chain)}"
    assert record.audit_head == snap.chain[-1].hash, "the record's audit head is not the last stored event"
    assert snap.types.index("grant.applied") < snap.types.index("grant.revoked"), snap.types

    # Every chain verifies, on disk and through the API.
    chains = all_chains(data_dir)
    broken = [r.as_dict() for r in (verify_chain(rid, events) for rid, events in chains) if not r.ok]
    assert not broken, f"broken audit chains: {broken}"
    with server.auditor() as c:
        verify = c.get("/api/audit/verify").json()
    assert verify["ok"] and verify["chains"] == len(chains), verify

    # A re-driven grant keeps the expiry of the hold it was first given (an early revoke makes the hold
    # due at once, so that reconcile finishes it if the revoke is cut short).
    applied = only(snap.chain, "grant.applied")
    granted_until = parse_instant(applied.data["expiresAt"])
    assert [h.expires_at <= granted_until for h in snap.holds] == [True], snap.describe()

    # Nothing left granted, nothing left on the bus.
    assert all(h.status is HoldStatus.RELEASED for h in snap.holds) and snap.holds, snap.describe()
    assert not snap.all_active_holds and not snap.marked, snap.describe()
    assert not any(snap.queued.values()), snap.describe()
    assert not any(snap.dead.values()), f"dead letters: {snap.describe()}"

    # The API agrees.
    doc = server.get(request_id)
    assert doc["state"] == "revoked", doc["state"]
    assert [e["type"] for e in doc["timeline"]] == snap.types
    assert not server.assignments_of(request_id)
    return snap


# ---------------------------------------------------------------- what a crash must leave behind


def assert_died_at(point: str, snap: Snapshot, request_id: str) -> None:
    """The data directory as the crash point leaves it (proves the process died there, not elsewhere)."""
    s = snap
    where = f"after the crash at {point}:\n{s.describe()}"
    assert s.record is not None, f"the request was not stored {where}"
    released = [h for h in s.holds if h.status is HoldStatus.RELEASED]
    # NB. A state and the audit events it emitted are one transaction: written together, or not at all.
    assert not s.pending, where
    if point == "after_state.approved":
        assert s.state is RequestState.APPROVED and "request.approved" in s.types, where
        assert not s.holds and not s.mine(request_id), where
        assert s.queued[LIFECYCLE_QUEUE] == 0, f"the grant command was sent {where}"
    elif point == "grant.after_provider":
        assert s.state is RequestState.APPROVED and len(s.holds) == 1 and s.mine(request_id), where
        assert s.scheduled[REVOCATIONS_QUEUE] == 0, f"the revoke was scheduled {where}"
    elif point == "grant.after_schedule":
        assert s.state is RequestState.APPROVED and len(s.holds) == 1 and s.mine(request_id), where
        assert s.scheduled[REVOCATIONS_QUEUE] == 1, f"no revoke scheduled {where}"
    elif point == "after_state.active":
        assert s.state is RequestState.ACTIVE and s.mine(request_id), where
        assert {"grant.applied", "revoke.scheduled"} <= set(s.types), where
    elif point == "revoke.after_release":
        # The release and the intent to delete are one write; nothing was deleted yet.
        assert s.state is RequestState.ACTIVE and len(released) == 1 and s.mine(request_id), where
        assert s.deleting, f"no deletion intent {where}"
    elif point == "revoke.after_delete":
        assert s.state is RequestState.ACTIVE and len(released) == 1 and not s.mine(request_id), where
        assert s.deleting, f"the deletion intent was cleared {where}"
    elif point == "after_state.revoked":
        assert s.state is RequestState.REVOKED and "grant.revoked" in s.types, where
        assert not s.mine(request_id) and not s.deleting, where
    else:  # pragma: no cover
        raise AssertionError(f"no expectation for crash point {point}")


# ---------------------------------------------------------------- scenarios
#
# Every scenario is mostly waiting (start-up, expiry, lock expiry, reconcile ticks), so the module runs them
# side by side in threads, each on its own data directory and port; each test collects its own scenario's
# outcome (its assertions raise there) and adopts its servers, so a failure shows their logs.


@dataclass
class Ctx:
    """What one scenario works with."""

    launcher: Launcher
    data_dir: Path

    @property
    def stop(self) -> threading.Event:
        return self.launcher.stop


@dataclass
class Outcome:
    """What a scenario measured: (scenario, what, seconds) rows and lines to print."""

    figures: list[tuple[str, str, float]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def add(self, scenario: str, what: str, seconds: float) -> None:
        self.figures.append((scenario, what, seconds))
        self.lines.append(f"{scenario}: {what}: {seconds:.3f}s")


GRANT_SIDE = ("after_state.approved", "grant.after_provider", "grant.after_schedule", "after_state.active")
REVOKE_SIDE = ("revoke.after_release", "revoke.after_delete", "after_state.revoked")
GRANT_SECONDS = 15  # the restart finishes before expiry even on a loaded machine, so the fast path revokes
REVOKE_SECONDS = 3  # the crash waits for the expiry
START_ALLOWANCE = 15.0  # serve start-up under load, for deadlines only
FAST_PATH_MAX = 1.5  # seconds late at most when the scheduled revoke message fires (poll interval 0.05 s)
PARALLEL = 5


def crash_case(point: str, ending: str) -> Callable[[Ctx], Outcome]:
    def run(ctx: Ctx) -> Outcome:
        return _crash_case(ctx, point, ending)

    return run


def _crash_case(ctx: Ctx, point: str, ending: str) -> Outcome:
    """Crash at `point` while granting, at expiry (`expiry`) or during the requester's early revoke (`early`);
    restart; converge; check the invariants and the timing."""
    out = Outcome()
    data_dir = ctx.data_dir
    crashing = ctx.launcher.start(data_dir, crashpoint=point)
    if ending == "early":
        seconds = 3600
    elif point in GRANT_SIDE:
        seconds = GRANT_SECONDS
    else:
        seconds = REVOKE_SECONDS
    doc = access_request(dev_rg("rg-crash-dev"), f"PT{seconds}S")
    request_id = doc["requestId"]
    submit(crashing, doc, may_crash=point in GRANT_SIDE)

    revoke_asked: datetime | None = None
    if ending == "early":
        crashing.wait_state(request_id, "active")
        revoke_asked = datetime.now(UTC)
        early_revoke(crashing, request_id)
    code = wait_for_death(crashing, START_ALLOWANCE + (seconds if ending == "expiry" else 0), point)
    assert code == KILLED, f"serve exited with {code}, not SIGKILL, at {point}:\n{crashing.log_tail()}"
    assert_died_at(point, snapshot(data_dir, request_id), request_id)

    server = ctx.launcher.start(data_dir)
    restarted = datetime.now(UTC)
    converge(ctx, request_id, CONVERGE_TIMEOUT + seconds if ending == "expiry" else EARLY_TIMEOUT)
    converged = datetime.now(UTC)
    snap = assert_recovered(server, request_id)
    revoked = only(snap.chain, "grant.revoked")
    scenario = f"{point} ({ending})"

    if ending == "early":
        # Converging must not wait for the (one hour) expiry: the early revoke is finished by the restart.
        # The requester's own reason ("done") may be lost with the crash, but it must stay an early revoke.
        assert revoke_asked is not None
        assert not str(revoked.data["reason"]).startswith("expired"), revoked.data
        assert float(revoked.data["latenessSeconds"]) < 0, revoked.data
        took = (revoked.at - revoke_asked).total_seconds()
        out.add(scenario, f"early revoke asked → revoked ({revoked.data['reason']})", took)
        out.add(scenario, "restart → converged", (converged - restarted).total_seconds())
        return out

    lateness = float(revoked.data["latenessSeconds"])
    expires = parse_instant(only(snap.chain, "grant.applied").data["expiresAt"])
    out.add(scenario, f"expiresAt → revoked ({revoked.data['reason']})", lateness)
    assert revoked.at >= expires, f"revoked at {revoked.at.isoformat()}, before its expiry {expires.isoformat()}"
    assert lateness >= 0, revoked.data
    if point in GRANT_SIDE:
        # The restart finished before the expiry: the scheduled revoke message fires on time.
        assert restarted < expires, f"serve restarted at {restarted.isoformat()}, after the expiry: too slow"
        # The scheduled message (`expired`) or a reconcile tick that happens to come first (`expired (reconcile)`).
        assert revoked.data["reason"] in ("expired", "expired (reconcile)"), revoked.data
        assert lateness <= FAST_PATH_MAX, f"revoke {lateness}s late although serve was up at the expiry"
    else:
        # The crash happened at expiry: late by the downtime, plus at most a lock period and a reconcile tick.
        downtime = (restarted - expires).total_seconds()
        out.add(scenario, "expiresAt → serve healthy again", downtime)
        assert lateness <= downtime + RECONCILE_SECONDS + 3, f"{lateness}s late after {downtime:.1f}s down"
    return out


def expired_while_down(ctx: Ctx) -> Outcome:
    """Crash right after the provider created the assignment, and stay down past the expiry: the restart must
    take the access away, revoke the request and never hand the access out again."""
    out = Outcome()
    data_dir = ctx.data_dir
    crashing = ctx.launcher.start(data_dir, crashpoint="grant.after_provider")
    doc = access_request(dev_rg("rg-down-dev"), "PT1S")
    request_id = doc["requestId"]
    submit(crashing, doc, may_crash=True)
    assert wait_for_death(crashing, START_ALLOWANCE, "grant.after_provider") == KILLED
    snap = snapshot(data_dir, request_id)
    assert_died_at("grant.after_provider", snap, request_id)
    expires = snap.holds[0].expires_at
    while datetime.now(UTC) < expires + timedelta(seconds=0.5):  # stay down past the expiry
        assert not ctx.stop.wait(0.05), "cancelled"
    watch_assignment_creation(data_dir)

    server = ctx.launcher.start(data_dir)
    restarted = datetime.now(UTC)
    converge(ctx, request_id, CONVERGE_TIMEOUT)
    created = assignments_created(data_dir, request_id)
    assert not created, (
        f"the assignment of a request that expired at {expires.isoformat()} was created again at {created} "
        f"(restart at {restarted.isoformat()}): access handed out past its expiry; audit trail "
        f"{[(e.type.value, e.at.isoformat()) for e in snapshot(data_dir, request_id).chain]}"
    )
    snap = assert_recovered(server, request_id)
    revoked = only(snap.chain, "grant.revoked")
    out.add("expired while down", "expiresAt → revoked", (revoked.at - expires).total_seconds())
    out.add("expired while down", "restart → revoked", (revoked.at - restarted).total_seconds())
    return out


def lost_scheduled_revoke(ctx: Ctx) -> Outcome:
    """While serve is down, the scheduled revoke of one request is cancelled on the bus (as if lost); its twin
    keeps its message. Both must end revoked on time: the twin by its message (fast path), the other by
    reconcile (overdue hold), late by at most about one reconcile interval."""
    out = Outcome()
    data_dir = ctx.data_dir
    server = ctx.launcher.start(data_dir)
    lost = access_request(dev_rg("rg-lost-dev"), f"PT{GRANT_SECONDS}S")
    kept = access_request(dev_rg("rg-kept-dev"), f"PT{GRANT_SECONDS}S")
    for doc in (lost, kept):
        submit(server, doc)
    for doc in (lost, kept):
        server.wait_state(doc["requestId"], "active")
    scheduled = only(snapshot(data_dir, lost["requestId"]).chain, "revoke.scheduled")
    sequence_number = int(scheduled.data["sequenceNumber"])

    server.process.send_signal(signal.SIGKILL)
    assert server.process.wait(10) == KILLED
    with closing(SqliteBus(data_dir / "bus.db", SystemClock())) as bus:
        before = bus.scheduled_count(REVOCATIONS_QUEUE)
        bus.cancel_scheduled(REVOCATIONS_QUEUE, sequence_number)
        assert bus.scheduled_count(REVOCATIONS_QUEUE) == before - 1 == 1, "the scheduled revoke was not removed"

    server = ctx.launcher.start(data_dir)
    restarted = datetime.now(UTC)
    late = {}
    # The twin's message fires at its expiry; a reconcile tick falling in the few milliseconds before the
    # consumer takes the message may revoke it first, which is just as good. The other has no message.
    for label, doc, reasons in (
        ("lost revoke message", lost, ("expired (reconcile)",)),
        ("fast path", kept, ("expired", "expired (reconcile)")),
    ):
        request_id = doc["requestId"]
        converge(ctx, request_id, CONVERGE_TIMEOUT)
        snap = assert_recovered(server, request_id)
        revoked = only(snap.chain, "grant.revoked")
        expires = parse_instant(only(snap.chain, "grant.applied").data["expiresAt"])
        assert restarted < expires, "serve restarted after the expiry: the lateness would include downtime"
        assert revoked.data["reason"] in reasons, revoked.data
        late[label] = float(revoked.data["latenessSeconds"])
        assert revoked.at >= expires and late[label] >= 0, revoked.data
        out.add(label, f"expiresAt → revoked ({revoked.data['reason']})", late[label])
    assert late["fast path"] <= FAST_PATH_MAX, late
    assert late["lost revoke message"] <= RECONCILE_SECONDS + 1.5, late
    return out


def crash_in_reconcile_revoke(ctx: Ctx) -> Outcome:
    """The scheduled revoke is lost (cancelled while serve is down), and the next serve dies inside reconcile's
    revoke of the overdue hold, between releasing the hold and deleting the assignment. No message is left to
    redeliver: the serve after that must still finish the revoke."""
    out = Outcome()
    data_dir = ctx.data_dir
    server = ctx.launcher.start(data_dir)
    doc = access_request(dev_rg("rg-twice-dev"), f"PT{GRANT_SECONDS}S")
    request_id = doc["requestId"]
    submit(server, doc)
    server.wait_state(request_id, "active")
    sequence_number = int(only(snapshot(data_dir, request_id).chain, "revoke.scheduled").data["sequenceNumber"])
    server.process.send_signal(signal.SIGKILL)
    assert server.process.wait(10) == KILLED
    with closing(SqliteBus(data_dir / "bus.db", SystemClock())) as bus:
        bus.cancel_scheduled(REVOCATIONS_QUEUE, sequence_number)
        assert bus.scheduled_count(REVOCATIONS_QUEUE) == 0, "the scheduled revoke was not removed"

    crashing = ctx.launcher.start(data_dir, crashpoint="revoke.after_release")
    assert wait_for_death(crashing, GRANT_SECONDS + START_ALLOWANCE, "revoke.after_release") == KILLED
    snap = snapshot(data_dir, request_id)
    assert_died_at("revoke.after_release", snap, request_id)
    assert not any(snap.queued.values()), f"a message is left to redeliver:\n{snap.describe()}"

    relaunched = datetime.now(UTC)
    server = ctx.launcher.start(data_dir)
    converge(ctx, request_id, CONVERGE_TIMEOUT)
    snap = assert_recovered(server, request_id)
    revoked = only(snap.chain, "grant.revoked")
    label = "crash in reconcile's revoke"
    out.add(label, f"expiresAt → revoked ({revoked.data['reason']})", float(revoked.data["latenessSeconds"]))
    out.add(label, "serve relaunched → revoked", (revoked.at - relaunched).total_seconds())
    return out


def lost_grant_command(ctx: Ctx) -> Outcome:
    """Crash at `after_state.approved` (decided, grant command never sent) and lose the evaluation message
    too (else its redelivery re-drives the grant): only reconcile knows that the request still needs its
    grant. It re-drives it once the request has been approved for `stale_approved_after` (60 s); the grant
    then ends revoked at its expiry like any other."""
    out = Outcome()
    data_dir = ctx.data_dir
    crashing = ctx.launcher.start(data_dir, crashpoint="after_state.approved")
    doc = access_request(dev_rg("rg-regrant-dev"), "PT3S")
    request_id = doc["requestId"]
    submit(crashing, doc, may_crash=True)
    assert wait_for_death(crashing, START_ALLOWANCE, "after_state.approved") == KILLED
    snap = snapshot(data_dir, request_id)
    assert_died_at("after_state.approved", snap, request_id)
    assert snap.record is not None
    decided = snap.record.updated_at
    # Take the evaluation message once the dead process's lock has run out, and complete it: lost.
    with closing(SqliteBus(data_dir / "bus.db", SystemClock(), {REQUESTS_QUEUE: QueueSettings()})) as bus:
        deadline = time.monotonic() + 10
        while not (taken := bus.receive(REQUESTS_QUEUE)):
            assert time.monotonic() < deadline, "the evaluation message never became receivable"
            assert not ctx.stop.wait(0.05), "cancelled"
        bus.complete(taken[0])
        assert bus.active_count(REQUESTS_QUEUE) == bus.active_count(LIFECYCLE_QUEUE) == 0

    server = ctx.launcher.start(data_dir)
    wait = STALE_APPROVED_AFTER + RECONCILE_SECONDS + CONVERGE_TIMEOUT
    converge(ctx, request_id, (decided + timedelta(seconds=wait) - datetime.now(UTC)).total_seconds())
    snap = assert_recovered(server, request_id)
    applied = only(snap.chain, "grant.applied")
    redriven = (applied.at - decided).total_seconds()
    out.add("lost grant command", "decision → grant re-driven by reconcile", redriven)
    assert redriven >= STALE_APPROVED_AFTER - 1, f"granted {redriven:.1f}s after the decision: not by reconcile"
    assert f"'regranted': ['{request_id}']" in server.log_path.read_text(), "reconcile did not report the re-drive"
    revoked = only(snap.chain, "grant.revoked")
    lateness = float(revoked.data["latenessSeconds"])
    out.add("lost grant command", f"expiresAt → revoked ({revoked.data['reason']})", lateness)
    assert revoked.data["reason"] in ("expired", "expired (reconcile)"), revoked.data
    assert 0 <= lateness <= FAST_PATH_MAX, revoked.data
    return out


CRASHES = [*((p, "expiry") for p in GRANT_SIDE + REVOKE_SIDE), *((p, "early") for p in REVOKE_SIDE)]
CASES = [pytest.param(point, ending, id=f"{point}-{ending}") for point, ending in CRASHES]
SCENARIOS: dict[str, Callable[[Ctx], Outcome]] = {
    # The longest first: it waits a minute for reconcile while the others run.
    "test_lost_grant_command_is_redriven_by_reconcile": lost_grant_command,
    "test_crash_inside_reconcile_revoke_of_a_lost_message_still_ends_revoked": crash_in_reconcile_revoke,
    **{f"{point}-{ending}": crash_case(point, ending) for point, ending in CRASHES},
    "test_crash_then_expiry_while_down_is_not_granted_again": expired_while_down,
    "test_lost_scheduled_revoke_is_revoked_by_reconcile_on_time": lost_scheduled_revoke,
}


def _key(item: pytest.Item) -> str:
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        return f"{callspec.params['point']}-{callspec.params['ending']}"
    return getattr(item, "originalname", item.name)


class Runs:
    """The selected scenarios of this module, running side by side."""

    def __init__(self, keys: list[str], tmp: pytest.TempPathFactory) -> None:
        self.stop = threading.Event()
        self.launchers: dict[str, Launcher] = {}
        self.futures: dict[str, Future[Outcome]] = {}
        self.pool = ThreadPoolExecutor(PARALLEL, thread_name_prefix="scenario")
        for key in sorted(keys, key=list(SCENARIOS).index):
            launcher = self.launchers[key] = Launcher(self.stop)
            ctx = Ctx(launcher, tmp.mktemp(key.replace(".", "_")[:40]))
            self.futures[key] = self.pool.submit(SCENARIOS[key], ctx)

    def outcome(self, key: str, launcher: Launcher, figures: list[tuple[str, str, float]]) -> Outcome:
        """Wait for the scenario; its assertions raise here. Its servers' logs join the test's report."""
        launcher.adopt(self.launchers[key].servers)
        outcome = self.futures[key].result(timeout=300)
        for line in outcome.lines:
            print(line)
        figures.extend(outcome.figures)
        return outcome

    def close(self) -> None:
        """Stop waiting, kill every server (which also ends any wait for a death), join the threads, and kill
        whatever a thread started meanwhile."""
        self.stop.set()
        for launcher in self.launchers.values():
            launcher.stop_all()
        self.pool.shutdown(wait=True, cancel_futures=True)
        for launcher in self.launchers.values():
            launcher.stop_all()


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    here = request.module.__name__
    keys = [_key(i) for i in request.session.items if getattr(getattr(i, "module", None), "__name__", "") == here]
    runs = Runs([k for k in keys if k in SCENARIOS], tmp_path_factory)
    try:
        yield runs
    finally:
        runs.close()


# ---------------------------------------------------------------- the tests


@pytest.mark.parametrize(("point", "ending"), CASES)
def test_crash_point_recovers_after_restart(
    point: str, ending: str, runs: Runs, launcher: Launcher, figures: list[tuple[str, str, float]]
) -> None:
    """Every crash point, while granting and at expiry; the revoke-side ones also during an early revoke."""
    runs.outcome(f"{point}-{ending}", launcher, figures)


def test_crash_then_expiry_while_down_is_not_granted_again(
    runs: Runs, launcher: Launcher, figures: list[tuple[str, str, float]]
) -> None:
    """See `expired_while_down`."""
    runs.outcome("test_crash_then_expiry_while_down_is_not_granted_again", launcher, figures)


def test_lost_scheduled_revoke_is_revoked_by_reconcile_on_time(
    runs: Runs, launcher: Launcher, figures: list[tuple[str, str, float]]
) -> None:
    """See `lost_scheduled_revoke`: the fast path and the reconcile path, with their lateness."""
    runs.outcome("test_lost_scheduled_revoke_is_revoked_by_reconcile_on_time", launcher, figures)


def test_crash_inside_reconcile_revoke_of_a_lost_message_still_ends_revoked(
    runs: Runs, launcher: Launcher, figures: list[tuple[str, str, float]]
) -> None:
    """See `crash_in_reconcile_revoke`."""
    runs.outcome("test_crash_inside_reconcile_revoke_of_a_lost_message_still_ends_revoked", launcher, figures)


def test_lost_grant_command_is_redriven_by_reconcile(
    runs: Runs, launcher: Launcher, figures: list[tuple[str, str, float]]
) -> None:
    """See `lost_grant_command` (`after_state.approved` with the evaluation message lost too)."""
    runs.outcome("test_lost_grant_command_is_redriven_by_reconcile", launcher, figures)
