"""The whole request lifecycle: evaluate, approve/deny, grant, revoke, expire, reconcile.

Every handler is idempotent under at-least-once delivery: it loads the record, acts only if the
state still calls for it, and writes with optimistic concurrency. Side effects on the provider are
idempotent by construction (deterministic assignment names, delete-missing is a no-op), so a handler
that crashes half way is simply run again. Audit events are born inside the record (`emit`) and
written to the audit store after the record (`_commit`), so no event is lost or doubled.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from .crashpoints import crashpoint
from .domain.audit import SYSTEM, Actor, EventType, format_instant, make_event
from .domain.decision import Decision, Outcome
from .domain.durations import format_duration
from .domain.errors import (
    AlreadyExists,
    AssignmentExists,
    AuthError,
    ConcurrencyConflict,
    FieldError,
    IdempotencyMismatch,
    IllegalTransition,
    InvalidRequest,
    NotFound,
    PermanentError,
    TransientError,
)
from .domain.ledger import Assignment, GrantKey, Hold, HoldStatus, marker_for
from .domain.lifecycle import Approval, LifecycleCommand, RequestRecord, RequestState
from .domain.policy import Policy
from .domain.request import AccessRequest, parse_access_request
from .ports import (
    ActivityReader,
    AuditStore,
    Clock,
    Directory,
    GrantProvider,
    LedgerStore,
    MessageSender,
    Notice,
    Notifier,
    RequestStore,
)
from .text import clause, duration_in_words, instant_in_words, listed, reason_in_words, state_in_words

log = logging.getLogger("jitgate.lifecycle")

T = TypeVar("T")

REFUSAL_QUIET = timedelta(seconds=60)
IN_FLIGHT = timedelta(seconds=5)  # longer than any one handler runs: older half-done work was interrupted
REQUESTS_QUEUE = "access-requests"
LIFECYCLE_QUEUE = "access-lifecycle"


@dataclass
class Backends:
    """Everything the lifecycle talks to, behind ports. Built once per process by `runtime`."""

    requests: RequestStore
    ledger: LedgerStore
    audit: AuditStore
    bus: MessageSender
    providers: Mapping[str, GrantProvider]
    notifier: Notifier
    directory: Directory
    clock: Clock
    policy: Policy
    activity: ActivityReader | None = None
    requests_queue: str = REQUESTS_QUEUE
    lifecycle_queue: str = LIFECYCLE_QUEUE
    sleep: Callable[[float], None] = time.sleep
    provider_attempts: int = 4
    max_backoff: float = 8.0
    verify_attempts: int = 6
    stale_after: timedelta = timedelta(seconds=60)


@dataclass(frozen=True)
class Result:
    """What a handler did, for the caller (HTTP response, Teams reply, CLI line)."""

    request_id: str
    state: RequestState
    message: str


@dataclass
class ReconcileReport:
    """What one reconcile pass changed."""

    revoked: list[str] = field(default_factory=list)
    orphans_removed: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    regranted: list[str] = field(default_factory=list)
    flushed: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


class Lifecycle:
    """The handlers. Each public method is one verb of the access domain."""

    def __init__(self, backends: Backends) -> None:
        self.b = backends

    # ------------------------------------------------------------ intake and evaluation

    def submit(self, raw: bytes) -> Result:
        """HTTP intake: validate, record as received (visible at once through the API), enqueue for
        evaluation. Raises InvalidRequest or IdempotencyMismatch, both already audited."""
        request = self._parse_or_reject(raw)
        known = self.b.requests.get_request(request.request_id) is not None
        record = self._received(request)
        if record.state is RequestState.RECEIVED:
            # Sent again on a repeat too: if the first send was lost, this one evaluates it, and
            # duplicate detection drops it otherwise.
            self.b.bus.send(self.b.requests_queue, request.request_id, raw)
        return Result(record.request_id, record.state, "already received" if known else "queued for evaluation")

    def evaluate(self, raw: bytes) -> Result | None:
        """`access-requests` handler. Invalid input is terminal: rejected, audited, not raised."""
        try:
            request = self._parse_or_reject(raw)
            record = self._received(request)
        except (InvalidRequest, IdempotencyMismatch):
            return None  # terminal: already rejected and audited
        if record.state is not RequestState.RECEIVED:
            self._redrive(record)
            return Result(record.request_id, record.state, "already evaluated")
        return self._retrying(lambda: self._decide(request.request_id))

    def _parse_or_reject(self, raw: bytes) -> AccessRequest:
        try:
            return parse_access_request(raw)
        except InvalidRequest as exc:
            self._record_invalid(exc, raw)
            raise

    def _record_invalid(self, exc: InvalidRequest, raw: bytes) -> None:
        request_id = exc.request_id or ""
        now = self.b.clock.now()
        data = {
            "reason": "invalid request",
            "errors": [e.as_dict() for e in exc.errors],
            "bodyBytes": len(raw),
        }

        def mutate(record: RequestRecord) -> bool:
            if record.state is RequestState.REJECTED and record.errors == data["errors"]:
                return False  # the same invalid message delivered again
            record.emit(EventType.REQUEST_REJECTED, now, data)
            return True

        if self._update(request_id, mutate) is None:
            record = RequestRecord(
                request_id=request_id,
                state=RequestState.REJECTED,
                created_at=now,
                updated_at=now,
                errors=data["errors"],
            )
            record.emit(EventType.REQUEST_REJECTED, now, data)
            try:
                self._create(record)
            except AlreadyExists:
                self._update(request_id, mutate)

    def _received(self, request: AccessRequest) -> RequestRecord:
        """The stored record of this request, created on first sight. Raises IdempotencyMismatch."""
        existing = self.b.requests.get_request(request.request_id)
        if existing is None:
            now = self.b.clock.now()
            record = RequestRecord(
                request_id=request.request_id,
                state=RequestState.RECEIVED,
                created_at=now,
                updated_at=now,
                request=request,
                fingerprint=request.fingerprint(),
            )
            record.emit(
                EventType.REQUEST_RECEIVED,
                now,
                {"request": request.to_json_dict()},
                Actor(principal_id=request.requester.principal_id, kind="user"),
            )
            try:
                return self._create(record)
            except AlreadyExists:
                existing = self._load(request.request_id)
        self._check_same(existing, request)
        return existing

    def _check_same(self, existing: RequestRecord, request: AccessRequest) -> None:
        if existing.fingerprint == request.fingerprint():
            return
        now = self.b.clock.now()
        reason = "requestId reused with a different body"

        def mutate(record: RequestRecord) -> bool:
            record.emit(
                EventType.REQUEST_REJECTED,
                now,
                {"reason": reason, "fingerprint": request.fingerprint(), "state": record.state.value},
            )
            return True

        self._update(existing.request_id, mutate)
        raise IdempotencyMismatch(f"request {existing.request_id}: {reason}")

    def _decide(self, request_id: str) -> Result:
        record = self._load(request_id)
        if record.state is not RequestState.RECEIVED:
            return Result(request_id, record.state, "already evaluated")
        request = self._request_of(record)
        now = self.b.clock.now()
        groups = self.b.directory.groups_of(request.requester.principal_id)
        decision = self.b.policy.evaluate(request, groups, now)
        record.decision = decision
        record.emit(EventType.POLICY_EVALUATED, now, _decision_data(decision))
        if decision.outcome is Outcome.DENY:
            record.move_to(RequestState.REJECTED, now)
            record.failure = "; ".join(decision.reasons)
            record.emit(
                EventType.REQUEST_REJECTED,
                now,
                {"reason": "denied by policy", "rule": decision.rule, "reasons": decision.reasons},
            )
            saved = self._commit(record)
            self._notify(saved, "denied", f"Request denied by policy rule {decision.rule}" if decision.rule
                         else "Request denied by policy: no rule allows this access")
        elif decision.outcome is Outcome.AUTO:
            record.move_to(RequestState.APPROVED, now)
            record.emit(
                EventType.REQUEST_APPROVED,
                now,
                {"by": "policy", "rule": decision.rule, "breakGlass": decision.break_glass},
            )
            saved = self._commit(record)
            self._send_grant(saved)
            if decision.break_glass:
                self._notify(
                    saved,
                    "break_glass",
                    "Break-glass access auto-approved: review after the fact",
                    audience=decision.approver_groups,
                )
        else:
            assert decision.approval_deadline is not None
            record.move_to(RequestState.PENDING_APPROVAL, now)
            record.approval_deadline = now + decision.approval_deadline
            record.emit(
                EventType.APPROVAL_REQUESTED,
                now,
                {
                    "approverGroups": decision.approver_groups,
                    "required": decision.required_approvals,
                    "deadline": format_instant(record.approval_deadline),
                },
            )
            saved = self._commit(record)
            self._redrive(saved)
        return Result(request_id, saved.state, decision.summary())

    def _redrive(self, record: RequestRecord) -> None:
        """Re-issue the follow-up of a state whose follow-up may have been lost in a crash.
        Bus duplicate detection (message ids) keeps this from doubling anything."""
        if record.state is RequestState.APPROVED:
            self._send_grant(record)
        elif record.state is RequestState.PENDING_APPROVAL and record.approval_deadline is not None:
            cmd = LifecycleCommand(command="expire-request", request_id=record.request_id)
            self.b.bus.schedule(self.b.lifecycle_queue, cmd.message_id, cmd.body(), record.approval_deadline)
            decision = record.decision
            self._notify(
                record,
                "approval_requested",
                "Approval needed",
                audience=decision.approver_groups if decision else [],
                hints=[f"approve {record.request_id} [comment]", f"deny {record.request_id} <reason>"],
            )

    # ------------------------------------------------------------ approvals

    def approve(self, request_id: str, approver_id: str, comment: str = "") -> Result:
        """An approver's yes. Raises AuthError if this person may not approve this request."""
        approver_id = approver_id.lower()
        now = self.b.clock.now()
        result: list[Result] = []
        refused: list[str] = []

        def mutate(record: RequestRecord) -> bool:
            result.clear()
            refused.clear()
            if self._refuse(record, approver_id, now, "approve", refused):
                return True
            if approver_id in record.approver_ids():
                result.append(Result(record.request_id, record.state, "your approval is already counted"))
                return False
            record.approvals = [*record.approvals, Approval(approver_id=approver_id, at=now, comment=comment)]
            assert record.decision is not None
            required = record.decision.required_approvals
            record.emit(
                EventType.APPROVAL_RECORDED,
                now,
                {
                    "approver": approver_id,
                    "verdict": "approve",
                    "counted": True,
                    "comment": comment,
                    "approvals": len(record.approvals),
                    "required": required,
                },
                Actor(principal_id=approver_id, kind="user"),
            )
            if len(record.approvals) >= required:
                record.move_to(RequestState.APPROVED, now)
                record.emit(
                    EventType.REQUEST_APPROVED,
                    now,
                    {"by": "approvers", "approvers": sorted(record.approver_ids())},
                )
                result.append(Result(record.request_id, RequestState.APPROVED, "approved; granting now"))
            else:
                result.append(
                    Result(
                        record.request_id,
                        record.state,
                        f"approval {len(record.approvals)} of {required} recorded",
                    )
                )
            return True

        saved = self._decided(request_id, mutate, refused)
        outcome = result[0]
        if outcome.state is RequestState.APPROVED and saved.state is RequestState.APPROVED:
            self._send_grant(saved)
            self._notify(saved, "approved", "Request approved")
        return outcome

    def deny(self, request_id: str, approver_id: str, reason: str) -> Result:
        """An approver's no: terminal for the request."""
        approver_id = approver_id.lower()
        now = self.b.clock.now()
        refused: list[str] = []

        def mutate(record: RequestRecord) -> bool:
            refused.clear()
            if self._refuse(record, approver_id, now, "deny", refused):
                return True
            record.move_to(RequestState.DENIED, now)
            record.denial = {"by": approver_id, "reason": reason, "at": format_instant(now)}
            record.emit(
                EventType.REQUEST_DENIED,
                now,
                {"by": approver_id, "reason": reason},
                Actor(principal_id=approver_id, kind="user"),
            )
            return True

        saved = self._decided(request_id, mutate, refused)
        self._notify(saved, "denied", "Request denied by an approver")
        return Result(request_id, saved.state, "denied")

    def _decided(self, request_id: str, mutate: Callable[[RequestRecord], bool], refused: list[str]) -> RequestRecord:
        """Write an approver's decision; a refusal (already audited by `mutate`) is raised after the write."""
        saved = self._update(request_id, mutate)
        if saved is None:
            raise NotFound(f"no request {request_id}")
        if refused:
            raise AuthError(refused[0])
        return saved

    def _refuse(
        self, record: RequestRecord, approver_id: str, now: datetime, verdict: str, refused: list[str]
    ) -> bool:
        """Record (and audit) why this person may not decide; False when they may."""
        refusal = self._approver_refusal(record, approver_id)
        if not refusal:
            return False
        refused.append(refusal)
        record.emit(
            EventType.APPROVAL_RECORDED,
            now,
            {"approver": approver_id, "verdict": verdict, "counted": False, "refused": refusal},
            Actor(principal_id=approver_id, kind="user"),
        )
        return True

    def _approver_refusal(self, record: RequestRecord, approver_id: str) -> str:
        """Why this person may not decide on this request now ('' when they may)."""
        if record.state is not RequestState.PENDING_APPROVAL:
            return f"the request is {state_in_words(record)}: only a request waiting for approvals can be decided"
        request = self._request_of(record)
        if approver_id == request.requester.principal_id:
            return "you cannot approve or deny your own request"
        decision = record.decision
        allowed = set(decision.approver_groups if decision else [])
        if not allowed & self.b.directory.groups_of(approver_id):
            if len(allowed) == 1:
                return f"you are not in {listed(allowed)}, the approver group of this request"
            return f"you are in none of this request's approver groups: {listed(sorted(allowed))}"
        return ""

    def expire_request(self, request_id: str) -> Result:
        """No decision before the approval deadline: the request expires."""
        now = self.b.clock.now()

        def mutate(record: RequestRecord) -> bool:
            if record.state is not RequestState.PENDING_APPROVAL or record.approval_deadline is None:
                return False
            if now < record.approval_deadline - timedelta(seconds=1):
                return False
            record.move_to(RequestState.EXPIRED, now)
            record.emit(
                EventType.REQUEST_EXPIRED,
                now,
                {"deadline": format_instant(record.approval_deadline), "approvals": len(record.approvals)},
            )
            return True

        before = self._load(request_id)
        saved = self._update(request_id, mutate) or before
        if saved.state is RequestState.EXPIRED and before.state is not RequestState.EXPIRED:
            self._notify(saved, "expired", "Request expired without a decision")
        return Result(request_id, saved.state, saved.state.value)

    # ------------------------------------------------------------ grant

    def _send_grant(self, record: RequestRecord) -> None:
        cmd = LifecycleCommand(command="grant", request_id=record.request_id)
        self.b.bus.send(self.b.lifecycle_queue, cmd.message_id, cmd.body())

    def grant(self, request_id: str, final_attempt: bool = False) -> Result:
        """Apply the role and schedule its revoke. Transient faults raise (the bus redelivers) unless
        this is the final delivery, when the request fails visibly instead of dead-lettering silently."""
        record = self._load(request_id)
        if record.state is RequestState.ACTIVE:
            self._ensure_revoke_scheduled(record)
            return Result(request_id, record.state, "already active")
        if record.state is not RequestState.APPROVED:
            self._release_leftovers(record)
            return Result(request_id, record.state, f"nothing to grant ({record.state.value})")
        request = self._request_of(record)
        provider = self._provider(request.target.provider)
        try:
            role_id = self._call(lambda: provider.resolve_role(request.target.scope, request.target.role))
            key = GrantKey.of(provider.name, request.requester.principal_id, role_id, request.target.scope)
            hold = self._hold(record, key)
            # NB. Its time ran out while jitgate was down, or reconcile already released it: the role
            # must never be handed out again, so the request is closed instead.
            overdue = hold.status != HoldStatus.ACTIVE or hold.expires_at <= self.b.clock.now()
            if not overdue:
                hold = self._apply(provider, key, hold, request)
        except PermanentError as exc:
            return self._fail(request_id, str(exc))
        except TransientError as exc:
            if final_attempt:
                return self._fail(request_id, f"gave up after repeated transient errors: {exc}")
            raise
        if overdue and hold.status != HoldStatus.ACTIVE:
            return self.revoke(request_id, "expired before the grant completed")
        result = self._activate(request_id, key, hold)
        if overdue:
            # The assignment was made before a crash: record that truthfully, then end it now.
            return self.revoke(request_id, "expired")
        return result

    def _hold(self, record: RequestRecord, key: GrantKey) -> Hold:
        # NB. The hold is written before the assignment exists so that a crash right after the
        # provider call still leaves the ledger knowing what to revoke.
        existing = self.b.ledger.get_hold(key, record.request_id)
        if existing is not None:
            return existing
        now = self.b.clock.now()
        request = self._request_of(record)
        hold = Hold.for_key(key, record.request_id, now, now + request.duration, preexisting=False)
        self.b.ledger.put_hold(hold)
        return hold

    def _apply(self, provider: GrantProvider, key: GrantKey, hold: Hold, request: AccessRequest) -> Hold:
        name = key.assignment_name()
        found = self._call(lambda: provider.find_assignment(key))
        preexisting = found is not None and not _ours(found, name)
        if found is not None and not preexisting:
            # NB. Another request holds this key already. Providers that expire grants themselves (PIM)
            # must learn this hold's expiry, or they would end the grant at the earlier request's;
            # for the others creating the same name again is a no-op.
            self._call(lambda: provider.create_assignment(
                key, name, marker_for(request.request_id), request.requester.principal_type.value, hold.expires_at
            ))
        if found is None:
            try:
                self._call(
                    lambda: provider.create_assignment(
                        key,
                        name,
                        marker_for(request.request_id),
                        request.requester.principal_type.value,
                        hold.expires_at,
                    )
                )
            except AssignmentExists as exc:
                log.info("assignment %s exists outside jitgate: hold is preexisting", exc.existing_name)
                preexisting = True
        if preexisting != hold.preexisting:
            hold = hold.model_copy(update={"preexisting": preexisting})
            self.b.ledger.put_hold(hold)
        return hold

    def _activate(self, request_id: str, key: GrantKey, hold: Hold) -> Result:
        now = self.b.clock.now()
        crashpoint("grant.after_provider")
        cmd = LifecycleCommand(command="revoke", request_id=request_id, n=1, reason="expired")
        seq = self.b.bus.schedule(self.b.lifecycle_queue, cmd.message_id, cmd.body(), hold.expires_at)
        crashpoint("grant.after_schedule")

        def mutate(record: RequestRecord) -> bool:
            if record.state is not RequestState.APPROVED:
                return False
            record.move_to(RequestState.ACTIVE, now)
            record.grant_key = key
            record.granted_at = hold.granted_at
            record.expires_at = hold.expires_at
            record.revoke_sequence = seq
            record.revoke_n = 1
            record.emit(
                EventType.GRANT_APPLIED,
                now,
                {
                    **key.as_dict(),
                    "assignmentName": key.assignment_name(),
                    "preexisting": hold.preexisting,
                    "expiresAt": format_instant(hold.expires_at),
                },
            )
            record.emit(EventType.REVOKE_SCHEDULED, now, {"at": format_instant(hold.expires_at), "sequenceNumber": seq})
            return True

        saved = self._update(request_id, mutate)
        assert saved is not None
        if saved.state is RequestState.ACTIVE and saved.revoke_sequence == seq:
            self._notify(saved, "granted", f"Access granted until {instant_in_words(hold.expires_at)}")
        else:
            self._release_leftovers(saved)
        return Result(request_id, saved.state, f"active until {format_instant(hold.expires_at)}")

    def _ensure_revoke_scheduled(self, record: RequestRecord) -> None:
        if record.expires_at is None:
            return
        cmd = LifecycleCommand(command="revoke", request_id=record.request_id, n=1, reason="expired")
        self.b.bus.schedule(self.b.lifecycle_queue, cmd.message_id, cmd.body(), record.expires_at)

    def _fail(self, request_id: str, error: str) -> Result:
        now = self.b.clock.now()

        def mutate(record: RequestRecord) -> bool:
            if record.state is not RequestState.APPROVED:
                return False
            record.move_to(RequestState.FAILED, now)
            record.failure = error
            record.emit(EventType.GRANT_FAILED, now, {"error": error})
            return True

        saved = self._update(request_id, mutate)
        assert saved is not None
        self._release_leftovers(saved)
        if saved.state is RequestState.FAILED:
            self._notify(saved, "failed", "Grant failed")
        return Result(request_id, saved.state, error)

    # ------------------------------------------------------------ revoke

    def request_revoke(self, request_id: str, caller_id: str, is_admin: bool, reason: str = "") -> Result:
        """Early revoke from the API: the requester ("I'm done") or an admin."""
        record = self._load(request_id)
        request = self._request_of(record)
        if not is_admin and caller_id.lower() != request.requester.principal_id:
            raise AuthError("only the requester or an admin may revoke this request")
        if record.state.terminal:
            return Result(request_id, record.state, f"already {record.state.value}")
        kind = "admin" if is_admin and caller_id.lower() != request.requester.principal_id else "early"
        actor = Actor(principal_id=caller_id.lower(), kind="user")
        reason = reason or kind

        def remember(current: RequestRecord) -> bool:
            if current.state.terminal:
                return False
            current.revoke_reason, current.revoke_requested_by = reason, actor
            return True

        # NB. Who asked and why are written first, and the hold made due now, so that if the process
        # dies mid-revoke, reconcile finishes this early revoke in the requester's name.
        saved = self._update(request_id, remember)
        if saved is not None and saved.grant_key is not None:
            hold = self.b.ledger.get_hold(saved.grant_key, request_id)
            now = self.b.clock.now()
            if hold is not None and hold.status == HoldStatus.ACTIVE and hold.expires_at > now:
                self.b.ledger.put_hold(hold.model_copy(update={"expires_at": now}))
        return self.revoke(request_id, reason, actor)

    def revoke(self, request_id: str, reason: str = "expired", actor: Actor = SYSTEM) -> Result:
        """Release this request's hold; delete the assignment only when no other hold remains, then
        confirm it is gone. Safe to run any number of times."""
        record = self._load(request_id)
        if record.state.terminal:
            self._release_leftovers(record)
            return Result(request_id, record.state, f"already {record.state.value}")
        now = self.b.clock.now()
        outcome: dict[str, Any] = {"reason": reason, "by": actor.principal_id}
        if record.state is RequestState.ACTIVE and record.grant_key is not None:
            try:
                outcome |= self._release(record.grant_key, request_id)
            except PermanentError as exc:
                return self._revoke_failed(record, reason, actor, str(exc))
            if record.expires_at is not None:
                outcome["latenessSeconds"] = round((now - record.expires_at).total_seconds(), 3)
            if reason != "expired" and record.revoke_sequence is not None:
                self.b.bus.cancel_scheduled(self.b.lifecycle_queue, record.revoke_sequence)
                outcome["cancelledSequenceNumber"] = record.revoke_sequence
        else:
            outcome["note"] = f"nothing was granted (request was {record.state.value})"
            for hold in self.b.ledger.holds_for_request(request_id):
                if hold.status == HoldStatus.ACTIVE:  # a grant interrupted half way (a crash)
                    outcome |= self._release(hold.key, request_id)
                    outcome["note"] = "the grant was interrupted before it completed; its assignment is removed"

        def mutate(current: RequestRecord) -> bool:
            if current.state.terminal:
                return False
            current.move_to(RequestState.REVOKED, now)
            current.revoked_at = now
            current.revoke_reason = reason
            current.emit(EventType.GRANT_REVOKED, now, outcome, actor)
            return True

        saved = self._update(request_id, mutate)
        assert saved is not None
        if saved.state is RequestState.REVOKED and saved.revoked_at == now:
            self._record_activity(saved)
            self._notify(saved, "revoked", f"Access revoked ({reason})")
        return Result(request_id, saved.state, f"revoked ({reason})")

    def _revoke_failed(self, record: RequestRecord, reason: str, actor: Actor, error: str) -> Result:
        """The provider refused the revoke for good: audit and announce it (once per distinct error),
        keep the request active and its hold due now, so that every reconcile pass retries it."""
        now = self.b.clock.now()
        assert record.grant_key is not None
        hold = self.b.ledger.get_hold(record.grant_key, record.request_id)
        if hold is not None and hold.status is HoldStatus.ACTIVE and hold.expires_at > now:
            self.b.ledger.put_hold(hold.model_copy(update={"expires_at": now}))  # an early revoke
        chain = self.b.audit.chain(record.request_id)
        repeated = bool(chain) and chain[-1].type is EventType.GRANT_REVOKE_FAILED and (
            chain[-1].data.get("error") == error
        )
        data = {"reason": reason, "by": actor.principal_id, "error": error, "retriedBy": "reconcile"}

        def mutate(current: RequestRecord) -> bool:
            if current.state is not RequestState.ACTIVE or repeated:
                return False
            current.revoke_reason = current.revoke_reason or reason
            current.emit(EventType.GRANT_REVOKE_FAILED, now, data, actor)
            return True

        saved = self._update(record.request_id, mutate)
        assert saved is not None
        if saved.state is RequestState.ACTIVE and not repeated:
            self._notify(saved, "revoke_failed", f"Revoke failed ({reason}): {clause(error)}; jitgate keeps retrying")
        return Result(record.request_id, saved.state, f"revoke failed: {error}; reconcile will retry")

    def _release(self, key: GrantKey, request_id: str) -> dict[str, Any]:
        """Release one hold and delete the assignment if it was the last one jitgate created."""
        now = self.b.clock.now()
        hold = self.b.ledger.get_hold(key, request_id)
        if hold is not None and hold.status is HoldStatus.ACTIVE:
            self.b.ledger.put_hold(
                hold.model_copy(update={"status": HoldStatus.RELEASED, "released_at": now})
            )
        remaining = self.b.ledger.active_holds(key)
        preexisting = hold.preexisting if hold is not None else False
        result: dict[str, Any] = {
            "remainingHolds": len(remaining),
            "preexisting": preexisting,
            "assignmentDeleted": False,
        }
        if remaining or preexisting:
            return result
        crashpoint("revoke.after_release")
        name = key.assignment_name()
        try:
            provider = self._provider(key.provider)
            self._call(lambda: provider.delete_assignment(key.scope, name))
            self._verify_gone(provider, key.scope, name)
        except Exception:
            # NB. The assignment may still be there: keep the hold so that reconcile (overdue and
            # terminal-request passes) keeps trying after the bus gives up on this message.
            if hold is not None:
                self.b.ledger.put_hold(hold.model_copy(update={"status": HoldStatus.ACTIVE, "released_at": None}))
            raise
        crashpoint("revoke.after_delete")
        result["assignmentDeleted"] = True
        # NB. A grant for the same key may have put its hold while we deleted; it must not lose
        # its assignment, so re-apply for whoever holds the key now.
        again = self.b.ledger.active_holds(key)
        if again:
            holder = again[0]
            self._call(
                lambda: provider.create_assignment(
                    key, name, marker_for(holder.request_id), "User", holder.expires_at
                )
            )
            result["reappliedFor"] = holder.request_id
        return result

    def _verify_gone(self, provider: GrantProvider, scope: str, name: str) -> None:
        """Read the assignment back after the delete until it is gone, deleting it again between reads;
        every delete is read back. TransientError when it is still there after `verify_attempts` reads."""
        delay = 0.2
        for attempt in range(self.b.verify_attempts):
            if attempt:
                self._call(lambda: provider.delete_assignment(scope, name))
                self.b.sleep(delay)
                delay = min(delay * 2, self.b.max_backoff)
            if self._call(lambda: provider.get_assignment(scope, name)) is None:
                return
        raise TransientError(f"assignment {name} at {scope} still present after delete")

    def _release_leftovers(self, record: RequestRecord) -> None:
        """A request that is no longer active must hold nothing (cleans up after crashes and races)."""
        for hold in self.b.ledger.holds_for_request(record.request_id):
            if hold.status is HoldStatus.ACTIVE:
                self._release(hold.key, record.request_id)

    def _record_activity(self, record: RequestRecord) -> None:
        reader = self.b.activity
        if (
            reader is None
            or record.grant_key is None
            or record.granted_at is None
            or record.revoked_at is None
        ):
            return
        request = self._request_of(record)
        try:
            summary = reader.summarize(
                request.requester.principal_id, record.grant_key.scope, record.granted_at, record.revoked_at
            )
        except (TransientError, PermanentError) as exc:
            summary = {"partial": True, "error": str(exc)}
        if summary is None:
            return
        now = self.b.clock.now()

        def mutate(current: RequestRecord) -> bool:
            current.emit(EventType.ACTIVITY_SUMMARY, now, summary)
            return True

        self._update(record.request_id, mutate)

    def refuse_access(self, request_id: str, caller: Actor, action: str, reason: str) -> bool:
        """Audit a refused API or webhook call against an existing request; False if there is none."""
        now = self.b.clock.now()
        key = f"{caller.principal_id}|{action}|{reason}"

        def mutate(record: RequestRecord) -> bool:
            # NB. Anyone can provoke a refusal (a forged webhook naming this request): the same refusal
            # within a minute is not written again, so nobody can flood a request's chain.
            last = record.refusals.get(key)
            if last is not None and now - last < REFUSAL_QUIET:
                return False
            recent = {k: at for k, at in record.refusals.items() if now - at < REFUSAL_QUIET}
            record.refusals = {**recent, key: now}
            record.emit(EventType.ACCESS_REFUSED, now, {"action": action, "reason": reason}, caller)
            return True

        return self._update(request_id, mutate) is not None

    # ------------------------------------------------------------ lifecycle queue and reconcile

    def handle_command(self, body: bytes, final_attempt: bool = False) -> Result | None:
        """`access-lifecycle` handler."""
        try:
            cmd = LifecycleCommand.model_validate_json(body)
        except ValueError as exc:
            raise InvalidRequest([FieldError("body", f"not a lifecycle command: {exc}")]) from exc
        if cmd.command == "grant":
            return self.grant(cmd.request_id, final_attempt)
        if cmd.command == "revoke":
            return self.revoke(cmd.request_id, cmd.reason or "expired")
        return self.expire_request(cmd.request_id)

    def reconcile(self) -> ReconcileReport:
        """The safety net: revoke overdue holds, remove orphans, expire stale requests, re-drive
        approved requests whose grant message was lost, flush audit events left by a crash."""
        report = ReconcileReport()
        now = self.b.clock.now()
        for hold in self.b.ledger.overdue_holds(now):
            self._guard(report, hold.request_id, partial(self._revoke_hold, hold, report))
        for hold in self.b.ledger.all_active_holds():
            record = self.b.requests.get_request(hold.request_id)
            if record is None or record.state.terminal:
                self._guard(report, hold.request_id, partial(self._revoke_hold, hold, report))
        for record in self.b.requests.requests_in({RequestState.PENDING_APPROVAL}):
            if record.approval_deadline is not None and record.approval_deadline <= now:
                self._guard(report, record.request_id, partial(self._expire_in, record, report))
        for record in self.b.requests.requests_in({RequestState.RECEIVED}):
            if now - record.updated_at >= self.b.stale_after:  # its evaluation message was lost
                self._guard(report, record.request_id, partial(self._reevaluate, record, report))
        for record in self.b.requests.requests_in({RequestState.APPROVED}):
            if now - record.updated_at >= self.b.stale_after:
                self._guard(report, record.request_id, partial(self._regrant, record, report))
        for record in self.b.requests.requests_in({RequestState.ACTIVE}):
            if self._revoke_interrupted(record):
                self._guard(report, record.request_id, partial(self._finish_revoke, record, report))
        for provider in self.b.providers.values():
            self._guard(report, provider.name, partial(self._remove_orphans, provider, report))
        return report

    def _guard(self, report: ReconcileReport, what: str, fn: Callable[[], object]) -> None:
        try:
            fn()
        except (TransientError, PermanentError, ConcurrencyConflict, IllegalTransition) as exc:
            log.warning("reconcile: %s: %s", what, exc)
            report.errors.append(f"{what}: {exc}")
        except Exception as exc:
            # NB. One poisoned request must not stop the pass for every other request.
            log.exception("reconcile: %s failed unexpectedly", what)
            report.errors.append(f"{what}: {type(exc).__name__}: {exc}")

    def _revoke_hold(self, hold: Hold, report: ReconcileReport) -> None:
        record = self.b.requests.get_request(hold.request_id)
        if record is not None and record.state is RequestState.APPROVED:
            # A grant cut short after it made the assignment: grant() records it and ends it at once.
            self.grant(hold.request_id)
        elif record is not None and not record.state.terminal:
            # revoke_reason is set on a live request only by an early revoke that did not finish.
            result = self.revoke(hold.request_id, f"{record.revoke_reason or 'expired'} (reconcile)",
                                 record.revoke_requested_by or SYSTEM)
            if result.state is not RequestState.REVOKED:
                raise PermanentError(result.message)  # reported; the hold is kept for the next pass
        else:
            self._release(hold.key, hold.request_id)
        report.revoked.append(hold.request_id)

    def _revoke_interrupted(self, record: RequestRecord) -> bool:
        """An active request whose hold was released a while ago was stopped half way through its revoke
        (a crash between releasing the hold and writing the state); a revoke still running is not."""
        if record.grant_key is None:
            return False
        hold = self.b.ledger.get_hold(record.grant_key, record.request_id)
        if hold is None:
            return True
        released = hold.status != HoldStatus.ACTIVE
        return released and (hold.released_at is None or self.b.clock.now() - hold.released_at >= IN_FLIGHT)

    def _finish_revoke(self, record: RequestRecord, report: ReconcileReport) -> None:
        now = self.b.clock.now()
        late = record.expires_at is not None and now >= record.expires_at
        reason = "expired" if late else (record.revoke_reason or "early")
        self.revoke(record.request_id, f"{reason} (completed by reconcile)", record.revoke_requested_by or SYSTEM)
        report.revoked.append(record.request_id)

    def _expire_in(self, record: RequestRecord, report: ReconcileReport) -> None:
        if self.expire_request(record.request_id).state is RequestState.EXPIRED:
            report.expired.append(record.request_id)

    def _reevaluate(self, record: RequestRecord, report: ReconcileReport) -> None:
        self._retrying(lambda: self._decide(record.request_id))
        report.regranted.append(record.request_id)

    def _regrant(self, record: RequestRecord, report: ReconcileReport) -> None:
        self.grant(record.request_id)
        report.regranted.append(record.request_id)

    def _remove_orphans(self, provider: GrantProvider, report: ReconcileReport) -> None:
        for assignment in self._call(provider.list_marked):
            if self.b.ledger.active_holds(assignment.key):
                continue
            self._call(partial(provider.delete_assignment, assignment.scope, assignment.name))
            self._verify_gone(provider, assignment.scope, assignment.name)
            report.orphans_removed.append(assignment.name)
            self._audit_orphan(assignment)

    def _audit_orphan(self, assignment: Assignment) -> None:
        now = self.b.clock.now()
        data = {
            **assignment.key.as_dict(),
            "assignmentName": assignment.name,
            "description": assignment.description,
        }
        request_id = assignment.marked_request_id or f"orphan:{assignment.name}"

        def mutate(record: RequestRecord) -> bool:
            record.emit(EventType.RECONCILE_ORPHAN_REMOVED, now, data)
            return True

        if self._update(request_id, mutate) is None:
            # No record (the marker names a request this store never saw): chain the event directly.
            chain = self.b.audit.chain(request_id)
            prev = chain[-1].hash if chain else ""
            event = make_event(
                request_id, len(chain), prev, EventType.RECONCILE_ORPHAN_REMOVED, now, SYSTEM, data
            )
            self.b.audit.append(event, assignment.principal_id)

    # ------------------------------------------------------------ plumbing

    def _load(self, request_id: str) -> RequestRecord:
        record = self.b.requests.get_request(request_id)
        if record is None:
            raise NotFound(f"no request {request_id}")
        return record

    @staticmethod
    def _request_of(record: RequestRecord) -> AccessRequest:
        if record.request is None:
            raise IllegalTransition(f"request {record.request_id} was rejected as invalid; it has no body")
        return record.request

    def _provider(self, name: str) -> GrantProvider:
        try:
            return self.b.providers[name]
        except KeyError:
            raise PermanentError(f"provider {name!r} is not configured in this deployment") from None

    def _create(self, record: RequestRecord) -> RequestRecord:
        saved = self.b.requests.create_request(record)
        return self._flush(saved)

    def _commit(self, record: RequestRecord) -> RequestRecord:
        saved = self.b.requests.save_request(record)
        crashpoint(f"after_state.{saved.state.value}")
        return self._flush(saved)

    def _update(self, request_id: str, mutate: Callable[[RequestRecord], bool]) -> RequestRecord | None:
        """Load, mutate, save with optimistic concurrency; on conflict reload and try again.
        `mutate` returns False when there is nothing to write. None when the record does not exist."""
        for _ in range(8):
            record = self.b.requests.get_request(request_id)
            if record is None:
                return None
            if not mutate(record):
                return self._flush(record) if record.pending_events else record
            try:
                return self._commit(record)
            except ConcurrencyConflict:
                continue
        raise ConcurrencyConflict(f"request {request_id}: too many concurrent writers")

    def _retrying(self, fn: Callable[[], T]) -> T:
        for _ in range(7):
            try:
                return fn()
            except ConcurrencyConflict:
                continue
        return fn()

    def _flush(self, record: RequestRecord) -> RequestRecord:
        """Write the record's outbox of audit events to the audit store, then clear it."""
        if not record.pending_events:
            return record
        principal = record.request.requester.principal_id if record.request else None
        try:
            for event in record.pending_events:
                # An earlier delivery may have appended it and crashed before clearing the outbox.
                with contextlib.suppress(AlreadyExists):
                    self.b.audit.append(event, principal)
        except TransientError as exc:
            # NB. The transition is committed and its events are safe in the record's outbox: the next
            # write of this record or reconcile's flush_pending appends them. Raising here would only make
            # the redelivered handler find the work done and skip what follows (the notification).
            log.warning("audit outbox of %s not flushed yet: %s", record.request_id, exc)
            return record
        record.pending_events = []
        try:
            return self.b.requests.save_request(record)
        except (ConcurrencyConflict, TransientError):
            return record  # whoever won, or the next flush, clears the same outbox idempotently

    def flush_pending(self) -> int:
        """Flush outboxes left by crashed handlers (reconcile and startup call this)."""
        count = 0
        for record in self.b.requests.requests_with_outbox():
            count += len(record.pending_events)
            self._flush(record)
        return count

    def _call(self, fn: Callable[[], T]) -> T:
        """Provider calls: retry transient faults with backoff, honouring retry-after."""
        delay = 0.5
        for attempt in range(self.b.provider_attempts):
            try:
                return fn()
            except TransientError as exc:
                if attempt == self.b.provider_attempts - 1:
                    raise
                wait = min(exc.retry_after if exc.retry_after is not None else delay, self.b.max_backoff)
                log.info("transient provider error (%s); retrying in %.1fs", exc, wait)
                self.b.sleep(wait)
                delay = min(delay * 2, self.b.max_backoff)
        raise AssertionError("unreachable")

    def _notify(
        self,
        record: RequestRecord,
        kind: str,
        title: str,
        audience: list[str] | None = None,
        hints: list[str] | None = None,
    ) -> None:
        try:
            self.b.notifier.notify(
                Notice(
                    kind=kind,
                    request_id=record.request_id,
                    title=title,
                    facts=_facts(record),
                    reply_hints=hints or [],
                    audience=audience or [],
                )
            )
        except TransientError as exc:
            # NB. A lost notification must not undo a committed transition; the audit trail has it.
            log.warning("notification %s for %s failed: %s", kind, record.request_id, exc)
        except Exception:
            # Nor may a notifier that breaks its port contract (403 from a disabled webhook, a bug).
            log.exception("notification %s for %s failed", kind, record.request_id)


