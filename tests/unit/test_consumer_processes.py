"""`jitgate serve` keeps its consumer processes at their number: one that dies is started again, one that keeps
dying right after its start is started again after a growing pause, and none is started once stopping."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import pytest

from shared.consumer_processes import FIRST_PAUSE, LONGEST_PAUSE, ConsumerProcesses


@dataclass
class FakeProcess:
    pid: int
    exitcode: int | None = None
    terminated: bool = False
    joined: list[float | None] = field(default_factory=list)

    def is_alive(self) -> bool:
        return self.exitcode is None

    def terminate(self) -> None:
        self.terminated = True
        self.exitcode = -15

    def join(self, timeout: float | None = None) -> None:
        self.joined.append(timeout)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make() -> tuple[ConsumerProcesses, list[FakeProcess], Clock]:
    started: list[FakeProcess] = []
    clock = Clock()

    def start_one() -> FakeProcess:
        started.append(FakeProcess(pid=len(started) + 1))
        return started[-1]

    return ConsumerProcesses(start_one, 2, clock), started, clock


def test_a_process_that_dies_is_replaced_and_the_others_are_left_alone() -> None:
    consumers, started, clock = make()
    assert consumers.check() == 0
    clock.now += 120  # it lived long: no pause
    started[0].exitcode = -9
    assert consumers.check() == 1
    assert [p.pid for p in consumers.processes] == [3, 2]
    assert started[0].joined == [0]


def test_a_process_that_keeps_dying_at_once_is_started_again_after_a_growing_pause() -> None:
    consumers, started, clock = make()
    pauses = []
    for _ in range(8):
        started[-1 if len(started) > 2 else 0].exitcode = 1  # the newest in slot 0 dies right after its start
        clock.now += 1
        assert consumers.check() == 0  # it died: a pause begins, nothing started yet
        waited = 0.0
        while consumers.check() == 0:
            clock.now += 0.5
            waited += 0.5
        pauses.append(waited)
    assert pauses[0] >= FIRST_PAUSE - 0.5 and pauses == sorted(pauses)
    assert max(pauses) <= LONGEST_PAUSE


def test_nothing_is_started_once_stopping_and_every_process_is_asked_to_stop() -> None:
    consumers, started, clock = make()
    consumers.stop(timeout=3)
    assert all(p.terminated and p.joined == [3] for p in started)
    clock.now += 120
    assert consumers.check() == 0 and len(started) == 2


def test_a_process_that_cannot_be_started_is_tried_again_and_the_watch_keeps_going(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started: list[FakeProcess] = []
    refusals = [RuntimeError("no room for another process")]

    def start_one() -> FakeProcess:
        if started and refusals:
            raise refusals.pop()
        started.append(FakeProcess(pid=len(started) + 1))
        return started[-1]

    clock = Clock()
    consumers = ConsumerProcesses(start_one, 1, clock)
    clock.now += 120
    started[0].exitcode = -9
    stop = threading.Event()
    watch = threading.Thread(target=consumers.watch, args=(stop, 0.01))
    with caplog.at_level(logging.ERROR, logger="jitgate.consumers"):
        watch.start()
        deadline = time.monotonic() + 5
        while len(started) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()
        watch.join(5)
    assert [p.pid for p in consumers.processes] == [2]
    assert "could not start a consumer process" in caplog.text
