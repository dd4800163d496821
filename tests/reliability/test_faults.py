"""Faults from the outside (issue 3, item 3): the grant provider, the store, the bus and the notifier
misbehave, and jitgate must still end every request in a visible, correct state.

Everything runs on the World (fakes and a FakeClock) except the `jitgate dlq` CLI tests, which use the
SQLite adapters in a temporary data directory, as `jitgate serve` would.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from shared import cli
from shared.domain.audit import AuditEvent, EventType
from shared.domain.errors import PermanentError, TransientError
from shared.domain.ledger import Grant, GrantKey, HoldStatus, marker_for
from shared.domain.lifecycle import LifecycleCommand, RequestRecord, RequestState
from shared.runtime import Runtime, build
from shared.settings import Settings
from shared.worker import Worker
from tests.fakes.store import FakeStore
from tests.fakes.world import ALICE, BOB, DEV_RG, JANE, PROD_RG, World, access_request, body

LIFECYCLE = "access-lifecycle"
REVOCATIONS = "access-revocations"
REQUESTS = "access-requests"
LOCK_SECONDS = 31  # one lock duration (30 s) and a bit: the bus-level backoff before a redelivery
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_POLICY = ROOT / "policies" / "example.yaml"

HAPPY_TRAIL = [
    "request.received",
    "policy.evaluated",
    "request.approved",
    "grant.applied",
    "revoke.scheduled",
    "grant.revoked",
]


@pytest.fixture
def world() -> World:
    return World()


def _events(world: World, request_id: str, type_: str) -> list[AuditEvent]:
    return [e for e in world.store.chain(request_id) if e.type.value == type_]


def _record(world: World, request_id: str) -> RequestRecord:
    record = world.store.get_request(request_id)
    assert record is not None, f"no record for {request_id}"
    return record


def _lose_scheduled_revoke(world: World, request_id: str) -> None:
    """The bus loses the request's scheduled revoke (taken off the queue it waits on)."""
    record = _record(world, request_id)
    assert record.revoke_queue == REVOCATIONS and record.revoke_sequence is not None
    before = world.bus.scheduled_count(REVOCATIONS)
    world.bus.cancel_scheduled(REVOCATIONS, record.revoke_sequence)
    assert world.bus.scheduled_count(REVOCATIONS) == before - 1, "the scheduled revoke was not lost"


def _assert_nothing_left_behind(world: World) -> None:
    """Never a silent stuck state: no message in flight or dead-lettered, no hold, no assignment."""
    for queue in (LIFECYCLE, REVOCATIONS, REQUESTS):
        assert world.bus.active_count(queue) == 0, f"{queue} still has due messages"
        assert world.bus.scheduled_count(queue) == 0, f"{queue} still has scheduled messages"
        assert world.bus.dead_letters(queue) == [], f"{queue} has dead letters"
    assert world.store.all_active_holds() == []
    assert world.grants.all_assignments() == []


# =============================================================================================
# 1. Transient provider faults: retried in process with backoff, then by the bus, then success
# =============================================================================================

TransientFactory = Callable[[], TransientError]

TRANSIENT: dict[str, TransientFactory] = {
    "timeout": lambda: TransientError("ReadTimeout: management.azure.com did not answer within 30 s"),
    "throttled": lambda: TransientError("429 TooManyRequests: subscription read limit", retry_after=3.0),
    "5xx": lambda: TransientError("503 ServiceUnavailable"),
}

# Three faults then success on the fourth and last in-process attempt (`provider_attempts` = 4).
# Without retry-after the backoff doubles from 0.5 s; with it, the server's wait is honoured.
SLEEPS_FOR_THREE_FAULTS = {
    "timeout": [0.5, 1.0, 2.0],
    "throttled": [3.0, 3.0, 3.0],
    "5xx": [0.5, 1.0, 2.0],
}


@pytest.mark.parametrize("fault", sorted(TRANSIENT))
@pytest.mark.parametrize("operation", ["resolve", "find", "create"])
def test_transient_fault_on_a_grant_call_is_retried_with_backoff_and_the_grant_succeeds(
    world: World, operation: str, fault: str
) -> None:
    # GIVEN the provider fails `operation` three times in a row, then recovers
    world.grants.inject_fault(operation, TRANSIENT[fault](), times=3)
    # WHEN an auto-approved request is submitted and the worker drains the queues once
    rid = world.submit(access_request())
    # THEN the grant succeeded within the first delivery, after sleeps that follow the backoff
    assert world.state(rid) == "active"
    assert world.sleeps == SLEEPS_FOR_THREE_FAULTS[fault]
    assert [a.marked_request_id for a in world.marked()] == [rid]
    assert world.event_types(rid).count("grant.applied") == 1
    assert world.bus.dead_letters(LIFECYCLE) == []
    assert world.chains_ok()


@pytest.mark.parametrize("fault", sorted(TRANSIENT))
@pytest.mark.parametrize("operation", ["delete", "get"])
def test_transient_fault_on_a_revoke_call_is_retried_with_backoff_and_the_revoke_succeeds(
    world: World, operation: str, fault: str
) -> None:
    # GIVEN an active grant, and a provider that fails `operation` (delete, or the read-back that
    # confirms the delete) three times when the revoke comes
    rid = world.submit(access_request(duration="PT10M"))
    world.sleeps.clear()
    world.grants.inject_fault(operation, TRANSIENT[fault](), times=3)
    # WHEN the scheduled revoke fires
    world.advance(600)
    # THEN the revoke succeeded on its first delivery, after sleeps that follow the backoff
    assert world.state(rid) == "revoked"
    assert world.sleeps == SLEEPS_FOR_THREE_FAULTS[fault]
    revoked = _events(world, rid, "grant.revoked")
    assert len(revoked) == 1 and revoked[0].data["assignmentDeleted"] is True
    _assert_nothing_left_behind(world)
    assert world.chains_ok()


