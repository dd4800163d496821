"""The Bus contract: one suite, run against every adapter. Add an adapter by adding one entry to
ADAPTERS; the SQLite-only tests at the end cover what only a shared file can get wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.adapters.embedded.bus import SqliteBus
from shared.domain.errors import LockLost, NotFound
from shared.ports import Bus, QueueSettings, ReceivedMessage
from tests.azure.contract_adapters import servicebus_bus
from tests.fakes.bus import FakeBus
from tests.fakes.clock import FakeClock
from tests.gcp.contract_adapters import pubsub_bus

Q = "orders"  # the queue most tests use, with the settings below
OTHER = "refunds"  # a second queue on the default settings
LOCK = timedelta(seconds=30)
MAX_DELIVERIES = 5  # the least a Pub/Sub dead-letter policy allows (5 to 100)
WINDOW = timedelta(minutes=10)
QUEUES = {Q: QueueSettings(lock_duration=LOCK, max_delivery_count=MAX_DELIVERIES, duplicate_window=WINDOW)}
DEFAULT = QueueSettings(lock_duration=timedelta(seconds=60), max_delivery_count=5,
                        duplicate_window=timedelta(minutes=1))

AdapterFactory = Callable[[Path, FakeClock], Bus]

ADAPTERS: dict[str, AdapterFactory] = {
    "fake": lambda tmp_path, clock: FakeBus(clock, QUEUES, DEFAULT),
    "sqlite": lambda tmp_path, clock: SqliteBus(tmp_path / "bus.sqlite", clock, QUEUES, DEFAULT),
    "servicebus": lambda tmp_path, clock: servicebus_bus(clock, {**QUEUES, OTHER: DEFAULT}),
    "pubsub": lambda tmp_path, clock: pubsub_bus(clock, {**QUEUES, OTHER: DEFAULT}),
}

# What an adapter does not promise, test by test, each with why jitgate does without it. Such a test does not
# run on that adapter (it is not collected for it: nothing is skipped).
_NO_DUPLICATE_DETECTION = "Pub/Sub has no duplicate detection; every handler is idempotent (§3)"
PROMISES_LESS: dict[str, dict[str, str]] = {
    "pubsub": {
        "test_duplicate_send_within_the_window_is_dropped": _NO_DUPLICATE_DETECTION,
        "test_duplicate_detection_outlives_the_completed_message": _NO_DUPLICATE_DETECTION,
        "test_the_window_counts_from_the_first_send_not_the_last_duplicate": _NO_DUPLICATE_DETECTION,
        "test_send_and_schedule_share_duplicate_detection": _NO_DUPLICATE_DETECTION,
        "test_schedule_after_the_window_gets_a_new_sequence_number": (
            "a scheduled message's number names its Cloud Task (a hash of its id), and the task's name stays taken "
            "while it waits; the lifecycle schedules an id once"),
        "test_sequence_numbers_increase": "scheduled messages are numbered by a hash of their id (tasks.py)",
        "test_dead_letters_keep_the_sequence_number": (
            "a dead letter is a new message on the dead-letter topic, with that topic's id; replay takes that id"),
    },
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "bus" in metafunc.fixturenames:
        name = metafunc.function.__name__
        adapters = [a for a in ADAPTERS if name not in PROMISES_LESS.get(a, {})]
        # NB. The Pub/Sub runs are `gcp` tests too: with the rest of them, CI may not skip any.
        params = [pytest.param(a, marks=pytest.mark.gcp) if a == "pubsub" else a for a in adapters]
        metafunc.parametrize("bus", params, indirect=True)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _open(name: str, tmp_path: Path, clock: FakeClock) -> Iterator[Any]:
    bus = ADAPTERS[name](tmp_path, clock)
    yield bus
    close = getattr(bus, "close", None)
    if close is not None:
        close()


@pytest.fixture
def bus(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[Bus]:
    yield from _open(request.param, tmp_path, clock)


# The embedded buses promise more than Service Bus does (sequence numbers fixed at scheduling, delivery in
# sequence order, dead-letter times); jitgate relies on none of it, so those promises are tested here only.
EMBEDDED = ["fake", "sqlite"]


@pytest.fixture(params=EMBEDDED)
def embedded_bus(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[Bus]:
    yield from _open(request.param, tmp_path, clock)


def receive_one(bus: Bus, queue: str = Q) -> ReceivedMessage:
    received = bus.receive(queue)
    assert len(received) == 1, received
    return received[0]


def drain(bus: Bus, queue: str = Q) -> list[ReceivedMessage]:
    """Receive and complete everything receivable now."""
    received = bus.receive(queue, max_messages=100)
    for message in received:
        bus.complete(message)
    return received


# ------------------------------------------------------------------ send, receive, complete


def test_sent_message_is_received_under_a_lock_and_gone_once_completed(bus: Bus, clock: FakeClock) -> None:
    # GIVEN
    bus.send(Q, "m-1", b'{"command": "grant"}')
    # WHEN
    message = receive_one(bus)
    # THEN
    assert (message.queue, message.message_id, message.body) == (Q, "m-1", b'{"command": "grant"}')
    assert message.delivery_count == 1
    assert message.enqueued_at == clock.now()
    assert message.locked_until == clock.now() + LOCK
    assert message.lock_token
    bus.complete(message)
    clock.advance(LOCK * 2)
    assert bus.receive(Q) == []


def test_receive_on_an_empty_queue_returns_nothing_without_waiting(bus: Bus) -> None:
    started = time.monotonic()
    assert bus.receive(Q, max_messages=5) == []
    assert time.monotonic() - started < 1


def test_a_locked_message_is_not_given_to_a_second_receiver(bus: Bus, clock: FakeClock) -> None:
    bus.send(Q, "m-1", b"x")
    receive_one(bus)
    clock.advance(LOCK - timedelta(seconds=1))
    assert bus.receive(Q) == []


def test_each_receive_gets_a_new_lock_token(bus: Bus, clock: FakeClock) -> None:
    bus.send(Q, "m-1", b"x")
    first = receive_one(bus)
    bus.abandon(first)
    second = receive_one(bus)
    assert second.lock_token != first.lock_token


# ------------------------------------------------------------------ ordering and isolation


def test_messages_are_received_in_sequence_order(bus: Bus) -> None:
    for i in range(5):
        bus.send(Q, f"m-{i}", str(i).encode())
    first_two = bus.receive(Q, max_messages=2)
    rest = bus.receive(Q, max_messages=10)
    assert [m.message_id for m in first_two + rest] == [f"m-{i}" for i in range(5)]
    seqs = [m.sequence_number for m in first_two + rest]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5


def test_due_messages_come_in_sequence_order_not_due_time_order(embedded_bus: Bus, clock: FakeClock) -> None:
    bus = embedded_bus
    late_seq = bus.schedule(Q, "scheduled-later-due-first", b"a", clock.now() + timedelta(minutes=1))
    early_seq = bus.schedule(Q, "scheduled-second-due-earlier", b"b", clock.now() + timedelta(seconds=1))
    clock.advance(timedelta(minutes=2))
    received = bus.receive(Q, max_messages=2)
    assert [m.sequence_number for m in received] == [late_seq, early_seq]
    assert late_seq < early_seq


def test_queues_are_isolated(bus: Bus, clock: FakeClock) -> None:
    bus.send(Q, "same-id", b"orders")
    bus.send(OTHER, "same-id", b"refunds")  # duplicate detection is per queue
    seq = bus.schedule(OTHER, "later", b"x", clock.now() + timedelta(hours=1))
    bus.cancel_scheduled(Q, seq)  # a sequence number of another queue cancels nothing

    orders = receive_one(bus, Q)
    assert orders.body == b"orders"
    assert bus.receive(Q) == []
    bus.dead_letter(orders, "Poison")
    assert bus.dead_letters(OTHER) == []

    refunds = receive_one(bus, OTHER)
    assert refunds.body == b"refunds"
    assert refunds.locked_until == clock.now() + DEFAULT.lock_duration
    bus.complete(refunds)
    clock.advance(timedelta(hours=1))
    assert receive_one(bus, OTHER).message_id == "later"


# ------------------------------------------------------------------ duplicate detection


def test_duplicate_send_within_the_window_is_dropped(bus: Bus, clock: FakeClock) -> None:
    bus.send(Q, "m-1", b"first")
    clock.advance(WINDOW - timedelta(seconds=1))
    bus.send(Q, "m-1", b"second")
    assert [m.body for m in bus.receive(Q, max_messages=10)] == [b"first"]


def test_duplicate_detection_outlives_the_completed_message(bus: Bus, clock: FakeClock) -> None:
    bus.send(Q, "m-1", b"first")
    bus.complete(receive_one(bus))
    clock.advance(timedelta(minutes=1))
    bus.send(Q, "m-1", b"again")
    assert bus.receive(Q) == []


def test_same_id_after_the_window_is_a_new_message(bus: Bus, clock: FakeClock) -> None:
    bus.send(Q, "m-1", b"first")
    bus.complete(receive_one(bus))
    clock.advance(WINDOW)
    bus.send(Q, "m-1", b"second")
    assert receive_one(bus).body == b"second"


def test_the_window_counts_from_the_first_send_not_the_last_duplicate(bus: Bus, clock: FakeClock) -> None:
    bus.send(Q, "m-1", b"first")
    clock.advance(WINDOW - timedelta(seconds=1))
    bus.send(Q, "m-1", b"dropped")
    clock.advance(timedelta(seconds=1))
    bus.send(Q, "m-1", b"accepted")
    assert [m.body for m in bus.receive(Q, max_messages=10)] == [b"first", b"accepted"]


def test_duplicate_schedule_within_the_window_is_dropped(bus: Bus, clock: FakeClock) -> None:
    at = clock.now() + timedelta(hours=2)
    bus.schedule(Q, "revoke:r1:1", b"first", at)
    clock.advance(timedelta(minutes=5))
    bus.schedule(Q, "revoke:r1:1", b"second", at + timedelta(hours=1))
    clock.advance(timedelta(hours=4))
    assert [m.body for m in bus.receive(Q, max_messages=10)] == [b"first"]


def test_duplicate_schedule_within_the_window_returns_the_first_sequence_number(
    embedded_bus: Bus, clock: FakeClock
) -> None:
    at = clock.now() + timedelta(hours=2)
    first = embedded_bus.schedule(Q, "revoke:r1:1", b"first", at)
    clock.advance(timedelta(minutes=5))
    assert embedded_bus.schedule(Q, "revoke:r1:1", b"second", at + timedelta(hours=1)) == first


def test_schedule_after_the_window_gets_a_new_sequence_number(bus: Bus, clock: FakeClock) -> None:
    first = bus.schedule(Q, "revoke:r1:1", b"first", clock.now() + timedelta(hours=2))
    clock.advance(WINDOW)
    second = bus.schedule(Q, "revoke:r1:1", b"second", clock.now() + timedelta(hours=2))
    assert second > first
    clock.advance(timedelta(hours=3))
    assert [m.body for m in bus.receive(Q, max_messages=10)] == [b"first", b"second"]


def test_send_and_schedule_share_duplicate_detection(bus: Bus, clock: FakeClock) -> None:
    bus.send(Q, "m-1", b"sent")
    bus.schedule(Q, "m-1", b"scheduled", clock.now() + timedelta(minutes=1))
    clock.advance(timedelta(minutes=2))
    assert [m.body for m in bus.receive(Q, max_messages=10)] == [b"sent"]


# ------------------------------------------------------------------ scheduling and cancelling


def test_scheduled_message_is_invisible_until_due(bus: Bus, clock: FakeClock) -> None:
    due = clock.now() + timedelta(hours=1)
    bus.schedule(Q, "revoke:r1:1", b"revoke", due)
    assert bus.receive(Q) == []
    clock.advance(timedelta(hours=1) - timedelta(microseconds=1))
    assert bus.receive(Q) == []
    clock.advance(timedelta(microseconds=1))
    message = receive_one(bus)
    assert (message.message_id, message.body, message.delivery_count) == ("revoke:r1:1", b"revoke", 1)
    assert message.enqueued_at == due


def test_schedule_in_the_past_is_receivable_now(bus: Bus, clock: FakeClock) -> None:
    bus.schedule(Q, "m-1", b"x", clock.now() - timedelta(minutes=5))
    assert receive_one(bus).message_id == "m-1"


def test_sequence_numbers_increase(bus: Bus, clock: FakeClock) -> None:
    seqs = [bus.schedule(Q, f"m-{i}", b"x", clock.now() + timedelta(minutes=i)) for i in range(4)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4


def test_cancel_before_due_removes_the_message(bus: Bus, clock: FakeClock) -> None:
    seq = bus.schedule(Q, "revoke:r1:1", b"x", clock.now() + timedelta(hours=1))
    bus.schedule(Q, "revoke:r2:1", b"y", clock.now() + timedelta(hours=1))
    clock.advance(timedelta(minutes=59))
    bus.cancel_scheduled(Q, seq)
    clock.advance(timedelta(days=1))
    assert [m.message_id for m in bus.receive(Q, max_messages=10)] == ["revoke:r2:1"]


def test_cancel_after_due_is_a_no_op(bus: Bus, clock: FakeClock) -> None:
    seq = bus.schedule(Q, "revoke:r1:1", b"x", clock.now() + timedelta(hours=1))
    clock.advance(timedelta(hours=1))
    bus.cancel_scheduled(Q, seq)
    message = receive_one(bus)
    assert message.message_id == "revoke:r1:1"


def test_cancel_of_a_locked_or_completed_message_is_a_no_op(bus: Bus, clock: FakeClock) -> None:
    seq = bus.schedule(Q, "revoke:r1:1", b"x", clock.now())
    message = receive_one(bus)
    bus.cancel_scheduled(Q, seq)
    bus.complete(message)  # still locked by us, so still there to complete
    bus.cancel_scheduled(Q, seq)
    assert bus.receive(Q) == []


def test_cancel_of_an_abandoned_message_is_a_no_op(bus: Bus, clock: FakeClock) -> None:
    seq = bus.schedule(Q, "revoke:r1:1", b"x", clock.now() + timedelta(seconds=1))
    clock.advance(timedelta(seconds=1))
    bus.abandon(receive_one(bus))
    bus.cancel_scheduled(Q, seq)
    assert receive_one(bus).delivery_count == 2


def test_cancel_unknown_is_a_no_op(bus: Bus) -> None:
    bus.send(Q, "m-1", b"x")
    bus.cancel_scheduled(Q, 987_654)
    bus.cancel_scheduled("no-such-queue", 1)
    assert receive_one(bus).message_id == "m-1"


# ------------------------------------------------------------------ peek-lock


def test_expired_lock_makes_the_message_receivable_again(bus: Bus, clock: FakeClock) -> None:
    bus.send(Q, "m-1", b"x")
    first = receive_one(bus)
    clock.advance(LOCK - timedelta(microseconds=1))
    assert bus.receive(Q) == []
    clock.advance(timedelta(microseconds=1))
    second = receive_one(bus)
    assert second.delivery_count == 2
    assert second.sequence_number == first.sequence_number
    assert second.lock_token != first.lock_token
    assert second.locked_until == clock.now() + LOCK


SETTLEMENTS: dict[str, Callable[[Bus, ReceivedMessage], object]] = {
    "complete": lambda bus, m: bus.complete(m),
    "abandon": lambda bus, m: bus.abandon(m),
    "dead_letter": lambda bus, m: bus.dead_letter(m, "Poison", "bad"),
    "renew_lock": lambda bus, m: bus.renew_lock(m),
}


@pytest.mark.parametrize("settle", list(SETTLEMENTS))
def test_settling_after_the_lock_expired_raises_lock_lost(bus: Bus, clock: FakeClock, settle: str) -> None:
    bus.send(Q, "m-1", b"x")
    message = receive_one(bus)
    clock.advance(LOCK)
    with pytest.raises(LockLost):
        SETTLEMENTS[settle](bus, message)
    # the failed settlement changed nothing: the message is still there, once
    assert receive_one(bus).delivery_count == 2
    assert bus.dead_letters(Q) == []


@pytest.mark.parametrize("settle", list(SETTLEMENTS))
def test_settling_with_a_stale_lock_token_raises_lock_lost(bus: Bus, clock: FakeClock, settle: str) -> None:
    bus.send(Q, "m-1", b"x")
    stale = receive_one(bus)
    clock.advance(LOCK)
    current = receive_one(bus)
    with pytest.raises(LockLost):
        SETTLEMENTS[settle](bus, stale)
    bus.complete(current)
    assert bus.receive(Q) == []


@pytest.mark.parametrize("settle", list(SETTLEMENTS))
def test_settling_a_completed_message_raises_lock_lost(bus: Bus, settle: str) -> None:
    bus.send(Q, "m-1", b"x")
    message = receive_one(bus)
    bus.complete(message)
    with pytest.raises(LockLost):
        SETTLEMENTS[settle](bus, message)


def test_abandon_makes_the_message_receivable_now(bus: Bus, clock: FakeClock) -> None:
    bus.send(Q, "m-1", b"x")
    bus.send(Q, "m-2", b"y")
    first = receive_one(bus)
    bus.abandon(first)
    again = bus.receive(Q, max_messages=10)
    assert [(m.message_id, m.delivery_count) for m in again] == [("m-1", 2), ("m-2", 1)]


def test_renew_lock_extends_it_from_now(bus: Bus, clock: FakeClock) -> None:
    bus.send(Q, "m-1", b"x")
    message = receive_one(bus)
    clock.advance(LOCK - timedelta(seconds=10))
    renewed = bus.renew_lock(message)
    assert renewed.locked_until == clock.now() + LOCK
    assert (renewed.lock_token, renewed.sequence_number) == (message.lock_token, message.sequence_number)
    clock.advance(LOCK - timedelta(seconds=1))  # past the original lock, inside the renewed one
    assert bus.receive(Q) == []
    bus.complete(renewed)
    clock.advance(LOCK)
    assert bus.receive(Q) == []


def test_renewed_lock_still_expires(bus: Bus, clock: FakeClock) -> None:
    bus.send(Q, "m-1", b"x")
    renewed = bus.renew_lock(receive_one(bus))
    clock.advance(LOCK)
    with pytest.raises(LockLost):
        bus.complete(renewed)
    assert receive_one(bus).delivery_count == 2


# ------------------------------------------------------------------ dead-letter sub-queue


def test_message_is_dead_lettered_after_max_deliveries(bus: Bus, clock: FakeClock) -> None:
    bus.send(Q, "m-1", b"poison")
    for attempt in range(1, MAX_DELIVERIES + 1):
        message = receive_one(bus)
        assert message.delivery_count == attempt
        bus.abandon(message)
    assert bus.receive(Q) == []
    [dead] = bus.dead_letters(Q)
    assert (dead.queue, dead.message_id, dead.body) == (Q, "m-1", b"poison")
    assert dead.reason == "MaxDeliveryCountExceeded"
    assert dead.delivery_count == MAX_DELIVERIES
    assert dead.dead_lettered_at == clock.now()


def test_dead_letters_keep_the_sequence_number(bus: Bus) -> None:
    bus.send(Q, "by-the-bus", b"poison")
    for _ in range(MAX_DELIVERIES):
        by_the_bus = receive_one(bus)
        bus.abandon(by_the_bus)
    bus.send(Q, "by-the-handler", b"bad")
    by_the_handler = receive_one(bus)  # the first is dead-lettered on the way
    bus.dead_letter(by_the_handler, "Poison")
    assert sorted(d.sequence_number for d in bus.dead_letters(Q)) == sorted(
        [by_the_bus.sequence_number, by_the_handler.sequence_number])


def test_lock_expiries_count_towards_max_deliveries(bus: Bus, clock: FakeClock) -> None:
    bus.send(Q, "m-1", b"x")
    for _ in range(MAX_DELIVERIES):
        receive_one(bus)
        clock.advance(LOCK)
    assert bus.receive(Q) == []
    assert [d.reason for d in bus.dead_letters(Q)] == ["MaxDeliveryCountExceeded"]


def test_receive_skips_dead_lettered_messages_and_fills_the_batch(bus: Bus) -> None:
    bus.send(Q, "poison", b"x")
    for _ in range(MAX_DELIVERIES):
        bus.abandon(receive_one(bus))
    bus.send(Q, "good-1", b"y")
    bus.send(Q, "good-2", b"z")
    assert [m.message_id for m in bus.receive(Q, max_messages=1)] == ["good-1"]
    assert [d.message_id for d in bus.dead_letters(Q)] == ["poison"]


def test_explicit_dead_letter_keeps_reason_and_description(bus: Bus, clock: FakeClock) -> None:
    bus.send(Q, "m-1", b"bad")
    message = receive_one(bus)
    clock.advance(timedelta(seconds=5))
    bus.dead_letter(message, "InvalidRequest", "justification: too long")
    clock.advance(LOCK * 2)
    assert bus.receive(Q) == []
    [dead] = bus.dead_letters(Q)
    assert (dead.message_id, dead.body, dead.delivery_count) == ("m-1", b"bad", 1)
    assert (dead.reason, dead.description) == ("InvalidRequest", "justification: too long")


def test_dead_letters_record_when_they_were_dead_lettered(embedded_bus: Bus, clock: FakeClock) -> None:
    embedded_bus.send(Q, "m-1", b"bad")
    message = receive_one(embedded_bus)
    clock.advance(timedelta(seconds=5))
    embedded_bus.dead_letter(message, "InvalidRequest")
    clock.advance(LOCK * 2)
    [dead] = embedded_bus.dead_letters(Q)
    assert dead.dead_lettered_at == clock.now() - LOCK * 2


def test_dead_letter_description_defaults_to_empty(bus: Bus) -> None:
    bus.send(Q, "m-1", b"x")
    bus.dead_letter(receive_one(bus), "Poison")
    assert bus.dead_letters(Q)[0].description == ""


def test_dead_letters_are_listed_with_their_reasons(bus: Bus, clock: FakeClock) -> None:
    for i in range(3):
        bus.send(Q, f"m-{i}", b"x")
    for message, reason in zip(bus.receive(Q, max_messages=3), ["a", "b", "c"], strict=True):
        bus.dead_letter(message, reason)
    assert sorted((d.message_id, d.reason) for d in bus.dead_letters(Q)) == [("m-0", "a"), ("m-1", "b"), ("m-2", "c")]


def test_dead_letters_are_listed_oldest_first(embedded_bus: Bus, clock: FakeClock) -> None:
    bus = embedded_bus
    for i in range(3):
        bus.send(Q, f"m-{i}", b"x")
    m0, m1, m2 = bus.receive(Q, max_messages=3)
    bus.dead_letter(m2, "third-seq-first")
    clock.advance(timedelta(seconds=1))
    bus.dead_letter(m0, "first-seq-second")
    clock.advance(timedelta(seconds=1))
    bus.dead_letter(m1, "second-seq-third")
    assert [d.message_id for d in bus.dead_letters(Q)] == ["m-2", "m-0", "m-1"]


def test_replay_sends_a_dead_letter_back_with_a_fresh_delivery_count(bus: Bus, clock: FakeClock) -> None:
    bus.send(Q, "m-1", b"retry me")
    for _ in range(MAX_DELIVERIES):
        bus.abandon(receive_one(bus))
    bus.receive(Q)
    [dead] = bus.dead_letters(Q)
    clock.advance(timedelta(hours=1))
    bus.replay_dead_letter(Q, dead.sequence_number)
    assert bus.dead_letters(Q) == []
    replayed = receive_one(bus)
    assert (replayed.message_id, replayed.body, replayed.delivery_count) == ("m-1", b"retry me", 1)
    assert replayed.enqueued_at == clock.now()
    bus.abandon(replayed)
    for attempt in range(2, MAX_DELIVERIES + 1):  # the whole delivery budget again
        message = receive_one(bus)
        assert message.delivery_count == attempt
        bus.abandon(message)
    assert bus.receive(Q) == []
    assert len(bus.dead_letters(Q)) == 1


def test_replay_within_the_duplicate_window_is_not_dropped(bus: Bus) -> None:
    bus.send(Q, "m-1", b"x")
    bus.dead_letter(receive_one(bus), "Poison")
    bus.replay_dead_letter(Q, bus.dead_letters(Q)[0].sequence_number)
    assert receive_one(bus).message_id == "m-1"


def test_replay_unknown_raises_not_found(bus: Bus) -> None:
    bus.send(Q, "m-1", b"x")
    bus.dead_letter(receive_one(bus), "Poison")
    seq = bus.dead_letters(Q)[0].sequence_number
    with pytest.raises(NotFound):
        bus.replay_dead_letter(Q, 987_654)
    with pytest.raises(NotFound):
        bus.replay_dead_letter(OTHER, seq)
    bus.replay_dead_letter(Q, seq)
    with pytest.raises(NotFound):
        bus.replay_dead_letter(Q, seq)


# ------------------------------------------------------------------ inspection helpers (not in the port)


@pytest.fixture(params=["fake", "sqlite"])
def inspectable(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[Any]:
    yield from _open(request.param, tmp_path, clock)


def test_counts_split_active_from_scheduled(inspectable: Any, clock: FakeClock) -> None:
    bus = inspectable
    assert (bus.active_count(Q), bus.scheduled_count(Q)) == (0, 0)
    bus.send(Q, "now", b"x")
    bus.schedule(Q, "soon", b"x", clock.now() + timedelta(minutes=1))
    bus.schedule(Q, "later", b"x", clock.now() + timedelta(minutes=2))
    bus.send(OTHER, "elsewhere", b"x")
    assert (bus.active_count(Q), bus.scheduled_count(Q)) == (1, 2)
    receive_one(bus)  # a locked message is still active
    clock.advance(timedelta(minutes=1))
    assert (bus.active_count(Q), bus.scheduled_count(Q)) == (2, 1)


def test_next_due_is_the_earliest_time_something_becomes_receivable(
    inspectable: Any, clock: FakeClock
) -> None:
    bus = inspectable
    start = clock.now()
    assert bus.next_due(Q) is None
    bus.schedule(Q, "later", b"x", start + timedelta(minutes=5))
    assert bus.next_due(Q) == start + timedelta(minutes=5)
    bus.send(Q, "now", b"x")
    assert bus.next_due(Q) == start
    receive_one(bus)
    assert bus.next_due(Q) == start + LOCK
    assert bus.next_due(OTHER) is None


# ------------------------------------------------------------------ SQLite only


def test_two_threads_never_hold_the_same_message(tmp_path: Path, clock: FakeClock) -> None:
    # GIVEN one bus shared by two threads (one connection each) and many messages
    bus = SqliteBus(tmp_path / "bus.sqlite", clock, QUEUES, DEFAULT)
    total = 500
    for i in range(total):
        bus.send(Q, f"m-{i}", b"x")
    taken: list[list[int]] = [[], []]
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def worker(index: int) -> None:
        try:
            start.wait()
            for _ in range(total):  # bounded: the clock never moves, so no message comes back
                received = bus.receive(Q, max_messages=1 + index)
                if not received:
                    return
                for message in received:
                    taken[index].append(message.sequence_number)
                    bus.complete(message)
        except BaseException as error:
            errors.append(error)

    # WHEN
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    bus.close()
    # THEN every message was taken exactly once
    assert errors == []
    counts = Counter(taken[0] + taken[1])
    assert len(counts) == total
    assert max(counts.values()) == 1


_DRAIN_IN_ANOTHER_PROCESS = """
import json, pathlib, sys, time
from shared.adapters.embedded.bus import SqliteBus
from tests.fakes.clock import FakeClock
path, ready, go = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
bus = SqliteBus(path, FakeClock())
ready.touch()
deadline = time.monotonic() + 30
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.001)
taken = []
for _ in range(1000):
    received = bus.receive("orders", max_messages=2)
    if not received:
        break
    for message in received:
        taken.append(message.sequence_number)
        bus.complete(message)
