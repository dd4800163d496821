"""The Teams outgoing webhook: signature, replay protection, command parsing and replies.

Teams signs each call with `Authorization: HMAC <base64(HMAC-SHA256(key, raw body))>`, where the key is
the base64-decoded security token shown when the webhook was created. The signature covers the body
only, so a captured call stays valid forever; the replay guard bounds that by the activity's own
`id` and `timestamp`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import html
import json
import re
import secrets
import threading
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from .domain.errors import AuthError, JitgateError
from .domain.ids import is_guid
from .domain.json_body import MalformedBody, parse_json
from .domain.lifecycle import RequestRecord
from .ports import Clock
from .text import quoted, reason_in_words, state_in_words

MAX_SKEW = timedelta(minutes=5)
MAX_COMMENT = 1000
MAX_ACTIVITY_BYTES = 64 * 1024
BOT_NAME = "jitgate"
MIN_SECRET_BYTES = 16

USAGE = (
    "Commands: `approve <request id> [comment]`, `deny <request id> <reason>`, `status <request id>`, `help`."
)

_SIGNATURE_BYTES = hashlib.sha256().digest_size
_MENTION = re.compile(r"<at\b[^>]*>.*?</at>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
# The placeholders of the card's reply lines (`approve <id> [comment]`, `deny <id> <reason>`), copied as shown.
_PLACEHOLDER = re.compile(r"(?:\[\s*(?:comment|reason)\s*\]|<\s*(?:comment|reason)\s*>)", re.IGNORECASE)

Verb = Literal["approve", "deny", "status", "help"]


# ---------------------------------------------------------------- signature


def sign(secret: bytes, body: bytes) -> str:
    """The `Authorization` header value Teams sends with `body`."""
    digest = hmac.new(secret, body, hashlib.sha256).digest()
    return "HMAC " + base64.b64encode(digest).decode()


def decode_secret(text: str) -> bytes:
    """The HMAC key from the security token Teams shows (base64). ValueError says what is wrong with it."""
    token = text.strip()
    if not token:
        raise ValueError("the secret is empty")
    try:
        key = base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the secret is not valid base64: paste the security token exactly as Teams showed it"
                         ) from None
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"the secret decodes to {len(key)} bytes, fewer than {MIN_SECRET_BYTES}: it cannot be "
                         "the security token Teams showed")
    return key


def verify_signature(secret: bytes, body: bytes, authorization: str | None) -> None:
    """Raise AuthError(401) unless `authorization` is Teams' HMAC of exactly these body bytes."""
    if not secret:
        raise ValueError("the Teams webhook secret is empty")
    if not authorization or not authorization.strip():
        raise AuthError("missing Authorization header: Teams signs every call with 'HMAC <signature>'",
                        status=401)
    scheme, _, value = authorization.strip().partition(" ")
    malformed = AuthError("malformed Authorization header: expected 'HMAC <base64 HMAC-SHA256 of the body>'",
                          status=401)
    if scheme.lower() != "hmac" or not value.strip():
        raise malformed
    try:
        given = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise malformed from None
    if len(given) != _SIGNATURE_BYTES:
        raise malformed
    expected = hmac.new(secret, body, hashlib.sha256).digest()
    if not hmac.compare_digest(given, expected):
        raise AuthError("the HMAC signature does not match the body: not signed with this webhook's secret",
                        status=401)


# ---------------------------------------------------------------- activity and replay


@dataclass(frozen=True)
class Activity:
    """The parts of a Teams outgoing-webhook activity jitgate acts on."""

    id: str
    timestamp: str
    text: str
    aad_object_id: str
    name: str