def test_exponential_backoff_doubles_up_to_the_cap(world: World) -> None:
    # GIVEN more in-process attempts than the default, and a provider that fails six times with no hint
    world.backends.provider_attempts = 7
    world.grants.inject_fault("create", TransientError("504 GatewayTimeout"), times=6)
    # WHEN a request is granted
    rid = world.submit(access_request())
    # THEN the waits double from 0.5 s and stop growing at max_backoff (8 s)
    assert world.backends.max_backoff == 8.0
    assert world.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert world.state(rid) == "active"


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [(0.2, 0.2), (3.0, 3.0), (8.0, 8.0), (120.0, 8.0)],
    ids=["shorter-than-backoff", "honoured", "at-cap", "capped"],
)
def test_retry_after_is_honoured_but_capped(world: World, retry_after: float, expected: float) -> None:
    # GIVEN a throttled provider that says when to come back
    world.grants.inject_fault("find", TransientError("429 TooManyRequests", retry_after=retry_after), times=1)
    # WHEN a request is granted
    rid = world.submit(access_request())
    # THEN the one wait is the server's, never beyond the cap
    assert world.sleeps == [expected]
    assert world.state(rid) == "active"


def test_transient_faults_outlasting_in_process_retries_are_retried_by_the_bus(world: World) -> None:
    # GIVEN a provider that fails create six times: more than one delivery's four attempts
    world.grants.inject_fault("create", TransientError("503 ServiceUnavailable"), times=6)
    # WHEN a request is submitted
    rid = world.submit(access_request())
    # THEN the first delivery gave up after its backoff and left the message to the bus
    assert world.state(rid) == "approved"
    assert world.sleeps == [0.5, 1.0, 2.0]
    assert world.bus.dead_letters(LIFECYCLE) == []
    # WHEN the lock expires and the bus redelivers
    world.advance(LOCK_SECONDS)
    # THEN the second delivery succeeds after two more faults; one grant, one assignment
    assert world.state(rid) == "active"
    assert world.sleeps == [0.5, 1.0, 2.0, 0.5, 1.0]
    assert world.event_types(rid).count("grant.applied") == 1
    assert len(world.grants.all_assignments()) == 1
    assert world.chains_ok()


def test_throttled_orphan_listing_is_retried_by_reconcile(world: World) -> None:
    # GIVEN an orphan (a marked assignment re-created after its request was revoked)
    rid = world.submit(access_request(duration="PT10S"))
    world.advance(11)
    key = world.store.holds_for_request(rid)[0].key
    world.grants.create_assignment(key, key.assignment_name(), marker_for(rid))
    world.sleeps.clear()
    # AND a list call that is throttled twice
    world.grants.inject_fault("list", TransientError("429", retry_after=1.5), times=2)
    # WHEN reconcile runs
    report = world.lifecycle.reconcile()
    # THEN the orphan is removed after waits of the server's retry-after
    assert report.errors == []
    assert len(report.orphans_removed) == 1
    assert world.sleeps == [1.5, 1.5]
    assert world.marked() == []


# =============================================================================================
# 2. Permanent provider faults: failed (or revoke_failed) visibly, never stuck silently
# =============================================================================================

PERMANENT: dict[str, Callable[[], PermanentError]] = {
    "principal-not-found": lambda: PermanentError(
        f"PrincipalNotFound: principal {JANE} does not exist in the directory"
    ),
    "forbidden": lambda: PermanentError(
        "AuthorizationFailed: the client does not have authorization to perform action "
        "'Microsoft.Authorization/roleAssignments/write'"
    ),
}


@pytest.mark.parametrize("fault", sorted(PERMANENT))
@pytest.mark.parametrize("operation", ["resolve", "find", "create"])
def test_permanent_fault_on_grant_ends_failed_audited_and_notified(
    world: World, operation: str, fault: str
) -> None:
    # GIVEN a provider that refuses `operation` for good
    error = PERMANENT[fault]()
    world.grants.inject_fault(operation, error, times=100)
    # WHEN an auto-approved request is submitted
    rid = world.submit(access_request())
    # THEN it failed on the first delivery, without retrying a permanent error
    assert world.state(rid) == "failed"
    assert world.sleeps == []
    failed = _events(world, rid, "grant.failed")
    assert len(failed) == 1 and str(error) in failed[0].data["error"]
    assert _record(world, rid).failure == str(error)
    notices = world.notifier.of_kind("failed")
    assert [n.request_id for n in notices] == [rid]
    # AND nothing is left for anyone to trip over: no message, no hold, no assignment
    _assert_nothing_left_behind(world)
    assert [h.status for h in world.store.holds_for_request(rid)] in ([], [HoldStatus.RELEASED])
    # AND reconcile agrees there is nothing to do
    report = world.lifecycle.reconcile()
    assert not (report.revoked or report.orphans_removed or report.regranted or report.errors)
    assert world.chains_ok()