print(json.dumps(taken))
"""


def test_two_processes_never_hold_the_same_message(tmp_path: Path, clock: FakeClock) -> None:
    # GIVEN a file with many messages and two real processes ready to drain it
    path = tmp_path / "bus.sqlite"
    bus = SqliteBus(path, clock)
    total = 300
    for i in range(total):
        bus.send(Q, f"m-{i}", b"x")
    bus.close()
    go = tmp_path / "go"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _DRAIN_IN_ANOTHER_PROCESS, str(path), str(tmp_path / f"ready-{i}"),
             str(go)],
            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]
    deadline = time.monotonic() + 30
    while not all((tmp_path / f"ready-{i}").exists() for i in range(2)) and time.monotonic() < deadline:
        time.sleep(0.005)
    # WHEN both start at once
    go.touch()
    outputs = [proc.communicate(timeout=60) for proc in procs]
    # THEN every message was taken exactly once, across both processes
    for proc, (_, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr
    taken = [seq for stdout, _ in outputs for seq in json.loads(stdout)]
    counts = Counter(taken)
    assert len(counts) == total
    assert max(counts.values()) == 1


def test_data_survives_reopening_the_file(tmp_path: Path, clock: FakeClock) -> None:
    # GIVEN a bus with an active, a scheduled, a locked and a dead-lettered message
    path = tmp_path / "bus.sqlite"
    bus = SqliteBus(path, clock, QUEUES)
    bus.send(Q, "active", b"a")
    bus.send(Q, "locked", b"l")
    bus.send(Q, "dead", b"d")
    scheduled = bus.schedule(Q, "scheduled", b"s", clock.now() + timedelta(hours=1))
    active, locked, dead = bus.receive(Q, max_messages=3)
    bus.abandon(active)
    bus.dead_letter(dead, "Poison", "why")
    bus.close()
    # WHEN it is reopened
    reopened = SqliteBus(path, clock, QUEUES)
    # THEN everything is where it was
    [again] = reopened.receive(Q, max_messages=10)
    assert (again.message_id, again.delivery_count) == ("active", 2)
    reopened.complete(again)
    reopened.complete(locked)  # the lock taken before reopening still holds
    assert [(d.message_id, d.reason, d.description) for d in reopened.dead_letters(Q)] == [
        ("dead", "Poison", "why")
    ]
    reopened.send(Q, "active", b"duplicate")  # duplicate history survives too
    assert reopened.schedule(Q, "new", b"n", clock.now()) > scheduled
    clock.advance(timedelta(hours=1))
    assert [m.message_id for m in reopened.receive(Q, max_messages=10)] == ["scheduled", "new"]
    reopened.close()


def test_two_instances_on_one_file_see_each_others_messages(tmp_path: Path, clock: FakeClock) -> None:
    # GIVEN two buses on the same file, as two processes would have
    path = tmp_path / "bus.sqlite"
    sender = SqliteBus(path, clock, QUEUES)
    receiver = SqliteBus(path, clock, QUEUES)
    # WHEN one sends and schedules
    sender.send(Q, "m-1", b"x")
    seq = sender.schedule(Q, "revoke:r1:1", b"y", clock.now() + timedelta(hours=1))
    # THEN the other receives, and a lock taken by one holds against the other
    message = receive_one(receiver)
    assert message.message_id == "m-1"
    assert sender.receive(Q) == []
    sender.send(Q, "m-1", b"duplicate")
    receiver.cancel_scheduled(Q, seq)
    sender.complete(message)  # settling works from any instance that holds the token
    clock.advance(timedelta(hours=2))
    assert receiver.receive(Q) == []
    assert sender.receive(Q) == []
    sender.close()
    receiver.close()


def test_schedule_refuses_a_naive_datetime(tmp_path: Path, clock: FakeClock) -> None:
    bus = SqliteBus(tmp_path / "bus.sqlite", clock)
    with pytest.raises(ValueError, match="naive"):
        bus.schedule(Q, "m-1", b"x", clock.now().replace(tzinfo=None))
    bus.close()
