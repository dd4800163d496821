"""Revocations on their own path (docs/architecture.md §3): revokes go on `access-revocations`; a due revoke is
served before anything else, by every consumer and by one that serves nothing else, so that neither a backlog of
grants nor a grant stuck in provider backoff delays it; revokes scheduled on `access-lifecycle` before the upgrade
still land, and are still cancelled there."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from shared.adapters.azure.servicebus import ServiceBusBus
from shared.adapters.embedded.bus import SqliteBus
from shared.domain.audit import AuditEvent
from shared.domain.errors import TransientError
from shared.domain.lifecycle import LifecycleCommand, RequestRecord
from tests.azure.contract_adapters import servicebus_bus
from tests.fakes.clock import TickingClock
from tests.fakes.world import ALICE, JANE, QUEUES, World, access_request, body

_, LIFECYCLE, REVOCATIONS = QUEUES
BACKLOG = 5_000


def _record(world: World, request_id: str) -> RequestRecord:
    record = world.store.get_request(request_id)
    assert record is not None, f"no record for {request_id}"
    return record


def _revoked(world: World, request_id: str) -> AuditEvent:
    [revoked] = [e for e in world.store.chain(request_id) if e.type.value == "grant.revoked"]
    return revoked


def _on_sqlite(tmp_path: Path) -> World:
    return World(make_bus=lambda clock, queues: SqliteBus(tmp_path / "bus.db", clock, queues))


@pytest.fixture
def sqlite_world(tmp_path: Path) -> Iterator[World]:
    """A World on the embedded SQLite bus (a real file, safe across threads)."""
    world = _on_sqlite(tmp_path)
    yield world
    world.bus.close()


@pytest.fixture(params=["sqlite", "servicebus"])
def any_world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    """A World on the SQLite bus, or on the Service Bus adapter, whose sequence numbers are per queue."""
    world = World(make_bus=servicebus_bus) if request.param == "servicebus" else _on_sqlite(tmp_path)
    yield world
    world.bus.close()


# ---------------------------------------------------------------- a backlog of grants


def test_every_consumer_takes_a_due_revoke_before_anything_else() -> None:
    world = World()
    # GIVEN a one-minute grant, and a grant command queued before its revoke is due
    rid = world.submit(access_request(duration="PT1M"))
    command = LifecycleCommand(command="grant", request_id=rid, n=2)
    world.bus.send(LIFECYCLE, command.message_id, command.body())
    world.clock.advance(60)
    # WHEN a consumer handles one message, THEN it is the due revoke; the grant command waits
    assert world.worker.drain(limit=1) == 1
    assert world.state(rid) == "revoked"
    assert world.bus.active_count(LIFECYCLE) == 1


def test_a_due_revoke_is_served_before_a_backlog_of_grants() -> None:
    # GIVEN a clock that moves a millisecond each time it is read, so that every message handled costs time
    world = World(clock=TickingClock(timedelta(milliseconds=1)))
    # AND an eight-hour grant, and then a burst: 5,000 grant commands queued (each finds that grant active and
    # makes sure of its revoke, as a redelivered grant does)
    held = world.submit(access_request(principal=ALICE, duration="PT8H"))
    for n in range(2, BACKLOG + 2):
        command = LifecycleCommand(command="grant", request_id=held, n=n)
        world.bus.send(LIFECYCLE, command.message_id, command.body())
    # AND, behind that backlog, a one-minute grant made at once: its revoke is scheduled after the burst arrived
    doc = access_request(duration="PT1M")
    world.lifecycle.evaluate(body(doc))
    rid = str(doc["requestId"])
    world.lifecycle.grant(rid)
    assert world.bus.active_count(LIFECYCLE) == BACKLOG + 1
    # WHEN its minute is up and the worker drains
    world.clock.advance(60)
    while world.worker.drain():
        pass
    # THEN the revoke was handled before the backlog: late by a few reads of the clock, not 5,000 messages' worth
    revoked = _revoked(world, rid)
    assert revoked.data["reason"] == "expired"
    assert 0 <= revoked.data["latenessSeconds"] < 1, revoked.data
    # AND the backlog was handled too, all of it
    assert world.bus.active_count(LIFECYCLE) == 0 and world.bus.dead_letters(LIFECYCLE) == []
    assert world.state(held) == "active"


def test_a_due_revoke_is_served_while_every_consumer_is_stuck_in_provider_backoff(sqlite_world: World) -> None:
    world = sqlite_world
    # GIVEN an active ten-minute grant
    rid = world.submit(access_request(duration="PT10M"))
    # AND a provider that fails every call transiently, and a backoff that lasts until the test lets it end
    world.grants.inject_fault("resolve", TransientError("ARM 503"), times=10_000)
    release = threading.Event()
    stuck = threading.Semaphore(0)

    def backoff(seconds: float) -> None:
        stuck.release()
        release.wait(30)

    world.backends.sleep = backoff
    # AND more grants waiting than one consumer's batch, so that both consumers of `jitgate serve` take some
    for _ in range(40):
        world.lifecycle.evaluate(body(access_request(principal=ALICE)))
    threads = world.worker.start(consumers=2)
    try:
        for _ in range(2):
            assert stuck.acquire(timeout=10), "the consumers never reached the provider's backoff"
        # WHEN the first grant's ten minutes are up while both consumers wait out their backoff
        world.clock.advance(600)
        due = time.monotonic()
        deadline = due + 10
        while world.state(rid) != "revoked" and time.monotonic() < deadline:
            release.wait(0.01)
        served = time.monotonic() - due
        # THEN it is revoked all the same, within a second, while both are still stuck
        assert world.state(rid) == "revoked", "the due revoke waited for the stuck consumers"
        assert served < 1, f"revoked {served:.2f} s after it was due"
        assert not release.is_set()
        assert _revoked(world, rid).data["reason"] == "expired"
    finally:
        world.worker.stop.set()
        release.set()
        for thread in threads:
            thread.join(timeout=10)


# ---------------------------------------------------------------- revokes scheduled before the upgrade


def _as_before_the_upgrade(world: World, request_id: str) -> int:
    """Turn an active request into one granted before revokes had a queue: its revoke scheduled on the lifecycle
    queue and a stored record that names no queue. Returns the old revoke's sequence number."""
    record = _record(world, request_id)
    assert record.revoke_queue == REVOCATIONS and record.revoke_sequence is not None and record.expires_at
    world.bus.cancel_scheduled(REVOCATIONS, record.revoke_sequence)
    revoke = LifecycleCommand(command="revoke", request_id=request_id, reason="expired")
    sequence = world.bus.schedule(LIFECYCLE, revoke.message_id, revoke.body(), record.expires_at)
    document = record.document() | {"revokeSequence": sequence}
    del document["revokeQueue"]
    old = RequestRecord.from_document(document)
    assert old.revoke_queue is None
    world.store.save_request(old)
    return sequence


