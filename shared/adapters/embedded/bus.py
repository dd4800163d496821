"""The embedded message bus: Service Bus queue semantics on one SQLite file.

Several threads and several processes may share the file. Every write runs in `BEGIN IMMEDIATE`,
so exactly one connection at a time reads-then-writes and two receivers can never lock the same
message. Times come only from the injected clock and are stored as UTC epoch microseconds.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ...domain.errors import LockLost, NotFound
from ...ports import Clock, DeadLetter, QueueSettings, ReceivedMessage
from .sqlite_file import SqliteFile

MAX_DELIVERY_COUNT_EXCEEDED = "MaxDeliveryCountExceeded"

_BUSY_TIMEOUT_SECONDS = 30.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

_SCHEMA = (
    # AUTOINCREMENT: a sequence number is never reused, even after the newest message is deleted,
    # so a stale cancel_scheduled can never hit a later message.
    """CREATE TABLE IF NOT EXISTS messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        queue TEXT NOT NULL,
        message_id TEXT NOT NULL,
        body BLOB NOT NULL,
        enqueued_at INTEGER NOT NULL,
        visible_at INTEGER NOT NULL,
        delivery_count INTEGER NOT NULL DEFAULT 0,
        lock_token TEXT,
        locked_until INTEGER
    )""",
    "CREATE INDEX IF NOT EXISTS messages_by_queue ON messages (queue, seq)",
    """CREATE TABLE IF NOT EXISTS dead_letters (
        seq INTEGER PRIMARY KEY,
        queue TEXT NOT NULL,
        message_id TEXT NOT NULL,
        body BLOB NOT NULL,
        delivery_count INTEGER NOT NULL,
        reason TEXT NOT NULL,
        description TEXT NOT NULL,
        dead_lettered_at INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS dead_letters_by_queue ON dead_letters (queue, dead_lettered_at, seq)",
    # Duplicate-detection history outlives the message: a completed message id is still a duplicate.
    """CREATE TABLE IF NOT EXISTS seen_message_ids (
        queue TEXT NOT NULL,
        message_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (queue, message_id)
    )""",
    "CREATE INDEX IF NOT EXISTS seen_message_ids_by_expiry ON seen_message_ids (queue, expires_at)",
)


