"""Which work of a thread comes first in its process: the revocation path's.

A consumer marks the time it spends receiving and handling due revokes with `revoking()`. Shared resources
of the process that threads take turns at (the embedded SQLite files' writer turns) serve a thread so marked
before any other waiting thread, so that forty HTTP intake threads and a backlog of grants cannot stand in
line before a due revoke (docs/architecture.md, "The embedded runtime's cost per lifecycle").
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_local = threading.local()


@contextmanager
def revoking() -> Iterator[None]:
    """Mark this thread's work inside the block as the revocation path's."""
    outer = getattr(_local, "revoking", False)
    _local.revoking = True
    try:
        yield
    finally:
        _local.revoking = outer


def is_revoking() -> bool:
    """Whether this thread is inside `revoking()`."""
    return bool(getattr(_local, "revoking", False))


class TurnLock:
    """A lock whose waiters on the revocation path (`revoking()`) get it before any other waiter.

    Among waiters of one kind the order is the operating system's, as for `threading.Lock`. Each release
    wakes one waiter, never all of them: forty threads woken to find the turn taken would cost more than
    the turn itself.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._urgent_turn = threading.Condition(self._mutex)
        self._other_turn = threading.Condition(self._mutex)
        self._held = False
        self._urgent_waiting = 0

    def acquire(self) -> None:
        with self._mutex:
            try:
                if is_revoking():
                    self._urgent_waiting += 1
                    try:
                        while self._held:
                            self._urgent_turn.wait()
                    finally:
                        self._urgent_waiting -= 1
                else:
                    while self._held or self._urgent_waiting:
                        self._other_turn.wait()
            except BaseException:
                if not self._held:
                    self._pass_turn()  # NB. a waiter interrupted may have been the one woken: wake the next
                raise
            self._held = True

    def release(self) -> None:
        with self._mutex:
            self._held = False
            self._pass_turn()

    def _pass_turn(self) -> None:
        if self._urgent_waiting:
            self._urgent_turn.notify()
        else:
            self._other_turn.notify()

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
