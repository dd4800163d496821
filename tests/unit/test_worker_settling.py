"""The worker settles a received batch together on a bus that can (the embedded bus: one transaction), and still
settles each message only after its handler finished, by that message's own outcome; a lost lock is only logged."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path

import pytest

from shared.adapters.embedded.bus import SqliteBus
from shared.domain.errors import LockLost
from shared.ports import QueueSettings, ReceivedMessage, Settlement
from tests.fakes.clock import FakeClock
from tests.fakes.world import DEV_RG, JANE, QUEUES, World, access_request, body

REQUESTS, LIFECYCLE, _ = QUEUES


class NotingBus(SqliteBus):
    """The embedded bus, noting each `settle` call in the world's log next to the handlers' runs."""

    log: list[tuple[str, tuple[str, ...]]]

    def settle(self, settlements: Sequence[Settlement]) -> list[tuple[Settlement, LockLost]]:
        self.log.append(("settle", tuple(s.message.message_id for s in settlements)))
        return super().settle(settlements)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    log: list[tuple[str, tuple[str, ...]]] = []

    def make_bus(clock: FakeClock, queues: Mapping[str, QueueSettings]) -> NotingBus:
        bus = NotingBus(tmp_path / "bus.db", clock, queues)
        bus.log = log
        return bus

    world = World(make_bus=make_bus)
    plain_run = world.worker.run

    def run(message: ReceivedMessage) -> Settlement | None:
        settlement = plain_run(message)
        log.append(("ran", (message.message_id,)))
        return settlement

    world.worker.run = run  # type: ignore[method-assign]
    yield world
    world.bus.close()


def _submit(world: World, count: int) -> list[str]:
    docs = [access_request(principal=JANE, scope=DEV_RG, role="Reader", duration="PT1H") for _ in range(count)]
    for doc in docs:
        world.lifecycle.submit(body(doc))
    return [str(doc["requestId"]).lower() for doc in docs]


def test_a_batch_is_settled_together_once_every_handler_in_it_has_finished(world: World) -> None:
    # GIVEN three requests waiting on the requests queue
    request_ids = _submit(world, 3)
    # WHEN the worker drains once
    world.worker.drain()
    # THEN each batch's messages ran, then were settled in one call: the evaluations, then the grants they sent
    grants = tuple(f"grant:{rid}:1" for rid in request_ids)
    assert world.bus.log == [
        *(("ran", (rid,)) for rid in request_ids), ("settle", tuple(request_ids)),
        *(("ran", (grant,)) for grant in grants), ("settle", grants),
    ]
    assert all(world.state(rid) == "active" for rid in request_ids)
    assert world.bus.active_count(REQUESTS) == world.bus.active_count(LIFECYCLE) == 0


def test_a_failed_handler_in_a_batch_dead_letters_only_its_own_message(world: World) -> None:
    # GIVEN a malformed command between two good requests
    first = _submit(world, 1)
    world.bus.send(LIFECYCLE, "poison:1", b"{not json")
    second = _submit(world, 1)
    # WHEN the worker drains
    world.worker.drain()
    # THEN the malformed one is dead-lettered, and only it; the requests went on
    assert [(d.message_id, d.reason) for d in world.bus.dead_letters(LIFECYCLE)] == [("poison:1", "InvalidCommand")]
    assert world.bus.dead_letters(REQUESTS) == []
    assert [world.state(rid) for rid in first + second] == ["active", "active"]


def test_a_lock_lost_while_the_batch_ran_is_only_logged_and_the_message_comes_again(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a batch of two requests, whose handlers take longer than the lock
    request_ids = _submit(world, 2)
    [first, second] = world.bus.receive(REQUESTS, max_messages=2)
    plain_run = world.worker.run

    def slow(message: ReceivedMessage) -> Settlement | None:
        world.clock.advance(timedelta(seconds=20))
        return plain_run(message)

    world.worker.run = slow  # type: ignore[method-assign]
    # WHEN the worker handles the batch
    with caplog.at_level(logging.WARNING, logger="jitgate.worker"):
        world.worker._handle_batch([first, second])
    # THEN both locks were lost (40 s > 30 s): logged, not raised, nothing settled
    assert [r.getMessage().count("lock that expired") for r in caplog.records] == [1, 1]
    assert world.bus.active_count(REQUESTS) == 2
    # and the messages come again, whose handlers find the work done
    world.worker.run = plain_run  # type: ignore[method-assign]
    world.worker.drain()
    assert world.bus.active_count(REQUESTS) == 0
    assert all(world.state(rid) == "active" for rid in request_ids)


def test_settlements_that_waited_settle_within_go_before_the_next_handler(world: World) -> None:
    # GIVEN a worker that lets no settlement wait
    world.worker.settle_within = 0.0
    _submit(world, 3)
    # WHEN it drains
    world.worker.drain(limit=3)
    # THEN each message was settled right after its handler, before the next one ran
    kinds = [kind for kind, _ in world.bus.log]
    assert kinds[:6] == ["ran", "settle", "ran", "settle", "ran", "settle"]
    assert all(len(ids) == 1 for kind, ids in world.bus.log if kind == "settle")


def test_the_settle_of_a_batch_makes_each_settlement_that_still_holds(tmp_path: Path) -> None:
    clock = FakeClock()
    bus = SqliteBus(tmp_path / "bus.db", clock, {"q": QueueSettings(lock_duration=timedelta(seconds=30))})
    for name in ("done", "again", "poison", "stale"):
        bus.send("q", name, b"x")
    done, again, poison, stale = bus.receive("q", max_messages=4)
    bus.abandon(stale)
    [stale_now] = bus.receive("q")
    lost = bus.settle([
        Settlement(done, "complete"), Settlement(again, "abandon"),
        Settlement(poison, "dead_letter", "Poison", "bad"), Settlement(stale, "complete"),
    ])
    assert [(s.message.message_id, "locked again" in str(e)) for s, e in lost] == [("stale", True)]
    assert [(d.message_id, d.reason) for d in bus.dead_letters("q")] == [("poison", "Poison")]
    assert [m.message_id for m in bus.receive("q", max_messages=4)] == ["again"]
    bus.complete(stale_now)
    bus.close()


def test_what_finished_is_settled_when_a_batch_is_cut_short(world: World) -> None:
    # GIVEN a batch of two requests, the second of which is cut short (the thread is being stopped)
    first_id, _ = _submit(world, 2)
    batch = world.bus.receive(REQUESTS, max_messages=2)
    plain_run = world.worker.run

    def interrupted(message: ReceivedMessage) -> Settlement | None:
        if message.message_id != first_id:
            raise KeyboardInterrupt
        return plain_run(message)

    world.worker.run = interrupted  # type: ignore[method-assign]
    # WHEN the worker handles the batch
    with pytest.raises(KeyboardInterrupt):
        world.worker._handle_batch(batch)
    # THEN the first message, whose handler finished, is settled; the second waits for its lock to run out
    assert world.bus.active_count(REQUESTS) == 1
    assert world.bus.receive(REQUESTS) == []