def test_permanent_fault_after_transient_ones_fails_without_further_retries(world: World) -> None:
    # GIVEN a provider that times out twice, then says the principal is gone for good
    world.grants.inject_fault("create", TransientError("ReadTimeout"), times=2)
    world.grants.inject_fault("create", PERMANENT["principal-not-found"](), times=100)
    # WHEN a request is submitted
    rid = world.submit(access_request())
    # THEN two backoff waits, then failed at once (the permanent error is not retried)
    assert world.sleeps == [0.5, 1.0]
    assert world.state(rid) == "failed"
    assert world.notifier.of_kind("failed")
    _assert_nothing_left_behind(world)


@pytest.mark.parametrize("operation", ["delete", "get"])
def test_permanent_fault_on_revoke_is_audited_keeps_the_hold_and_reconcile_completes_it(
    world: World, operation: str
) -> None:
    # GIVEN an active grant
    rid = world.submit(access_request(duration="PT10M"))
    key = _record(world, rid).grant_key
    assert key is not None
    # AND a provider that refuses `operation` for the next three calls
    error = PERMANENT["forbidden"]()
    world.grants.inject_fault(operation, error, times=3)
    # WHEN the scheduled revoke fires
    world.advance(600)
    # THEN the revoke failure is audited and announced, and the request stays active
    assert world.state(rid) == "active"
    failed = _events(world, rid, "grant.revoke_failed")
    assert len(failed) == 1
    assert failed[0].data["reason"] == "expired" and str(error) in failed[0].data["error"]
    assert [n.request_id for n in world.notifier.of_kind("revoke_failed")] == [rid]
    # AND the hold is kept (active, overdue) so reconcile keeps trying
    grant = world.store.get_grant(key)
    hold = grant.hold_of(rid) if grant is not None else None
    assert hold is not None and hold.status is HoldStatus.ACTIVE
    assert [h.request_id for h in world.store.overdue_holds(world.clock.now())] == [rid]
    # AND the scheduled message was settled: neither spinning on the bus nor dead-lettered
    assert world.bus.active_count(REVOCATIONS) == 0
    assert world.bus.dead_letters(REVOCATIONS) == []
    # WHEN reconcile runs twice more while the fault persists
    for _ in range(2):
        world.clock.advance(60)
        report = world.lifecycle.reconcile()
        # THEN each pass reports the failure and revokes nothing; the hold is still kept
        assert report.revoked == [] and len(report.errors) == 1 and rid in report.errors[0]
        assert report.orphans_removed == []
        assert world.state(rid) == "active"
        assert world.store.overdue_holds(world.clock.now())
    # AND the same failure is neither re-audited nor re-announced on every pass
    assert len(_events(world, rid, "grant.revoke_failed")) == 1
    assert len(world.notifier.of_kind("revoke_failed")) == 1
    # WHEN the fault clears and reconcile runs again
    world.clock.advance(60)
    report = world.lifecycle.reconcile()
    # THEN the revoke completes: revoked, assignment gone, hold released, chain intact
    assert report.revoked == [rid] and report.errors == []
    assert world.state(rid) == "revoked"
    assert world.event_types(rid)[-2:] == ["grant.revoke_failed", "grant.revoked"]
    assert world.event_types(rid).count("grant.revoked") == 1
    _assert_nothing_left_behind(world)
    assert world.chains_ok()


def test_permanent_fault_on_early_revoke_is_retried_by_the_next_reconcile_not_at_expiry(world: World) -> None:
    # GIVEN an eight-hour grant
    rid = world.submit(access_request(duration="PT8H"))
    # AND a provider that refuses the delete once
    world.grants.inject_fault("delete", PERMANENT["forbidden"](), times=1)
    # WHEN the requester says "I'm done"
    result = world.lifecycle.request_revoke(rid, JANE, is_admin=False)
    # THEN they are told it did not work, and it is audited as theirs
    assert result.state is RequestState.ACTIVE and "revoke failed" in result.message
    [failed] = _events(world, rid, "grant.revoke_failed")
    assert failed.data["reason"] == "early" and failed.actor.principal_id == JANE
    assert world.marked(), "the assignment is still there"
    # WHEN the next reconcile runs, long before the eight hours are up
    world.clock.advance(60)
    report = world.lifecycle.reconcile()
    # THEN the early revoke is completed, keeping its reason, and the scheduled revoke is cancelled
    assert report.revoked == [rid]
    assert world.state(rid) == "revoked"
    revoked = _events(world, rid, "grant.revoked")[-1]
    assert revoked.data["reason"].startswith("early")
    assert revoked.data["latenessSeconds"] < 0  # before the natural expiry
    _assert_nothing_left_behind(world)
    assert world.chains_ok()


def test_revoke_outage_longer_than_the_bus_retries_is_completed_by_reconcile(world: World) -> None:
    # GIVEN an active grant and a delete that fails transiently on every attempt of every delivery
    rid = world.submit(access_request(duration="PT10M"))
    attempts = world.backends.provider_attempts * world.max_deliveries
    world.grants.inject_fault("delete", TransientError("503 ServiceUnavailable"), times=attempts)
    # WHEN the scheduled revoke fires and the bus redelivers until it gives up
    world.advance(600)
    for _ in range(world.max_deliveries):
        world.advance(LOCK_SECONDS)
    # THEN the revoke message is dead-lettered, but the hold is kept for reconcile
    [dead] = world.bus.dead_letters(REVOCATIONS)
    assert dead.reason == "MaxDeliveryCountExceeded" and dead.message_id == f"revoke:{rid}:1"
    assert world.state(rid) == "active"
    assert [h.request_id for h in world.store.overdue_holds(world.clock.now())] == [rid]
    # WHEN the provider recovers and reconcile runs
    report = world.lifecycle.reconcile()
    # THEN the revoke completes
    assert report.revoked == [rid]
    assert world.state(rid) == "revoked"
    assert world.grants.all_assignments() == []
    assert world.store.all_active_holds() == []
    assert world.chains_ok()


