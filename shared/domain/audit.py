"""Audit events and the per-request hash chain (ARCHITECTURE §6)."""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer
from pydantic.alias_generators import to_camel

from .recent import Recent


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
    GRANT_EXTENDED = "grant.extended"
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
    # NB. A handling writes the same few instants again and again (now, the grant's start and end: 31 texts a
    # lifecycle, 9 distinct). Equal aware datetimes are one instant, whatever their zones, so one text serves them;
    # a naive one is read in the process's zone, which can change, and is not remembered.
    return _formatted(value) if value.tzinfo is not None else _format(value)


def _format(value: datetime) -> str:
    utc = value.astimezone(UTC)
    if utc.year < 1000:  # NB. strftime writes such a year unpadded ("999-"), isoformat pads it: keep the old text
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"  # the same text, 3x faster


_formatted = functools.lru_cache(maxsize=1024)(_format)


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


# NB. One encoder for every canonical text: `json.dumps` with these options builds the same encoder on each call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
# What a non-finite number is written as by `json`; pydantic's JSON mode writes it as null (see `make_event`).
_NON_FINITE = ("NaN", "Infinity")


def canonical_json(value: Any) -> str:
    return _CANONICAL.encode(value)


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
    data_text = canonical_json(data)
    fields: dict[str, Any] = {
        "id": event_id(request_id, seq), "request_id": request_id, "seq": seq, "type": EventType(type),
        "at": at.astimezone(UTC), "actor": actor, "data": json.loads(data_text), "prev_hash": prev_hash,
    }
    if any(word in data_text for word in _NON_FINITE):
        # A non-finite number (or a string naming one): the document as pydantic writes it, null for the number.
        head, tail = _halves(AuditEvent(**fields, hash="").document())
    else:
        # NB. The canonical text of the document, built from plain values rather than by dumping the model: the
        # members that sort before "hash", then those after it (pinned against `document()` by
        # tests/unit/test_audit_canonical.py).
        head = _CANONICAL.encode({"actor": {"principalId": actor.principal_id, "kind": actor.kind},
                                  "at": format_instant(fields["at"]), "data": fields["data"]})
        tail = _CANONICAL.encode({"id": fields["id"], "prevHash": prev_hash, "requestId": request_id, "seq": seq,
                                  "type": fields["type"].value})
    digest = hashlib.sha256(f"{head[:-1]},{tail[1:]}".encode()).hexdigest()
    event = AuditEvent(**fields, hash=digest)
    _made.remember(event, f'{head[:-1]},"hash":"{digest}",{tail[1:]}')
    return event


def _halves(document: dict[str, Any]) -> tuple[str, str]:
    """The canonical texts of an event document's members that sort before "hash" and of those after it."""
    return (canonical_json({k: v for k, v in document.items() if k < "hash"}),
            canonical_json({k: v for k, v in document.items() if k > "hash"}))


def canonical_document(event: AuditEvent) -> str:
    """The event's document as canonical JSON: the form it is stored in, and the one its hash is taken over."""
    document = _made.take(event)
    return canonical_json(event.document()) if document is None else document


class _MadeEvents:
    """The canonical document (text) of each event `make_event` built lately, kept with the event itself.

    NB. `make_event` builds the event's document to hash it; a store that writes the document would build it
    again. An event is frozen, so the document stays its own as long as the event is that very object: a copy
    (say, `model_copy(update=...)` of a tampering test) is another object and is dumped afresh. Nobody else holds
    the document, so nobody changes it. Each is handed out once (an event is written once); the `size` most recent
    are kept, so a store that never asks (Cosmos writes the model) costs a dictionary entry per event.
    """

    def __init__(self, size: int) -> None:
        self._documents: Recent[int, tuple[AuditEvent, str]] = Recent(size)

    def remember(self, event: AuditEvent, document: str) -> None:
        self._documents.put(id(event), (event, document))

    def take(self, event: AuditEvent) -> str | None:
        found = self._documents.pop(id(event))
        return None if found is None else found[1]


_made = _MadeEvents(4096)


@dataclass(frozen=True)
class ChainAnchor:
    """Where a request's record says its chain ends, so that the chain's tail can be checked: a hash chain
    alone cannot show its last event rewritten (with a recomputed hash) or its last events cut off.

    `last_seq` and `head` are the seq and hash of the last event the record emitted (-1 and "" for none);
    `pending` holds the (seq, prevHash) of each emitted event still in the record's outbox, which a handler
    that died between its state write and its audit append leaves there for reconcile to write."""

    last_seq: int
    head: str
    pending: tuple[tuple[int, str], ...] = ()

    def problem(self, last_seq: int, last_hash: str) -> tuple[int, str] | None:
        """(seq, reason) when a verified chain ending at `last_seq` with `last_hash` is not the chain this
        anchor describes; None when it is, or when it ends just before an event still in the outbox."""
        ends = {self.last_seq: self.head} | {seq - 1: prev for seq, prev in self.pending}
        if ends.get(last_seq) == last_hash:
            return None
        expected = (f"its request record expects seq {self.last_seq} with head {self.head[:12]}…"
                    if self.last_seq >= 0 else "its request record expects no events")
        if self.pending:
            first = min(seq for seq, _ in self.pending)
            expected += f" (seq {first} to {self.last_seq} may not be written yet: they are in its outbox)"
        if last_seq < 0:
            return 0, f"the chain has no events but {expected}"
        if last_seq in ends:
            return last_seq, f"the chain ends at seq {last_seq} with hash {last_hash[:12]}… but {expected}"
        broken = last_seq + 1 if last_seq < self.last_seq else self.last_seq + 1
        return broken, f"the chain ends at seq {last_seq} but {expected}"


