"""Audit events and the per-request hash chain (ARCHITECTURE §6)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer
from pydantic.alias_generators import to_camel


class EventType(StrEnum):
    REQUEST_RECEIVED = "request.received"
    REQUEST_REJECTED = "request.rejected"
    POLICY_EVALUATED = "policy.evaluated"
    APPROVAL_REQUESTED = "approval.requested"
    APPROVAL_RECORDED = "approval.recorded"
    REQUEST_APPROVED = "request.approved"
    REQUEST_DENIED = "request.denied"
    REQUEST_EXPIRED = "request.expired"
    GRANT_APPLIED = "grant.applied"
    GRANT_FAILED = "grant.failed"
    REVOKE_SCHEDULED = "revoke.scheduled"
    GRANT_REVOKED = "grant.revoked"
    GRANT_REVOKE_FAILED = "grant.revoke_failed"
    RECONCILE_ORPHAN_REMOVED = "reconcile.orphan_removed"
    ACTIVITY_SUMMARY = "activity.summary"
    # NB. Not in the original contract: every 401/403 must be audited where a request id is known,
    # and none of the types above means "someone was refused". See docs/architecture.md.
    ACCESS_REFUSED = "access.refused"


class Actor(BaseModel):
    """Who caused an event: a person, a calling service, or jitgate itself."""

    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True)

    principal_id: str
    kind: Literal["user", "service", "system"]


SYSTEM = Actor(principal_id="jitgate", kind="system")


def format_instant(value: datetime) -> str:
    """The one textual form of a timestamp in events and records: UTC, microseconds, `Z`."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_id(request_id: str, seq: int) -> str:
    return f"{request_id}:{seq:06d}"


class AuditEvent(BaseModel):
    """One immutable audit document; `hash` covers every other field."""

    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True)

    id: str
    request_id: str
    seq: int = Field(ge=0)
    type: EventType
    at: datetime
    actor: Actor
    data: dict[str, Any]
    prev_hash: str
    hash: str

    @field_serializer("at")
    def _at(self, value: datetime) -> str:
        return format_instant(value)

    def document(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def computed_hash(self) -> str:
        body = self.document()
        body.pop("hash")
        return hash_of(body)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def hash_of(body: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def make_event(
    request_id: str,
    seq: int,
    prev_hash: str,
    type: EventType,
    at: datetime,
    actor: Actor,
    data: dict[str, Any],
) -> AuditEvent:
    """Build the next link of a chain with its hash."""
    # NB. Round-trip data through JSON first so the hash is computed over exactly what is stored.
    unsigned = AuditEvent(
        id=event_id(request_id, seq),
        request_id=request_id,
        seq=seq,
        type=type,
        at=at.astimezone(UTC),
        actor=actor,
        data=json.loads(canonical_json(data)),
        prev_hash=prev_hash,
        hash="",
    )
    return unsigned.model_copy(update={"hash": unsigned.computed_hash()})


@dataclass(frozen=True)
class ChainReport:
    """The outcome of verifying one request's chain; `broken_seq` names the first bad link."""

    request_id: str
    events: int
    ok: bool
    broken_seq: int | None = None
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "requestId": self.request_id,
            "events": self.events,
            "ok": self.ok,
            "brokenSeq": self.broken_seq,
            "reason": self.reason,
        }


def verify_chain(request_id: str, events: Iterable[AuditEvent]) -> ChainReport:
    """Recompute every hash and link of one request's chain, in seq order."""
    prev = ""
    count = 0
    for expected_seq, event in enumerate(events):
        count += 1
        broken = _broken_link(request_id, event, expected_seq, prev)
        if broken is not None:
            return ChainReport(request_id, count, False, *broken)
        prev = event.hash
    return ChainReport(request_id, count, True)


def _broken_link(request_id: str, event: AuditEvent, expected_seq: int, prev: str) -> tuple[int, str] | None:
    """(seq, reason) of what is wrong with this link of the chain, or None when it holds."""
    if event.request_id != request_id:
        return event.seq, "event belongs to another request"
    if event.seq != expected_seq:
        return expected_seq, f"seq {expected_seq} is missing"
    if event.id != event_id(request_id, event.seq):
        return event.seq, "id does not match requestId and seq"
    if event.prev_hash != prev:
        return event.seq, "prevHash does not match the previous event"
    if event.computed_hash() != event.hash:
        return event.seq, "hash does not match the event's content"
    return None


# ---------------------------------------------------------------- verifying stored documents

# The end of an event's canonical JSON from its "hash" member on: the members after "hash" in key order.
# Strings without quotes or backslashes only, so a match cannot start or end inside a string.
_CANONICAL_TAIL = re.compile(
    r',"hash":"([0-9a-f]{64})"'
    r'(,"id":"[^"\\]*","prevHash":"([0-9a-f]{64}|)","requestId":"([^"\\]*)","seq":(0|[1-9][0-9]*),'
    r'"type":"[^"\\]*"})'
)


def verify_chain_documents(request_id: str, documents: Iterable[str]) -> ChainReport:
    """`verify_chain` over the stored JSON documents of one chain, in seq order: the same report, faster.

    A document stored as canonical JSON (as `SqliteStore` writes it) whose links hold is verified from its
    text: the canonical JSON of the event without `hash` is the text with the `"hash"` member cut out, so
    no model is built and nothing is re-serialised. Any other document (another key order or spacing, a
    broken link, a hash that does not match) goes through `AuditEvent` and the checks of `verify_chain`.
    A document that is not an audit event at all is a broken link rather than an exception."""
    prev = ""
    count = 0
    for expected_seq, text in enumerate(documents):
        count += 1
        digest = _verified_from_text(text, request_id, expected_seq, prev)
        if digest is not None:
            prev = digest
            continue
        try:
            event = AuditEvent.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "document"
            return ChainReport(
                request_id, count, False, expected_seq, f"not an audit event ({where}: {first['msg']})"
            )
        broken = _broken_link(request_id, event, expected_seq, prev)
        if broken is not None:
            return ChainReport(request_id, count, False, *broken)
        prev = event.hash
    return ChainReport(request_id, count, True)


def _verified_from_text(text: str, request_id: str, expected_seq: int, prev: str) -> str | None:
    """The event's hash if its canonical text links and hashes correctly; None when that cannot be shown
    from the text (which does not mean it is broken).

    NB. Why a cut is enough: hashes are only ever taken over canonical JSON of an event without `hash`.
    If the text with the member cut out hashes to the digest, it is such a canonical text, of a body
    whose last members are exactly the tail matched here; the cut member therefore sat at the top level,
    and the document is that body plus its `hash`."""
    at = text.rfind(',"hash":"')
    found = _CANONICAL_TAIL.fullmatch(text, at) if at > 0 else None
    if (
        found is None
        or found[3] != prev
        or found[4] != request_id
        or int(found[5]) != expected_seq
        or not found[2].startswith(f',"id":"{event_id(request_id, expected_seq)}",')
    ):
        return None
    digest = found[1]
    cut = hashlib.sha256(text[:at].encode())
    cut.update(found[2].encode())
    return digest if cut.hexdigest() == digest else None
