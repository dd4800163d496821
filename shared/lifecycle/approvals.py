"""Approvers' answers (ARCHITECTURE §7): approve, deny, and the request's expiry when none came in time.
An approver must be in the rule's approver groups and must not be the requester; one person counts once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from ..domain.audit import Actor, EventType, format_instant
from ..domain.errors import AuthError, NotFound
from ..domain.lifecycle import Approval, LifecycleCommand, RequestRecord, RequestState
from ..text import listed, state_in_words
from .backends import Backends, Result
from .notices import Notices
from .records import Records, request_of


class Approvals:
    """The decision on a request pending approval. A refused approver is audited on the request."""

    def __init__(self, backends: Backends, records: Records, notices: Notices) -> None:
        self.b = backends
        self.records = records
        self.notices = notices

    def approve(self, request_id: str, approver_id: str, comment: str = "") -> tuple[Result, RequestRecord]:
        """An approver's yes, and the record as it was written (or found, when there was nothing to write). Raises
        AuthError if this person may not approve this request."""
        approver_id = approver_id.lower()
        now = self.b.clock.now()
        result: list[Result] = []
        refused: list[str] = []

        def mutate(record: RequestRecord) -> bool:
            result.clear()
            refused.clear()
            if self._refuse(record, approver_id, now, "approve", refused):
                return True
            if record.extension is not None:
                return self._approve_extension(record, approver_id, comment, now, result)
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
            self.b.send_command(LifecycleCommand(command="grant", request_id=saved.request_id))
            self.notices.notify(saved, "approved", "Request approved")
        return outcome, saved

    def deny(self, request_id: str, approver_id: str, reason: str) -> Result:
        """An approver's no: terminal for the request."""
        approver_id = approver_id.lower()
        now = self.b.clock.now()
        refused: list[str] = []

        extension: list[bool] = []

        def mutate(record: RequestRecord) -> bool:
            refused.clear()
            extension.clear()
            if self._refuse(record, approver_id, now, "deny", refused):
                return True
            if record.extension is not None:
                # NB. A no to more time leaves the grant as it was, ending at its end.
                extension.append(True)
                record.emit(EventType.APPROVAL_RECORDED, now, {
                    "approver": approver_id, "verdict": "deny", "counted": True, "reason": reason,
                    "extension": format_instant(record.extension.until)}, Actor(principal_id=approver_id, kind="user"))
                record.extension = None
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
        if extension:
            self.notices.notify(saved, "denied", "More time denied by an approver")
            return Result(request_id, saved.state, "more time denied; the grant ends as before")
        self.notices.notify(saved, "denied", "Request denied by an approver")
        return Result(request_id, saved.state, "denied")

    def _approve_extension(
        self, record: RequestRecord, approver_id: str, comment: str, now: datetime, result: list[Result]
    ) -> bool:
        """An approver's yes to more time; the lifecycle applies it once it has enough (`Lifecycle.approve`)."""
        extension = record.extension
        assert extension is not None
        if approver_id in {a.approver_id for a in extension.approvals}:
            result.append(Result(record.request_id, record.state, "your approval is already counted"))
            return False
        approvals = [*extension.approvals, Approval(approver_id=approver_id, at=now, comment=comment)]
        record.extension = extension.model_copy(update={"approvals": approvals})
        record.emit(EventType.APPROVAL_RECORDED, now, {
            "approver": approver_id, "verdict": "approve", "counted": True, "comment": comment,
            "approvals": len(approvals), "required": extension.required_approvals,
            "extension": format_instant(extension.until)}, Actor(principal_id=approver_id, kind="user"))
        message = ("more time approved; extending now" if record.extension.approved
                   else f"approval {len(approvals)} of {extension.required_approvals} for more time recorded")
        result.append(Result(record.request_id, record.state, message))
        return True

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

        before = self.records.load(request_id)
        saved = self.records.update(request_id, mutate) or before
        if saved.state is RequestState.EXPIRED and before.state is not RequestState.EXPIRED:
            self.notices.notify(saved, "expired", "Request expired without a decision")
        return Result(request_id, saved.state, saved.state.value)

    def _decided(self, request_id: str, mutate: Callable[[RequestRecord], bool], refused: list[str]) -> RequestRecord:
        """Write an approver's decision; a refusal (already audited by `mutate`) is raised after the write."""
        saved = self.records.update(request_id, mutate)
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
        return approver_refusal(record, approver_id, self.b.directory.groups_of(approver_id))


def approver_refusal(record: RequestRecord, approver_id: str, approver_groups: frozenset[str]) -> str:
    """Why this person (in `approver_groups`) may not decide on this request now ('' when they may): a request
    waiting for approvals, or an active grant's more time. The one rule, for Teams, the API and the pages'
    "waiting for me"."""
    extension = record.extension if record.state is RequestState.ACTIVE else None
    if record.state is not RequestState.PENDING_APPROVAL and extension is None:
        return f"the request is {state_in_words(record)}: only a request waiting for approvals can be decided"
    request = request_of(record)
    if approver_id == request.requester.principal_id:
        return "you cannot approve or deny your own request"
    decision = record.decision
    allowed = set(extension.approver_groups if extension else decision.approver_groups if decision else [])
    if not allowed & approver_groups:
        if len(allowed) == 1:
            return f"you are not in {listed(allowed)}, the approver group of this request"
        return f"you are in none of this request's approver groups: {listed(sorted(allowed))}"
    return ""
