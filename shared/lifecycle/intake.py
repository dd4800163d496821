"""Access requests coming in: validate, record as received, evaluate against the policy, and hand the
request on to its approvers or straight to the grant. Invalid bodies and reused ids are rejected and audited."""

from __future__ import annotations

import contextlib
from typing import Any

from ..domain.audit import SYSTEM, Actor, EventType, format_instant
from ..domain.decision import Decision, Outcome
from ..domain.durations import format_duration
from ..domain.errors import AlreadyExists, IdempotencyMismatch, InvalidRequest
from ..domain.lifecycle import LifecycleCommand, RequestRecord, RequestState
from ..domain.recent import Recent
from ..domain.request import AccessRequest, parse_access_request
from .backends import Backends, Result
from .notices import Notices
from .records import Records, request_of


class Intake:
    """`submit` (HTTP) and `evaluate` (the `access-requests` queue), and the policy decision they lead to."""

    def __init__(self, backends: Backends, records: Records, notices: Notices) -> None:
        self.b = backends
        self.records = records
        self.notices = notices
        self._parsed = ParsedBodies(4096)

    def submit(self, raw: bytes, submitted_by: Actor | None = None) -> Result:
        """HTTP intake: validate, record as received (visible at once through the API), enqueue for
        evaluation. Raises InvalidRequest or IdempotencyMismatch, both already audited in the name of
        `submitted_by`, the verified caller."""
        request = self._parse_or_reject(raw, submitted_by)
        fingerprint = request.fingerprint()
        existing = self.b.requests.get_request(request.request_id)
        record = self._received(request, fingerprint, submitted_by, existing)
        if record.state is RequestState.RECEIVED:
            # Sent again on a repeat too: if the first send was lost, this one evaluates it, and
            # duplicate detection drops it otherwise.
            self._parsed.remember(raw, request, fingerprint)
            self.b.bus.send(self.b.requests_queue, request.request_id, raw)
        return Result(record.request_id, record.state,
                      "already received" if existing is not None else "queued for evaluation")

    def evaluate(self, raw: bytes) -> Result | None:
        """`access-requests` handler. Invalid input is terminal: rejected, audited, not raised."""
        try:
            known = self._parsed.get(raw)
            request = known[0] if known is not None else self._parse_or_reject(raw, None)
            fingerprint = known[1] if known is not None else request.fingerprint()
            existing = self.b.requests.get_request(request.request_id)
            if existing is None:
                decided = self._first_sight(request, fingerprint)
                if decided is not None:
                    return decided
            record = self._received(request, fingerprint, None, existing)
        except (InvalidRequest, IdempotencyMismatch):
            return None  # terminal: already rejected and audited
        if record.state is not RequestState.RECEIVED:
            self._redrive(record)
            return Result(record.request_id, record.state, "already evaluated")
        # NB. The first try decides on the record just read; a commit that loses to another writer reads again.
        handed = [record]
        return self.records.retrying(lambda: self.decide(request.request_id, handed.pop() if handed else None))

    def _first_sight(self, request: AccessRequest, fingerprint: str) -> Result | None:
        """A request seen for the first time on the queue: recorded already evaluated, in one write with all its
        events (received, evaluated, and its outcome). If the evaluation cannot be made now (the directory is
        down) it is recorded as received, as before, and the error raised: the bus delivers it again. None when
        another writer recorded it first: the caller goes on as for a request already known."""
        record = self._new_record(request, fingerprint)
        try:
            decision = self._decision(record)
        except Exception:
            with contextlib.suppress(AlreadyExists):
                self.records.create(record)
            raise
        self._apply(record, decision)
        try:
            saved = self.records.create(record)
        except AlreadyExists:
            return None
        return self._follow_up(saved, decision)

    def decide(self, request_id: str, loaded: RequestRecord | None = None) -> Result:
        """Evaluate a received request against the policy: reject it, approve it, or ask approvers. `loaded` is
        the record the caller read and hands over (None: it is loaded here)."""
        record = self.records.load(request_id) if loaded is None else self.records.flushed(loaded)
        if record.state is not RequestState.RECEIVED:
            return Result(request_id, record.state, "already evaluated")
        decision = self._decision(record)
        self._apply(record, decision)
        return self._follow_up(self.records.commit(record), decision)

    def _decision(self, record: RequestRecord) -> Decision:
        """What the policy says of a received record, with the requester's groups as they are now."""
        request = request_of(record)
        groups = self.b.directory.groups_of(request.requester.principal_id)
        return self.b.policy.evaluate(request, groups, self.b.clock.now())

    def _apply(self, record: RequestRecord, decision: Decision) -> None:
        """Move a received record to the state `decision` leads to, with its events."""
        now = self.b.clock.now()
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
        elif decision.outcome is Outcome.AUTO:
            record.move_to(RequestState.APPROVED, now)
            record.emit(
                EventType.REQUEST_APPROVED,
                now,
                {"by": "policy", "rule": decision.rule, "breakGlass": decision.break_glass},
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

    def _follow_up(self, saved: RequestRecord, decision: Decision) -> Result:
        """What follows a decision once it is recorded: the denial told, the grant sent, or the approvers asked."""
        if decision.outcome is Outcome.DENY:
            self.notices.notify(saved, "denied", f"Request denied by policy rule {decision.rule}" if decision.rule
                                else "Request denied by policy: no rule allows this access")
        elif decision.outcome is Outcome.AUTO:
            self.b.send_command(LifecycleCommand(command="grant", request_id=saved.request_id))
            if decision.break_glass:
                self.notices.notify(
                    saved,
                    "break_glass",
                    "Break-glass access auto-approved: review after the fact",
                    audience=decision.approver_groups,
                )
        else:
            self._redrive(saved)
        return Result(saved.request_id, saved.state, decision.summary())

    def _parse_or_reject(self, raw: bytes, submitted_by: Actor | None) -> AccessRequest:
        try:
            return parse_access_request(raw)
        except InvalidRequest as exc:
            self._record_invalid(exc, raw, submitted_by)
            raise

    def _record_invalid(self, exc: InvalidRequest, raw: bytes, submitted_by: Actor | None) -> None:
        request_id = exc.request_id or ""
        now = self.b.clock.now()
        data = {
            "reason": "invalid request",
            "errors": [e.as_dict() for e in exc.errors],
            "bodyBytes": len(raw),
        }
        # NB. Nothing in an invalid body can be trusted: over HTTP the caller is named, on the queue jitgate.
        actor = submitted_by or SYSTEM

        def mutate(record: RequestRecord) -> bool:
            if record.state is RequestState.REJECTED and record.errors == data["errors"]:
                return False  # the same invalid message delivered again
            if not record.provoked(_rejected_key(submitted_by), now):
                return False  # this sender had a body rejected on this request within the minute
            record.emit(EventType.REQUEST_REJECTED, now, data, actor)
            return True

        if self.records.update(request_id, mutate) is None:
            record = RequestRecord(
                request_id=request_id,
                state=RequestState.REJECTED,
                created_at=now,
                updated_at=now,
                errors=data["errors"],
            )
            record.emit(EventType.REQUEST_REJECTED, now, data, actor)
            try:
                self.records.create(record)
            except AlreadyExists:
                self.records.update(request_id, mutate)

    def _received(
        self, request: AccessRequest, fingerprint: str, submitted_by: Actor | None, existing: RequestRecord | None
    ) -> RequestRecord:
        """The stored record of this request (`existing`, just read; None: there was none), created on first sight;
        `fingerprint` is the request's. Raises IdempotencyMismatch."""
        if existing is None:
            try:
                return self.records.create(self._new_record(request, fingerprint))
            except AlreadyExists:
                existing = self.records.load(request.request_id)
        self._check_same(existing, request, fingerprint, submitted_by)
        return existing

    def _new_record(self, request: AccessRequest, fingerprint: str) -> RequestRecord:
        """The record of a request seen for the first time, received now (not stored)."""
        now = self.b.clock.now()
        record = RequestRecord(
            request_id=request.request_id,
            state=RequestState.RECEIVED,
            created_at=now,
            updated_at=now,
            request=request,
            fingerprint=fingerprint,
        )
        record.emit(
            EventType.REQUEST_RECEIVED,
            now,
            {"request": request.to_json_dict()},
            Actor(principal_id=request.requester.principal_id, kind="user"),
        )
        return record

    def _check_same(
        self, existing: RequestRecord, request: AccessRequest, fingerprint: str, submitted_by: Actor | None
    ) -> None:
        if existing.fingerprint == fingerprint:
            return
        now = self.b.clock.now()
        reason = "requestId reused with a different body"
        # NB. The rejection names who reused the id: over HTTP the verified caller; on the queue nothing says
        # who sent the message, so the requester its body names, marked as not verified.
        actor = submitted_by or Actor(principal_id=request.requester.principal_id, kind="user")

        def mutate(record: RequestRecord) -> bool:
            if not record.provoked(_rejected_key(submitted_by), now):
                return False  # this sender reused the id within the minute: rejected, not written again
            record.emit(
                EventType.REQUEST_REJECTED,
                now,
                {
                    "reason": reason,
                    "fingerprint": fingerprint,
                    "state": record.state.value,
                    "actorVerified": submitted_by is not None,
                },
                actor,
            )
            return True

        self.records.update(existing.request_id, mutate)
        raise IdempotencyMismatch(f"request {existing.request_id}: {reason}")

    def _redrive(self, record: RequestRecord) -> None:
        """Re-issue the follow-up of a state whose follow-up may have been lost in a crash.
        Bus duplicate detection (message ids) keeps this from doubling anything."""
        if record.state is RequestState.APPROVED:
            self.b.send_command(LifecycleCommand(command="grant", request_id=record.request_id))
        elif record.state is RequestState.PENDING_APPROVAL and record.approval_deadline is not None:
            expire = LifecycleCommand(command="expire-request", request_id=record.request_id)
            self.b.schedule_command(expire, record.approval_deadline)
            decision = record.decision
            self.notices.notify(
                record,
                "approval_requested",
                "Approval needed",
                audience=decision.approver_groups if decision else [],
                hints=[f"approve {record.request_id} [comment]", f"deny {record.request_id} <reason>"],
            )


class ParsedBodies:
    """The request bodies this process found valid lately, by their exact bytes, with what they parsed to and its
    fingerprint.

    NB. Intake over HTTP parses a body strictly and enqueues the same bytes for evaluation, where they would be
    parsed again. Parsing is a function of the bytes alone and the parsed request is frozen, so the same bytes may
    be handed the same request. Any other bytes (another process's, a message sent to the queue by hand) are parsed
    in full; only bodies found valid are remembered, the `size` most recent of them.
    """

    def __init__(self, size: int) -> None:
        self._bodies: Recent[bytes, tuple[AccessRequest, str]] = Recent(size)

    def remember(self, raw: bytes, request: AccessRequest, fingerprint: str) -> None:
        self._bodies.put(bytes(raw), (request, fingerprint))

    def get(self, raw: bytes) -> tuple[AccessRequest, str] | None:
        """The request these exact bytes parsed to and its fingerprint, forgotten as they are handed out (one
        evaluation follows one intake); None when they are not known."""
        return self._bodies.pop(bytes(raw))


def _rejected_key(submitted_by: Actor | None) -> str:
    """Who had a body rejected on someone else's request, by what is verified: the caller, or the queue."""
    return f"rejected|{submitted_by.principal_id if submitted_by is not None else 'queue'}"


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
