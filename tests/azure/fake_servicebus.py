"""A hand-written Service Bus namespace behind the slice of the `azure-servicebus` client that ServiceBusBus
calls, with the service's semantics (not the embedded bus's), driven by a test clock.

The service, as documented and as observed by users of the SDK:

- Sequence numbers are per entity and increase. A scheduled message holds a number while it waits and
  gets a new one when it becomes active, "as if it had been enqueued at the current instant".
- Duplicate detection drops a message id seen within the window of its first acceptance; a dropped
  *scheduled* duplicate still consumes (and returns) a sequence number that nothing answers to.
- Cancelling a number that is not a waiting scheduled message raises MessageNotFoundError.
- Peek-lock: each receive is a delivery; abandon or lock expiry releases the message; once its deliveries
  reach the queue's maximum it moves to the dead-letter sub-queue ("MaxDeliveryCountExceeded").
- The dead-letter sub-queue keeps each message's sequence number and enqueue time, browses in sequence
  order, and supports peek-lock itself.
- The AMQP header's delivery count is the number of *earlier* deliveries (0 on the first).
- Received application properties come back with bytes keys and bytes string values.
- Client side, as the SDK does: settling a settled message raises MessageAlreadySettled, settling after the
  lock's expiry raises MessageLockLostError without a call, peeked messages cannot be settled.

Only the methods and exceptions ServiceBusBus uses exist here. `fail_next` makes the next call of an
operation raise a given SDK error, for the error-translation tests.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.servicebus import ServiceBusMessage, ServiceBusReceiveMode, ServiceBusSubQueue
from azure.servicebus.exceptions import (
    MessageAlreadySettled,
    MessageLockLostError,
    MessageNotFoundError,
    MessagingEntityNotFoundError,
)

from shared.ports import Clock, QueueSettings

MAX_DELIVERY_REASON = "MaxDeliveryCountExceeded"


@dataclass
class _Stored:
    message_id: str
    body: bytes
    content_type: str | None
    properties: dict[str, Any]
    enqueued_at: datetime
    due: datetime | None = None
    deliveries: int = 0
    lock_token: uuid.UUID | None = None
    locked_until: datetime | None = None
    reason: str | None = None
    description: str | None = None


@dataclass
class _Entity:
    settings: QueueSettings
    next_sequence: int = 1
    scheduled: dict[int, _Stored] = field(default_factory=dict)
    active: dict[int, _Stored] = field(default_factory=dict)
    dead: dict[int, _Stored] = field(default_factory=dict)
    first_seen: dict[str, datetime] = field(default_factory=dict)

    def number(self) -> int:
        sequence, self.next_sequence = self.next_sequence, self.next_sequence + 1
        return sequence


class FakeServiceBusNamespace:
    """The service side: queues, their dead-letter sub-queues and duplicate-detection history."""

    def __init__(self, clock: Clock, queues: dict[str, QueueSettings]) -> None:
        self.clock = clock
        self._entities = {name: _Entity(settings) for name, settings in queues.items()}
        self._lock = threading.RLock()
        self._failures: dict[str, list[BaseException]] = {}
        self.clients_made = 0

    def client(self) -> FakeServiceBusClient:
        """What `ServiceBusClient(fully_qualified_namespace=..., credential=...)` returns."""
        self.clients_made += 1
        return FakeServiceBusClient(self)

    def fail_next(self, operation: str, error: BaseException) -> None:
        """Make the next call of `operation` (a client method name) raise `error`."""
        self._failures.setdefault(operation, []).append(error)

    # ------------------------------------------------------------ service operations

    def _call(self, operation: str, queue: str) -> _Entity:
        failures = self._failures.get(operation)
        if failures:
            raise failures.pop(0)
        entity = self._entities.get(queue)
        if entity is None:
            raise MessagingEntityNotFoundError(message=f"The messaging entity '{queue}' could not be found.")
        self._advance(entity)
        return entity

    def _advance(self, entity: _Entity) -> None:
        now = self.clock.now()
        for sequence, stored in sorted(entity.scheduled.items(), key=lambda item: (item[1].due, item[0])):
            assert stored.due is not None
            if stored.due <= now:
                del entity.scheduled[sequence]
                stored.enqueued_at = stored.due
                entity.active[entity.number()] = stored
        for sequence, stored in list(entity.active.items()):
            if stored.locked_until is not None and stored.locked_until <= now:
                self._unlock(entity, sequence, stored)

    def _unlock(self, entity: _Entity, sequence: int, stored: _Stored) -> None:
        stored.lock_token, stored.locked_until = None, None
        if stored.deliveries >= entity.settings.max_delivery_count:
            del entity.active[sequence]
            stored.reason = MAX_DELIVERY_REASON
            stored.description = (
                f"Message could not be consumed after {entity.settings.max_delivery_count} delivery attempts."
            )
            entity.dead[sequence] = stored

    def _accepts(self, entity: _Entity, message_id: str) -> bool:
        now = self.clock.now()
        first = entity.first_seen.get(message_id)
        if first is not None and now - first < entity.settings.duplicate_window:
            return False
        entity.first_seen[message_id] = now
        return True

    def send(self, queue: str, message: ServiceBusMessage) -> None:
        with self._lock:
            entity = self._call("send_messages", queue)
            stored = _stored(message, self.clock.now())
            if self._accepts(entity, stored.message_id):
                entity.active[entity.number()] = stored

    def schedule(self, queue: str, message: ServiceBusMessage, at: datetime) -> list[int]:
        with self._lock:
            entity = self._call("schedule_messages", queue)
            stored = _stored(message, self.clock.now())
            sequence = entity.number()
            if self._accepts(entity, stored.message_id):
                stored.due = at
                entity.scheduled[sequence] = stored
                self._advance(entity)
            return [sequence]

    def cancel(self, queue: str, sequence_number: int) -> None:
        with self._lock:
            entity = self._call("cancel_scheduled_messages", queue)
            if entity.scheduled.pop(sequence_number, None) is None:
                raise MessageNotFoundError(message=f"Messages not found. Missing sequence numbers: {sequence_number}")

    def receive(self, queue: str, dead_letter: bool, count: int) -> list[_Received]:
        with self._lock:
            entity = self._call("receive_messages", queue)
            now = self.clock.now()
            source = entity.dead if dead_letter else entity.active
            taken: list[_Received] = []
            for sequence in sorted(source):
                stored = source[sequence]
                if stored.lock_token is not None or len(taken) >= count:
                    continue
                stored.deliveries += 1
                stored.lock_token = uuid.uuid4()
                stored.locked_until = now + entity.settings.lock_duration
                taken.append(_Received.of(queue, dead_letter, sequence, stored))
            return taken

    def peek(self, queue: str, dead_letter: bool, count: int, start: int) -> list[_Received]:
        with self._lock:
            entity = self._call("peek_messages", queue)
            source = entity.dead if dead_letter else entity.active
            chosen = [sequence for sequence in sorted(source) if sequence >= start][:count]
            return [_Received.of(queue, dead_letter, sequence, source[sequence], peeked=True) for sequence in chosen]

    def settle(
        self, message: _Received, outcome: str, reason: str | None = None, description: str | None = None
    ) -> datetime | None:
        with self._lock:
            entity = self._call(f"{outcome}_message", message.queue)
            source = entity.dead if message.dead_letter else entity.active
            stored = source.get(message.sequence_number)
            if stored is None or stored.lock_token != message.lock_token:
                raise MessageLockLostError(message="The lock supplied is invalid or has expired.")
            if outcome == "complete":
                del source[message.sequence_number]
            elif outcome == "abandon" and message.dead_letter:
                stored.lock_token, stored.locked_until = None, None  # the sub-queue has no delivery limit
            elif outcome == "abandon":
                self._unlock(entity, message.sequence_number, stored)
            elif outcome == "dead_letter":
                del source[message.sequence_number]
                stored.lock_token, stored.locked_until = None, None
                stored.reason, stored.description = reason, description
                entity.dead[message.sequence_number] = stored
            else:  # renew_message_lock
                stored.locked_until = self.clock.now() + entity.settings.lock_duration
                return stored.locked_until
            return None


@dataclass
class _Received:
    """What the SDK's ServiceBusReceivedMessage shows of a received or peeked message."""

    queue: str
    dead_letter: bool
    message_id: str
    body: Iterable[bytes]
    content_type: str | None
    application_properties: dict[bytes, Any] | None
    sequence_number: int
    delivery_count: int
    enqueued_time_utc: datetime
    lock_token: uuid.UUID | None
    locked_until_utc: datetime | None
    dead_letter_reason: str | None
    dead_letter_error_description: str | None
    peeked: bool = False
    settled: bool = False

    @classmethod
    def of(cls, queue: str, dead_letter: bool, sequence: int, stored: _Stored, peeked: bool = False) -> _Received:
        properties = {key.encode(): _wire(value) for key, value in stored.properties.items()}
        if stored.reason is not None:
            properties[b"DeadLetterReason"] = stored.reason.encode()
        if stored.description is not None:
            properties[b"DeadLetterErrorDescription"] = stored.description.encode()
        return cls(
            queue=queue,
            dead_letter=dead_letter,
            message_id=stored.message_id,
            body=iter([stored.body]),
            content_type=stored.content_type,
            application_properties=properties or None,
            sequence_number=sequence,
            delivery_count=max(stored.deliveries - 1, 0),
            enqueued_time_utc=stored.enqueued_at,
            lock_token=None if peeked else stored.lock_token,
            locked_until_utc=None if peeked else stored.locked_until,
            dead_letter_reason=stored.reason,
            dead_letter_error_description=stored.description,
            peeked=peeked,
        )


