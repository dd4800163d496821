"""The seams between the lifecycle and the outside world. Each port has a local (embedded) adapter,
a hand-written fake for unit tests, and cloud adapters; one contract test suite per port runs against all."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .domain.audit import AuditEvent
    from .domain.errors import LockLost
    from .domain.ledger import Assignment, Grant, GrantKey, Hold
    from .domain.lifecycle import RequestRecord, RequestState


class Clock(Protocol):
    """The one source of 'now' (UTC, timezone-aware)."""

    def now(self) -> datetime: ...


# ---------------------------------------------------------------- bus


@dataclass(frozen=True)
class QueueSettings:
    """Per-queue behaviour, as configured on a Service Bus queue."""

    lock_duration: timedelta = timedelta(seconds=30)
    max_delivery_count: int = 10
    duplicate_window: timedelta = timedelta(minutes=10)


@dataclass(frozen=True)
class ReceivedMessage:
    """A message under a peek-lock: settle it with complete/abandon/dead_letter before `locked_until`."""

    queue: str
    message_id: str
    body: bytes
    sequence_number: int
    delivery_count: int
    enqueued_at: datetime
    lock_token: str
    locked_until: datetime


@dataclass(frozen=True)
class DeadLetter:
    """A message the bus gave up on, with the reason it was dead-lettered."""

    queue: str
    message_id: str
    body: bytes
    sequence_number: int
    delivery_count: int
    reason: str
    description: str
    dead_lettered_at: datetime


class MessageSender(Protocol):
    """What handlers need of the bus: send now, send later, take back a later send."""

    def send(self, queue: str, message_id: str, body: bytes) -> None:
        """Enqueue now. A message id seen within the duplicate-detection window is silently dropped."""

    def schedule(self, queue: str, message_id: str, body: bytes, at: datetime) -> int:
        """Enqueue at `at`; returns the sequence number that cancels it. A duplicate id within the window is
        dropped (the embedded bus returns the first's sequence number; Service Bus a fresh one that cancels
        nothing, so callers must not rely on either)."""

    def cancel_scheduled(self, queue: str, sequence_number: int) -> None:
        """Cancel a scheduled message. Already enqueued, delivered or unknown: not an error."""


class Bus(MessageSender, Protocol):
    """Service Bus semantics: peek-lock, delivery count, dead-letter after max deliveries."""

    def receive(self, queue: str, max_messages: int = 1) -> list[ReceivedMessage]:
        """Lock and return up to `max_messages` due messages (no waiting). Each receive counts a delivery;
        a message whose delivery count would exceed the queue's maximum is dead-lettered instead."""

    def complete(self, message: ReceivedMessage) -> None:
        """Remove the message. Raises LockLost if the lock expired and someone else may have it."""

    def abandon(self, message: ReceivedMessage) -> None:
        """Release the lock now so the message is redelivered."""

    def dead_letter(self, message: ReceivedMessage, reason: str, description: str = "") -> None:
        """Move the message to the queue's dead-letter sub-queue with a reason."""

    def renew_lock(self, message: ReceivedMessage) -> ReceivedMessage:
        """Extend the lock; raises LockLost if it already expired."""

    def dead_letters(self, queue: str) -> list[DeadLetter]:
        """The queue's dead-letter sub-queue, oldest first."""

    def replay_dead_letter(self, queue: str, sequence_number: int) -> None:
        """Send a dead-lettered message back to its queue (fresh delivery count) and drop it from the DLQ."""


@dataclass(frozen=True)
class Settlement:
    """How a handled message is to be settled: completed, abandoned, or dead-lettered with a reason."""

    message: ReceivedMessage
    outcome: Literal["complete", "abandon", "dead_letter"]
    reason: str = ""
    description: str = ""

    def apply(self, bus: Bus) -> None:
        """Settle through the port, one message at a time; LockLost as the port raises it."""
        if self.outcome == "complete":
            bus.complete(self.message)
        elif self.outcome == "abandon":
            bus.abandon(self.message)
        else:
            bus.dead_letter(self.message, self.reason, self.description)


