"""The safety net (ARCHITECTURE §1, §5): what a lost message, a crash or a change behind jitgate's back
left undone is found and finished here, on a timer. It only calls the same handlers the queues call."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any

from ..domain.audit import SYSTEM, EventType
from ..domain.errors import ConcurrencyConflict, IllegalTransition, PermanentError, TransientError
from ..domain.ledger import Assignment, Hold, HoldStatus
from ..domain.lifecycle import RequestRecord, RequestState
from ..ports import GrantProvider
from .access import Access
from .approvals import Approvals
from .backends import Backends
from .grants import Grants
from .intake import Intake
from .records import Records

log = logging.getLogger("jitgate.lifecycle")

IN_FLIGHT = timedelta(seconds=5)  # longer than any one handler runs: older half-done work was interrupted


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


class Reconcile:
    """One pass: revoke overdue holds, remove orphans, expire stale requests, re-drive requests whose
    message was lost, finish interrupted revokes. One request's failure never stops the pass."""

    def __init__(
        self,
        backends: Backends,
        records: Records,
        grants: Grants,
        intake: Intake,
        approvals: Approvals,
        access: Access,
    ) -> None:
        self.b = backends
        self.records = records
        self.grants = grants
        self.intake = intake
        self.approvals = approvals
        self.access = access

    def run(self) -> ReconcileReport:
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
            self.access.grant(hold.request_id)
        elif record is not None and not record.state.terminal:
            # revoke_reason is set on a live request only by an early revoke that did not finish.
            result = self.access.revoke(hold.request_id, f"{record.revoke_reason or 'expired'} (reconcile)",
                                        record.revoke_requested_by or SYSTEM)
            if result.state is not RequestState.REVOKED:
                raise PermanentError(result.message)  # reported; the hold is kept for the next pass
        else:
            self.grants.release(hold.key, hold.request_id)
        report.revoked.append(hold.request_id)

    def _revoke_interrupted(self, record: RequestRecord) -> bool:
        """An active request whose hold was released a while ago was stopped half way through its revoke
        (a crash between releasing the hold and writing the state); a revoke still running is not."""
        if record.grant_key is None:
            return False
        hold = self.grants.grant_of(record.grant_key).hold_of(record.request_id)
        if hold is None:
            return True
        released = hold.status != HoldStatus.ACTIVE
        return released and (hold.released_at is None or self.b.clock.now() - hold.released_at >= IN_FLIGHT)

    def _finish_revoke(self, record: RequestRecord, report: ReconcileReport) -> None:
        now = self.b.clock.now()
        late = record.expires_at is not None and now >= record.expires_at
        reason = "expired" if late else (record.revoke_reason or "early")
        self.access.revoke(record.request_id, f"{reason} (completed by reconcile)",
                           record.revoke_requested_by or SYSTEM)
        report.revoked.append(record.request_id)

    def _expire_in(self, record: RequestRecord, report: ReconcileReport) -> None:
        if self.approvals.expire_request(record.request_id).state is RequestState.EXPIRED:
            report.expired.append(record.request_id)

    def _reevaluate(self, record: RequestRecord, report: ReconcileReport) -> None:
        self.records.retrying(lambda: self.intake.decide(record.request_id))
        report.regranted.append(record.request_id)

    def _regrant(self, record: RequestRecord, report: ReconcileReport) -> None:
        self.access.grant(record.request_id)
        report.regranted.append(record.request_id)

    def _remove_orphans(self, provider: GrantProvider, report: ReconcileReport) -> None:
        for assignment in self.grants.orphans(provider):
            if self.grants.remove(provider, assignment):
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

        if self.records.update(request_id, mutate) is None:
            # No record (the marker names a request this store never saw): chain the event directly.
            self.records.append_unrecorded(
                request_id, EventType.RECONCILE_ORPHAN_REMOVED, now, data, assignment.principal_id
            )