class FakeServiceBusClient:
    """`ServiceBusClient`: get_queue_sender, get_queue_receiver, close."""

    def __init__(self, namespace: FakeServiceBusNamespace) -> None:
        self.namespace = namespace
        self.closed = False

    def get_queue_sender(self, queue_name: str, **_: Any) -> FakeSender:
        return FakeSender(self.namespace, queue_name)

    def get_queue_receiver(
        self,
        queue_name: str,
        *,
        sub_queue: ServiceBusSubQueue | str | None = None,
        receive_mode: ServiceBusReceiveMode | str = ServiceBusReceiveMode.PEEK_LOCK,
        prefetch_count: int = 0,
        **_: Any,
    ) -> FakeReceiver:
        assert receive_mode == ServiceBusReceiveMode.PEEK_LOCK
        assert prefetch_count == 0
        return FakeReceiver(self.namespace, queue_name, sub_queue == ServiceBusSubQueue.DEAD_LETTER)

    def close(self) -> None:
        self.closed = True


class FakeSender:
    """`ServiceBusSender`: send_messages, schedule_messages, cancel_scheduled_messages, close."""

    def __init__(self, namespace: FakeServiceBusNamespace, queue: str) -> None:
        self.namespace, self.queue = namespace, queue

    def send_messages(self, message: ServiceBusMessage, **_: Any) -> None:
        self.namespace.send(self.queue, message)

    def schedule_messages(self, messages: ServiceBusMessage, schedule_time_utc: datetime, **_: Any) -> list[int]:
        assert schedule_time_utc.tzinfo is not None
        return self.namespace.schedule(self.queue, messages, schedule_time_utc)

    def cancel_scheduled_messages(self, sequence_numbers: int | list[int], **_: Any) -> None:
        for number in [sequence_numbers] if isinstance(sequence_numbers, int) else sequence_numbers:
            self.namespace.cancel(self.queue, number)

    def close(self) -> None:
        pass


