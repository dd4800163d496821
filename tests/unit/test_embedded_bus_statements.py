"""What the embedded bus asks SQLite for, per operation: the fewest statements that keep the Service Bus semantics
tests/contract pins (issue #10: CPU per lifecycle, and bus.db's write lock held for less time)."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from shared.adapters.embedded.bus import SqliteBus
from shared.domain.errors import LockLost
from shared.ports import QueueSettings
from tests.fakes.clock import FakeClock

Q = "orders"
LOCK = timedelta(seconds=30)
WINDOW = timedelta(minutes=10)
SETTINGS = QueueSettings(lock_duration=LOCK, max_delivery_count=3, duplicate_window=WINDOW)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def bus(tmp_path: Path, clock: FakeClock) -> Iterator[SqliteBus]:
    bus = SqliteBus(tmp_path / "bus.sqlite", clock, {Q: SETTINGS})
    yield bus
    bus.close()


def statements(bus: SqliteBus, action: Callable[[], object]) -> list[str]:
    """The statements `action` runs on this thread's connection, transaction control left out."""
    ran: list[str] = []
    conn = bus._db.connection()
    conn.set_trace_callback(ran.append)
    try:
        action()
    finally:
        conn.set_trace_callback(None)
    named = (re.match(r"(INSERT INTO|UPDATE|DELETE FROM|SELECT .*? FROM) (\w+)", s) for s in ran)
    return [f"{m[1].split()[0]} {m[2]}" for m in named if m]  # what it does, and to which table


def seen_ids(bus: SqliteBus) -> list[str]:
    with sqlite3.connect(bus._db.path) as conn:
        return [row[0] for row in conn.execute("SELECT message_id FROM seen_message_ids ORDER BY message_id")]


# ------------------------------------------------------------------ settling


def test_settling_is_one_statement_that_checks_the_lock_and_settles(bus: SqliteBus) -> None:
    for i in range(3):
        bus.send(Q, f"m-{i}", b"x")
    completed, abandoned, dead = bus.receive(Q, max_messages=3)
    assert statements(bus, lambda: bus.complete(completed)) == ["DELETE messages"]
    assert statements(bus, lambda: bus.abandon(abandoned)) == ["UPDATE messages"]
    assert statements(bus, lambda: bus.dead_letter(dead, "Poison")) == ["INSERT dead_letters", "DELETE messages"]
    assert [d.message_id for d in bus.dead_letters(Q)] == ["m-2"]
    assert [m.message_id for m in bus.receive(Q, max_messages=3)] == ["m-1"]


def test_a_lost_lock_is_still_lost_and_the_error_says_why(bus: SqliteBus, clock: FakeClock) -> None:
    for name in ("retaken", "abandoned", "completed", "expired"):
        bus.send(Q, name, b"x")
    retaken, abandoned, completed, expired = bus.receive(Q, max_messages=4)
    bus.complete(completed)
    bus.abandon(abandoned)
    clock.advance(LOCK)
    assert [m.message_id for m in bus.receive(Q)] == ["retaken"]
    expected = {
        expired: "has a lock that expired at",
        retaken: "was locked again by another receiver",
        completed: "is no longer in the queue",
        abandoned: "is not locked",
    }
    for message, why in expected.items():
        with pytest.raises(LockLost, match=why):
            bus.complete(message)


def test_renew_lock_checks_and_extends_in_one_statement(bus: SqliteBus, clock: FakeClock) -> None:
    bus.send(Q, "m-1", b"x")
    [message] = bus.receive(Q)
    clock.advance(LOCK / 2)
    renewed: list[object] = []
    assert statements(bus, lambda: renewed.append(bus.renew_lock(message))) == ["UPDATE messages"]
    clock.advance(LOCK / 2)
    assert bus.receive(Q) == []  # the renewed lock still holds
    bus.complete(message)


# ------------------------------------------------------------------ receiving


def test_a_receive_locks_its_whole_batch_in_one_statement(bus: SqliteBus) -> None:
    for i in range(5):
        bus.send(Q, f"m-{i}", b"x")
    received: list[object] = []
    # the first lets scheduled messages now due join the ready ones; the second locks the batch
    assert statements(bus, lambda: received.extend(bus.receive(Q, max_messages=16))) == [
        "UPDATE messages", "UPDATE messages"]
    assert [m.message_id for m in bus.receive(Q, 16)] == []
    assert len({m.lock_token for m in received}) == 5  # type: ignore[attr-defined]


def test_a_receive_dead_letters_what_is_over_the_limit_and_still_fills_the_batch(
    bus: SqliteBus, clock: FakeClock
) -> None:
    bus.send(Q, "poison", b"x")
    for _ in range(SETTINGS.max_delivery_count):
        bus.receive(Q)
        clock.advance(LOCK)
    bus.send(Q, "m-1", b"x")
    bus.send(Q, "m-2", b"x")
    received = bus.receive(Q, max_messages=2)
    assert [(m.message_id, m.delivery_count) for m in received] == [("m-1", 1), ("m-2", 1)]
    [dead] = bus.dead_letters(Q)
    assert (dead.message_id, dead.delivery_count) == ("poison", SETTINGS.max_delivery_count)


def test_a_zero_lock_never_hands_out_one_message_twice_in_a_receive(tmp_path: Path, clock: FakeClock) -> None:
    bus = SqliteBus(tmp_path / "bus.sqlite", clock, {Q: QueueSettings(lock_duration=timedelta(0))})
    bus.send(Q, "m-1", b"x")
    assert [m.message_id for m in bus.receive(Q, max_messages=5)] == ["m-1"]
    bus.close()


