"""Audit events and the per-request hash chain (ARCHITECTURE §6)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer
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
        if event.request_id != request_id:
            return ChainReport(request_id, count, False, event.seq, "event belongs to another request")
        if event.seq != expected_seq:
            return ChainReport(request_id, count, False, expected_seq, f"seq {expected_seq} is missing")
        if event.id != event_id(request_id, event.seq):
            return ChainReport(request_id, count, False, event.seq, "id does not match requestId and seq")
        if event.prev_hash != prev:
            return ChainReport(
                request_id, count, False, event.seq, "prevHash does not match the previous event"
            )
        if event.computed_hash() != event.hash:
            return ChainReport(request_id, count, False, event.seq, "hash does not match the event's content")
        prev = event.hash
    return ChainReport(request_id, count, True)
