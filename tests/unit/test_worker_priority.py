"""Due revokes come first in the process too: the worker marks their receiving, handling and settling as the
revocation path's (`shared.priority`), which the embedded SQLite files serve before every other writer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.ports import QueueSettings, ReceivedMessage
from shared.priority import is_revoking
from tests.fakes.bus import FakeBus
from tests.fakes.clock import FakeClock
from tests.fakes.world import DEV_RG, JANE, World, access_request


class MarkingBus(FakeBus):
    """The fake bus, noting for each call whether the calling thread was on the revocation path."""

    def __init__(self, clock: FakeClock, queues: Mapping[str, QueueSettings]) -> None:
        super().__init__(clock, queues)
        self.calls: list[tuple[str, str, bool]] = []

    def receive(self, queue: str, max_messages: int = 1) -> list[ReceivedMessage]:
        received = super().receive(queue, max_messages)
        self.calls.extend(("receive", m.queue, is_revoking()) for m in received)
        return received

    def complete(self, message: ReceivedMessage) -> None:
        self.calls.append(("complete", message.queue, is_revoking()))
        super().complete(message)


def test_only_the_revocation_path_is_marked_first_in_line() -> None:
    world = World(make_bus=MarkingBus)
    bus: Any = world.bus
    request_id = world.submit(access_request(principal=JANE, scope=DEV_RG, role="Reader", duration="PT1H"))
    world.advance(3601)
    assert world.state(request_id) == "revoked"
    by_queue = {(call, queue): marked for call, queue, marked in bus.calls}
    assert by_queue == {
        ("receive", "access-requests"): False, ("complete", "access-requests"): False,
        ("receive", "access-lifecycle"): False, ("complete", "access-lifecycle"): False,
        ("receive", "access-revocations"): True, ("complete", "access-revocations"): True,
    }
    assert not is_revoking()
