"""What main.py's CloudEvent functions take out of an event: the Pub/Sub message, or the reason there is none."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from functions.pubsub_events import MESSAGE_PUBLISHED, MalformedEvent, pushed_message

pytestmark = pytest.mark.gcp


def _data(message: Any, **extra: Any) -> dict[str, Any]:
    return {"message": message, "subscription": "projects/p/subscriptions/s", **extra}


def test_the_message_body_its_jitgate_id_and_its_delivery_attempt() -> None:
    body = base64.b64encode(b'{"command": "revoke"}').decode()
    message = pushed_message(MESSAGE_PUBLISHED, _data(
        {"data": body, "attributes": {"jitgateMessageId": "revoke:r1:1"}, "messageId": "42"}, deliveryAttempt=3))
    assert (message.body, message.message_id, message.delivery_attempt) == (
        b'{"command": "revoke"}', "revoke:r1:1", 3)
    # a message published by someone else keeps Pub/Sub's id; a push without an attempt counts as the first
    other = pushed_message(MESSAGE_PUBLISHED, _data({"data": body, "message_id": "43"}))
    assert (other.message_id, other.delivery_attempt) == ("43", 1)


@pytest.mark.parametrize(("event_type", "data", "reason"), [
    ("google.cloud.storage.object.v1.finalized", _data({"data": ""}), "is not google.cloud.pubsub"),
    (MESSAGE_PUBLISHED, {"subscription": "s"}, "has no Pub/Sub message"),
    (MESSAGE_PUBLISHED, b"not json", "has no Pub/Sub message"),
    (MESSAGE_PUBLISHED, _data("a string"), "has no Pub/Sub message"),
    (MESSAGE_PUBLISHED, _data({"data": "%%%"}), "not base64"),
    (MESSAGE_PUBLISHED, _data({"data": 12}), "not base64"),
    (MESSAGE_PUBLISHED, _data({"data": "", "attributes": {"n": 1}}), "not a map of strings"),
    (MESSAGE_PUBLISHED, _data({"data": "", "attributes": ["a"]}), "not a map of strings"),
])
def test_what_is_not_a_pubsub_message_is_refused_with_its_reason(event_type: str, data: Any, reason: str) -> None:
    with pytest.raises(MalformedEvent, match=reason):
        pushed_message(event_type, data)