# =============================================================================================
# 3. The store refusing writes for a while
# =============================================================================================


class FlakyStore:
    """A FakeStore whose writes raise TransientError for a while: after `after` more good writes,
    the next `times` writes are refused (as Cosmos does with 429/503). Reads always work."""

    def __init__(self, inner: FakeStore) -> None:
        self.inner = inner
        self.writes = 0
        self.written: list[str] = []  # every write, by port method, refused ones too
        self.refused = 0
        self._after = 0
        self._times = 0

    def refuse_writes(self, times: int, after: int = 0) -> None:
        self._after, self._times = after, times

    def _write(self, what: str) -> None:
        self.writes += 1
        self.written.append(what)
        if self._after > 0:
            self._after -= 1
            return
        if self._times > 0:
            self._times -= 1
            self.refused += 1
            raise TransientError(f"store: 503 ServiceUnavailable on {what}")

    def create_request(self, record: RequestRecord) -> RequestRecord:
        self._write("create_request")
        return self.inner.create_request(record)

    def save_request(self, record: RequestRecord) -> RequestRecord:
        self._write("save_request")
        return self.inner.save_request(record)

    def put_grant(self, grant: Grant) -> Grant:
        self._write("put_grant")
        return self.inner.put_grant(grant)

    def append(self, event: AuditEvent, principal_id: str | None = None) -> None:
        self._write("append")
        self.inner.append(event, principal_id)

    def get_request(self, request_id: str) -> RequestRecord | None:
        return self.inner.get_request(request_id)

    def get_grant(self, key: GrantKey) -> Grant | None:
        return self.inner.get_grant(key)

    def __getattr__(self, name: str) -> Any:  # the remaining reads
        return getattr(self.inner, name)


def _flaky_world() -> tuple[World, FlakyStore]:
    world = World()
    flaky = FlakyStore(world.store)
    world.backends.requests = flaky
    world.backends.ledger = flaky
    world.backends.audit = flaky
    return world, flaky


def _whole_lifecycle(world: World) -> str:
    """Intake from the queue (as the Backstage action sends it), grant, expiry, revoke; the bus
    redelivers after each lock expiry, then the reconcile timer ticks a few times."""
    doc = access_request(duration="PT10M")
    rid = str(doc["requestId"])
    world.bus.send(REQUESTS, rid, body(doc))
    world.worker.drain()
    for _ in range(world.max_deliveries):
        world.advance(LOCK_SECONDS)
    world.advance(600)
    for _ in range(world.max_deliveries):
        world.advance(LOCK_SECONDS)
    for _ in range(4):
        world.advance(world.worker.reconcile_every)
        world.worker.reconcile()
    return rid


def _writes_of_a_clean_run() -> int:
    world, flaky = _flaky_world()
    _whole_lifecycle(world)
    return flaky.writes


CLEAN_WRITES = _writes_of_a_clean_run()


def test_the_write_sweep_below_covers_a_real_lifecycle() -> None:
    # GIVEN a store that never refuses, THEN the whole lifecycle runs and writes something to sweep over
    world, flaky = _flaky_world()
    rid = _whole_lifecycle(world)
    assert world.event_types(rid) == HAPPY_TRAIL
    assert flaky.refused == 0 and flaky.writes == CLEAN_WRITES
    # AND each write is one transaction: a record with its audit events, or a grant key's document
    assert flaky.written == [
        "create_request",  # approved, with request.received, policy.evaluated and request.approved (first seen
        # on the queue: recorded evaluated, in one write)
        "put_grant",  # the hold
        "save_request",  # active, with grant.applied and revoke.scheduled
        "put_grant",  # the hold released, with the intent to delete the assignment
        "put_grant",  # the assignment confirmed gone: the intent cleared
        "save_request",  # revoked, with grant.revoked
    ]


@pytest.mark.parametrize("times", [1, 4])
@pytest.mark.parametrize("after", range(CLEAN_WRITES))
def test_store_refusing_writes_for_a_while_delays_but_never_breaks_the_lifecycle(after: int, times: int) -> None:
    # GIVEN a store that refuses `times` writes in a row (fewer than the bus's deliveries), starting at
    # write number `after` of the lifecycle
    world, flaky = _flaky_world()
    flaky.refuse_writes(times=times, after=after)
    # WHEN a request goes through its whole lifecycle while the bus redelivers after each failure
    rid = _whole_lifecycle(world)
    # THEN the outage happened, and the lifecycle completed once the store recovered
    assert flaky.refused == times
    assert world.state(rid) == "revoked"
    # AND the audit trail is exactly the happy one: nothing lost, nothing doubled, chains verify
    assert world.event_types(rid) == HAPPY_TRAIL
    assert world.chains_ok()
    assert _record(world, rid).pending_events == []
    # AND the world is clean: no assignment, no hold, no message, no dead letter
    _assert_nothing_left_behind(world)
    # AND every notice was sent, once: a write refused after a committed transition loses none
    assert [n.kind for n in world.notifier.notices] == ["granted", "revoked"]


