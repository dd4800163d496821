"""Pub/Sub messages as Eventarc pushes them to main.py's functions: CloudEvents of type
`google.cloud.pubsub.topic.v1.messagePublished` (binary or structured mode) whose data is
`{"message": {"data": <base64>, "attributes": {...}, "messageId": ...}, "subscription": ...}`.

An event that is not such a message cannot become one by being delivered again: it is rejected with its reason
(logged, and put on the queue's dead-letter topic with the reason, where `jitgate dlq list` shows it) and
acknowledged, never raised. A message whose body the handler refuses is handled as the Azure triggers handle it:
an invalid access request is rejected and audited by the lifecycle; an invalid lifecycle command is dead-lettered
(`InvalidCommand`), as is a command for a request this store never saw (`UnknownRequest`). Transient faults raise,
so the function answers 500 and Pub/Sub delivers the message again, with backoff, until its dead-letter policy.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass
from typing import Any

from shared.adapters.gcp.pubsub import MESSAGE_ID
from shared.domain.errors import InvalidRequest, NotFound
from shared.runtime import Runtime
from shared.worker import on_access_request, on_lifecycle_command

log = logging.getLogger("jitgate.pubsub")

MESSAGE_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"


class MalformedEvent(ValueError):
    """A CloudEvent that is not a Pub/Sub message; the text says why."""


@dataclass(frozen=True)
class PushedMessage:
    """One Pub/Sub message out of its CloudEvent."""

    body: bytes
    message_id: str  # jitgate's (`revoke:<requestId>:1`), else Pub/Sub's
    delivery_attempt: int  # 1 when the push does not say (Eventarc's events do not)
    attributes: dict[str, str]


def pushed_message(event_type: str, data: Any) -> PushedMessage:
    """The message in an event, or MalformedEvent."""
    if event_type != MESSAGE_PUBLISHED:
        raise MalformedEvent(f"event type {event_type!r} is not {MESSAGE_PUBLISHED}")
    message = data.get("message") if isinstance(data, dict) else None
    if not isinstance(message, dict):
        raise MalformedEvent("the event's data has no Pub/Sub message (data.message)")
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, dict) or not all(isinstance(v, str) for v in attributes.values()):
        raise MalformedEvent("message.attributes is not a map of strings")
    encoded = message.get("data", "")
    try:
        body = base64.b64decode(encoded, validate=True) if isinstance(encoded, str) else None
    except (binascii.Error, ValueError):
        body = None
    if body is None:
        raise MalformedEvent("message.data is not base64")
    attempt = data.get("deliveryAttempt", 1)
    pubsub_id = message.get("messageId") or message.get("message_id") or ""
    return PushedMessage(
        body=body,
        message_id=str(attributes.get(MESSAGE_ID) or pubsub_id),
        delivery_attempt=attempt if isinstance(attempt, int) and attempt > 0 else 1,
        attributes={str(k): v for k, v in attributes.items()},
    )


def on_event(runtime: Runtime, queue: str, event_type: str, data: Any) -> None:
    """Handle one pushed event for `queue` (one of the runtime's three)."""
    try:
        message = pushed_message(event_type, data)
    except MalformedEvent as exc:
        _reject(runtime, queue, "MalformedEvent", str(exc), repr(data)[:4096].encode(), "")
        return
    if queue == runtime.settings.requests_queue:
        on_access_request(runtime.lifecycle, message.body)  # an invalid request is rejected and audited inside
        return
    deliveries = message.delivery_attempt
    try:
        on_lifecycle_command(runtime.lifecycle, message.body, deliveries, runtime.settings.max_delivery_count)
    except InvalidRequest as exc:
        _reject(runtime, queue, "InvalidCommand", str(exc.__cause__ or exc), message.body, message.message_id)
    except NotFound as exc:
        _reject(runtime, queue, "UnknownRequest", str(exc), message.body, message.message_id)


def _reject(runtime: Runtime, queue: str, reason: str, description: str, body: bytes, message_id: str) -> None:
    from shared.adapters.gcp.pubsub import PubSubBus

    log.error("%s rejected on %s (%s): %s", message_id or "an event", queue, reason, description)
    if isinstance(runtime.bus, PubSubBus):
        runtime.bus.publish_dead_letter(queue, message_id or "malformed-event", body or b"-", reason, description)
