"""The request lifecycle: evaluate, approve/deny, grant, revoke, expire, reconcile.

Every handler is idempotent under at-least-once delivery: it loads the record, acts only if the state
still calls for it, and writes with optimistic concurrency. Side effects on the provider are idempotent
by construction (deterministic assignment names, delete-missing is a no-op), so a handler that crashes
half way is simply run again.

The pieces, each an object with its own dependencies, used in one direction only (an arrow reads
"uses"; nothing below uses anything above it):

    Lifecycle (this module): the entry points the API, the workers, the CLI and the function app call
      ├─► Reconcile  (reconcile.py)   the safety net: drives Intake, Approvals, Access and Grants
      ├─► Intake     (intake.py)      submit, evaluate, the policy decision
      ├─► Approvals  (approvals.py)   approve, deny, expire
      ├─► Lists      (listing.py)     the pages' lists, who may read and who may still approve ─► Approvals' rule
      ├─► Access     (access.py)      grant, revoke, early revoke ─► Grants, Refusals
      │     └─► Grants (grants.py)    holds and assignments on the providers, with retries
      └─► Refusals   (refusals.py)    refused callers, audited without letting anyone flood a chain
    and beneath them all: Records (records.py: persistence and the audit outbox), Notices (notices.py),
    Backends and Result (backends.py).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ..domain.audit import Actor
from ..domain.lifecycle import LifecycleCommand
from .access import Access
from .approvals import Approvals
from .backends import LIFECYCLE_QUEUE, REQUESTS_QUEUE, REVOCATIONS_QUEUE, Backends, Result
from .grants import Grants
from .intake import Intake
from .listing import Listing, Lists, RequestFilter, Viewer
from .notices import Notices
from .reconcile import Reconcile, ReconcileReport
from .records import Records
from .refusals import Refusals

__all__ = [
    "LIFECYCLE_QUEUE", "REQUESTS_QUEUE", "REVOCATIONS_QUEUE", "Backends", "Lifecycle", "Listing", "ReconcileReport",
    "RequestFilter", "Result", "Viewer",
]


class Lifecycle:
    """The handlers. Each public method is one verb of the access domain."""

    def __init__(self, backends: Backends) -> None:
        self.b = backends
        records = Records(backends)
        notices = Notices(backends)
        grants = Grants(backends)
        self.records = records
        self.intake = Intake(backends, records, notices)
        self.approvals = Approvals(backends, records, notices)
        self.refusals = Refusals(backends, records)
        self.lists = Lists(backends)
        self.access = Access(backends, records, grants, notices, self.refusals)
        self._reconcile = Reconcile(backends, records, grants, self.intake, self.approvals, self.access)

    def submit(self, raw: bytes, submitted_by: Actor | None = None) -> Result:
        """HTTP intake: validate, record as received, enqueue for evaluation; `submitted_by` is the caller."""
        return self.intake.submit(raw, submitted_by)

    def evaluate(self, raw: bytes) -> Result | None:
        """`access-requests` handler."""
        return self.intake.evaluate(raw)

    def approve(self, request_id: str, approver_id: str, comment: str = "") -> Result:
        result, record = self.approvals.approve(request_id, approver_id, comment)
        # NB. The record as this approval left it: `apply_extension` reads it again and acts only if still approved.
        if record.extension is not None and record.extension.approved:
            return self.access.apply_extension(result.request_id)  # more time, now approved
        return result

    def deny(self, request_id: str, approver_id: str, reason: str) -> Result:
        return self.approvals.deny(request_id, approver_id, reason)

    def expire_request(self, request_id: str) -> Result:
        return self.approvals.expire_request(request_id)

    def grant(self, request_id: str, final_attempt: bool = False) -> Result:
        return self.access.grant(request_id, final_attempt)

    def revoke(self, request_id: str, reason: str = "expired") -> Result:
        return self.access.revoke(request_id, reason)

    def extend(self, request_id: str, caller_id: str, more: timedelta, reason: str = "") -> Result:
        return self.access.extend(request_id, caller_id, more, reason)

    def request_revoke(self, request_id: str, caller_id: str, is_admin: bool, reason: str = "") -> Result:
        return self.access.request_revoke(request_id, caller_id, is_admin, reason)

    def record_usage(self, request_id: str, summary: dict[str, Any]) -> None:
        """An `activity.summary` of a grant's use that jitgate saw itself (Envoy's checks)."""
        self.access.record_usage(request_id, summary)

    def refuse_access(self, request_id: str, caller: Actor, action: str, reason: str) -> bool:
        return self.refusals.refuse_access(request_id, caller, action, reason)

    def handle_command(self, body: bytes, final_attempt: bool = False) -> Result | None:
        """`access-lifecycle` and `access-revocations` handler; InvalidRequest, saying why, for a body that is not
        a command."""
        cmd = LifecycleCommand.parse(body)
        if cmd.command == "grant":
            return self.access.grant(cmd.request_id, final_attempt)
        if cmd.command == "revoke":
            return self.access.revoke_command(cmd.request_id, cmd.reason or "expired", cmd.n)
        return self.approvals.expire_request(cmd.request_id)

    def reconcile(self) -> ReconcileReport:
        """The safety net: revoke overdue holds, remove orphans, expire stale requests, re-drive
        approved requests whose grant message was lost."""
        return self._reconcile.run()

    def flush_pending(self) -> int:
        """Flush audit outboxes left by crashed handlers (reconcile and startup call this)."""
        return self.records.flush_pending()