@runtime_checkable
class SettlesTogether(Protocol):
    """A bus that settles several handled messages in one round trip (the embedded bus: one transaction).
    Not a port of its own: what the worker uses where the bus offers it, settling one by one elsewhere."""

    def settle(self, settlements: Sequence[Settlement]) -> list[tuple[Settlement, LockLost]]:
        """Make each settlement whose lock still holds; return those that found their lock lost, with why.
        A lost lock settles nothing of that message and does not stop the others."""


# ---------------------------------------------------------------- store


class RequestStore(Protocol):
    """Request records with optimistic concurrency on `version`. A record and the audit events it emitted
    (`pending_events`) are written together: the stores commit both in one transaction (one transactional batch
    in Cosmos), and hand back the record with an empty outbox. Only a write a store cannot make atomic (too
    large for one Cosmos batch) keeps its events in the record's outbox, for the caller to append."""

    def create_request(self, record: RequestRecord) -> RequestRecord:
        """Insert the record and its pending events; raises AlreadyExists if the id is taken (and writes
        nothing). Returns the stored record (version 1)."""

    def get_request(self, request_id: str) -> RequestRecord | None: ...

    def save_request(self, record: RequestRecord) -> RequestRecord:
        """Write the record and its pending events if the stored version equals `record.version`, else raise
        ConcurrencyConflict and write nothing. Returns the stored record with its version incremented."""

    def requests_in(self, states: set[RequestState], limit: int = 1000) -> list[RequestRecord]:
        """Records in any of the states (for reconcile), oldest update first."""

    def list_requests(self, query: RequestQuery) -> RequestPage:
        """Records in the query's states and of its requester, newest first (by creation); pass `continuation`
        back for the next page. ValueError for a continuation this store did not give."""

    def requests_with_outbox(self, limit: int = 1000) -> list[RequestRecord]:
        """Records whose audit outbox is not empty (written by an earlier jitgate that appended events after
        the record, or too large to batch), oldest update first. Cheap when there are none: reconcile asks on
        every tick."""


@dataclass(frozen=True)
class RequestQuery:
    """A page of request records, newest first. The store narrows by state and requester (both optional); finer
    filters (approver groups, targets) are its caller's (`shared/lifecycle/listing.py`)."""

    states: frozenset[RequestState] | None = None
    requester_id: str | None = None
    limit: int = 100
    continuation: str | None = None


@dataclass(frozen=True)
class RequestPage:
    records: list[RequestRecord]
    continuation: str | None = None  # None: there is nothing after this page


class LedgerStore(Protocol):
    """Grant keys, one document each (`Grant`: its holds, what jitgate asked of the provider, the intent to
    delete its assignment). Every change is a conditional write of the whole document."""

    def get_grant(self, key: GrantKey) -> Grant | None:
        """The key's document at its stored version; None when nothing was ever held on the key."""

    def put_grant(self, grant: Grant) -> Grant:
        """Write the document if the stored version equals `grant.version` (0: the key has no document yet),
        else raise ConcurrencyConflict and write nothing. Returns the stored document, version incremented."""

    def holds_for_request(self, request_id: str) -> list[Hold]:
        """The request's holds still on record (released holds are pruned from busy keys after a while)."""

    def overdue_holds(self, now: datetime) -> list[Hold]:
        """Active holds whose expires_at <= now."""

    def all_active_holds(self, provider: str | None = None) -> list[Hold]:
        """Every active hold, or those of one provider."""


@dataclass(frozen=True)
class AuditQuery:
    """Auditor filters; all optional, combined with AND. `since` inclusive, `until` exclusive."""

    request_id: str | None = None
    principal_id: str | None = None
    type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100
    continuation: str | None = None


@dataclass(frozen=True)
class AuditPage:
    events: list[AuditEvent]
    continuation: str | None = None


