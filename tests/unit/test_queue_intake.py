"""A request first seen on the `access-requests` queue (the Backstage action's way in) is recorded already evaluated:
one write with its received, evaluated and outcome events, instead of a write as received and another as evaluated
(issue #10: fewer writes per lifecycle). If the evaluation cannot be made (the directory is down) it is recorded as
received, as before, and comes back with the message."""

from __future__ import annotations

from typing import Any

from shared.domain.errors import TransientError
from tests.fakes.store import CountingStore
from tests.fakes.world import World, access_request, body

WRITES = ("create_request", "save_request")


class DownDirectory:
    """A directory that cannot be reached until `up` is set."""

    def __init__(self, directory: Any) -> None:
        self._directory = directory
        self.up = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._directory, name)

    def groups_of(self, principal_id: str) -> frozenset[str]:
        if not self.up:
            raise TransientError("directory unreachable")
        return frozenset(self._directory.groups_of(principal_id))


def counted(world: World) -> CountingStore:
    writes = CountingStore(world.store, WRITES)
    world.backends.requests = writes  # type: ignore[assignment]
    return writes


def test_a_request_first_seen_on_the_queue_is_recorded_evaluated_in_one_write() -> None:
    world = World()
    writes = counted(world)
    doc = access_request(duration="PT10M")
    request_id = doc["requestId"].lower()
    world.bus.send("access-requests", request_id, body(doc))
    world.worker.drain()
    assert writes.calls == {"create_request": 1, "save_request": 1}  # recorded evaluated; then active
    assert world.event_types(request_id)[:3] == ["request.received", "policy.evaluated", "request.approved"]
    assert world.state(request_id) == "active"
    assert world.chains_ok()


def test_over_http_the_request_is_visible_as_received_before_it_is_evaluated() -> None:
    world = World()
    writes = counted(world)
    doc = access_request(duration="PT10M")
    world.lifecycle.submit(body(doc))
    assert world.state(doc["requestId"].lower()) == "received"
    world.worker.drain()
    assert writes.calls == {"create_request": 1, "save_request": 2}  # received; evaluated; active


def test_a_request_that_cannot_be_evaluated_yet_is_recorded_received_and_evaluated_when_it_comes_back() -> None:
    world = World()
    directory = DownDirectory(world.backends.directory)
    world.backends.directory = directory  # type: ignore[assignment]
    doc = access_request(duration="PT10M")
    request_id = doc["requestId"].lower()
    world.bus.send("access-requests", request_id, body(doc))
    world.worker.drain()
    assert world.state(request_id) == "received"  # visible, though not evaluated
    directory.up = True
    world.advance(31)  # the message's lock runs out: it is delivered again
    assert world.state(request_id) == "active"
    assert world.event_types(request_id)[:3] == ["request.received", "policy.evaluated", "request.approved"]
    assert world.chains_ok()


class LateRead:
    """The store, answering the first read of a record as if another consumer had not stored it yet."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.hidden = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def get_request(self, request_id: str) -> Any:
        if not self.hidden:
            self.hidden = True
            return None
        return self._store.get_request(request_id)


def test_a_request_another_consumer_stored_first_is_not_stored_or_evaluated_again() -> None:
    world = World()
    doc = access_request(duration="PT10M")
    request_id = doc["requestId"].lower()
    world.bus.send("access-requests", request_id, body(doc))
    world.worker.drain()  # the other consumer: stored, evaluated, granted
    trail = world.event_types(request_id)
    late = LateRead(world.store)
    world.backends.requests = late  # type: ignore[assignment]
    # WHEN the same message is handled again by a consumer whose read came before that store
    result = world.lifecycle.evaluate(body(doc))
    # THEN its write loses, and it goes on as for a request already stored: nothing written twice
    assert late.hidden and result is not None and result.message == "already evaluated"
    assert world.event_types(request_id) == trail
    assert world.chains_ok()