def _to_us(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: bus times must be timezone-aware")
    return (moment - _EPOCH) // _MICROSECOND


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


class SqliteBus:
    """Service Bus queues (scheduled enqueue, peek-lock, delivery count, dead-letter sub-queue,
    duplicate detection) stored in one SQLite file in WAL mode."""

    def __init__(
        self,
        path: str | Path,
        clock: Clock,
        queues: Mapping[str, QueueSettings] | None = None,
        default: QueueSettings = QueueSettings(),  # noqa: B008 - frozen dataclass, never mutated
    ) -> None:
        self._db = SqliteFile(path, _BUSY_TIMEOUT_SECONDS)
        self._clock = clock
        self._queues = dict(queues or {})
        self._default = default
        with self._db.transaction() as conn:
            for statement in _SCHEMA:
                conn.execute(statement)

    # ------------------------------------------------------------ sending

    def send(self, queue: str, message_id: str, body: bytes) -> None:
        self._enqueue(queue, message_id, body, None)

    def schedule(self, queue: str, message_id: str, body: bytes, at: datetime) -> int:
        _to_us(at)  # refuse a naive datetime before comparing it with the clock
        return self._enqueue(queue, message_id, body, at)

    def cancel_scheduled(self, queue: str, sequence_number: int) -> None:
        with self._db.transaction() as conn:
            conn.execute(
                "DELETE FROM messages WHERE queue = ? AND seq = ? AND visible_at > ?",
                (queue, sequence_number, _to_us(self._clock.now())),
            )

    # ------------------------------------------------------------ receiving and settling

    def receive(self, queue: str, max_messages: int = 1) -> list[ReceivedMessage]:
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages}")
        settings = self._settings(queue)
        received: list[ReceivedMessage] = []
        after_seq = 0
        with self._db.transaction() as conn:
            # Read the clock only once the write lock is held, so waiting for it cannot make us
            # hand out a lock that has already run out.
            now = self._clock.now()
            now_us = _to_us(now)
            locked_until = now + settings.lock_duration
            while len(received) < max_messages:
                rows = conn.execute(
                    "SELECT seq, message_id, body, enqueued_at, delivery_count FROM messages"
                    " WHERE queue = ? AND seq > ? AND visible_at <= ?"
                    " AND (locked_until IS NULL OR locked_until <= ?)"
                    " ORDER BY seq LIMIT ?",
                    (queue, after_seq, now_us, now_us, max_messages - len(received)),
                ).fetchall()
                if not rows:
                    break
                for seq, message_id, body, enqueued_at, delivery_count in rows:
                    after_seq = seq
                    if delivery_count >= settings.max_delivery_count:
                        self._move_to_dead_letters(
                            conn, seq, MAX_DELIVERY_COUNT_EXCEEDED,
                            f"delivered {delivery_count} times; the queue allows "
                            f"{settings.max_delivery_count}",
                            now_us,
                        )
                        continue
                    token = str(uuid.uuid4())
                    conn.execute(
                        "UPDATE messages SET delivery_count = ?, lock_token = ?, locked_until = ?"
                        " WHERE seq = ?",
                        (delivery_count + 1, token, _to_us(locked_until), seq),
                    )
                    received.append(ReceivedMessage(
                        queue=queue, message_id=message_id, body=bytes(body), sequence_number=seq,
                        delivery_count=delivery_count + 1, enqueued_at=_from_us(enqueued_at),
                        lock_token=token, locked_until=locked_until,
                    ))
        return received

    def complete(self, message: ReceivedMessage) -> None:
        with self._locked(message) as (conn, _):
            conn.execute("DELETE FROM messages WHERE seq = ?", (message.sequence_number,))

    def abandon(self, message: ReceivedMessage) -> None:
        with self._locked(message) as (conn, _):
            conn.execute(
                "UPDATE messages SET lock_token = NULL, locked_until = NULL WHERE seq = ?",
                (message.sequence_number,),
            )

    def dead_letter(self, message: ReceivedMessage, reason: str, description: str = "") -> None:
        with self._locked(message) as (conn, now):
            self._move_to_dead_letters(conn, message.sequence_number, reason, description, _to_us(now))

    def renew_lock(self, message: ReceivedMessage) -> ReceivedMessage:
        with self._locked(message) as (conn, now):
            locked_until = now + self._settings(message.queue).lock_duration
            conn.execute(
                "UPDATE messages SET locked_until = ? WHERE seq = ?",
                (_to_us(locked_until), message.sequence_number),
            )
        return dataclasses.replace(message, locked_until=locked_until)

    # ------------------------------------------------------------ dead-letter sub-queue

    def dead_letters(self, queue: str) -> list[DeadLetter]:
        rows = self._db.connection().execute(
            "SELECT seq, message_id, body, delivery_count, reason, description, dead_lettered_at"
            " FROM dead_letters WHERE queue = ? ORDER BY dead_lettered_at, seq",
            (queue,),
        ).fetchall()
        return [
            DeadLetter(
                queue=queue, message_id=message_id, body=bytes(body), sequence_number=seq,
                delivery_count=delivery_count, reason=reason, description=description,
                dead_lettered_at=_from_us(at),
            )
            for seq, message_id, body, delivery_count, reason, description, at in rows
        ]

    def replay_dead_letter(self, queue: str, sequence_number: int) -> None:
        with self._db.transaction() as conn:
            now_us = _to_us(self._clock.now())
            row = conn.execute(
                "SELECT message_id, body FROM dead_letters WHERE queue = ? AND seq = ?",
                (queue, sequence_number),
            ).fetchone()
            if row is None:
                raise NotFound(f"no dead letter with sequence number {sequence_number} in {queue}")
            # A resubmission is a new message (new sequence number), as on Service Bus; it bypasses
            # duplicate detection because replaying is a deliberate operator action.
            conn.execute(
                "INSERT INTO messages (queue, message_id, body, enqueued_at, visible_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (queue, row[0], row[1], now_us, now_us),
            )
            conn.execute("DELETE FROM dead_letters WHERE seq = ?", (sequence_number,))

    # ------------------------------------------------------------ inspection (adapter only)

    def active_count(self, queue: str) -> int:
        """Messages that are due, locked or not (Service Bus 'active message count')."""
        return self._count(queue, "visible_at <= ?")

    def scheduled_count(self, queue: str) -> int:
        """Scheduled messages not yet due."""
        return self._count(queue, "visible_at > ?")

    def next_due(self, queue: str) -> datetime | None:
        """The earliest time a message of the queue is (or becomes) receivable: its scheduled time
        or the end of its lock, whichever is later. None when the queue is empty."""
        row = self._db.connection().execute(
            "SELECT MIN(MAX(visible_at, COALESCE(locked_until, visible_at))) FROM messages"
            " WHERE queue = ?",
            (queue,),
        ).fetchone()
        return None if row[0] is None else _from_us(row[0])

    def close(self) -> None:
        """Close every connection this bus opened (in any thread)."""
        self._db.close()

    # ------------------------------------------------------------ internals

    def _settings(self, queue: str) -> QueueSettings:
        return self._queues.get(queue, self._default)

    def _enqueue(self, queue: str, message_id: str, body: bytes, at: datetime | None) -> int:
        with self._db.transaction() as conn:
            now = self._clock.now()
            now_us = _to_us(now)
            conn.execute("DELETE FROM seen_message_ids WHERE queue = ? AND expires_at <= ?", (queue, now_us))
            seen = conn.execute(
                "SELECT seq FROM seen_message_ids WHERE queue = ? AND message_id = ?",
                (queue, message_id),
            ).fetchone()
            if seen is not None:
                return int(seen[0])
            visible_us = now_us if at is None else max(_to_us(at), now_us)
            cursor = conn.execute(
                "INSERT INTO messages (queue, message_id, body, enqueued_at, visible_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (queue, message_id, bytes(body), visible_us, visible_us),
            )
            seq = cursor.lastrowid
            assert seq is not None
            expires_us = _to_us(now + self._settings(queue).duplicate_window)
            if expires_us > now_us:
                conn.execute(
                    "INSERT INTO seen_message_ids (queue, message_id, seq, expires_at) VALUES (?, ?, ?, ?)",
                    (queue, message_id, seq, expires_us),
                )
            return seq

    @staticmethod
    def _move_to_dead_letters(
        conn: sqlite3.Connection, seq: int, reason: str, description: str, now_us: int
    ) -> None:
        conn.execute(
            "INSERT INTO dead_letters"
            " (seq, queue, message_id, body, delivery_count, reason, description, dead_lettered_at)"
            " SELECT seq, queue, message_id, body, delivery_count, ?, ?, ? FROM messages WHERE seq = ?",
            (reason, description, now_us, seq),
        )
        conn.execute("DELETE FROM messages WHERE seq = ?", (seq,))

    @contextmanager
    def _locked(self, message: ReceivedMessage) -> Iterator[tuple[sqlite3.Connection, datetime]]:
        """A write transaction in which `message` is proven to be still locked by its token."""
        with self._db.transaction() as conn:
            now = self._clock.now()
            row = conn.execute(
                "SELECT lock_token, locked_until FROM messages WHERE queue = ? AND seq = ?",
                (message.queue, message.sequence_number),
            ).fetchone()
            if row is None or row[0] != message.lock_token or row[1] is None or _to_us(now) >= row[1]:
                raise LockLost(
                    f"lock on message {message.message_id!r} (sequence number {message.sequence_number})"
                    f" in {message.queue} expired or was taken by another receiver"
                )
            yield conn, now

    def _count(self, queue: str, condition: str) -> int:
        row = self._db.connection().execute(
            f"SELECT COUNT(*) FROM messages WHERE queue = ? AND {condition}",
            (queue, _to_us(self._clock.now())),
        ).fetchone()
        return int(row[0])