@dataclass(frozen=True)
class ChainReport:
    """The outcome of verifying one request's chain; `broken_seq` names the first bad link. `anchored` says
    whether its end was compared with its request record (a chain with no record cannot be)."""

    request_id: str
    events: int
    ok: bool
    broken_seq: int | None = None
    reason: str = ""
    anchored: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "requestId": self.request_id,
            "events": self.events,
            "ok": self.ok,
            "brokenSeq": self.broken_seq,
            "brokenEventId": None if self.broken_seq is None else event_id(self.request_id, self.broken_seq),
            "reason": self.reason,
            "anchored": self.anchored,
        }


UNANCHORED_LISTED = 20


def verification(reports: Iterable[ChainReport]) -> dict[str, Any]:
    """What `GET /api/audit/verify` and `jitgate audit verify` answer about these chains: counts, every broken
    chain, and the chains that have no request record to anchor their end (the first UNANCHORED_LISTED)."""
    chains = events = unanchored = 0
    broken: list[dict[str, Any]] = []
    unanchored_ids: list[str] = []
    for report in reports:
        chains += 1
        events += report.events
        if not report.ok:
            broken.append(report.as_dict())
        if not report.anchored:
            unanchored += 1
            if len(unanchored_ids) < UNANCHORED_LISTED:
                unanchored_ids.append(report.request_id)
    return {"ok": not broken, "chains": chains, "events": events, "broken": broken,
            "unanchored": unanchored, "unanchoredRequestIds": unanchored_ids}


def verify_chain(request_id: str, events: Iterable[AuditEvent], anchor: ChainAnchor | None = None) -> ChainReport:
    """Recompute every hash and link of one request's chain, in seq order, and compare its end with `anchor`
    (from the request's record) when there is one."""
    prev = ""
    count = 0
    for expected_seq, event in enumerate(events):
        count += 1
        broken = _broken_link(request_id, event, expected_seq, prev)
        if broken is not None:
            return ChainReport(request_id, count, False, *broken, anchored=anchor is not None)
        prev = event.hash
    return _anchored(request_id, count, prev, anchor)


def _anchored(request_id: str, count: int, last_hash: str, anchor: ChainAnchor | None) -> ChainReport:
    """The report on a chain of `count` events whose links all hold, its end checked against `anchor`."""
    problem = None if anchor is None else anchor.problem(count - 1, last_hash)
    if problem is not None:
        return ChainReport(request_id, count, False, *problem, anchored=True)
    return ChainReport(request_id, count, True, anchored=anchor is not None)


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


def settled(verify: Callable[[], ChainReport], attempts: int = 3) -> ChainReport:
    """`verify()`, run again while it fails, up to `attempts` times in all.

    NB. The record and the chain are two reads: a handler that writes the request between them (a new event
    emitted and appended) makes a sound chain look longer or shorter than its record says. Tampering stays
    when read again; such a race does not."""
    report = verify()
    for _ in range(attempts - 1):
        if report.ok:
            break
        report = verify()
    return report


# ---------------------------------------------------------------- verifying stored documents

# The end of an event's canonical JSON from its "hash" member on: the members after "hash" in key order.
# Strings without quotes or backslashes only, so a match cannot start or end inside a string.
_CANONICAL_TAIL = re.compile(
    r',"hash":"([0-9a-f]{64})"'
    r'(,"id":"[^"\\]*","prevHash":"([0-9a-f]{64}|)","requestId":"([^"\\]*)","seq":(0|[1-9][0-9]*),'
    r'"type":"[^"\\]*"})'
)


def verify_chain_documents(request_id: str, documents: Iterable[str], anchor: ChainAnchor | None = None) -> ChainReport:
    """`verify_chain` over the stored JSON documents of one chain, in seq order: the same report, faster.

    A document stored as canonical JSON (as `SqliteStore` writes it) whose links hold is verified from its
    text: the canonical JSON of the event without `hash` is the text with the `"hash"` member cut out, so
    no model is built and nothing is re-serialised. Any other document (another key order or spacing, a
    broken link, a hash that does not match) goes through `AuditEvent` and the checks of `verify_chain`.
    A document that is not an audit event at all is a broken link rather than an exception. The chain's end is
    compared with `anchor` as `verify_chain` does."""
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
            return ChainReport(request_id, count, False, expected_seq,
                               f"not an audit event ({where}: {first['msg']})", anchored=anchor is not None)
        broken = _broken_link(request_id, event, expected_seq, prev)
        if broken is not None:
            return ChainReport(request_id, count, False, *broken, anchored=anchor is not None)
        prev = event.hash
    return _anchored(request_id, count, prev, anchor)


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