def parse_activity(body: bytes) -> Activity:
    """A signed body → its activity. Raises InvalidActivity when it is not a Teams message activity."""
    try:
        doc: Any = parse_json(body, MAX_ACTIVITY_BYTES)
    except MalformedBody as exc:
        raise InvalidActivity(f"the body is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("type") != "message":
        raise InvalidActivity("the body is not a Teams message activity")
    sender = doc.get("from")
    sender = sender if isinstance(sender, dict) else {}
    return Activity(
        id=_string(doc.get("id")),
        timestamp=_string(doc.get("timestamp")),
        text=_string(doc.get("text")),
        aad_object_id=_string(sender.get("aadObjectId")).lower(),
        name=_string(sender.get("name")),
    )


def _string(value: Any) -> str:
    return value if isinstance(value, str) else ""


class InvalidActivity(JitgateError):
    """A correctly signed body that is not a Teams message activity."""


class ReplayGuard:
    """Refuses an activity whose `id` was seen before or whose `timestamp` is more than `max_skew` from now.

    An id is remembered until its timestamp is `max_skew` in the past: from then on the timestamp check
    refuses it anyway, which bounds memory by the traffic of a ten-minute window. Beyond `capacity`
    the id closest to that point is forgotten first.
    """

    def __init__(self, clock: Clock, max_skew: timedelta = MAX_SKEW, capacity: int = 100_000) -> None:
        self._clock = clock
        self._max_skew = max_skew
        self._capacity = capacity
        self._lock = threading.Lock()
        self._forget_at: dict[str, datetime] = {}
        self._queue: list[tuple[datetime, str]] = []

    def check(self, activity_id: str, timestamp: str) -> None:
        """Accept this activity once; raises AuthError(401) for a replay, a stale or a missing timestamp."""
        if not activity_id:
            raise AuthError("the activity has no id, so a replay could not be told apart", status=401)
        at = _instant(timestamp)
        now = self._clock.now()
        if abs(now - at) > self._max_skew:
            raise AuthError(f"the activity timestamp {timestamp} is more than {_minutes(self._max_skew)} "
                            "from now: refused as stale or replayed", status=401)
        with self._lock:
            self._forget(now)
            if activity_id in self._forget_at:
                raise AuthError(f"activity {activity_id[:64]} was already received: refused as a replay",
                                status=401)
            while len(self._forget_at) >= self._capacity and self._queue:
                self._forget_at.pop(heapq.heappop(self._queue)[1], None)
            forget_at = at + self._max_skew
            self._forget_at[activity_id] = forget_at
            heapq.heappush(self._queue, (forget_at, activity_id))

    def __len__(self) -> int:
        return len(self._forget_at)

    def _forget(self, now: datetime) -> None:
        while self._queue and self._queue[0][0] < now:
            self._forget_at.pop(heapq.heappop(self._queue)[1], None)


def _instant(timestamp: str) -> datetime:
    if not timestamp:
        raise AuthError("the activity has no timestamp, so its age cannot be checked", status=401)
    try:
        at = datetime.fromisoformat(timestamp)
    except ValueError:
        raise AuthError(f"the activity timestamp {timestamp[:40]!r} is not ISO 8601", status=401) from None
    if at.tzinfo is None:
        raise AuthError("the activity timestamp has no time zone", status=401)
    return at


def _minutes(delta: timedelta) -> str:
    minutes = delta.total_seconds() / 60
    return f"{minutes:g} minute{'' if minutes == 1 else 's'}"


# ---------------------------------------------------------------- commands


@dataclass(frozen=True)
class TeamsCommand:
    """One parsed chat command. `text` is the comment of an approval or the reason of a denial."""

    verb: Verb
    request_id: str = ""
    text: str = ""


class InvalidCommand(JitgateError):
    """A chat message that is not a command jitgate understands; the message says how to write it."""


def clean_text(text: str) -> str:
    """The words of a Teams message: mentions, HTML tags, entities, non-breaking spaces and invisible format
    characters (zero-width spaces and joiners, byte-order marks, bidirectional marks: Unicode category Cf)
    removed."""
    without_mentions = _MENTION.sub(" ", text)
    plain = html.unescape(_TAG.sub(" ", without_mentions))
    visible = "".join(ch for ch in plain if unicodedata.category(ch) != "Cf")
    return _SPACE.sub(" ", visible.replace("\u00a0", " ")).strip()


def parse_command(text: str) -> TeamsCommand:
    """`approve <id> [comment]`, `deny <id> <reason>`, `status <id>` or `help`; InvalidCommand otherwise."""
    words = clean_text(text).split(" ", 2)
    verb = _VERBS.get(words[0].lower())
    if verb is None:
        raise InvalidCommand(f"I do not know {quoted(words[0], 40)}. {USAGE}")
    if verb == "help":
        return TeamsCommand("help")
    usage = _USAGES[verb]
    if len(words) < 2:
        raise InvalidCommand(f"`{verb}` needs a request id: `{usage}`.")
    request_id = words[1].lower()
    if not is_guid(request_id):
        raise InvalidCommand(f"{quoted(words[1])} is not a request id (a GUID): `{usage}`.")
    # NB. A placeholder copied from the card's line is not a comment or a reason, wherever it was left.
    rest = _SPACE.sub(" ", _PLACEHOLDER.sub(" ", words[2])).strip() if len(words) > 2 else ""
    if len(rest) > MAX_COMMENT:
        what = "reason" if verb == "deny" else "comment"
        raise InvalidCommand(f"the {what} is longer than {MAX_COMMENT} characters")
    if verb == "deny" and not rest:
        raise InvalidCommand("a denial needs a real reason the requester can act on, such as "
                             f"`deny {request_id} change freeze until Monday`.")
    if verb == "status" and rest:
        raise InvalidCommand(f"`status` takes only a request id: `{usage}`.")
    return TeamsCommand(verb, request_id, rest)


_VERBS: dict[str, Verb] = {"approve": "approve", "deny": "deny", "status": "status", "help": "help",
                           "": "help"}
_USAGES: dict[Verb, str] = {"approve": "approve <request id> [comment]", "deny": "deny <request id> <reason>",
                            "status": "status <request id>", "help": "help"}


def help_text(webhook_name: str) -> str:
    """The answer to `help`: every command as it must be typed, after an @mention of the outgoing webhook."""
    commands = ", ".join(f"`@{webhook_name} {usage}`" for usage in _USAGES.values())
    return (f"Start each command with @{webhook_name}: type @{webhook_name} and pick {webhook_name} from the list so "
            f"that it becomes a mention (Teams passes jitgate only the messages that @mention it). Commands: "
            f"{commands}.")


def request_id_named_in(body: bytes) -> str | None:
    """The request id a (possibly forged) webhook body names, for auditing a refusal; None if none."""
    try:
        command = parse_command(parse_activity(body).text)
    except JitgateError:
        return None
    return command.request_id or None


# ---------------------------------------------------------------- building calls and replies


def reply(text: str) -> dict[str, str]:
    """The synchronous answer Teams shows in the thread."""
    return {"type": "message", "text": text}


def status_reply(record: RequestRecord) -> str:
    """`status <id>` answered in words: what was asked, where it stands and, when it ended, why."""
    request = record.request
    what = (
        f"{request.target.role} at {request.target.scope} for {request.requester.display_name}"
        if request is not None else "an invalid request"
    )
    text = f"Request {record.request_id} ({what}) is {state_in_words(record)}."
    reason = reason_in_words(record)
    return f"{text} Reason: {reason}." if reason else text


def outgoing_payload(text: str, aad_object_id: str, name: str, activity_id: str | None = None,
                     timestamp: datetime | None = None) -> bytes:
    """A message activity as a Teams outgoing webhook posts it, for the CLI, the demo and tests.
    The bot is @mentioned first, as Teams requires, unless `text` already mentions someone."""
    at = (timestamp or datetime.now(UTC)).astimezone(UTC)
    millis = f"{at.microsecond // 1000:03d}"
    message_id = activity_id or str(int(at.timestamp() * 1000) * 10**9 + secrets.randbelow(10**9))
    mention = f"<at>{BOT_NAME}</at>"
    full_text = text if "<at>" in text.lower() else f"{mention} {text}"
    tenant = str(uuid.uuid5(uuid.NAMESPACE_DNS, "tenant.jitgate.invalid"))
    channel = f"19:{uuid.uuid5(uuid.NAMESPACE_DNS, 'channel.jitgate.invalid').hex}@thread.skype"
    activity = {
        "type": "message",
        "id": message_id,
        "timestamp": at.strftime("%Y-%m-%dT%H:%M:%S.") + millis + "Z",
        "localTimestamp": at.strftime("%Y-%m-%dT%H:%M:%S.") + millis + "+00:00",
        "serviceUrl": "https://smba.trafficmanager.net/emea/",
        "channelId": "msteams",
        "from": {"id": f"29:{hashlib.sha256(aad_object_id.encode()).hexdigest()[:48]}", "name": name,
                 "aadObjectId": aad_object_id},
        "conversation": {"isGroup": True, "conversationType": "channel", "tenantId": tenant,
                         "id": f"{channel};messageid={message_id}"},
        "recipient": None,
        "textFormat": "plain",
        "locale": "en-US",
        "text": full_text,
        "attachments": [{"contentType": "text/html", "content": f"<div><div>{full_text}</div></div>"}],
        "entities": [
            {"type": "clientInfo", "locale": "en-US", "country": "US", "platform": "Web"},
            {"type": "mention", "text": mention,
             "mentioned": {"id": f"28:{uuid.uuid5(uuid.NAMESPACE_DNS, 'bot.jitgate.invalid')}",
                           "name": BOT_NAME}},
        ],
        "channelData": {"teamsChannelId": channel, "teamsTeamId": channel, "channel": {"id": channel},
                        "team": {"id": channel}, "tenant": {"id": tenant}},
        "replyToId": None,
    }
    return json.dumps(activity, separators=(",", ":")).encode()
