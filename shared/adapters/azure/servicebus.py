"""The Bus port on Azure Service Bus queues (`azure-servicebus`), authenticated as the managed identity.

In Azure the Functions host consumes the queues; the handlers only send, schedule and cancel through this
adapter. Receiving and settling are here for `jitgate dlq`, the contract suite and the live tests.

Where Service Bus itself differs from the embedded bus (tests/azure/test_servicebus_bus.py pins each one):

- A scheduled message is given a new sequence number when it becomes active, so it is received under
  another number than the one `schedule` returned, and due messages arrive in due-time order. The returned
  number is the one that cancels it while it waits, which is all the lifecycle keeps it for.
- Scheduling a message id seen within the duplicate-detection window returns a fresh number for a message
  the service then drops; cancelling that number finds nothing, which `cancel_scheduled` treats as done.
- The dead-letter sub-queue keeps each message's sequence number and enqueue time and records no time of
  dead-lettering: `dead_letters` lists in sequence order and `dead_lettered_at` is the enqueue time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ...domain.errors import JitgateError, LockLost, NotFound, PermanentError, TransientError
from ...ports import DeadLetter, ReceivedMessage
from ..sdk_errors import translated

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.servicebus import (
        ServiceBusClient,
        ServiceBusMessage,
        ServiceBusReceivedMessage,
        ServiceBusReceiver,
        ServiceBusSender,
    )

log = logging.getLogger("jitgate.servicebus")

H = TypeVar("H")

CONTENT_TYPE = "application/json"
# The message id a replayed dead letter was first sent under (the port's message id; see replay_dead_letter).
REPLAY_OF = "jitgateReplayOf"
# Service Bus asks clients to back off for 10 seconds after ServerBusy.
SERVER_BUSY_BACKOFF = 10.0
PEEK_BATCH = 100
HELD_AT_MOST = 10_000


class ServiceBusBus:
    """`Bus` on Service Bus. The client is made by `client_factory` on first use and shared; a sender and a
    receiver are opened per queue on first use and kept. The SDK's senders and receivers are not thread-safe,
    so each is used under its own lock (function invocations run on several threads)."""

    def __init__(self, client_factory: Callable[[], ServiceBusClient], receive_wait: float = 1.0) -> None:
        self._client_factory = client_factory
        self._receive_wait = receive_wait
        self._client: ServiceBusClient | None = None
        self._lock = threading.Lock()
        self._senders: dict[str, _Guarded[ServiceBusSender]] = {}
        self._receivers: dict[tuple[str, bool], _Guarded[ServiceBusReceiver]] = {}
        # The SDK settles a message through the receiver and the message object it was received as.
        self._held: dict[str, ServiceBusReceivedMessage] = {}

    @classmethod
    def connect(cls, namespace: str, credential: TokenCredential, receive_wait: float = 1.0) -> ServiceBusBus:
        """The production wiring: a client for `<namespace>.servicebus.windows.net`, created on first use."""

        def client() -> ServiceBusClient:
            from azure.servicebus import ServiceBusClient

            return ServiceBusClient(fully_qualified_namespace=namespace, credential=credential)

        return cls(client, receive_wait)

    # ------------------------------------------------------------ sending

    def send(self, queue: str, message_id: str, body: bytes) -> None:
        with self._sender(queue) as sender, _translated(f"send {message_id} to {queue}"):
            sender.send_messages(_outgoing(message_id, body))

    def schedule(self, queue: str, message_id: str, body: bytes, at: datetime) -> int:
        if at.tzinfo is None:
            raise ValueError(f"schedule time {at.isoformat()} is naive; pass a timezone-aware instant")
        with self._sender(queue) as sender, _translated(f"schedule {message_id} on {queue}"):
            numbers = sender.schedule_messages(_outgoing(message_id, body), at.astimezone(UTC))
        return int(numbers[0])

    def cancel_scheduled(self, queue: str, sequence_number: int) -> None:
        try:
            with self._sender(queue) as sender, _translated(f"cancel {sequence_number} on {queue}"):
                sender.cancel_scheduled_messages(sequence_number)
        except NotFound as exc:
            # Already enqueued, delivered, dropped as a duplicate, or never there: nothing left to cancel.
            log.debug("nothing to cancel: %s", exc)

    # ------------------------------------------------------------ receiving and settling

    def receive(self, queue: str, max_messages: int = 1) -> list[ReceivedMessage]:
        with self._receiver(queue) as receiver, _translated(f"receive from {queue}"):
            batch = receiver.receive_messages(max_message_count=max_messages, max_wait_time=self._receive_wait)
        received = [_received(queue, message) for message in batch]
        with self._lock:
            for message, sdk_message in zip(received, batch, strict=True):
                self._held[message.lock_token] = sdk_message
            while len(self._held) > HELD_AT_MOST:  # never settled: their locks ran out long ago
                del self._held[next(iter(self._held))]
        return received

    def complete(self, message: ReceivedMessage) -> None:
        self._settle(message, "complete", lambda receiver, held: receiver.complete_message(held))

    def abandon(self, message: ReceivedMessage) -> None:
        self._settle(message, "abandon", lambda receiver, held: receiver.abandon_message(held))

    def dead_letter(self, message: ReceivedMessage, reason: str, description: str = "") -> None:
        self._settle(
            message,
            "dead-letter",
            lambda receiver, held: receiver.dead_letter_message(held, reason=reason, error_description=description),
        )

    def renew_lock(self, message: ReceivedMessage) -> ReceivedMessage:
        held = self._holding(message)
        try:
            with self._receiver(message.queue) as receiver, _translated(f"renew the lock of {message.message_id}"):
                locked_until = receiver.renew_message_lock(held)
        except LockLost:
            self._release(message)
            raise
        return replace(message, locked_until=_instant(locked_until))

    def _settle(
        self,
        message: ReceivedMessage,
        action: str,
        settle: Callable[[ServiceBusReceiver, ServiceBusReceivedMessage], None],
    ) -> None:
        held = self._holding(message)
        try:
            with self._receiver(message.queue) as receiver, _translated(f"{action} {message.message_id}"):
                settle(receiver, held)
        except LockLost:
            self._release(message)
            raise
        # NB. Kept after a transient failure: the lock may still hold, and the caller may settle again.
        self._release(message)

    def _holding(self, message: ReceivedMessage) -> ServiceBusReceivedMessage:
        with self._lock:
            held = self._held.get(message.lock_token)
        if held is None:
            raise LockLost(f"{message.message_id} is not locked by this process (settled, or its lock was lost)")
        return held

    def _release(self, message: ReceivedMessage) -> None:
        with self._lock:
            self._held.pop(message.lock_token, None)

    # ------------------------------------------------------------ dead-letter sub-queue

    def dead_letters(self, queue: str) -> list[DeadLetter]:
        found: list[DeadLetter] = []
        with self._receiver(queue, dead_letter=True) as receiver, _translated(f"browse the dead letters of {queue}"):
            # NB. An explicit start: without one the SDK browses on from where this receiver's last peek ended.
            start = 1
            while batch := receiver.peek_messages(max_message_count=PEEK_BATCH, sequence_number=start):
                found.extend(_dead_letter(queue, message) for message in batch)
                start = int(batch[-1].sequence_number or 0) + 1
        return found

    def replay_dead_letter(self, queue: str, sequence_number: int) -> None:
        """Send the dead letter back under the message id `<original>:replay:<sequence number>`, then complete
        the dead-lettered copy. A new id, because duplicate detection would drop the original id inside its
        window; the same id for the same dead letter, so a replay retried after a crash is dropped as a
        duplicate instead of sent twice. The port's message id stays the original (property `jitgateReplayOf`)."""
        with self._receiver(queue, dead_letter=True) as receiver, _translated(f"replay {sequence_number} on {queue}"):
            peeked = receiver.peek_messages(max_message_count=1, sequence_number=sequence_number)
            if not peeked or peeked[0].sequence_number != sequence_number:
                raise NotFound(f"no dead letter {sequence_number} on {queue}")
            target, passed = self._lock_dead_letter(receiver, sequence_number)
            try:
                original = _logical_id(target)
                replay = _outgoing(
                    f"{original}:replay:{sequence_number}", _body(target.body), {REPLAY_OF: original}
                )
                with self._sender(queue) as sender:
                    sender.send_messages(replay)
                receiver.complete_message(target)
            finally:
                _release_all(receiver, passed)

    def _lock_dead_letter(
        self, receiver: ServiceBusReceiver, sequence_number: int
    ) -> tuple[ServiceBusReceivedMessage, list[ServiceBusReceivedMessage]]:
        """Lock the dead letter and return it with the others locked on the way, for the caller to release."""
        # NB. Service Bus cannot receive a dead letter by its sequence number: lock the sub-queue in order
        # until it comes up. Releasing the others counts a delivery on their dead-lettered copies.
        passed: list[ServiceBusReceivedMessage] = []
        try:
            while batch := receiver.receive_messages(max_message_count=PEEK_BATCH, max_wait_time=self._receive_wait):
                for message in batch:
                    if message.sequence_number == sequence_number:
                        return message, passed + [m for m in batch if m is not message]
                passed.extend(batch)
        except BaseException:
            _release_all(receiver, passed)
            raise
        _release_all(receiver, passed)
        raise NotFound(f"dead letter {sequence_number} is locked by another receiver")

    # ------------------------------------------------------------ clients

    def _sdk(self) -> ServiceBusClient:
        with self._lock:
            if self._client is None:
                self._client = self._client_factory()
            return self._client

    @contextmanager
    def _sender(self, queue: str) -> Iterator[ServiceBusSender]:
        guarded = self._guarded(self._senders, queue, lambda: self._sdk().get_queue_sender(queue_name=queue))
        with guarded.lock:
            yield guarded.handler

    @contextmanager
    def _receiver(self, queue: str, dead_letter: bool = False) -> Iterator[ServiceBusReceiver]:
        def open_receiver() -> ServiceBusReceiver:
            from azure.servicebus import ServiceBusReceiveMode, ServiceBusSubQueue

            return self._sdk().get_queue_receiver(
                queue_name=queue,
                sub_queue=ServiceBusSubQueue.DEAD_LETTER if dead_letter else None,
                receive_mode=ServiceBusReceiveMode.PEEK_LOCK,
                # NB. No prefetch: a prefetched message's lock runs while it waits in the buffer, unrenewed.
                prefetch_count=0,
            )

        guarded = self._guarded(self._receivers, (queue, dead_letter), open_receiver)
        with guarded.lock:
            yield guarded.handler

    def _guarded(self, handlers: dict[Any, _Guarded[Any]], key: Any, open_handler: Callable[[], Any]) -> _Guarded[Any]:
        with self._lock:
            guarded = handlers.get(key)
        if guarded is not None:
            return guarded
        with _translated(f"open a handler for {key}"):
            handler = open_handler()
        with self._lock:
            kept = handlers.setdefault(key, _Guarded(handler))
        if kept.handler is not handler:  # another thread opened one first
            _quietly(handler.close)
        return kept

    def close(self) -> None:
        """Close every sender, receiver and the client; the bus reopens them if used again."""
        with self._lock:
            handlers: list[_Guarded[Any]] = [*self._senders.values(), *self._receivers.values()]
            client, self._client = self._client, None
            self._senders, self._receivers, self._held = {}, {}, {}
        for guarded in handlers:
            _quietly(guarded.handler.close)
        if client is not None:
            _quietly(client.close)


