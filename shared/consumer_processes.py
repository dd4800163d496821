"""`jitgate serve`'s consumer processes (JITGATE_WORKER_PROCESSES), kept at their number while it serves.

A consumer process that dies (killed, out of memory, a crash point in a test) would otherwise leave the server
answering its API while nobody handles the queues. The server starts another in its place; what the dead one held
is redelivered when its locks run out, as after any crash. One that keeps dying right after its start is started
again after a growing pause (1 s, doubled up to 30 s), so that a broken setup fills the log, not the CPU.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("jitgate.consumers")

FIRST_PAUSE, LONGEST_PAUSE = 1.0, 30.0
SHORT_LIFE = 10.0  # a process that dies sooner than this after its start makes the next pause longer


class Process(Protocol):
    """What of `multiprocessing.Process` the watch needs (a started process)."""

    @property
    def pid(self) -> int | None: ...

    @property
    def exitcode(self) -> int | None: ...

    def is_alive(self) -> bool: ...

    def terminate(self) -> None: ...

    def join(self, timeout: float | None = None) -> None: ...


@dataclass
class _Slot:
    process: Process | None
    started: float
    pause: float = 0.0
    start_after: float = 0.0


class ConsumerProcesses:
    """`count` processes made by `start_one`, each replaced when it dies."""

    def __init__(self, start_one: Callable[[], Process], count: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._start_one = start_one
        self._clock = clock
        self._lock = threading.Lock()
        self._stopped = False
        now = clock()
        self._slots = [_Slot(start_one(), now) for _ in range(count)]

    @property
    def processes(self) -> list[Process]:
        """The processes running now."""
        with self._lock:
            return [slot.process for slot in self._slots if slot.process is not None]

    def check(self) -> int:
        """Start a process in place of each that has died (once its pause is over); returns how many were started."""
        started = 0
        with self._lock:
            if self._stopped:
                return 0
            now = self._clock()
            for number, slot in enumerate(self._slots):
                if slot.process is not None:
                    if slot.process.is_alive():
                        continue
                    lived = now - slot.started
                    slot.pause = min(max(slot.pause * 2, FIRST_PAUSE), LONGEST_PAUSE) if lived < SHORT_LIFE else 0.0
                    slot.start_after = now + slot.pause
                    log.warning("consumer process %d (pid %s) ended with exit code %s after %.1f s; %s", number,
                                slot.process.pid, slot.process.exitcode, lived,
                                f"starting another in {slot.pause:g} s" if slot.pause else "starting another")
                    slot.process.join(0)
                    slot.process = None
                if now >= slot.start_after:
                    slot.process, slot.started = self._start_one(), now
                    started += 1
        return started

    def watch(self, stop: threading.Event, every: float = 0.5) -> None:
        """`check` every `every` seconds until `stop` is set."""
        while not stop.wait(every):
            try:
                self.check()
            except Exception:
                log.exception("could not start a consumer process; trying again")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every process (SIGTERM) and wait for each up to `timeout` seconds; none is started after."""
        with self._lock:
            self._stopped = True
            processes = [slot.process for slot in self._slots if slot.process is not None]
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(timeout)