class FakeReceiver:
    """`ServiceBusReceiver`: receive_messages, peek_messages, the four settlements, close."""

    def __init__(self, namespace: FakeServiceBusNamespace, queue: str, dead_letter: bool) -> None:
        self.namespace, self.queue, self.dead_letter = namespace, queue, dead_letter

    def receive_messages(
        self, max_message_count: int | None = 1, max_wait_time: float | None = None
    ) -> list[_Received]:
        return self.namespace.receive(self.queue, self.dead_letter, max_message_count or 1)

    def peek_messages(self, max_message_count: int = 1, *, sequence_number: int = 0, **_: Any) -> list[_Received]:
        assert sequence_number > 0, "ServiceBusBus always says where to start browsing"
        return self.namespace.peek(self.queue, self.dead_letter, max_message_count, sequence_number)

    def complete_message(self, message: _Received) -> None:
        self._settle(message, "complete")

    def abandon_message(self, message: _Received) -> None:
        self._settle(message, "abandon")

    def dead_letter_message(
        self, message: _Received, reason: str | None = None, error_description: str | None = None
    ) -> None:
        self._settle(message, "dead_letter", reason, error_description)

    def renew_message_lock(self, message: _Received, **_: Any) -> datetime:
        locked_until = self._check(message, "renew lock")
        renewed = self.namespace.settle(message, "renew_message_lock")
        assert renewed is not None and locked_until is not None
        message.locked_until_utc = renewed
        return renewed

    def _settle(
        self, message: _Received, outcome: str, reason: str | None = None, description: str | None = None
    ) -> None:
        self._check(message, outcome)
        self.namespace.settle(message, outcome, reason, description)
        message.settled = True

    def _check(self, message: _Received, action: str) -> datetime | None:
        """The SDK's own checks, before it talks to the service."""
        if message.peeked:
            raise ValueError(f"The operation {action} is not supported for peeked messages.")
        if message.settled:
            raise MessageAlreadySettled(action=action)
        if message.locked_until_utc is not None and message.locked_until_utc <= self.namespace.clock.now():
            raise MessageLockLostError(message="The lock on the message lock has expired.")
        return message.locked_until_utc

    def close(self) -> None:
        pass


def _stored(message: ServiceBusMessage, now: datetime) -> _Stored:
    body = message.body
    raw = body if isinstance(body, bytes) else b"".join(body)
    return _Stored(
        message_id=str(message.message_id),
        body=raw,
        content_type=message.content_type,
        properties={str(key): value for key, value in (message.application_properties or {}).items()},
        enqueued_at=now.astimezone(UTC),
    )


def _wire(value: Any) -> Any:
    return value.encode() if isinstance(value, str) else value