def test_a_revoke_scheduled_on_the_lifecycle_queue_before_the_upgrade_still_revokes(sqlite_world: World) -> None:
    world = sqlite_world
    # GIVEN a bus file holding a revoke that jitgate scheduled on the lifecycle queue before the upgrade
    rid = world.submit(access_request(duration="PT1H"))
    _as_before_the_upgrade(world, rid)
    assert (world.bus.scheduled_count(LIFECYCLE), world.bus.scheduled_count(REVOCATIONS)) == (1, 0)
    # WHEN its hour is up and the upgraded worker drains
    world.advance(3600)
    # THEN it revoked, on time, from the lifecycle queue, and nothing is left behind
    assert world.state(rid) == "revoked"
    assert (_revoked(world, rid).data["reason"], _revoked(world, rid).data["latenessSeconds"]) == ("expired", 0)
    assert world.marked() == []
    for queue in QUEUES:
        assert world.bus.active_count(queue) == world.bus.scheduled_count(queue) == 0, queue
        assert world.bus.dead_letters(queue) == [], queue


@pytest.mark.parametrize("granted", ["after the upgrade", "before the upgrade"])
def test_an_early_revoke_cancels_the_scheduled_revoke_on_the_queue_it_waits_on(any_world: World, granted: str) -> None:
    world = any_world
    # GIVEN a grant whose revoke waits on the revocations queue, or (granted before the upgrade) on the lifecycle
    # queue, and another grant whose revoke waits on the revocations queue (on Service Bus, with the very sequence
    # number the first one's has on the lifecycle queue)
    rid = world.submit(access_request(duration="PT1H"))
    sequence = _record(world, rid).revoke_sequence
    if granted == "before the upgrade":
        sequence = _as_before_the_upgrade(world, rid)
    other = world.submit(access_request(principal=ALICE, duration="PT2H"))
    if granted == "before the upgrade" and isinstance(world.bus, ServiceBusBus):
        assert _record(world, other).revoke_sequence == sequence  # the same number, on the other queue
    # WHEN the requester revokes early
    world.lifecycle.request_revoke(rid, JANE, is_admin=False, reason="done")
    # THEN its scheduled revoke is cancelled where it waited, and only that one: when both grants' times are up,
    # the one revoke that comes due is the other grant's, which ends it
    assert world.state(rid) == "revoked"
    assert _revoked(world, rid).data["cancelledSequenceNumber"] == sequence
    world.clock.advance(7200)
    assert world.bus.receive(LIFECYCLE, 16) == []
    [due] = world.bus.receive(REVOCATIONS, 16)
    assert due.message_id == f"revoke:{other}:1"
    world.worker.handle(due)
    assert world.state(other) == "revoked" and _revoked(world, other).data["reason"] == "expired"


# ---------------------------------------------------------------- an early revoke that cannot finish at once


def test_an_early_revoke_the_provider_cannot_finish_now_goes_on_the_revocations_queue() -> None:
    world = World()
    # GIVEN an eight-hour grant and a provider whose deletes fail transiently for the whole of one attempt
    rid = world.submit(access_request(duration="PT8H"))
    scheduled = _record(world, rid).revoke_sequence
    world.grants.inject_fault("delete", TransientError("ARM 503"), times=world.backends.provider_attempts)
    # WHEN the requester revokes early
    with pytest.raises(TransientError):
        world.lifecycle.request_revoke(rid, JANE, is_admin=False, reason="done")
    # THEN it is not done yet, and a revoke in their words is due on the revocations queue at once
    assert world.state(rid) == "active"
    assert world.bus.active_count(REVOCATIONS) == 1
    # WHEN the worker drains (the provider has recovered)
    world.worker.drain()
    # THEN the revoke is done in the requester's name and words, and the one at expiry is cancelled
    revoked = _revoked(world, rid)
    assert (revoked.data["reason"], revoked.actor.principal_id) == ("done", JANE)
    assert revoked.data["cancelledSequenceNumber"] == scheduled
    assert world.state(rid) == "revoked" and world.marked() == []
    assert world.bus.active_count(REVOCATIONS) == world.bus.scheduled_count(REVOCATIONS) == 0

