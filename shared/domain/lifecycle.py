"""Request states and the one place their transitions are checked (ARCHITECTURE §4)."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from .audit import SYSTEM, Actor, AuditEvent, ChainAnchor, EventType, make_event
from .decision import Decision
from .errors import FieldError, IllegalTransition, InvalidRequest
from .json_body import MalformedBody, parse_json
from .ledger import GrantKey
from .request import AccessRequest, field_errors

# NB. Anyone can provoke an event on someone else's request (a forged webhook call naming it, a body reusing
# its id): once one is written, the same verified caller provokes nothing more for a minute.
PROVOKED_QUIET = timedelta(seconds=60)
PROVOKED_KEPT = 8  # (what, who) pairs a record remembers; the oldest is forgotten first
MAX_COMMAND_BYTES = 4 * 1024  # a command jitgate sends is about 150 bytes


class RequestState(StrEnum):
    RECEIVED = "received"
    PENDING_APPROVAL = "pending_approval"
    APPROVED = "approved"
    ACTIVE = "active"
    REVOKED = "revoked"
    REJECTED = "rejected"
    DENIED = "denied"
    EXPIRED = "expired"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return not _ALLOWED[self]


_ALLOWED: dict[RequestState, frozenset[RequestState]] = {
    # NB. A request the requester withdraws before it is granted ends as revoked: nothing was granted.
    RequestState.RECEIVED: frozenset(
        {RequestState.PENDING_APPROVAL, RequestState.APPROVED, RequestState.REJECTED, RequestState.REVOKED}
    ),
    RequestState.PENDING_APPROVAL: frozenset(
        {RequestState.APPROVED, RequestState.DENIED, RequestState.EXPIRED, RequestState.REVOKED}
    ),
    RequestState.APPROVED: frozenset({RequestState.ACTIVE, RequestState.FAILED, RequestState.REVOKED}),
    RequestState.ACTIVE: frozenset({RequestState.REVOKED}),
    RequestState.REVOKED: frozenset(),
    RequestState.REJECTED: frozenset(),
    RequestState.DENIED: frozenset(),
    RequestState.EXPIRED: frozenset(),
    RequestState.FAILED: frozenset(),
}


def check_transition(current: RequestState, target: RequestState) -> None:
    if target not in _ALLOWED[current]:
        raise IllegalTransition(f"a request cannot go from {current.value} to {target.value}")


class Approval(BaseModel):
    """One approver's yes."""

    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True)

    approver_id: str
    at: datetime
    comment: str = ""


class LifecycleCommand(BaseModel):
    """A message on the lifecycle queue (`grant`, `expire-request`) or on the revocations queue (`revoke`)."""

    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True)

    command: Literal["grant", "revoke", "expire-request"]
    request_id: str
    n: int = Field(default=1, ge=1)
    reason: str = ""

    @classmethod
    def parse(cls, raw: bytes) -> LifecycleCommand:
        """A message body → the command, or InvalidRequest saying why not (read by the guarded JSON parser, like
        every other body jitgate reads: no duplicate keys, nesting, oversize or lone surrogates get through)."""
        try:
            doc = parse_json(raw, MAX_COMMAND_BYTES)
        except MalformedBody as exc:
            raise InvalidRequest([FieldError("body", f"not a lifecycle command: {exc}")]) from None
        if not isinstance(doc, dict):
            raise InvalidRequest([FieldError("body", "not a lifecycle command: it is not a JSON object")])
        try:
            return cls.model_validate(doc, strict=True)
        except ValidationError as exc:
            errors = "; ".join(f"{error.loc}: {error.msg}" for error in field_errors(exc))
            raise InvalidRequest([FieldError("body", f"not a lifecycle command: {errors}")]) from None

    @property
    def message_id(self) -> str:
        return f"{self.command}:{self.request_id}:{self.n}"

    def body(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


class RequestRecord(BaseModel):
    """A request's durable state. Every audit event is born here (see `emit`) so that the state
    write and the event are one atomic write; `pending_events` is the outbox flushed to the audit store."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    request_id: str
    state: RequestState
    version: int = 0
    created_at: datetime
    updated_at: datetime
    request: AccessRequest | None = None
    fingerprint: str | None = None
    errors: list[dict[str, str]] = []
    decision: Decision | None = None
    approvals: list[Approval] = []
    denial: dict[str, Any] | None = None
    approval_deadline: datetime | None = None
    grant_key: GrantKey | None = None
    granted_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    revoke_reason: str | None = None
    revoke_requested_by: Actor | None = None
    revoke_sequence: int | None = None
    # NB. The queue the scheduled revoke waits on: a sequence number cancels only on its own queue. None in a
    # record stored before revokes had a queue of their own: its revoke waits on the lifecycle queue.
    revoke_queue: str | None = None
    revoke_n: int = 0
    failure: str | None = None
    refusals: dict[str, datetime] = {}  # "what|verified caller" -> when it last provoked an event (see `provoked`)
    audit_seq: int = 0
    audit_head: str = ""
    pending_events: list[AuditEvent] = []

    def move_to(self, target: RequestState, at: datetime) -> None:
        check_transition(self.state, target)
        self.state = target
        self.updated_at = at

    def emit(self, type: EventType, at: datetime, data: dict[str, Any], actor: Actor = SYSTEM) -> AuditEvent:
        event = make_event(self.request_id, self.audit_seq, self.audit_head, type, at, actor, data)
        self.audit_seq += 1
        self.audit_head = event.hash
        self.pending_events = [*self.pending_events, event]
        self.updated_at = at
        return event

    def anchor(self) -> ChainAnchor:
        """Where this request's audit chain must end: the last event emitted, or before one still in the outbox."""
        pending = tuple((event.seq, event.prev_hash) for event in self.pending_events)
        return ChainAnchor(self.audit_seq - 1, self.audit_head, pending)

    def provoked(self, key: str, at: datetime) -> bool:
        """Note that `key` ("what|verified caller") provoked an event on this record at `at`; False, and the
        record left exactly as it was, when it already did within the quiet minute."""
        last = self.refusals.get(key)
        if last is not None and at - last < PROVOKED_QUIET:
            return False
        recent = sorted((t, k) for k, t in self.refusals.items() if k != key and at - t < PROVOKED_QUIET)
        self.refusals = {k: t for t, k in recent[-(PROVOKED_KEPT - 1) :]} | {key: at}
        return True

    def approver_ids(self) -> set[str]:
        return {a.approver_id for a in self.approvals}

    def document(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> RequestRecord:
        return cls.model_validate(doc, strict=False)  # stored documents carry enums as plain strings