# ------------------------------------------------------------------ sending and duplicate detection


def test_a_send_is_two_statements(bus: SqliteBus, clock: FakeClock) -> None:
    bus.send(Q, "first", b"x")  # the first send of a process also sweeps closed windows' ids
    assert statements(bus, lambda: bus.send(Q, "m-1", b"x")) == ["INSERT messages", "INSERT seen_message_ids"]
    assert statements(bus, lambda: bus.schedule(Q, "m-2", b"x", clock.now() + LOCK)) == [
        "INSERT messages", "INSERT seen_message_ids"]


def test_closed_windows_are_swept_once_a_window_not_on_every_send(bus: SqliteBus, clock: FakeClock) -> None:
    ran = statements(bus, lambda: [bus.send(Q, f"m-{i}", b"x") for i in range(50)])
    assert ran.count("DELETE seen_message_ids") == 1
    clock.advance(WINDOW)
    bus.send(Q, "later", b"x")
    assert seen_ids(bus) == ["later"]  # the history holds no more than two windows' ids


def test_an_id_whose_window_closed_blocks_nothing_though_it_was_not_swept_yet(
    bus: SqliteBus, clock: FakeClock
) -> None:
    bus.send(Q, "x", b"x")  # the sweep runs now, and next after a window
    clock.advance(WINDOW / 2)
    first = bus.schedule(Q, "a", b"first", clock.now())
    clock.advance(WINDOW / 2)
    bus.send(Q, "y", b"y")  # the sweep runs one window after `x`, while `a`'s window is open
    clock.advance(WINDOW / 2)
    assert "a" in seen_ids(bus)  # closed but not swept
    # WHEN the same id is sent again
    second = bus.schedule(Q, "a", b"second", clock.now())
    # THEN it is a new message, which a duplicate of it within its window names
    assert second > first
    assert bus.schedule(Q, "a", b"third", clock.now()) == second
    assert [m.body for m in bus.receive(Q, 10) if m.message_id == "a"] == [b"first", b"second"]


def test_a_duplicate_leaves_nothing_behind(bus: SqliteBus) -> None:
    bus.send(Q, "m-1", b"x")
    bus.send(Q, "m-1", b"again")
    assert bus.active_count(Q) == 1
    assert [m.body for m in bus.receive(Q, 10)] == [b"x"]


def _receive_work(bus: SqliteBus) -> int:
    """SQLite virtual-machine steps (in tens) an empty receive takes: a measure of rows walked, free of timing."""
    steps = [0]
    conn = bus._db.connection()
    conn.set_progress_handler(lambda: steps.__setitem__(0, steps[0] + 1), 10)
    try:
        assert bus.receive(Q, max_messages=16) == []
    finally:
        conn.set_progress_handler(None, 0)
    return steps[0]


def test_a_receive_does_not_walk_past_the_scheduled_messages_not_yet_due(bus: SqliteBus, clock: FakeClock) -> None:
    # GIVEN a queue with nothing due, then the same with thousands of messages scheduled for later
    bus.send(Q, "done", b"x")
    [done] = bus.receive(Q)
    bus.complete(done)
    alone = _receive_work(bus)
    for i in range(3000):
        bus.schedule(Q, f"revoke:{i}", b"x", clock.now() + timedelta(hours=1))
    # WHEN a receive finds nothing due
    among_scheduled = _receive_work(bus)
    # THEN it did about the same work (it walked none of them)
    assert among_scheduled <= alone + 5, (alone, among_scheduled)
    # and they come, in sequence order, once due
    clock.advance(timedelta(hours=1))
    assert [m.message_id for m in bus.receive(Q, max_messages=3)] == ["revoke:0", "revoke:1", "revoke:2"]


_BEFORE_READY = """CREATE TABLE messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, message_id TEXT NOT NULL, body BLOB NOT NULL,
    enqueued_at INTEGER NOT NULL, visible_at INTEGER NOT NULL, delivery_count INTEGER NOT NULL DEFAULT 0,
    lock_token TEXT, locked_until INTEGER)"""


def test_a_file_made_before_scheduled_messages_waited_apart_opens_and_delivers(
    tmp_path: Path, clock: FakeClock
) -> None:
    # GIVEN a bus file of the earlier layout, with a message due and one scheduled for in an hour
    path = tmp_path / "bus.sqlite"
    now_us = int(clock.now().timestamp() * 1_000_000)
    hour_us = 3600 * 1_000_000
    with sqlite3.connect(path) as conn:
        conn.execute(_BEFORE_READY)
        conn.executemany(
            "INSERT INTO messages (queue, message_id, body, enqueued_at, visible_at) VALUES (?, ?, ?, ?, ?)",
            [(Q, "later", b"l", now_us + hour_us, now_us + hour_us), (Q, "due", b"d", now_us, now_us)],
        )
    conn.close()
    # WHEN jitgate opens it
    bus = SqliteBus(path, clock, {Q: SETTINGS})
    # THEN what was due is delivered, what was scheduled comes when due, and new messages go on as ever
    [due] = bus.receive(Q, max_messages=5)
    assert due.message_id == "due"
    bus.complete(due)
    bus.schedule(Q, "new", b"n", clock.now() + timedelta(minutes=30))
    clock.advance(timedelta(minutes=30))
    [new] = bus.receive(Q, max_messages=5)
    assert new.message_id == "new"
    bus.complete(new)
    clock.advance(timedelta(minutes=30))
    assert [m.message_id for m in bus.receive(Q, max_messages=5)] == ["later"]
    bus.close()