class _Guarded(Generic[H]):
    """An SDK handler and the lock it is used under."""

    def __init__(self, handler: H) -> None:
        self.handler = handler
        self.lock = threading.Lock()


# ---------------------------------------------------------------- messages


def _outgoing(message_id: str, body: bytes, properties: Mapping[str, str] | None = None) -> ServiceBusMessage:
    from azure.servicebus import ServiceBusMessage

    application_properties: dict[str | bytes, Any] | None = (
        {key: value for key, value in properties.items()} if properties else None
    )
    return ServiceBusMessage(
        body, message_id=message_id, content_type=CONTENT_TYPE, application_properties=application_properties
    )


def _received(queue: str, message: ServiceBusReceivedMessage) -> ReceivedMessage:
    return ReceivedMessage(
        queue=queue,
        message_id=_logical_id(message),
        body=_body(message.body),
        sequence_number=int(message.sequence_number or 0),
        delivery_count=_delivery_count(message),
        enqueued_at=_instant(message.enqueued_time_utc),
        lock_token=str(message.lock_token),
        locked_until=_instant(message.locked_until_utc),
    )


def _dead_letter(queue: str, message: ServiceBusReceivedMessage) -> DeadLetter:
    return DeadLetter(
        queue=queue,
        message_id=_logical_id(message),
        body=_body(message.body),
        sequence_number=int(message.sequence_number or 0),
        delivery_count=_delivery_count(message),
        reason=message.dead_letter_reason or "",
        description=message.dead_letter_error_description or "",
        dead_lettered_at=_instant(message.enqueued_time_utc),
    )


