"""Grants on providers (ARCHITECTURE §5): holds in the ledger and the role assignments they stand on.

Every provider call is idempotent by construction (a deterministic assignment name, delete-missing is a
no-op) and retried here on transient faults, so a caller that crashes half way simply runs again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, TypeVar

from ..crashpoints import crashpoint
from ..domain.errors import AssignmentExists, PermanentError, TransientError
from ..domain.ledger import Assignment, GrantKey, Hold, HoldStatus, marker_for
from ..domain.request import AccessRequest
from ..ports import GrantProvider
from .backends import Backends

log = logging.getLogger("jitgate.lifecycle")

T = TypeVar("T")


class Grants:
    """The provider-facing half of the lifecycle: resolve a role, hold a grant key, apply the assignment,
    release a hold (deleting the assignment only when no other hold remains, then confirming it is gone),
    and find and remove orphaned assignments. Knows nothing of request states."""

    def __init__(self, backends: Backends) -> None:
        self.b = backends

    def provider(self, name: str) -> GrantProvider:
        try:
            return self.b.providers[name]
        except KeyError:
            raise PermanentError(f"provider {name!r} is not configured in this deployment") from None

    def key_for(self, provider: GrantProvider, request: AccessRequest) -> GrantKey:
        """The grant key of a request: its role resolved by the provider."""
        role_id = self._call(lambda: provider.resolve_role(request.target.scope, request.target.role))
        return GrantKey.of(provider.name, request.requester.principal_id, role_id, request.target.scope)

    def hold(self, key: GrantKey, request: AccessRequest) -> Hold:
        """This request's hold on the key, put now (expiring after the request's duration) if it has none."""
        # NB. The hold is written before the assignment exists so that a crash right after the
        # provider call still leaves the ledger knowing what to revoke.
        existing = self.b.ledger.get_hold(key, request.request_id)
        if existing is not None:
            return existing
        now = self.b.clock.now()
        hold = Hold.for_key(
            key, request.request_id, now, now + request.duration, False, request.requester.principal_type.value
        )
        self.b.ledger.put_hold(hold)
        return hold

    def apply(self, provider: GrantProvider, key: GrantKey, hold: Hold, request: AccessRequest) -> Hold:
        """Make sure the assignment exists; a hold on an assignment made outside jitgate becomes preexisting."""
        name = key.assignment_name()

        def create() -> Assignment:
            return provider.create_assignment(
                key, name, marker_for(request.request_id), request.requester.principal_type.value, hold.expires_at
            )

        found = self._call(lambda: provider.find_assignment(key))
        preexisting = found is not None and not _ours(found, name)
        if found is not None and not preexisting:
            # NB. Another request holds this key already. Providers that expire grants themselves (PIM)
            # must learn this hold's expiry, or they would end the grant at the earlier request's;
            # for the others creating the same name again only moves the marker to this request.
            self._call(create)
        if found is None:
            try:
                self._call(create)
            except AssignmentExists as exc:
                log.info("assignment %s exists outside jitgate: hold is preexisting", exc.existing_name)
                preexisting = True
        if preexisting != hold.preexisting:
            hold = hold.model_copy(update={"preexisting": preexisting})
            self.b.ledger.put_hold(hold)
        return hold

    def make_due(self, key: GrantKey, request_id: str) -> None:
        """End this hold's time now (an early revoke), so that reconcile finishes it if the revoke dies."""
        hold = self.b.ledger.get_hold(key, request_id)
        now = self.b.clock.now()
        if hold is not None and hold.status is HoldStatus.ACTIVE and hold.expires_at > now:
            self.b.ledger.put_hold(hold.model_copy(update={"expires_at": now}))

    def release(self, key: GrantKey, request_id: str) -> dict[str, Any]:
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
            provider = self.provider(key.provider)
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
            # NB. As the principal it is: ARM refuses a principal type that is not the directory object's.
            principal_type = holder.principal_type or self._requester_type(holder.request_id)
            self._call(
                lambda: provider.create_assignment(
                    key, name, marker_for(holder.request_id), principal_type, holder.expires_at
                )
            )
            result["reappliedFor"] = holder.request_id
        return result

    def _requester_type(self, request_id: str) -> str:
        """The principal type a hold stored before holds kept it stands for: its request's requester's."""
        record = self.b.requests.get_request(request_id)
        return record.request.requester.principal_type.value if record and record.request else "User"

    def release_leftovers(self, request_id: str) -> None:
        """A request that is no longer active must hold nothing (cleans up after crashes and races)."""
        for hold in self.b.ledger.holds_for_request(request_id):
            if hold.status is HoldStatus.ACTIVE:
                self.release(hold.key, request_id)

    def orphans(self, provider: GrantProvider) -> Iterator[Assignment]:
        """Assignments carrying jitgate's marker that no active hold stands on, each checked as it is reached."""
        for assignment in self._call(provider.list_marked):
            if not self.b.ledger.active_holds(assignment.key):
                yield assignment

    def remove(self, provider: GrantProvider, assignment: Assignment) -> None:
        """Delete an assignment and confirm it is gone."""
        self._call(partial(provider.delete_assignment, assignment.scope, assignment.name))
        self._verify_gone(provider, assignment.scope, assignment.name)

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


def _ours(assignment: Assignment, name: str) -> bool:
    return assignment.name == name or assignment.marked_request_id is not None
