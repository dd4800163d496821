"""A request's time with the role: grant it and schedule its end, revoke it at expiry or early, and fail
visibly when the provider refuses for good. Transitions are written with optimistic concurrency; what
touches the provider goes through `Grants`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from ..crashpoints import crashpoint
from ..domain.audit import SYSTEM, Actor, EventType, format_instant
from ..domain.decision import Decision, Outcome
from ..domain.durations import format_duration
from ..domain.errors import AuthError, FieldError, IllegalTransition, InvalidRequest, PermanentError, TransientError
from ..domain.ledger import GrantKey, Hold, HoldStatus
from ..domain.lifecycle import Extension, LifecycleCommand, RequestRecord, RequestState
from ..text import clause, clauses, counted, instant_in_words, roughly, state_in_words, when_in_words
from .backends import Backends, Result
from .grants import Grants, StillPresent
from .notices import Notices
from .records import Records, request_of
from .refusals import Refusals


class Access:
    """`grant`, `revoke` and `request_revoke` (the requester's or an admin's early revoke)."""

    def __init__(
        self, backends: Backends, records: Records, grants: Grants, notices: Notices, refusals: Refusals
    ) -> None:
        self.b = backends
        self.records = records
        self.grants = grants
        self.notices = notices
        self.refusals = refusals

    # ------------------------------------------------------------ grant

    def grant(self, request_id: str, final_attempt: bool = False) -> Result:
        """Apply the role and schedule its revoke. Transient faults raise (the bus redelivers) unless
        this is the final delivery, when the request fails visibly instead of dead-lettering silently."""
        record = self.records.load(request_id)
        if record.state is RequestState.ACTIVE:
            self._ensure_revoke_scheduled(record)
            return Result(request_id, record.state, "already active")
        if record.state is not RequestState.APPROVED:
            self.grants.release_leftovers(request_id)
            return Result(request_id, record.state, f"nothing to grant ({record.state.value})")
        request = request_of(record)
        try:
            # NB. Inside the try: a provider this deployment does not serve is a permanent failure the requester
            # hears about, not an exception that dead-letters the grant and leaves the request `approved`.
            provider = self.grants.provider(request.target.provider)
            key = self.grants.key_for(provider, request)
            hold = self.grants.hold(key, request)
            # NB. Its time ran out while jitgate was down, or reconcile already released it: the role
            # must never be handed out again, so the request is closed instead.
            overdue = hold.status != HoldStatus.ACTIVE or hold.expires_at <= self.b.clock.now()
            if not overdue:
                hold = self.grants.apply(provider, key, hold, request)
        except PermanentError as exc:
            return self._fail(request_id, str(exc))
        except TransientError as exc:
            if final_attempt:
                return self._fail(request_id, f"gave up after repeated transient errors: {exc}")
            raise
        if overdue and hold.status != HoldStatus.ACTIVE:
            return self.revoke(request_id, "expired before the grant completed")
        if hold.status is not HoldStatus.ACTIVE:
            # NB. A revoke released the hold while this grant ran (`apply` removed what it made): the state is
            # that revoke's to write. Had it died, reconcile re-drives this grant, which finds the hold released.
            return Result(request_id, record.state, "revoked while the grant ran")
        result = self._activate(record, key, hold)
        if overdue:
            # The assignment was made before a crash: record that truthfully, then end it now.
            return self.revoke(request_id, "expired")
        return result

    def _activate(self, loaded: RequestRecord, key: GrantKey, hold: Hold) -> Result:
        """Record the grant as active, its revoke scheduled first; `loaded` (approved) is handed over."""
        request_id = loaded.request_id
        now = self.b.clock.now()
        crashpoint("grant.after_provider")
        revoke = LifecycleCommand(command="revoke", request_id=request_id, n=1, reason="expired")
        seq = self.b.schedule_command(revoke, hold.expires_at)
        crashpoint("grant.after_schedule")

        def mutate(record: RequestRecord) -> bool:
            if record.state is not RequestState.APPROVED:
                return False
            record.move_to(RequestState.ACTIVE, now)
            record.grant_key = key
            record.granted_at = hold.granted_at
            record.expires_at = hold.expires_at
            record.revoke_sequence = seq
            record.revoke_queue = self.b.queue_of(revoke)
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
            record.emit(EventType.REVOKE_SCHEDULED, now, _scheduled(hold.expires_at, seq))
            return True

        saved = self.records.update(request_id, mutate, loaded)
        assert saved is not None
        if saved.state is RequestState.ACTIVE and saved.revoke_sequence == seq:
            self.notices.notify(saved, "granted", f"Access granted until {instant_in_words(hold.expires_at)}")
        else:
            self.grants.release_leftovers(request_id)
        return Result(request_id, saved.state, f"active until {when_in_words(hold.expires_at, now)}")

    def _ensure_revoke_scheduled(self, record: RequestRecord) -> None:
        if record.expires_at is None:
            return
        n = max(record.revoke_n, 1)
        cmd = LifecycleCommand(command="revoke", request_id=record.request_id, n=n, reason="expired")
        self.b.schedule_command(cmd, record.expires_at)

    def _fail(self, request_id: str, error: str) -> Result:
        now = self.b.clock.now()

        def mutate(record: RequestRecord) -> bool:
            if record.state is not RequestState.APPROVED:
                return False
            record.move_to(RequestState.FAILED, now)
            record.failure = error
            record.emit(EventType.GRANT_FAILED, now, {"error": error})
            return True

        saved = self.records.update(request_id, mutate)
        assert saved is not None
        self.grants.release_leftovers(request_id)
        if saved.state is RequestState.FAILED:
            self.notices.notify(saved, "failed", "Grant failed")
        return Result(request_id, saved.state, error)

    # ------------------------------------------------------------ extend

    def extend(self, request_id: str, caller_id: str, more: timedelta, reason: str = "") -> Result:
        """More time for an active grant, asked by its requester. The policy decides again, for the whole time
        from the grant to the new end: a rule that lets it through without approval extends it now (the hold,
        the provider's own expiry and the scheduled revoke follow); one that wants approval asks its approvers
        (`record.extension`, decided like a request, applied by `apply_extension`); one that denies it refuses
        (InvalidRequest, with the policy's reasons)."""
        record = self.records.load(request_id)
        request = request_of(record)
        caller_id = caller_id.lower()
        if caller_id != request.requester.principal_id:
            raise AuthError("only the requester may extend this request")
        if record.state is not RequestState.ACTIVE or record.expires_at is None or record.granted_at is None:
            raise IllegalTransition(f"only an active grant can be extended; this request is {state_in_words(record)}")
        if record.extension is not None:
            raise IllegalTransition(f"more time, until {instant_in_words(record.extension.until)}, already waits for "
                                    "approval")
        if more <= timedelta(0):
            raise InvalidRequest([FieldError("body.duration", "must be a positive duration such as PT1H")])
        end = record.expires_at
        until = end + more
        now = self.b.clock.now()
        total = until - record.granted_at
        groups = self.b.directory.groups_of(request.requester.principal_id)
        decision = self.b.policy.evaluate(request.model_copy(update={"duration": total}), groups, now)
        if decision.outcome is Outcome.DENY:
            raise InvalidRequest([FieldError(
                "body.duration", f"{roughly(total)} in all (until {instant_in_words(until)}) is not allowed: "
                f"{clauses(decision.reasons) or 'the policy denies it'}")], request_id)
        actor = Actor(principal_id=caller_id, kind="user")
        if decision.outcome is Outcome.AUTO:
            return self._lengthen(request_id, end, until, actor, reason, decision.rule)
        return self._ask_approvers(request_id, end, until, actor, reason, decision)

    def apply_extension(self, request_id: str) -> Result:
        """More time its approvers approved: extend the grant now (the lifecycle calls this after the approval
        that completed it, reconcile after a crash in between). Nothing to do when it is no longer approved."""
        record = self.records.load(request_id)
        extension = record.extension
        if record.state is not RequestState.ACTIVE or extension is None or not extension.approved:
            return Result(request_id, record.state, "no approved extension to apply")
        assert record.expires_at is not None
        approvers = sorted(a.approver_id for a in extension.approvals)
        actor = Actor(principal_id=request_of(record).requester.principal_id, kind="user")
        return self._lengthen(request_id, record.expires_at, extension.until, actor, extension.reason, extension.rule,
                              approvers)

    def _ask_approvers(self, request_id: str, end: datetime, until: datetime, actor: Actor, reason: str,
                       decision: Decision) -> Result:
        now = self.b.clock.now()
        extension = Extension(until=until, asked_at=now, reason=reason, rule=decision.rule,
                              required_approvals=max(decision.required_approvals, 1),
                              approver_groups=list(decision.approver_groups))

        def mutate(current: RequestRecord) -> bool:
            if current.state is not RequestState.ACTIVE or current.expires_at != end or current.extension is not None:
                return False
            current.extension = extension
            current.emit(EventType.APPROVAL_REQUESTED, now, {
                "extension": {"from": format_instant(end), "to": format_instant(until), "reason": reason},
                "rule": decision.rule, "approverGroups": extension.approver_groups,
                "required": extension.required_approvals}, actor)
            return True

        saved = self.records.update(request_id, mutate)
        assert saved is not None
        if saved.extension != extension:
            raise IllegalTransition(f"the request changed while more time was asked; it is {state_in_words(saved)}")
        self.notices.notify(saved, "approval_requested", f"More time asked: until {instant_in_words(until)}",
                            audience=extension.approver_groups,
                            hints=[f"approve {request_id} [comment]", f"deny {request_id} <reason>"])
        required = counted(extension.required_approvals, "approval")
        return Result(request_id, saved.state, f"more time until {instant_in_words(until)} waits for {required} "
                      f"(rule {decision.rule})")

    def _lengthen(self, request_id: str, end: datetime, until: datetime, actor: Actor, reason: str,
                  rule: str | None, approvers: list[str] | None = None) -> Result:
        """Move an active grant's end from `end` to `until`: the hold (and the provider's own expiry) first, then a
        revoke scheduled at the new end, the record, and the old revoke cancelled last. NB. A crash in between
        leaves the old revoke in force: access ends at the old end, never later than recorded."""
        record = self.records.load(request_id)
        request = request_of(record)
        assert record.grant_key is not None and record.granted_at is not None
        if self.grants.extend(self.grants.provider(request.target.provider), record.grant_key, request, until) is None:
            raise IllegalTransition("the grant ended while it was being extended")
        now = self.b.clock.now()
        n = max(record.revoke_n + 1, 3)  # NB. revoke:<id>:1 is the first end, :2 an early revoke's retry
        revoke = LifecycleCommand(command="revoke", request_id=request_id, n=n, reason="expired")
        seq = self.b.schedule_command(revoke, until)
        previous: list[tuple[int | None, str | None]] = []
        data: dict[str, Any] = {"from": format_instant(end), "to": format_instant(until), "by": actor.principal_id,
                                "reason": reason, "rule": rule, "total": format_duration(until - record.granted_at)}
        if approvers is not None:
            data["approvers"] = approvers

        def mutate(current: RequestRecord) -> bool:
            previous.clear()
            if current.state is not RequestState.ACTIVE or current.expires_at != end:
                return False
            previous.append((current.revoke_sequence, current.revoke_queue))
            current.expires_at = until
            current.extension = None
            current.revoke_sequence, current.revoke_queue, current.revoke_n = seq, self.b.queue_of(revoke), n
            current.emit(EventType.GRANT_EXTENDED, now, data, actor)
            current.emit(EventType.REVOKE_SCHEDULED, now, _scheduled(until, seq))
            return True

        saved = self.records.update(request_id, mutate)
        assert saved is not None
        if not previous:
            if seq is not None:
                self.b.bus.cancel_scheduled(self.b.queue_of(revoke), seq)
            raise IllegalTransition(f"the request changed while it was being extended; it is {state_in_words(saved)}")
        old_sequence, old_queue = previous[0]
        if old_sequence is not None:
            # NB. A revoke at the old end that could not be cancelled (already delivered) finds the record's revoke
            # number moved on and its end in the future, and does nothing (`revoke_command`).
            self.b.bus.cancel_scheduled(old_queue or self.b.lifecycle_queue, old_sequence)
        self.notices.notify(saved, "extended", f"Access extended until {instant_in_words(until)}")
        return Result(request_id, saved.state, f"extended: active until {when_in_words(until, now)}")

    # ------------------------------------------------------------ revoke

    def request_revoke(self, request_id: str, caller_id: str, is_admin: bool, reason: str = "") -> Result:
        """Early revoke from the API: the requester ("I'm done") or an admin. A request that had already
        ended is answered with how it ended, and the attempt is audited."""
        record = self.records.load(request_id)
        request = request_of(record)
        if not is_admin and caller_id.lower() != request.requester.principal_id:
            raise AuthError("only the requester or an admin may revoke this request")
        actor = Actor(principal_id=caller_id.lower(), kind="user")
        if record.state.terminal:
            return self._too_late(record, actor)
        kind = "admin" if is_admin and caller_id.lower() != request.requester.principal_id else "early"
        reason = reason or kind

        def remember(current: RequestRecord) -> bool:
            if current.state.terminal:
                return False
            current.revoke_reason, current.revoke_requested_by = reason, actor
            return True

        # NB. Who asked and why are written first, and the hold made due now, so that if the process
        # dies mid-revoke, reconcile finishes this early revoke in the requester's name.
        saved = self.records.update(request_id, remember, record)
        if saved is not None and saved.grant_key is not None:
            self.grants.make_due(saved.grant_key, request_id)
        try:
            result, ended = self._revoke(request_id, reason, actor, saved)
        except TransientError:
            # NB. It goes on the revocations queue, whose consumer retries it within a lock duration, where
            # reconcile would wait for its next pass. n=2: the revoke at expiry is n=1.
            self.b.send_command(LifecycleCommand(command="revoke", request_id=request_id, n=2, reason=reason))
            raise
        if not ended and result.state.terminal:
            # It ended by other means (the revoke at expiry) between this call's read and its write.
            return self._too_late(self.records.load(request_id), actor)
        return result

    def revoke_command(self, request_id: str, reason: str, n: int = 1) -> Result:
        """A revoke from the bus: at expiry in jitgate's name, or an early revoke that `request_revoke` could
        not finish at once, in the name of who asked for it. A revoke at an end that an extension moved (its
        number is not the record's, and the record's end is still ahead) does nothing."""
        record = self.records.load(request_id)
        if reason == "expired":
            end = record.expires_at
            moved = n != max(record.revoke_n, 1) and record.state is RequestState.ACTIVE
            if moved and end is not None and end > self.b.clock.now():
                return Result(request_id, record.state, f"not due: extended until {instant_in_words(end)}")
            return self._revoke(request_id, reason, SYSTEM, record)[0]
        return self._revoke(request_id, reason, record.revoke_requested_by or SYSTEM, record)[0]

    def revoke(self, request_id: str, reason: str = "expired", actor: Actor = SYSTEM) -> Result:
        """Release this request's hold; delete the assignment only when no other hold remains, then
        confirm it is gone. Safe to run any number of times."""
        return self._revoke(request_id, reason, actor)[0]

    def _revoke(
        self, request_id: str, reason: str, actor: Actor, loaded: RequestRecord | None = None
    ) -> tuple[Result, bool]:
        """`revoke`, and whether this call is the one that ended the request; `loaded` is the record the caller
        loaded and hands over (None: it is loaded here)."""
        record = self.records.load(request_id) if loaded is None else loaded
        if record.state.terminal:
            self.grants.release_leftovers(request_id)
            return Result(request_id, record.state, _how_it_ended(record, self._when)), False
        now = self.b.clock.now()
        outcome: dict[str, Any] = {"reason": reason, "by": actor.principal_id}
        granted = False
        if record.state is RequestState.ACTIVE and record.grant_key is not None:
            granted = True
            try:
                outcome |= self.grants.release(record.grant_key, request_id)
            except (PermanentError, StillPresent) as exc:
                return self._revoke_failed(record, reason, actor, str(exc)), False
            now = self.b.clock.now()  # NB. the assignment is confirmed gone only now (it may have waited)
            if record.expires_at is not None:
                outcome["latenessSeconds"] = round((now - record.expires_at).total_seconds(), 3)
            if reason != "expired" and record.revoke_sequence is not None:
                self.b.bus.cancel_scheduled(record.revoke_queue or self.b.lifecycle_queue, record.revoke_sequence)
                outcome["cancelledSequenceNumber"] = record.revoke_sequence
        else:
            outcome["note"] = f"nothing was granted (request was {record.state.value})"
            for hold in self.b.ledger.holds_for_request(request_id):
                if hold.status == HoldStatus.ACTIVE:  # a grant interrupted half way (a crash)
                    outcome |= self.grants.release(hold.key, request_id)
                    outcome["note"] = "the grant was interrupted before it completed; its assignment is removed"
                    granted = True
        ended: list[bool] = []

        def mutate(current: RequestRecord) -> bool:
            ended.clear()
            if current.state.terminal:
                return False
            current.move_to(RequestState.REVOKED, now)
            current.revoked_at = now
            current.revoke_reason = reason
            current.extension = None  # more time still waiting for approval goes with the grant
            current.emit(EventType.GRANT_REVOKED, now, outcome, actor)
            ended.append(True)
            return True

        saved = self.records.update(request_id, mutate, record)
        assert saved is not None
        if not ended:
            return Result(request_id, saved.state, _how_it_ended(saved, self._when)), False
        if not granted:
            # NB. Nothing was granted, so nothing is announced as revoked: a person withdrew the request,
            # or jitgate closed it because its time ran out before the grant completed.
            withdrawn = actor.kind == "user"
            what = f"{'withdrawn' if withdrawn else 'ended'} before anything was granted ({reason})"
            self.notices.notify(saved, "withdrawn" if withdrawn else "revoked", f"Request {what}")
            return Result(request_id, saved.state, what), True
        self._record_activity(saved)
        self.notices.notify(saved, "revoked", f"Access revoked ({reason})")
        return Result(request_id, saved.state, f"revoked ({reason})"), True

    def _too_late(self, record: RequestRecord, actor: Actor) -> Result:
        """A revoke asked of a request that had already ended: say how it ended, and audit the attempt."""
        ended = _how_it_ended(record, format_instant)  # NB. the audit event keeps ISO 8601
        self.refusals.refuse_access(record.request_id, actor, "revoke", f"nothing to revoke: {ended}")
        return Result(record.request_id, record.state, _how_it_ended(record, self._when))

    def _when(self, at: datetime) -> str:
        return when_in_words(at, self.b.clock.now())

    def _revoke_failed(self, record: RequestRecord, reason: str, actor: Actor, error: str) -> Result:
        """The provider refused the revoke for good: audit and announce it (once per distinct error),
        keep the request active and its hold due now, so that every reconcile pass retries it."""
        now = self.b.clock.now()
        assert record.grant_key is not None
        self.grants.make_due(record.grant_key, record.request_id)  # an early revoke
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

        saved = self.records.update(record.request_id, mutate)
        assert saved is not None
        if saved.state is RequestState.ACTIVE and not repeated:
            self.notices.notify(saved, "revoke_failed",
                                f"Revoke failed ({reason}): {clause(error)}; jitgate keeps retrying")
        return Result(record.request_id, saved.state, f"revoke failed: {error}; reconcile will retry")

    def _record_activity(self, record: RequestRecord) -> None:
        reader = self.b.activity
        if (
            reader is None
            or record.grant_key is None
            or record.granted_at is None
            or record.revoked_at is None
        ):
            return
        request = request_of(record)
        try:
            summary = reader.summarize(
                request.requester.principal_id, record.grant_key.scope, record.granted_at, record.revoked_at
            )
        except (TransientError, PermanentError) as exc:
            summary = {"partial": True, "error": str(exc)}
        if summary is not None:
            self.record_usage(record.request_id, summary)

    def record_usage(self, request_id: str, summary: dict[str, Any]) -> None:
        """Append an `activity.summary` to the request's chain."""
        now = self.b.clock.now()

        def mutate(current: RequestRecord) -> bool:
            current.emit(EventType.ACTIVITY_SUMMARY, now, summary)
            return True

        self.records.update(request_id, mutate)


def _how_it_ended(record: RequestRecord, written: Callable[[datetime], str]) -> str:
    """How a request that is over ended, for someone who asks to revoke it, its instant `written` so."""
    if record.state is not RequestState.REVOKED:
        return f"already ended: the request is {record.state.value}"
    when = written(record.revoked_at or record.updated_at)
    reason = record.revoke_reason or ""
    if reason.startswith("expired"):
        return f"already ended at expiry: revoked at {when}"
    ended = "withdrawn" if record.granted_at is None else "revoked"
    return f"already {ended} at {when}" + (f" ({reason})" if reason else "")


def _scheduled(at: datetime, seq: int | None) -> dict[str, object]:
    """The `revoke.scheduled` event's data. NB. A revoke beyond what the bus can schedule (Cloud Tasks: 30 days) has no
    sequence number: reconcile revokes it when due."""
    scheduled: dict[str, object] = {"at": format_instant(at), "sequenceNumber": seq}
    if seq is None:
        scheduled["by"] = "reconcile"
    return scheduled
