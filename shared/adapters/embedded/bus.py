"""The embedded message bus: Service Bus queue semantics on one SQLite file.

Several threads and several processes may share the file. Every write runs in `BEGIN IMMEDIATE`,
so exactly one connection at a time reads-then-writes and two receivers can never lock the same
message. Times come only from the injected clock and are stored as UTC epoch microseconds.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from ...domain.errors import LockLost, NotFound
from ...ports import Clock, DeadLetter, QueueSettings, ReceivedMessage, Settlement
from .sqlite_file import SqliteFile

MAX_DELIVERY_COUNT_EXCEEDED = "MaxDeliveryCountExceeded"

_BUSY_TIMEOUT_SECONDS = 30.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_MIN_SWEEP_INTERVAL = timedelta(seconds=1)  # however short a queue's duplicate window

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
    # NB. WITHOUT ROWID: the rows live in their key's B-tree, so a send writes two B-trees here, not three (a file
    # made before keeps its rowid table, which behaves the same).
    """CREATE TABLE IF NOT EXISTS seen_message_ids (
        queue TEXT NOT NULL,
        message_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (queue, message_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS seen_message_ids_by_expiry ON seen_message_ids (queue, expires_at)",
)

# NB. A receive must not walk past every scheduled message not yet due (thousands of revokes wait on their queue):
# a scheduled message waits with ready = 0, in an index by due time, and joins the ready ones, which a receive takes
# in sequence order, once it is due. Added by ALTER TABLE so that a file made before it opens too: its scheduled
# messages count as ready, which only costs the walk past them until they are gone.
_READY_INDEXES = (
    "CREATE INDEX IF NOT EXISTS messages_ready ON messages (queue, seq) WHERE ready = 1",
    "CREATE INDEX IF NOT EXISTS messages_waiting ON messages (queue, visible_at) WHERE ready = 0",
)


# A settlement matches its message only while the caller's lock holds: one statement both checks and settles.
_HELD = " queue = :queue AND seq = :seq AND lock_token = :token AND locked_until > :now"


class _Settlement(NamedTuple):
    sql: str  # matches the message only while it is held (_HELD)
    params: Mapping[str, object] = {}
    then: str = ""  # run with the sequence number once `sql` matched


_COMPLETE = _Settlement("DELETE FROM messages WHERE" + _HELD)
_ABANDON = _Settlement("UPDATE messages SET lock_token = NULL, locked_until = NULL WHERE" + _HELD)


# A message copied to the dead-letter sub-queue (then deleted from its queue), the rows chosen by what follows.
_TO_DEAD_LETTERS = (
    "INSERT INTO dead_letters (seq, queue, message_id, body, delivery_count, reason, description, dead_lettered_at)"
    " SELECT seq, queue, message_id, body, delivery_count, :reason, :description, :now FROM messages WHERE"
)


def _dead_letter(reason: str, description: str) -> _Settlement:
    return _Settlement(
        _TO_DEAD_LETTERS + _HELD, {"reason": reason, "description": description}, "DELETE FROM messages WHERE seq = ?"
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
        self._next_sweep: dict[str, datetime] = {}  # per queue: when this process next drops closed windows' ids
        with self._db.transaction() as conn:
            for statement in _SCHEMA:
                conn.execute(statement)
            if "ready" not in {row[1] for row in conn.execute("PRAGMA table_info(messages)")}:
                conn.execute("ALTER TABLE messages ADD COLUMN ready INTEGER NOT NULL DEFAULT 1")
            for statement in _READY_INDEXES:
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
        # NB. One token per receive, told apart by sequence number: unique per delivery, and no uuid per message.
        token = uuid.uuid4().hex
        with self._db.transaction() as conn:
            # Read the clock only once the write lock is held, so waiting for it cannot make us
            # hand out a lock that has already run out.
            now = self._clock.now()
            now_us = _to_us(now)
            locked_until = now + settings.lock_duration
            conn.execute(
                "UPDATE messages INDEXED BY messages_waiting SET ready = 1"
                " WHERE queue = ? AND ready = 0 AND visible_at <= ?",
                (queue, now_us),
            )
            while len(received) < max_messages:
                wanted = max_messages - len(received)
                # One statement locks the batch. A message already delivered the queue's maximum number of
                # times comes back without a token (and its count unchanged), to be dead-lettered instead.
                rows = conn.execute(
                    "UPDATE messages SET delivery_count = delivery_count + (delivery_count < :max),"
                    " lock_token = CASE WHEN delivery_count < :max THEN :token || '.' || seq END,"
                    " locked_until = :until"
                    " WHERE seq IN (SELECT seq FROM messages INDEXED BY messages_ready"
                    " WHERE queue = :queue AND ready = 1 AND seq > :after"
                    " AND visible_at <= :now AND (locked_until IS NULL OR locked_until <= :now)"
                    " ORDER BY seq LIMIT :limit)"
                    " RETURNING seq, message_id, body, enqueued_at, delivery_count, lock_token",
                    {"max": settings.max_delivery_count, "token": token, "until": _to_us(locked_until),
                     "queue": queue, "after": after_seq, "now": now_us, "limit": wanted},
                ).fetchall()
                exceeded = False
                for seq, message_id, body, enqueued_at, delivery_count, lock_token in sorted(rows):
                    after_seq = seq
                    if lock_token is None:
                        exceeded = True
                        self._move_to_dead_letters(
                            conn, seq, MAX_DELIVERY_COUNT_EXCEEDED,
                            f"delivered {delivery_count} times; the queue allows "
                            f"{settings.max_delivery_count}",
                            now_us,
                        )
                        continue
                    received.append(ReceivedMessage(
                        queue=queue, message_id=message_id, body=bytes(body), sequence_number=seq,
                        delivery_count=delivery_count, enqueued_at=_from_us(enqueued_at),
                        lock_token=lock_token, locked_until=locked_until,
                    ))
                if not exceeded:
                    break  # fewer than wanted means none are left: only dead-lettering leaves room to fill
        return received

    def complete(self, message: ReceivedMessage) -> None:
        self._settle_alone(Settlement(message, "complete"))

    def abandon(self, message: ReceivedMessage) -> None:
        self._settle_alone(Settlement(message, "abandon"))

    def dead_letter(self, message: ReceivedMessage, reason: str, description: str = "") -> None:
        self._settle_alone(Settlement(message, "dead_letter", reason, description))

    def settle(self, settlements: Sequence[Settlement]) -> list[tuple[Settlement, LockLost]]:
        """Settle several messages in one transaction (`SettlesTogether`); those whose lock was lost come back
        with why, and settle nothing."""
        lost: list[tuple[Settlement, LockLost]] = []
        with self._db.transaction() as conn:
            now = self._clock.now()
            for settlement in settlements:
                if settlement.outcome == "dead_letter":
                    statement = _dead_letter(settlement.reason, settlement.description)
                else:
                    statement = _COMPLETE if settlement.outcome == "complete" else _ABANDON
                try:
                    self._settle(conn, settlement.message, statement, now)
                except LockLost as exc:
                    lost.append((settlement, exc))
        return lost

    def renew_lock(self, message: ReceivedMessage) -> ReceivedMessage:
        with self._db.transaction() as conn:
            now = self._clock.now()
            locked_until = now + self._settings(message.queue).lock_duration
            self._settle(conn, message, _Settlement(
                "UPDATE messages SET locked_until = :until WHERE" + _HELD, {"until": _to_us(locked_until)}
            ), now)
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
            visible_us = now_us if at is None else max(_to_us(at), now_us)
            seq = conn.execute(
                "INSERT INTO messages (queue, message_id, body, enqueued_at, visible_at, ready)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (queue, message_id, bytes(body), visible_us, visible_us, int(visible_us <= now_us)),
            ).lastrowid
            assert seq is not None
            window = self._settings(queue).duplicate_window
            # The id is taken unless an earlier message holds it and its window is still open: an id whose
            # window closed is written over, whether or not the sweep below has removed it yet.
            first = conn.execute(
                "INSERT INTO seen_message_ids (queue, message_id, seq, expires_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (queue, message_id) DO UPDATE SET seq = excluded.seq, expires_at = excluded.expires_at"
                " WHERE seen_message_ids.expires_at <= ?",
                (queue, message_id, seq, _to_us(now + window), now_us),
            ).rowcount
            if not first:
                # A duplicate: take the message back (its sequence number stays unused) and name the first one.
                conn.execute("DELETE FROM messages WHERE seq = ?", (seq,))
                row = conn.execute(
                    "SELECT seq FROM seen_message_ids WHERE queue = ? AND message_id = ?", (queue, message_id)
                ).fetchone()
                return int(row[0])
            if now >= self._next_sweep.get(queue, now):
                # NB. Once a window per queue and process, not on every send: ids whose window closed only
                # take room until then (at most two windows' worth), they never block a send.
                conn.execute("DELETE FROM seen_message_ids WHERE queue = ? AND expires_at <= ?", (queue, now_us))
                self._next_sweep[queue] = now + max(window, _MIN_SWEEP_INTERVAL)
            return seq

    @staticmethod
    def _move_to_dead_letters(
        conn: sqlite3.Connection, seq: int, reason: str, description: str, now_us: int
    ) -> None:
        conn.execute(_TO_DEAD_LETTERS + " seq = :seq",
                     {"reason": reason, "description": description, "now": now_us, "seq": seq})
        conn.execute("DELETE FROM messages WHERE seq = ?", (seq,))

    def _settle_alone(self, settlement: Settlement) -> None:
        for _, lost in self.settle([settlement]):
            raise lost

    @staticmethod
    def _settle(conn: sqlite3.Connection, message: ReceivedMessage, settlement: _Settlement, now: datetime) -> None:
        """Settle `message` in one statement that matches only while its lock holds; LockLost, saying why,
        when it matched nothing."""
        held = {"queue": message.queue, "seq": message.sequence_number, "token": message.lock_token,
                "now": _to_us(now)}
        if conn.execute(settlement.sql, {**held, **settlement.params}).rowcount:
            if settlement.then:
                conn.execute(settlement.then, (message.sequence_number,))
            return
        row = conn.execute(
            "SELECT lock_token, locked_until FROM messages WHERE queue = ? AND seq = ?",
            (message.queue, message.sequence_number),
        ).fetchone()
        if row is None:
            why = "is no longer in the queue (settled, dead-lettered or never sent)"
        elif row[0] is None:
            why = "is not locked (it was abandoned)"
        elif row[0] != message.lock_token:
            why = "was locked again by another receiver after this lock expired"
        else:
            why = f"has a lock that expired at {_from_us(row[1]):%Y-%m-%d %H:%M:%S} UTC"
        raise LockLost(
            f"message {message.message_id!r} (sequence number {message.sequence_number}) in {message.queue} {why}"
        )

    def _count(self, queue: str, condition: str) -> int:
        row = self._db.connection().execute(
            f"SELECT COUNT(*) FROM messages WHERE queue = ? AND {condition}",
            (queue, _to_us(self._clock.now())),
        ).fetchone()
        return int(row[0])

