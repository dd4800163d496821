"""One SQLite database file shared by threads and processes: the plumbing every embedded adapter uses."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from ...priority import TurnLock

try:
    import fcntl
except ImportError:  # NB. not on Windows: processes there wait through SQLite's busy timeout alone
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("jitgate.sqlite")

# A writer copies the WAL back into the database at most this often, per process and file (`_checkpoint_when_due`).
CHECKPOINT_INTERVAL = 0.25
# SQLite's own checkpoint runs in the COMMIT that finds the WAL this long (its default is 1,000 pages). Under sustained
# writes it is what lets the WAL start over, copying what the passes outside the turn left, with an fsync under the
# turn (some 15 ms at 500 lifecycles a second). 40,000 pages (160 MB) make that four times rarer than 10,000, which
# cost 500/s over 60 s its p99 (1.0-1.5 s against 0.4-0.5 s).
WAL_BACKSTOP_PAGES = 40_000

_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


# NB. getpid(2) is a system call on every call (glibc no longer caches it); `connection` runs dozens of times a
# lifecycle, so the process id is read once, and again in a forked child.
os.register_at_fork(after_in_child=_forked)


class SqliteFile:
    """A connection per thread (never carried across a fork), WAL journaling, a busy timeout, and write
    transactions that take the write lock up front (BEGIN IMMEDIATE) so two writers wait, never deadlock.

    `isolation_level=None`: no implicit transactions. The sqlite3 module's implicit deferred BEGIN
    would let two receivers read the same row before either writes.

    Threads of one process take turns at writing through a lock of this object before they ask SQLite
    for its write lock. SQLite makes a writer that finds the file locked sleep and try again (1, 2, 5, 10,
    ... up to 100 ms), so under contention a write waited for the sleep, not for the writer before it, and
    a due revoke could sleep behind forty HTTP intake threads. The lock hands the turn over at once. A writer on
    the revocation path (`shared.priority.revoking`) gets the next turn before every other waiting writer.

    Processes take turns the same way: the writer whose turn it is in its process then takes an exclusive
    `flock` of the file beside the database (`<file>-writer`), which the kernel hands to the next waiting
    process the moment it is released (or its holder dies), instead of SQLite's sleeps. SQLite's own lock
    stays the guarantee: a process that does not take the flock (the sqlite3 shell, an older jitgate) still
    waits through the busy timeout, as before.
    """

    def __init__(
        self,
        path: str | Path,
        busy_timeout: float = 30.0,
        synchronous: Literal["FULL", "NORMAL"] = "NORMAL",
        rows: Any = None,
    ) -> None:
        self.path = str(path)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout = busy_timeout
        self._synchronous = synchronous
        self._rows = rows
        self._local = threading.local()
        self._lock = threading.Lock()
        self._writing = TurnLock()
        self._connections: list[sqlite3.Connection] = []
        self._writer_fd: int | None = None
        self._writer_pid = _pid
        self._next_checkpoint = 0.0

    def connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != _pid:
            # check_same_thread=False only so that close() may close it; each thread uses its own.
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False)
            if self._rows is not None:
                conn.row_factory = self._rows
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_BACKSTOP_PAGES}")
            with self._lock:
                self._connections.append(conn)
            self._local.conn, self._local.pid = conn, _pid
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self.connection()
        with self._turn():
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        self._checkpoint_when_due(conn)

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """This process's turn at writing (threads through `_writing`), then the processes' turn (the flock)."""
        with self._writing:
            fd = self._lock_fd()
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)

    def _checkpoint_when_due(self, conn: sqlite3.Connection) -> None:
        # NB. SQLite's own checkpoint runs inside the COMMIT that crosses its threshold, so with the turn held:
        # every other writer of every process waited while it copied pages back into the database (at its default
        # of 1,000 pages, some forty times a second at 450 lifecycles a second). Here the copying is done outside
        # the turn. When that pass reports frames left (a reader's older snapshot held it back), they are copied
        # inside the turn, where no writer can add more, so that the next writer can start the WAL over. Frames
        # appended while the pass ran are not reported: under sustained writes the WAL starts over at
        # `WAL_BACKSTOP_PAGES` (doing this pass in the turn every time cost an fsync under the turn each time).
        now = time.monotonic()
        if now < self._next_checkpoint:
            return
        self._next_checkpoint = now + CHECKPOINT_INTERVAL
        try:
            _, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if frames > copied:
                with self._turn():
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.OperationalError as e:  # NB. the write is committed; SQLite's own threshold still bounds the WAL
            log.warning("checkpoint of %s failed: %s", self.path, e)

    def _lock_fd(self) -> int | None:
        # NB. Called with the process's turn held, so one thread opens it. A forked child opens its own: a flock
        # belongs to the open file, which the parent's descriptor would share.
        if fcntl is None:
            return None
        if self._writer_fd is None or self._writer_pid != _pid:
            self._writer_fd, self._writer_pid = os.open(self.path + "-writer", os.O_RDWR | os.O_CREAT, 0o644), _pid
        return self._writer_fd

    def close(self) -> None:
        """Close every thread's connection; the file reopens lazily if used again."""
        with self._lock:
            connections, self._connections = self._connections, []
            self._local = threading.local()
        for conn in connections:
            conn.close()
        with self._writing:
            fd, self._writer_fd = self._writer_fd, None
            if fd is not None and self._writer_pid == _pid:
                os.close(fd)