def _delivery_count(message: ServiceBusReceivedMessage) -> int:
    # NB. The AMQP header counts the *earlier* failed deliveries (0 on the first); the port, like the
    # Functions trigger and the .NET SDK, counts this delivery too.
    return (message.delivery_count or 0) + 1


def _logical_id(message: ServiceBusReceivedMessage) -> str:
    properties: Mapping[Any, Any] = message.application_properties or {}
    # NB. Received property keys and string values arrive as bytes.
    original = properties.get(REPLAY_OF.encode(), properties.get(REPLAY_OF))
    if original is not None:
        return original.decode() if isinstance(original, bytes) else str(original)
    return str(message.message_id)


def _body(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    parts: Iterable[Any] = body
    return b"".join(bytes(part) for part in parts)


def _instant(value: datetime | None) -> datetime:
    if value is None:
        raise PermanentError("Service Bus returned a message without its broker timestamps")
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# ---------------------------------------------------------------- errors


def _translated(what: str) -> AbstractContextManager[None]:
    return translated(what, _translate)


def _translate(exc: Exception, what: str) -> JitgateError | None:
    from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError, ServiceResponseError
    from azure.servicebus import exceptions as sb

    text = f"{what}: {exc}"
    if isinstance(exc, sb.MessageLockLostError | sb.MessageAlreadySettled):
        return LockLost(text)
    if isinstance(exc, sb.MessageNotFoundError | sb.MessagingEntityNotFoundError):
        return NotFound(text)
    if isinstance(exc, sb.ServiceBusServerBusyError):
        return TransientError(text, retry_after=SERVER_BUSY_BACKOFF)
    if isinstance(exc, sb.ServiceBusAuthorizationError | sb.MessagingEntityDisabledError | sb.MessageSizeExceededError):
        return PermanentError(text)
    if isinstance(exc, sb.ServiceBusError | ServiceRequestError | ServiceResponseError | ClientAuthenticationError):
        # Timeouts, lost connections, quota, token hiccups and faults the SDK does not name: the bus retries.
        return TransientError(text)
    return None


def _release_all(receiver: ServiceBusReceiver, messages: list[ServiceBusReceivedMessage]) -> None:
    for message in messages:
        try:
            receiver.abandon_message(message)
        except Exception as exc:  # its lock runs out on its own
            log.debug("could not release dead letter %s: %s", message.sequence_number, exc)


def _quietly(action: Callable[[], object]) -> None:
    try:
        action()
    except Exception as exc:
        log.debug("ignored while cleaning up: %s", exc)