class AuditStore(Protocol):
    """Append-only audit events. `principal_id` in a query matches the requester of the request
    or the event's actor."""

    def append(self, event: AuditEvent, principal_id: str | None = None) -> None:
        """Conditional create by event id; raises AlreadyExists when the id is taken.
        `principal_id` is the request's requester, indexed for auditor queries."""

    def chain(self, request_id: str) -> list[AuditEvent]:
        """All events of one request in seq order."""

    def query(self, query: AuditQuery) -> AuditPage:
        """Events matching the filters ordered by (at, id); `continuation` resumes after the last page."""

    def request_ids(self) -> Iterator[str]:
        """Every request id that has at least one event."""


# ---------------------------------------------------------------- grant provider


class GrantProvider(Protocol):
    """A role-assignment control plane with ARM semantics. Errors: TransientError (retry),
    PermanentError (give up), AssignmentExists (same principal/role/scope under another name)."""

    name: str

    def resolve_role(self, scope: str, role: str) -> str:
        """A role name or id → the role definition id (cached by adapters). PermanentError if unknown."""

    def find_assignment(self, key: GrantKey) -> Assignment | None:
        """Any assignment of that principal/role/scope, whatever its name (exact scope, not inherited)."""

    def get_assignment(self, scope: str, name: str) -> Assignment | None: ...

    def create_assignment(
        self,
        key: GrantKey,
        name: str,
        description: str,
        principal_type: str = "User",
        expires_at: datetime | None = None,
    ) -> Assignment:
        """Create under `name`. Same name again for the same grant: returns it, its description updated
        (as an ARM PUT does). The same key under another name: raises AssignmentExists. A principal type
        other than the principal's own: PermanentError (UnmatchedPrincipalType). `expires_at` lets providers that
        can expire grants themselves (PIM, IAM conditions) do so as a second line of defence."""

    def delete_assignment(self, scope: str, name: str) -> None:
        """Delete; a missing assignment is a no-op."""

    def list_marked(self) -> list[Assignment]:
        """Every assignment whose description carries jitgate's marker."""


# ---------------------------------------------------------------- notifier and directory


@dataclass(frozen=True)
class Person:
    """Someone in the directory: an Entra object id and, when the directory knows it, a display name."""

    principal_id: str
    display_name: str = ""


@dataclass(frozen=True)
class Members:
    """The first members of a group (`people`, at most the limit asked for) and how many it has in all."""

    people: tuple[Person, ...]
    total: int


@dataclass(frozen=True)
class Notice:
    """Something people should hear about. Adapters render it (Adaptive Card, console line).

    The lifecycle fills in what happened; `notices.AddressedNotifier` adds who must hear it (`mentions`, and
    how many members of each audience group were left out), how to answer (`answer_to`, the outgoing
    webhook's name) and where to read more (`link`)."""

    # approval_requested break_glass approved denied granted revoked withdrawn expired failed revoke_failed test
    kind: str
    request_id: str
    title: str
    facts: dict[str, str] = field(default_factory=dict)
    reply_hints: list[str] = field(default_factory=list)
    audience: list[str] = field(default_factory=list)  # approver groups, when relevant
    requester: str = ""  # the requester's principal id: never @mentioned, they cannot approve their own request
    mentions: list[Person] = field(default_factory=list)
    unmentioned: dict[str, int] = field(default_factory=dict)  # audience group -> members not @mentioned
    answer_to: str = ""
    link: str = ""


class Notifier(Protocol):
    """Delivers notices to people (Teams, outbox file). Failures raise TransientError."""

    def notify(self, notice: Notice) -> None: ...


class Directory(Protocol):
    """Group membership of principals (policy file locally, Microsoft Graph in Azure)."""

    def groups_of(self, principal_id: str) -> frozenset[str]: ...

    def members_of(self, group: str, limit: int) -> Members:
        """The users in a policy group, nested groups included: the first `limit` and the total. Raises
        PermanentError for a group the directory does not know, TransientError when it cannot answer now."""


class ActivityReader(Protocol):
    """What a principal did during a grant window (AzureActivity, Cloud Audit Logs)."""

    def summarize(
        self, principal_id: str, scope: str, start: datetime, end: datetime
    ) -> dict[str, Any] | None: ...
