"""One SQLite database file shared by threads and processes: the plumbing every embedded adapter uses."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from ...priority import TurnLock

try:
    import fcntl
except ImportError:  # NB. not on Windows: processes there wait through SQLite's busy timeout alone
    fcntl = None  # type: ignore[assignment]

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

    def connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != _pid:
            # check_same_thread=False only so that close() may close it; each thread uses its own.
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False)
            if self._rows is not None:
                conn.row_factory = self._rows
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            with self._lock:
                self._connections.append(conn)
            self._local.conn, self._local.pid = conn, _pid
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self.connection()
        with self._writing:
            fd = self._lock_fd()
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            finally:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)

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
