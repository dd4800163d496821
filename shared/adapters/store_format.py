"""How every store writes instants and audit-page continuation tokens, so the embedded and the Cosmos
store (and the test fake) agree to the character."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime

from ..domain.audit import format_instant

INSTANT_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # fixed width, so text order is time order


def instant(value: datetime) -> str:
    """A stored instant; naive datetimes are refused rather than guessed."""
    if value.tzinfo is None:
        raise ValueError(f"timestamp {value.isoformat()} has no timezone; the store keeps UTC instants")
    return format_instant(value)


def parse_instant(text: str) -> datetime:
    if len(text) == 27 and text[10] == "T" and text[19] == "." and text[26] == "Z":
        # NB. The form `instant` writes, read 10x faster than by strptime; anything else goes through strptime.
        return datetime.fromisoformat(text[:26]).replace(tzinfo=UTC)
    return datetime.strptime(text, INSTANT_FORMAT).replace(tzinfo=UTC)


def encode_continuation(at: str, event_id: str) -> str:
    """An opaque token for the position after the event (at, id) in (at, id) order."""
    return base64.urlsafe_b64encode(json.dumps([at, event_id]).encode()).decode().rstrip("=")


def decode_continuation(token: str) -> tuple[str, str]:
    """The (at, id) position of a token from `encode_continuation`; ValueError if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        at, event_id = json.loads(raw)
        if not (isinstance(at, str) and isinstance(event_id, str)):
            raise TypeError
        datetime.strptime(at, INSTANT_FORMAT)
    except (binascii.Error, UnicodeDecodeError, TypeError, ValueError):
        raise ValueError(
            "malformed continuation token: pass back the continuation of the previous page unchanged"
        ) from None
    return at, event_id


def encode_position(position: str) -> str:
    """An opaque token for a position in a store's own order (request listings)."""
    return base64.urlsafe_b64encode(json.dumps(["p", position]).encode()).decode().rstrip("=")


def decode_position(token: str) -> str:
    """The position of a token from `encode_position`; ValueError if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        tag, position = json.loads(raw)
        if tag != "p" or not isinstance(position, str):
            raise TypeError
    except (binascii.Error, UnicodeDecodeError, TypeError, ValueError):
        raise ValueError(
            "malformed continuation token: pass back the continuation of the previous page unchanged"
        ) from None
    return position
