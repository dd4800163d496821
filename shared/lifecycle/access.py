"""A request's time with the role: grant it and schedule its end, revoke it at expiry or early, and fail
visibly when the provider refuses for good. Transitions are written with optimistic concurrency; what
touches the provider goes through `Grants`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from ..crashpoints import crashpoint
from ..domain.audit import SYSTEM, Actor, EventType, format_instant
from ..domain.errors import AuthError, PermanentError, TransientError
from ..domain.ledger import GrantKey, Hold, HoldStatus
from ..domain.lifecycle import LifecycleCommand, RequestRecord, RequestState
from ..text import clause, instant_in_words, when_in_words
from .backends import Backends, Result
from .grants import Grants
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
        provider = self.grants.provider(request.target.provider)
        try:
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
        result = self._activate(request_id, key, hold)
        if overdue:
            # The assignment was made before a crash: record that truthfully, then end it now.
            return self.revoke(request_id, "expired")
        return result

    def _activate(self, request_id: str, key: GrantKey, hold: Hold) -> Result:
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
            record.emit(EventType.REVOKE_SCHEDULED, now, {"at": format_instant(hold.expires_at), "sequenceNumber": seq})
            return True

        saved = self.records.update(request_id, mutate)
        assert saved is not None
        if saved.state is RequestState.ACTIVE and saved.revoke_sequence == seq:
            self.notices.notify(saved, "granted", f"Access granted until {instant_in_words(hold.expires_at)}")
        else:
            self.grants.release_leftovers(request_id)
        return Result(request_id, saved.state, f"active until {when_in_words(hold.expires_at, now)}")

    def _ensure_revoke_scheduled(self, record: RequestRecord) -> None:
        if record.expires_at is None:
            return
        cmd = LifecycleCommand(command="revoke", request_id=record.request_id, n=1, reason="expired")
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
        saved = self.records.update(request_id, remember)
        if saved is not None and saved.grant_key is not None:
            self.grants.make_due(saved.grant_key, request_id)
        try:
            result, ended = self._revoke(request_id, reason, actor)
        except TransientError:
            # NB. It goes on the revocations queue, whose consumer retries it within a lock duration, where
            # reconcile would wait for its next pass. n=2: the revoke at expiry is n=1.
            self.b.send_command(LifecycleCommand(command="revoke", request_id=request_id, n=2, reason=reason))
            raise
        if not ended and result.state.terminal:
            # It ended by other means (the revoke at expiry) between this call's read and its write.
            return self._too_late(self.records.load(request_id), actor)
        return result

    def revoke_command(self, request_id: str, reason: str) -> Result:
        """A revoke from the bus: at expiry in jitgate's name, or an early revoke that `request_revoke` could
        not finish at once, in the name of who asked for it."""
        actor = SYSTEM
        if reason != "expired":
            actor = self.records.load(request_id).revoke_requested_by or SYSTEM
        return self.revoke(request_id, reason, actor)

    def revoke(self, request_id: str, reason: str = "expired", actor: Actor = SYSTEM) -> Result:
        """Release this request's hold; delete the assignment only when no other hold remains, then
        confirm it is gone. Safe to run any number of times."""
        return self._revoke(request_id, reason, actor)[0]

    def _revoke(self, request_id: str, reason: str, actor: Actor) -> tuple[Result, bool]:
        """`revoke`, and whether this call is the one that ended the request."""
        record = self.records.load(request_id)
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
            except PermanentError as exc:
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
            current.emit(EventType.GRANT_REVOKED, now, outcome, actor)
            ended.append(True)
            return True

        saved = self.records.update(request_id, mutate)
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
        if summary is None:
            return
        now = self.b.clock.now()

        def mutate(current: RequestRecord) -> bool:
            current.emit(EventType.ACTIVITY_SUMMARY, now, summary)
            return True

        self.records.update(record.request_id, mutate)


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