def test_reconcile_tick_survives_an_audit_outbox_it_cannot_flush_yet() -> None:
    # GIVEN a request whose audit outbox still holds an event (its handler could not append it)
    world, flaky = _flaky_world()
    stuck = world.submit(access_request(duration="PT8H"))
    record = _record(world, stuck)
    record.emit(EventType.ACTIVITY_SUMMARY, world.clock.now(), {"operations": 3})
    world.store.put_legacy_record(record)  # as an earlier jitgate left it: events after the record
    # AND another request whose scheduled revoke was lost, now overdue
    overdue = world.submit(access_request(principal=ALICE, duration="PT10S"))
    _lose_scheduled_revoke(world, overdue)
    world.clock.advance(60)
    # WHEN the reconcile timer ticks while the audit store refuses the first write (that flush)
    flaky.refuse_writes(times=1)
    world.worker.reconcile()
    # THEN the tick still did its job for everyone else: the overdue grant is revoked
    assert flaky.refused == 1
    assert world.state(overdue) == "revoked"
    assert "activity.summary" not in world.event_types(stuck)
    # AND the next tick flushes the outbox, once
    world.clock.advance(60)
    world.worker.reconcile()
    assert world.event_types(stuck)[-1] == "activity.summary"
    assert world.event_types(stuck).count("activity.summary") == 1
    assert _record(world, stuck).pending_events == []
    assert world.chains_ok()


def test_store_outage_longer_than_the_bus_retries_at_grant_fails_the_request_visibly() -> None:
    # GIVEN an approved request whose grant hits a store outage as long as the bus retries
    world, flaky = _flaky_world()
    doc = access_request(duration="PT10M")
    rid = str(doc["requestId"])
    world.lifecycle.evaluate(body(doc))
    assert world.state(rid) == "approved"
    flaky.refuse_writes(times=world.max_deliveries)
    # WHEN the bus delivers the grant until its last delivery
    world.worker.drain()
    for _ in range(world.max_deliveries):
        world.advance(LOCK_SECONDS)
    # THEN the last delivery fails the request visibly (ARCHITECTURE: the grant on the final delivery
    # fails instead of dead-lettering silently), naming the cause; nothing is left behind
    assert flaky.refused == world.max_deliveries
    assert world.state(rid) == "failed"
    [failed] = _events(world, rid, "grant.failed")
    assert "store: 503" in failed.data["error"]
    assert [n.request_id for n in world.notifier.of_kind("failed")] == [rid]
    _assert_nothing_left_behind(world)
    assert world.chains_ok()


def test_store_outage_longer_than_the_bus_retries_at_intake_is_replayable() -> None:
    # GIVEN a store that refuses every write for longer than the bus retries a request
    world, flaky = _flaky_world()
    doc = access_request()
    rid = str(doc["requestId"])
    flaky.refuse_writes(times=world.max_deliveries)
    world.bus.send(REQUESTS, rid, body(doc))
    # WHEN the bus delivers it until it gives up
    world.worker.drain()
    for _ in range(world.max_deliveries):
        world.advance(LOCK_SECONDS)
    # THEN it is dead-lettered with the reason, and nothing was recorded
    [dead] = world.bus.dead_letters(REQUESTS)
    assert dead.reason == "MaxDeliveryCountExceeded" and dead.message_id == rid
    assert world.store.get_request(rid) is None
    # WHEN the operator replays it after the store recovered
    world.bus.replay_dead_letter(REQUESTS, dead.sequence_number)
    world.worker.drain()
    # THEN the request is granted as if nothing had happened
    assert world.state(rid) == "active"
    assert world.event_types(rid) == HAPPY_TRAIL[:-1]
    assert world.chains_ok()


# =============================================================================================
# 4. Poison messages: dead-lettered with a reason, visible, replayable
# =============================================================================================

MALFORMED = {
    "not-json": b"{not json",
    "unknown-command": b'{"command": "explode", "requestId": "x"}',
    "missing-request-id": b'{"command": "grant"}',
    "unknown-field": b'{"command": "revoke", "requestId": "x", "sudo": true}',
    "bad-sequence": b'{"command": "revoke", "requestId": "x", "n": 0}',
    "not-utf8": b"\xff\xfe\x00",
}


@pytest.mark.parametrize("queue", [LIFECYCLE, REVOCATIONS])
@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_lifecycle_command_is_dead_lettered_at_once_as_invalid(world: World, name: str, queue: str) -> None:
    # GIVEN a malformed message on a queue of lifecycle commands
    world.bus.send(queue, f"poison:{name}", MALFORMED[name])
    # WHEN the worker drains
    world.worker.drain()
    # THEN it is dead-lettered on its first delivery (retrying cannot fix it), with the reason
    [dead] = world.bus.dead_letters(queue)
    assert dead.message_id == f"poison:{name}" and dead.body == MALFORMED[name]
    assert dead.reason == "InvalidCommand" and dead.delivery_count == 1
    assert dead.description.startswith("body: not a lifecycle command: ")
    assert world.bus.active_count(queue) == 0
    # AND replaying it unchanged dead-letters it again instead of looping
    world.bus.replay_dead_letter(queue, dead.sequence_number)
    world.worker.drain()
    [again] = world.bus.dead_letters(queue)
    assert again.reason == "InvalidCommand" and again.delivery_count == 1


HOSTILE_CORPUS = Path(__file__).resolve().parents[1] / "data" / "hostile"


