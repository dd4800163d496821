"""Which threads a worker starts: the consumers, the consumer of the revocations queue alone (with the consumers by
default; in the serving process alone when the consumers are processes of their own), and the timer."""

from __future__ import annotations

import pytest

from tests.fakes.world import World


@pytest.mark.parametrize(("consumers", "revocations", "names"), [
    (2, None, ["jitgate-consumer-0", "jitgate-consumer-1", "jitgate-revocations"]),
    (0, None, []),
    (1, False, ["jitgate-consumer-0"]),  # a consumer process
    (0, True, ["jitgate-revocations"]),  # the serving process beside consumer processes
])
def test_the_revocations_consumer_runs_where_it_is_asked_to(
    consumers: int, revocations: bool | None, names: list[str]
) -> None:
    world = World()
    try:
        threads = world.worker.start(consumers, timer=False, revocations=revocations)
        assert [thread.name for thread in threads] == names
    finally:
        world.worker.stop.set()
        for thread in threads:
            thread.join(5)
