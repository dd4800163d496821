"""The Bus port on Google Cloud Pub/Sub (`google-cloud-pubsub`), with Cloud Tasks for scheduled messages.

Each queue is a topic `<queue>` with a pull subscription `<queue>` (exactly-once delivery, a dead-letter policy)
and a dead-letter topic `<queue>-dead-letter` with a subscription of the same name. In Google Cloud the functions
are pushed to by Eventarc's own subscriptions on the same topics (main.py); this adapter sends, schedules and
cancels for the handlers, and receives and settles for `jitgate dlq`, the contract suite and the live tests.

Where Pub/Sub differs from Service Bus (tests/contract/test_bus_contract.py names each, with why jitgate does not
need the promise):

- No duplicate detection: a message sent twice is delivered twice. Every handler is idempotent (§3). Scheduled
  messages are de-duplicated by their task names (tasks.py) for as long as Cloud Tasks keeps a name.
- No scheduled delivery: `schedule` makes a Cloud Task that publishes at the time; the number it returns names
  the task, not a Pub/Sub message, and a delivered message carries Pub/Sub's own id as its sequence number.
- The lock is the ack deadline; settling under an expired or settled ack id is refused only on a subscription
  with exactly-once delivery (else Pub/Sub drops it silently), hence exactly-once on the pull subscriptions.
- Dead-lettering after max deliveries is Pub/Sub's (`max_delivery_attempts`, 5 to 100); an explicit dead letter
  is published to the dead-letter topic with its reason, then acknowledged: a crash between the two leaves it in
  both places, the original to be delivered again. A dead letter has the dead-letter topic's message id.
- Reading the dead letters leases them all for a moment (Pub/Sub cannot peek) and gives them back.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ...domain.errors import LockLost, NotFound, TransientError
from ...ports import Clock, DeadLetter, QueueSettings, ReceivedMessage
from .errors import ack_id_failures, google_translated
from .tasks import CloudTasksScheduler

if TYPE_CHECKING:
    from google.pubsub_v1 import PublisherClient, SubscriberClient
    from google.pubsub_v1.types import PubsubMessage

log = logging.getLogger("jitgate.pubsub")

MESSAGE_ID = "jitgateMessageId"  # the port's message id (`revoke:<requestId>:1`); Pub/Sub assigns its own
REASON = "jitgateDeadLetterReason"
DESCRIPTION = "jitgateDeadLetterDescription"
DELIVERIES = "jitgateDeliveryCount"
SOURCE_DELIVERIES = "CloudPubSubDeadLetterSourceDeliveryCount"  # set by Pub/Sub when it dead-letters
DEAD_LETTER_SUFFIX = "-dead-letter"
PULL_BATCH = 100
PULL_TIMEOUT = 10.0


class PubSubBus:
    """`Bus` on Pub/Sub topics and subscriptions of one project. Clients are made on first use and shared (the
    generated clients are thread-safe)."""

    def __init__(
        self,
        project: str,
        clock: Clock,
        scheduler: CloudTasksScheduler,
        publisher_factory: Callable[[], PublisherClient],
        subscriber_factory: Callable[[], SubscriberClient],
        queues: Mapping[str, QueueSettings] | None = None,
        default: QueueSettings = QueueSettings(),  # noqa: B008 - frozen dataclass, never mutated
    ) -> None:
        self.project = project
        self._clock = clock
        self._scheduler = scheduler
        self._publisher_factory = publisher_factory
        self._subscriber_factory = subscriber_factory
        self._queues = dict(queues or {})
        self._default = default
        self._lock = threading.Lock()
        self._publisher: PublisherClient | None = None
        self._subscriber: SubscriberClient | None = None

    @classmethod
    def connect(
        cls,
        project: str,
        clock: Clock,
        scheduler: CloudTasksScheduler,
        queues: Mapping[str, QueueSettings] | None = None,
        default: QueueSettings = QueueSettings(),  # noqa: B008
    ) -> PubSubBus:
        """The production wiring (Application Default Credentials), or the emulator's insecure channel when
        PUBSUB_EMULATOR_HOST is set, as the Pub/Sub client library does."""

        def channel() -> Any:
            import grpc

            return grpc.insecure_channel(os.environ["PUBSUB_EMULATOR_HOST"])

        def publisher() -> PublisherClient:
            from google.pubsub_v1 import PublisherClient
            from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

            if os.environ.get("PUBSUB_EMULATOR_HOST"):
                return PublisherClient(transport=PublisherGrpcTransport(channel=channel()))
            return PublisherClient()

        def subscriber() -> SubscriberClient:
            from google.pubsub_v1 import SubscriberClient
            from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

            if os.environ.get("PUBSUB_EMULATOR_HOST"):
                return SubscriberClient(transport=SubscriberGrpcTransport(channel=channel()))
            return SubscriberClient()

        return cls(project, clock, scheduler, publisher, subscriber, queues, default)

    # ------------------------------------------------------------ names

    def topic(self, queue: str) -> str:
        return f"projects/{self.project}/topics/{queue}"

    def subscription(self, queue: str) -> str:
        return f"projects/{self.project}/subscriptions/{queue}"

    def _settings(self, queue: str) -> QueueSettings:
        return self._queues.get(queue, self._default)

    # ------------------------------------------------------------ sending

    def send(self, queue: str, message_id: str, body: bytes) -> None:
        self._publish(self.topic(queue), body, {MESSAGE_ID: message_id}, f"send {message_id} to {queue}")

    def schedule(self, queue: str, message_id: str, body: bytes, at: datetime) -> int:
        return self._scheduler.schedule(queue, self.topic(queue), message_id, {MESSAGE_ID: message_id}, body, at)

    def cancel_scheduled(self, queue: str, sequence_number: int) -> None:
        self._scheduler.cancel(queue, sequence_number)

    def _publish(self, topic: str, body: bytes, attributes: Mapping[str, str], what: str) -> str:
        from google.pubsub_v1.types import PubsubMessage

        with google_translated(what):
            response = self._pub().publish(
                topic=topic, messages=[PubsubMessage(data=body, attributes=dict(attributes))]
            )
        return str(response.message_ids[0])

    # ------------------------------------------------------------ receiving and settling

    def receive(self, queue: str, max_messages: int = 1) -> list[ReceivedMessage]:
        now = self._clock.now()
        lock = self._settings(queue).lock_duration
        return [
            ReceivedMessage(
                queue=queue,
                message_id=_logical_id(received.message),
                body=bytes(received.message.data),
                sequence_number=int(received.message.message_id),
                delivery_count=received.delivery_attempt or 1,
                enqueued_at=_instant(received.message.publish_time),
                lock_token=received.ack_id,
                locked_until=now + lock,
            )
            for received in self._pull(self.subscription(queue), max_messages, f"receive from {queue}")
        ]

    def complete(self, message: ReceivedMessage) -> None:
        self._settle(message, "complete", lambda sub, ack: self._sub().acknowledge(subscription=sub, ack_ids=[ack]))

    def abandon(self, message: ReceivedMessage) -> None:
        self._modify(message, 0, "abandon")

    def renew_lock(self, message: ReceivedMessage) -> ReceivedMessage:
        lock = self._settings(message.queue).lock_duration
        self._modify(message, int(lock.total_seconds()), "renew the lock of")
        return replace(message, locked_until=self._clock.now() + lock)

    def dead_letter(self, message: ReceivedMessage, reason: str, description: str = "") -> None:
        # NB. Renewed first: a lock already lost must change nothing, and the publish cannot be taken back.
        self.renew_lock(message)
        self.publish_dead_letter(message.queue, message.message_id, message.body, reason, description,
                                 message.delivery_count)
        self.complete(message)

    def publish_dead_letter(self, queue: str, message_id: str, body: bytes, reason: str, description: str = "",
                            delivery_count: int = 1) -> None:
        """Put a message on the queue's dead-letter topic with its reason: what `dead_letter` does for a pulled
        message, and what main.py does for a pushed one it refuses (Pub/Sub has no such call for a push)."""
        attributes = {MESSAGE_ID: message_id, REASON: reason, DESCRIPTION: description.encode()[:1024].decode(
            errors="ignore"), DELIVERIES: str(delivery_count)}
        self._publish(self.topic(queue + DEAD_LETTER_SUFFIX), body, attributes, f"dead-letter {message_id}")

    def _modify(self, message: ReceivedMessage, seconds: int, action: str) -> None:
        self._settle(
            message,
            action,
            lambda sub, ack: self._sub().modify_ack_deadline(subscription=sub, ack_ids=[ack],
                                                             ack_deadline_seconds=seconds),
        )

    def _settle(self, message: ReceivedMessage, action: str, call: Callable[[str, str], object]) -> None:
        what = f"{action} {message.message_id}"
        with google_translated(what):
            try:
                call(self.subscription(message.queue), message.lock_token)
            except Exception as exc:
                failure = ack_id_failures(exc).get(message.lock_token, "")
                if failure.startswith("TRANSIENT_"):
                    raise TransientError(f"{what}: {failure}") from exc
                if failure:
                    raise LockLost(f"{what}: its ack deadline passed or it was settled ({failure})") from exc
                raise

    def _pull(self, subscription: str, max_messages: int, what: str) -> list[Any]:
        with google_translated(what):
            response = self._sub().pull(
                subscription=subscription, max_messages=max_messages, return_immediately=True, timeout=PULL_TIMEOUT
            )
        return list(response.received_messages)

    # ------------------------------------------------------------ dead-letter topic

    def dead_letters(self, queue: str) -> list[DeadLetter]:
        held = self._hold_dead_letters(queue)
        self._give_back(queue, [r.ack_id for r in held])
        found = [_dead_letter(queue, r.message) for r in held]
        return sorted(found, key=lambda d: (d.dead_lettered_at, d.sequence_number))

    def replay_dead_letter(self, queue: str, sequence_number: int) -> None:
        """Publish the dead letter to its queue again (a new Pub/Sub message, so a fresh delivery count) and
        acknowledge it on the dead-letter subscription."""
        held = self._hold_dead_letters(queue)
        target = next((r for r in held if r.message.message_id == str(sequence_number)), None)
        try:
            if target is None:
                raise NotFound(f"no dead letter {sequence_number} on {queue}")
            attributes = {k: v for k, v in target.message.attributes.items()
                          if not k.startswith("CloudPubSubDeadLetter") and k not in (REASON, DESCRIPTION, DELIVERIES)}
            self._publish(self.topic(queue), bytes(target.message.data), attributes, f"replay {sequence_number}")
            with google_translated(f"acknowledge dead letter {sequence_number}"):
                self._sub().acknowledge(subscription=self.subscription(queue + DEAD_LETTER_SUFFIX),
                                        ack_ids=[target.ack_id])
        finally:
            self._give_back(queue, [r.ack_id for r in held if r is not target])

    def _hold_dead_letters(self, queue: str) -> list[Any]:
        subscription = self.subscription(queue + DEAD_LETTER_SUFFIX)
        held: list[Any] = []
        while batch := self._pull(subscription, PULL_BATCH, f"read the dead letters of {queue}"):
            held.extend(batch)
        return held

    def _give_back(self, queue: str, ack_ids: list[str]) -> None:
        if not ack_ids:
            return
        try:
            with google_translated(f"release the dead letters of {queue}"):
                self._sub().modify_ack_deadline(subscription=self.subscription(queue + DEAD_LETTER_SUFFIX),
                                                ack_ids=ack_ids, ack_deadline_seconds=0)
        except Exception as exc:  # their ack deadline runs out on its own
            log.debug("could not release dead letters of %s: %s", queue, exc)

    # ------------------------------------------------------------ clients

    def _pub(self) -> PublisherClient:
        with self._lock:
            if self._publisher is None:
                self._publisher = self._publisher_factory()
            return self._publisher

    def _sub(self) -> SubscriberClient:
        with self._lock:
            if self._subscriber is None:
                self._subscriber = self._subscriber_factory()
            return self._subscriber

    def close(self) -> None:
        """Close both clients' channels; they are reopened if the bus is used again."""
        with self._lock:
            clients: list[Any] = [self._publisher, self._subscriber]
            self._publisher = self._subscriber = None
        for client in clients:
            if client is not None:
                client.transport.close()


def _logical_id(message: PubsubMessage) -> str:
    return str(message.attributes.get(MESSAGE_ID) or message.message_id)


def _instant(value: datetime) -> datetime:
    return datetime.fromisoformat(value.isoformat()).astimezone(UTC)


def _dead_letter(queue: str, message: PubsubMessage) -> DeadLetter:
    attributes = message.attributes
    by_pubsub = SOURCE_DELIVERIES in attributes
    return DeadLetter(
        queue=queue,
        message_id=_logical_id(message),
        body=bytes(message.data),
        sequence_number=int(message.message_id),
        delivery_count=int(attributes.get(SOURCE_DELIVERIES) or attributes.get(DELIVERIES) or 0),
        reason="MaxDeliveryCountExceeded" if by_pubsub else str(attributes.get(REASON, "")),
        description=str(attributes.get(DESCRIPTION, "")),
        dead_lettered_at=_instant(message.publish_time),
    )