def hostile_commands(request_id: str) -> dict[str, tuple[bytes, str]]:
    """Lifecycle commands naming `request_id` that the guarded JSON parser refuses, with why. pydantic's own JSON
    parser, which read them before, ran the duplicate key, the oversize reason and the textual sequence."""
    revoke = f'"command": "revoke", "requestId": "{request_id}"'
    return {
        "duplicate command key": (f'{{"command": "expire-request", {revoke}}}'.encode(), "duplicate key 'command'"),
        "oversize reason": (f'{{{revoke}, "reason": "{"x" * 5000}"}}'.encode(), "the limit is 4096"),
        "lone surrogate in the reason": (f'{{{revoke}, "reason": "\\ud800"}}'.encode(), "lone surrogate"),
        "nested 33 deep": (f'{{{revoke}, "reason": {"[" * 33}{"]" * 33}}}'.encode(), "nested more than 32 levels"),
        "NaN sequence": (f'{{{revoke}, "n": NaN}}'.encode(), "NaN is not JSON"),
        "sequence as text": (f'{{{revoke}, "n": "2"}}'.encode(), "n: Input should be a valid integer"),
        "a JSON array": (f"[{{{revoke}}}]".encode(), "it is not a JSON object"),
    }


def test_hostile_bodies_as_lifecycle_commands_are_dead_lettered_with_the_guarded_parsers_reason(
    world: World,
) -> None:
    # GIVEN an active request, and on the lifecycle queue every body of the hostile corpus and malformed commands
    # naming the request
    rid = world.submit(access_request())
    corpus = {path.name: path.read_bytes() for path in sorted(HOSTILE_CORPUS.iterdir()) if path.name != "expected.yaml"}
    commands = hostile_commands(rid)
    for name, raw in [*corpus.items(), *((name, raw) for name, (raw, _) in commands.items())]:
        world.bus.send(LIFECYCLE, f"hostile:{name}", raw)
    # AND after them, a real command
    world.bus.send(LIFECYCLE, "expire-request:real", LifecycleCommand(command="expire-request", request_id=rid).body())

    # WHEN the worker drains the queue
    world.worker.drain()

    # THEN every hostile body is dead-lettered on its first delivery with the parser's reason, and none of them
    # ran: the request is still active, nothing appended to its trail
    dead = {d.message_id.removeprefix("hostile:"): d for d in world.bus.dead_letters(LIFECYCLE)}
    assert set(dead) == set(corpus) | set(commands)
    for name, letter in dead.items():
        assert (letter.reason, letter.delivery_count) == ("InvalidCommand", 1), name
        assert letter.description.startswith("body: not a lifecycle command: "), (name, letter.description)
        assert len(letter.description) < 1000, name
    for name, (_, why) in commands.items():
        assert why in dead[name].description, (name, dead[name].description)
    assert world.state(rid) == "active"
    assert world.event_types(rid)[-1] == "revoke.scheduled"
    # AND the worker kept going: the real command after them was handled (an active request does not expire)
    assert world.bus.active_count(LIFECYCLE) == 0 and "expire-request:real" not in {d.message_id for d in dead.values()}


def test_command_that_always_raises_is_dead_lettered_after_max_deliveries_and_replayable(world: World) -> None:
    # GIVEN a provider adapter with a bug: every create raises an unexpected exception
    world.grants.inject_fault("create", KeyError("properties"), times=world.max_deliveries)
    # WHEN a request is submitted
    rid = world.submit(access_request())
    # THEN the grant command is dead-lettered after the queue's maximum deliveries, with the reason
    [dead] = world.bus.dead_letters(LIFECYCLE)
    assert dead.message_id == f"grant:{rid}:1"
    assert dead.reason == "MaxDeliveryCountExceeded"
    assert dead.delivery_count == world.max_deliveries
    assert LifecycleCommand.model_validate_json(dead.body).request_id == rid
    # AND the request is left approved, nothing granted, nothing half-applied
    assert world.state(rid) == "approved"
    assert world.grants.all_assignments() == []
    # WHEN the cause is fixed and the operator replays the dead letter
    world.bus.replay_dead_letter(LIFECYCLE, dead.sequence_number)
    world.worker.drain()
    # THEN the grant goes through once, and the dead-letter queue is empty
    assert world.bus.dead_letters(LIFECYCLE) == []
    assert world.state(rid) == "active"
    assert world.event_types(rid) == HAPPY_TRAIL[:-1]
    assert world.chains_ok()


def test_reconcile_isolates_an_unexpected_exception_to_the_request_that_raised_it(world: World) -> None:
    # GIVEN two active grants whose scheduled revokes were lost, both overdue
    first = world.submit(access_request(duration="PT10S"))
    second = world.submit(access_request(principal=ALICE, duration="PT20S"))
    for rid in (first, second):
        _lose_scheduled_revoke(world, rid)
    world.advance(30)
    # AND a provider whose next delete raises an unexpected exception
    world.grants.inject_fault("delete", RuntimeError("connection pool is closed"), times=1)
    # WHEN reconcile runs
    report = world.lifecycle.reconcile()
    # THEN the first request's failure is reported, and the second is still revoked
    assert len(report.errors) == 1 and first in report.errors[0]
    assert report.revoked == [second]
    assert world.state(second) == "revoked"
    # AND the first keeps its hold, so the next pass completes it
    assert world.state(first) == "active"
    report = world.lifecycle.reconcile()
    assert report.revoked == [first] and report.errors == []
    assert world.state(first) == "revoked"
    _assert_nothing_left_behind(world)
    assert world.chains_ok()