def _ours(assignment: Assignment, name: str) -> bool:
    return assignment.name == name or assignment.marked_request_id is not None




def _decision_data(decision: Decision) -> dict[str, Any]:
    return {
        "outcome": decision.outcome.value,
        "rule": decision.rule,
        "reasons": decision.reasons,
        "requiredApprovals": decision.required_approvals,
        "approverGroups": decision.approver_groups,
        "maxDuration": format_duration(decision.max_duration) if decision.max_duration else None,
        "breakGlass": decision.break_glass,
    }


def _facts(record: RequestRecord) -> dict[str, str]:
    # NB. Words for people (the card shows the request id once, above the facts); the audit events keep ISO 8601.
    facts = {"State": state_in_words(record)}
    if record.request is not None:
        r = record.request
        facts |= {
            "Requester": f"{r.requester.display_name} ({r.requester.principal_id})",
            "Target": f"{r.target.role} at {r.target.scope} ({r.target.provider.value})",
            "Duration": duration_in_words(r.duration),
            "Justification": r.justification,
        }
        if r.ticket:
            facts["Ticket"] = r.ticket
    if record.decision is not None and record.decision.rule:
        facts["Rule"] = record.decision.rule
    if record.decision is not None and record.decision.required_approvals:
        facts["Approvals"] = f"{len(record.approvals)} of {record.decision.required_approvals}"
    reason = reason_in_words(record)
    if reason:
        facts["Reason"] = reason
    return facts
