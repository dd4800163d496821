"""An in-memory bus with the same semantics as the SQLite and Service Bus adapters."""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.domain.errors import BeyondScheduleLimit, LockLost, NotFound
from shared.ports import Clock, DeadLetter, QueueSettings, ReceivedMessage

MAX_DELIVERY_COUNT_EXCEEDED = "MaxDeliveryCountExceeded"


@dataclass(frozen=True)
class Scheduled:
    """One `schedule` call: where, what, for when, and the sequence number it answered."""

    queue: str
    message_id: str
    body: bytes
    at: datetime
    sequence_number: int


@dataclass
class _Stored:
    queue: str
    message_id: str
    body: bytes
    seq: int
    enqueued_at: datetime
    visible_at: datetime
    delivery_count: int = 0
    lock_token: str | None = None
    locked_until: datetime | None = None


class FakeBus:
    """Service Bus queues in dictionaries: peek-lock, delivery count, dead-letter, scheduling and
    duplicate detection, with time taken only from the injected clock.

    `scheduled` keeps every `schedule` call in order, so tests can pin when a message was asked for, not
    only what is left."""

    def __init__(
        self,
        clock: Clock,
        queues: Mapping[str, QueueSettings] | None = None,
        default: QueueSettings = QueueSettings(),  # noqa: B008 - frozen dataclass, never mutated
        schedule_horizon: timedelta | None = None,
    ) -> None:
        self._clock = clock
        # NB. How far ahead `schedule` accepts a message (Cloud Tasks: 30 days); None: any time.
        self._horizon = schedule_horizon
        self._queues = dict(queues or {})
        self._default = default
        self._sequence = itertools.count(1)
        self._messages: dict[int, _Stored] = {}  # insertion order is sequence order
        self._dead: dict[int, DeadLetter] = {}
        self._seen: dict[tuple[str, str], tuple[int, datetime]] = {}  # -> (seq, expires_at)
        self.scheduled: list[Scheduled] = []

    def send(self, queue: str, message_id: str, body: bytes) -> None:
        self._enqueue(queue, message_id, body, None)

    def schedule(self, queue: str, message_id: str, body: bytes, at: datetime) -> int:
        if at.tzinfo is None:
            raise ValueError(f"naive datetime {at!r}: bus times must be timezone-aware")
        if self._horizon is not None and at - self._clock.now() > self._horizon:
            raise BeyondScheduleLimit(f"{message_id} is due beyond this bus's horizon of {self._horizon}")
        seq = self._enqueue(queue, message_id, body, at)
        self.scheduled.append(Scheduled(queue, message_id, bytes(body), at, seq))
        return seq

    def cancel_scheduled(self, queue: str, sequence_number: int) -> None:
        stored = self._messages.get(sequence_number)
        if stored is not None and stored.queue == queue and stored.visible_at > self._clock.now():
            del self._messages[sequence_number]

    def receive(self, queue: str, max_messages: int = 1) -> list[ReceivedMessage]:
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages}")
        settings = self._settings(queue)
        now = self._clock.now()
        received: list[ReceivedMessage] = []
        for stored in list(self._messages.values()):
            if len(received) == max_messages:
                break
            if not self._receivable(stored, queue, now):
                continue
            if stored.delivery_count >= settings.max_delivery_count:
                self._move_to_dead_letters(
                    stored, MAX_DELIVERY_COUNT_EXCEEDED,
                    f"delivered {stored.delivery_count} times; the queue allows "
                    f"{settings.max_delivery_count}",
                    now,
                )
                continue
            stored.delivery_count += 1
            stored.lock_token = str(uuid.uuid4())
            stored.locked_until = now + settings.lock_duration
            received.append(ReceivedMessage(
                queue=queue, message_id=stored.message_id, body=stored.body, sequence_number=stored.seq,
                delivery_count=stored.delivery_count, enqueued_at=stored.enqueued_at,
                lock_token=stored.lock_token, locked_until=stored.locked_until,
            ))
        return received

    def complete(self, message: ReceivedMessage) -> None:
        self._locked(message)
        del self._messages[message.sequence_number]

    def abandon(self, message: ReceivedMessage) -> None:
        stored = self._locked(message)
        stored.lock_token = None
        stored.locked_until = None

    def dead_letter(self, message: ReceivedMessage, reason: str, description: str = "") -> None:
        self._move_to_dead_letters(self._locked(message), reason, description, self._clock.now())

    def renew_lock(self, message: ReceivedMessage) -> ReceivedMessage:
        stored = self._locked(message)
        stored.locked_until = self._clock.now() + self._settings(message.queue).lock_duration
        return dataclasses.replace(message, locked_until=stored.locked_until)

    def dead_letters(self, queue: str) -> list[DeadLetter]:
        return sorted(
            (d for d in self._dead.values() if d.queue == queue),
            key=lambda d: (d.dead_lettered_at, d.sequence_number),
        )

    def replay_dead_letter(self, queue: str, sequence_number: int) -> None:
        dead = self._dead.get(sequence_number)
        if dead is None or dead.queue != queue:
            raise NotFound(f"no dead letter with sequence number {sequence_number} in {queue}")
        del self._dead[sequence_number]
        now = self._clock.now()
        seq = next(self._sequence)
        self._messages[seq] = _Stored(queue, dead.message_id, dead.body, seq, now, now)

    def active_count(self, queue: str) -> int:
        now = self._clock.now()
        return sum(1 for m in self._messages.values() if m.queue == queue and m.visible_at <= now)

    def scheduled_count(self, queue: str) -> int:
        now = self._clock.now()
        return sum(1 for m in self._messages.values() if m.queue == queue and m.visible_at > now)

    def next_due(self, queue: str) -> datetime | None:
        return min(
            (max(m.visible_at, m.locked_until or m.visible_at) for m in self._messages.values()
             if m.queue == queue),
            default=None,
        )

    def _settings(self, queue: str) -> QueueSettings:
        return self._queues.get(queue, self._default)

    def _enqueue(self, queue: str, message_id: str, body: bytes, at: datetime | None) -> int:
        now = self._clock.now()
        seen = self._seen.get((queue, message_id))
        if seen is not None and now < seen[1]:
            return seen[0]
        seq = next(self._sequence)
        visible_at = now if at is None else max(at, now)
        self._messages[seq] = _Stored(queue, message_id, bytes(body), seq, visible_at, visible_at)
        self._seen[(queue, message_id)] = (seq, now + self._settings(queue).duplicate_window)
        return seq

    @staticmethod
    def _receivable(stored: _Stored, queue: str, now: datetime) -> bool:
        return (
            stored.queue == queue
            and stored.visible_at <= now
            and (stored.locked_until is None or stored.locked_until <= now)
        )

    def _locked(self, message: ReceivedMessage) -> _Stored:
        stored = self._messages.get(message.sequence_number)
        if (
            stored is None
            or stored.queue != message.queue
            or stored.lock_token != message.lock_token
            or stored.locked_until is None
            or self._clock.now() >= stored.locked_until
        ):
            raise LockLost(
                f"lock on message {message.message_id!r} (sequence number {message.sequence_number})"
                f" in {message.queue} expired or was taken by another receiver"
            )
        return stored

    def _move_to_dead_letters(self, stored: _Stored, reason: str, description: str, now: datetime) -> None:
        del self._messages[stored.seq]
        self._dead[stored.seq] = DeadLetter(
            queue=stored.queue, message_id=stored.message_id, body=stored.body,
            sequence_number=stored.seq, delivery_count=stored.delivery_count,
            reason=reason, description=description, dead_lettered_at=now,
        )