@pytest.fixture
def local_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    """The embedded runtime on SQLite under tmp_path, isolated from any JITGATE_* of the caller."""
    for name in list(os.environ):
        if name.startswith("JITGATE_"):
            monkeypatch.delenv(name)
    runtime = build(Settings(data_dir=tmp_path, policy_path=EXAMPLE_POLICY))
    yield runtime
    for closable in (runtime.bus, runtime.requests, runtime.rbac):
        close = getattr(closable, "close", None)
        if close is not None:
            close()


def _cli(capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()  # drop whatever came before (the outbox notifier echoes to stdout)
    code = cli.main([*args, "--data-dir", str(tmp_path), "--policy", str(EXAMPLE_POLICY)])
    out, err = capsys.readouterr()
    return code, out, err


def test_dlq_cli_lists_and_replays_poison_messages_end_to_end(
    local_runtime: Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runtime = local_runtime
    settings = runtime.settings
    worker = Worker(
        runtime.lifecycle, runtime.bus, settings.requests_queue, settings.lifecycle_queue,
        settings.max_delivery_count, reconcile_every=60,
    )
    assert runtime.rbac is not None
    # GIVEN on the local SQLite bus: a malformed command, and a grant whose provider raises every time
    runtime.bus.send(settings.lifecycle_queue, "poison:1", b"{not json")
    runtime.rbac.inject_fault("create", KeyError("properties"), times=settings.max_delivery_count)
    doc = access_request(duration="PT1H")
    rid = str(doc["requestId"])
    runtime.lifecycle.submit(body(doc))
    worker.drain()
    # WHEN the operator lists the dead letters as JSON
    code, out, _ = _cli(capsys, tmp_path, "dlq", "list", "--json")
    # THEN both are there with their reasons, sequence numbers, delivery counts and bodies
    assert code == 0
    rows = {row["messageId"]: row for row in json.loads(out)}
    assert set(rows) == {"poison:1", f"grant:{rid}:1"}
    poison, grant = rows["poison:1"], rows[f"grant:{rid}:1"]
    assert poison["queue"] == settings.lifecycle_queue and poison["reason"] == "InvalidCommand"
    assert poison["deliveryCount"] == 1 and poison["body"] == "{not json" and poison["description"]
    assert grant["reason"] == "MaxDeliveryCountExceeded"
    assert grant["deliveryCount"] == settings.max_delivery_count
    assert json.loads(grant["body"])["requestId"] == rid
    record = runtime.requests.get_request(rid)
    assert record is not None and record.state is RequestState.APPROVED
    # WHEN the cause is fixed (the fault is spent) and the operator replays the grant by number
    code, out, _ = _cli(capsys, tmp_path, "dlq", "replay", settings.lifecycle_queue, str(grant["sequenceNumber"]))
    assert code == 0
    assert out.strip() == f"replayed {settings.lifecycle_queue} #{grant['sequenceNumber']}"
    worker.drain()
    # THEN the request is granted, and only the malformed message is still dead-lettered
    record = runtime.requests.get_request(rid)
    assert record is not None and record.state is RequestState.ACTIVE
    code, out, _ = _cli(capsys, tmp_path, "dlq", "list", "--json")
    assert [row["messageId"] for row in json.loads(out)] == ["poison:1"]
    # AND replaying an unknown number is a clear error, not a crash
    code, _, err = _cli(capsys, tmp_path, "dlq", "replay", settings.lifecycle_queue, "999999")
    assert code == 1 and "no dead letter with sequence number 999999" in err
    # AND replaying the whole queue sends the malformed one back, where it is dead-lettered again
    code, out, _ = _cli(capsys, tmp_path, "dlq", "replay", settings.lifecycle_queue)
    assert code == 0 and out.count("replayed") == 1
    worker.drain()
    [dead] = runtime.bus.dead_letters(settings.lifecycle_queue)
    assert dead.message_id == "poison:1" and dead.reason == "InvalidCommand"
    code, out, _ = _cli(capsys, tmp_path, "dlq", "list")
    assert code == 0 and "poison:1" in out and "InvalidCommand" in out


# =============================================================================================
# 5. A failing notifier never undoes a committed transition
# =============================================================================================

NOTIFIER_FAULTS: dict[str, Callable[[], Exception]] = {
    "transient": lambda: TransientError("Teams webhook: 503 ServiceUnavailable"),
    "permanent": lambda: PermanentError("Teams webhook: 403 the workflow was turned off"),
    "unexpected": lambda: ValueError("card too large"),
}


@pytest.mark.parametrize("fault", sorted(NOTIFIER_FAULTS))
def test_failing_notifier_does_not_undo_the_approval_flow(world: World, fault: str) -> None:
    # GIVEN a notifier that fails every time
    world.notifier.inject_fault(NOTIFIER_FAULTS[fault](), times=1000)
    # WHEN a request needing two approvals goes through approval, grant and early revoke
    rid = world.submit(access_request(role="Contributor", scope=PROD_RG, duration="PT1H"))
    assert world.state(rid) == "pending_approval"
    world.lifecycle.approve(rid, ALICE)
    result = world.lifecycle.approve(rid, BOB)
    assert result.state is RequestState.APPROVED
    world.worker.drain()
    assert world.state(rid) == "active"
    world.lifecycle.request_revoke(rid, JANE, is_admin=False)
    world.advance(3600)  # past the approval deadline: the scheduled expire-request is a no-op
    # THEN every transition stands, every event is recorded once, and no message was retried or lost
    assert world.state(rid) == "revoked"
    assert world.event_types(rid) == [
        "request.received",
        "policy.evaluated",
        "approval.requested",
        "approval.recorded",
        "approval.recorded",
        "request.approved",
        "grant.applied",
        "revoke.scheduled",
        "grant.revoked",
    ]
    assert world.notifier.notices == []
    _assert_nothing_left_behind(world)
    assert world.chains_ok()


@pytest.mark.parametrize("fault", sorted(NOTIFIER_FAULTS))
def test_failing_notifier_does_not_undo_denial_expiry_rejection_or_failure(world: World, fault: str) -> None:
    world.notifier.inject_fault(NOTIFIER_FAULTS[fault](), times=1000)
    # GIVEN / WHEN an approver denies one request
    denied = world.submit(access_request(role="Contributor", scope=PROD_RG))
    world.lifecycle.deny(denied, ALICE, "not during the freeze")
    # AND another expires undecided
    expired = world.submit(access_request(role="Contributor", scope=PROD_RG))
    # AND the policy rejects a third
    rejected = world.submit(access_request(role="Owner", scope=DEV_RG))
    # AND a fourth fails to be granted
    world.grants.inject_fault("create", PERMANENT["forbidden"](), times=1)
    failed = world.submit(access_request())
    world.advance(3601)
    # THEN each ended where it should, with its event, despite every notice failing
    assert world.state(denied) == "denied" and "request.denied" in world.event_types(denied)
    assert world.state(expired) == "expired" and "request.expired" in world.event_types(expired)
    assert world.state(rejected) == "rejected" and "request.rejected" in world.event_types(rejected)
    assert world.state(failed) == "failed" and "grant.failed" in world.event_types(failed)
    assert world.notifier.notices == []
    _assert_nothing_left_behind(world)
    assert world.chains_ok()


def test_notifier_recovering_later_does_not_replay_old_transitions(world: World) -> None:
    # GIVEN a notifier that fails only the "granted" notice
    rid = world.submit(access_request(role="Contributor", scope=PROD_RG, duration="PT1H"))
    world.lifecycle.approve(rid, ALICE)
    world.lifecycle.approve(rid, BOB)  # "approved" notice sent
    world.notifier.inject_fault(TransientError("503"), times=1)
    world.worker.drain()  # "granted" notice fails
    # WHEN the request is revoked at expiry with a healthy notifier
    world.advance(3600)
    # THEN the transition to active stood, and only the notices that could be sent were sent, once each
    assert world.state(rid) == "revoked"
    assert [n.kind for n in world.notifier.notices] == ["approval_requested", "approved", "revoked"]


# =============================================================================================
# 6. Revocation lateness
# =============================================================================================


def test_scheduled_revoke_is_the_fast_path_with_zero_lateness(world: World) -> None:
    # GIVEN a ten-minute grant
    rid = world.submit(access_request(duration="PT10M"))
    expires_at = _record(world, rid).expires_at
    assert expires_at is not None
    # THEN its revoke is scheduled exactly at its expiry
    assert world.bus.next_due(REVOCATIONS) == expires_at
    # WHEN time reaches one second before the expiry, nothing happens
    world.advance(599)
    assert world.state(rid) == "active"
    # WHEN time reaches the expiry exactly (the scheduled message, no reconcile)
    world.advance(1)
    # THEN the revoke happened on time: lateness zero, reason "expired"
    assert world.state(rid) == "revoked"
    [revoked] = _events(world, rid, "grant.revoked")
    assert revoked.data["reason"] == "expired"
    assert revoked.data["latenessSeconds"] == 0
    assert world.marked() == []


@pytest.mark.parametrize("phase", [0, 1, 17, 59])
def test_lost_scheduled_revoke_is_revoked_by_reconcile_within_one_interval(world: World, phase: int) -> None:
    interval = world.worker.reconcile_every
    start = world.clock.now()
    # GIVEN a grant made `phase` seconds after a reconcile tick, whose scheduled revoke is lost
    world.clock.advance(phase)
    rid = world.submit(access_request(duration="PT10M"))
    record = _record(world, rid)
    assert record.expires_at is not None
    _lose_scheduled_revoke(world, rid)
    # WHEN the reconcile timer keeps ticking every interval
    ticks = 0
    while world.state(rid) == "active" and ticks < 20:
        ticks += 1
        world.clock.advance(start + timedelta(seconds=ticks * interval) - world.clock.now())
        world.worker.drain()
        world.worker.reconcile()
    # THEN the first tick at or after the expiry revoked it: lateness under one interval
    assert world.state(rid) == "revoked"
    [revoked] = _events(world, rid, "grant.revoked")
    expected = math.ceil((phase + 600) / interval) * interval - (phase + 600)
    assert revoked.data["latenessSeconds"] == expected
    assert 0 <= revoked.data["latenessSeconds"] < interval
    assert revoked.data["reason"] == "expired (reconcile)"
    assert world.marked() == []


def test_revoke_delayed_by_a_transient_fault_is_late_by_one_lock_duration(world: World) -> None:
    # GIVEN a grant, and a provider down for the whole first delivery of its revoke
    rid = world.submit(access_request(duration="PT10M"))
    world.grants.inject_fault("delete", TransientError("503"), times=world.backends.provider_attempts)
    # WHEN the expiry passes and the bus redelivers after the lock expires
    world.advance(600)
    assert world.state(rid) == "active"
    world.advance(LOCK_SECONDS)
    # THEN the revoke is late by the bus backoff only (the in-process sleeps are not clock time here)
    assert world.state(rid) == "revoked"
    [revoked] = _events(world, rid, "grant.revoked")
    assert revoked.data["latenessSeconds"] == LOCK_SECONDS
