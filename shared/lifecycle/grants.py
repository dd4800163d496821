"""Grants on providers (ARCHITECTURE §5): holds in the ledger and the role assignments they stand on.

Every provider call is idempotent by construction (a deterministic assignment name, delete-missing is a
no-op) and retried here on transient faults, so a caller that crashes half way simply runs again.

Every change to a grant key is read → decide → conditional write of its one ledger document (`Grant`); a
writer that loses the race reads again and decides again. An assignment is deleted only under a deletion
intent (`Deletion`) written in the same write that found no active hold left, and no hold is added while
one stands: so no assignment is ever deleted while a hold on its key is active.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, TypeVar

from ..crashpoints import crashpoint
from ..domain.errors import AssignmentExists, ConcurrencyConflict, PermanentError, TransientError
from ..domain.ledger import Assignment, Deletion, Grant, GrantKey, Hold, HoldStatus, marker_for
from ..domain.request import AccessRequest
from ..ports import GrantProvider
from .backends import Backends

log = logging.getLogger("jitgate.lifecycle")

T = TypeVar("T")

# How often a writer looks again while another writer's deletion of a key's assignment stands: after 0.1 s
# (a delete and its read-back take well under a second), then twice as long each time, up to half a second.
FIRST_LOOK, LONGEST_LOOK = 0.1, 0.5


class StillPresent(TransientError):
    """A delete the provider accepted did not take effect: the assignment is read back, again and again. The
    revoke is not done, and people must hear of it (a `grant.revoke_failed`), not only the bus's retries."""


class Superseded(Exception):
    """This writer's deletion intent is no longer the key's: another writer took it over after its lease ran out,
    or a grant cancelled it. It must not delete any more."""


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
            served = ", ".join(sorted(self.b.providers)) or "none"
            raise PermanentError(
                f"provider '{name}' is not configured in this deployment (it serves: {served})"
            ) from None

    def key_for(self, provider: GrantProvider, request: AccessRequest) -> GrantKey:
        """The grant key of a request: its role resolved by the provider."""
        role_id = self._call(lambda: provider.resolve_role(request.target.scope, request.target.role))
        return GrantKey.of(provider.name, request.requester.principal_id, role_id, request.target.scope)

    def grant_of(self, key: GrantKey) -> Grant:
        """The key's ledger document (an empty one, version 0, when nothing was ever held on it)."""
        return self.b.ledger.get_grant(key) or Grant.new(key)

    def hold(self, key: GrantKey, request: AccessRequest) -> Hold:
        """This request's hold on the key, put now (expiring after the request's duration) if it has none.
        Never while the key's assignment is being deleted: the writer waits for the deletion to finish, and
        raises TransientError (the bus delivers again) if it does not finish in time."""
        # NB. The hold is written before the assignment exists so that a crash right after the
        # provider call still leaves the ledger knowing what to revoke.
        request_id = request.request_id
        principal_type = request.requester.principal_type.value

        def add(grant: Grant, now: datetime) -> Grant | None:
            if grant.hold_of(request_id) is not None:
                return None
            hold = Hold.for_key(key, request_id, now, now + request.duration, False, principal_type)
            asked = max(grant.provider_expires_at or hold.expires_at, hold.expires_at)
            # NB. A stale intent's writer will not delete any more (it would renew first, and cannot), so the
            # grant cancels it and keeps whatever assignment is left; `apply` finds or creates it.
            return grant.with_hold(hold).model_copy(
                update={"deleting": None, "principal_type": principal_type, "provider_expires_at": asked}
            )

        grant = self._unless_deleting(key, add, f"grant of {request_id}")
        hold = grant.hold_of(request_id)
        assert hold is not None
        return hold

    def apply(self, provider: GrantProvider, key: GrantKey, hold: Hold, request: AccessRequest) -> Hold:
        """Make sure the assignment exists; a hold on an assignment made outside jitgate becomes preexisting.
        Returns the hold as it stands after: released if a revoke of this request ran meanwhile, in which case
        what this call may have created is removed again."""
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

        def mark(grant: Grant, now: datetime) -> Grant | None:
            current = grant.hold_of(request.request_id)
            if current is None or current.status is not HoldStatus.ACTIVE or current.preexisting == preexisting:
                return None
            return grant.with_hold(current.model_copy(update={"preexisting": preexisting}))

        stored = self._change(key, mark).hold_of(request.request_id)
        if stored is None or stored.status is not HoldStatus.ACTIVE:
            # NB. This request was revoked while its grant ran: its hold was released, perhaps before the
            # assignment was created above, so the assignment may now stand on nothing. Release again.
            self.release(key, request.request_id)
            return stored or hold.model_copy(update={"status": HoldStatus.RELEASED})
        return stored

    def extend(self, provider: GrantProvider, key: GrantKey, request: AccessRequest, until: datetime) -> Hold | None:
        """Move this request's active hold's end to `until`, and tell a provider that ends grants itself (PIM,
        an IAM condition) the new end, by creating the same assignment again. None when the hold is no longer
        active (a revoke came first): nothing was changed."""
        request_id = request.request_id

        def later(grant: Grant, now: datetime) -> Grant | None:
            hold = grant.hold_of(request_id)
            if hold is None or hold.status is not HoldStatus.ACTIVE or hold.expires_at <= now:
                return None
            asked = max(grant.provider_expires_at or until, until)
            return grant.with_hold(hold.model_copy(update={"expires_at": until})).model_copy(
                update={"provider_expires_at": asked})

        hold = self._change(key, later).hold_of(request_id)
        if hold is None or hold.status is not HoldStatus.ACTIVE or hold.expires_at != until:
            return None
        if not hold.preexisting:
            self._call(lambda: provider.create_assignment(
                key, key.assignment_name(), marker_for(request_id), request.requester.principal_type.value, until))
        return hold

    def make_due(self, key: GrantKey, request_id: str) -> None:
        """End this hold's time now (an early revoke), so that reconcile finishes it if the revoke dies."""

        def due(grant: Grant, now: datetime) -> Grant | None:
            hold = grant.hold_of(request_id)
            if hold is None or hold.status is not HoldStatus.ACTIVE or hold.expires_at <= now:
                return None
            return grant.with_hold(hold.model_copy(update={"expires_at": now}))

        self._change(key, due)

    def release(self, key: GrantKey, request_id: str) -> dict[str, Any]:
        """Release one hold and, if no hold on the key is left active, delete the assignment (unless it was
        made outside jitgate) and read it back until it is gone. Returns what happened, for the audit event.

        The release and the deletion intent are one write; the intent is cleared once the assignment is
        confirmed gone. A deletion another writer is making is waited for, so that the revoke is done only
        when the assignment is gone; one whose writer stopped (a stale intent) is taken over."""
        result: dict[str, Any] = {}
        mine: list[Deletion] = []

        def release(grant: Grant, now: datetime) -> Grant | None:
            mine.clear()
            hold = grant.hold_of(request_id)
            grant = grant.released(request_id, now)
            preexisting = hold is not None and hold.preexisting
            result.update(remainingHolds=len(grant.active_holds), preexisting=preexisting, assignmentDeleted=False)
            if grant.active_holds or preexisting:
                return grant
            deletion = Deletion.begin(now, request_id)
            mine.append(deletion)
            return grant.model_copy(update={"deleting": deletion})

        released = self._unless_deleting(key, release, f"revoke of {request_id}")
        if mine:
            crashpoint("revoke.after_release")
            result["assignmentDeleted"] = self._delete(
                key, key.assignment_name(), key.scope, mine[0], request_id, released)
        return result

    def release_leftovers(self, request_id: str) -> None:
        """A request that is no longer active must hold nothing and leave nothing (cleans up after crashes and
        races). Its released holds are released again too: a grant cut short by a revoke may have created the
        assignment after the revoke confirmed it gone, and then not finished removing it."""
        for hold in self.b.ledger.holds_for_request(request_id):
            self.release(hold.key, request_id)

    def orphans(self, provider: GrantProvider) -> Iterator[Assignment]:
        """Assignments carrying jitgate's marker that no active hold stands on and nobody is deleting now,
        each checked as it is reached."""
        now = self.b.clock.now()
        for assignment in self._call(provider.list_marked):
            grant = self.grant_of(assignment.key)
            if not grant.active_holds and grant.deleting_now(now, self.b.delete_lease) is None:
                yield assignment

    def remove(self, provider: GrantProvider, assignment: Assignment) -> bool:
        """Delete an orphaned assignment under its key's deletion intent and confirm it is gone. False when
        it is no orphan any more (a hold came meanwhile) or another writer is deleting it."""
        key = assignment.key
        mine: list[Deletion] = []

        def claim(grant: Grant, now: datetime) -> Grant | None:
            mine.clear()
            if grant.active_holds or grant.deleting_now(now, self.b.delete_lease) is not None:
                return None
            mine.append(Deletion.begin(now, None))
            return grant.model_copy(update={"deleting": mine[0]})

        claimed = self._change(key, claim)
        return bool(mine) and self._delete(key, assignment.name, assignment.scope, mine[0], None, claimed)

    # ------------------------------------------------------------ the deletion protocol

    def _delete(
        self, key: GrantKey, name: str, scope: str, deletion: Deletion, releasing: str | None, written: Grant
    ) -> bool:
        """Delete the assignment under `deletion`, read it back until it is gone, and clear the intent. Every
        delete call is made within the intent's lease, renewed first when half of it has passed. False when
        the intent was superseded (its new holder answers for the assignment). On failure the intent is
        cleared and the hold of `releasing` (the request whose release this is; None for an orphan) is active
        again, so that reconcile keeps trying. `written` is the key's document as the write of `deletion` left
        it: clearing the intent starts from it rather than from another read."""
        provider = self.provider(key.provider)
        lease = [deletion]

        def delete() -> None:
            lease[0] = self._renewed(key, lease[0])
            provider.delete_assignment(scope, name)

        try:
            self._call(delete)
            self._verify_gone(provider, scope, name, delete)
        except Superseded:
            log.info("deletion of %s taken over by another writer", name)
            return False
        except Exception:
            # NB. The assignment may still be there: keep the hold so that reconcile (overdue and
            # terminal-request passes) keeps trying after the bus gives up on this message.
            try:
                self._end_deletion(key, lease[0], gone=False, restore=releasing)
            except Exception:  # the intent stays; it goes stale and the next writer takes it over
                log.exception("could not clear the deletion intent of %s", name)
            raise
        if releasing is not None:
            crashpoint("revoke.after_delete")
        # NB. A renewal wrote the document since: then the intent is cleared from the document as stored.
        self._end_deletion(key, lease[0], gone=True, restore=None, known=written if lease[0] is deletion else None)
        return True

    def _renewed(self, key: GrantKey, deletion: Deletion) -> Deletion:
        """`deletion`, its lease renewed by a conditional write when half of it has passed. Superseded when it
        is no longer the key's intent."""
        now = self.b.clock.now()
        if now - deletion.since < self.b.delete_lease / 2:
            return deletion
        renewed = deletion.model_copy(update={"since": now})
        lost: list[bool] = []

        def renew(grant: Grant, _: datetime) -> Grant | None:
            lost.clear()
            if grant.deleting is None or grant.deleting.token != deletion.token:
                lost.append(True)
                return None
            return grant.model_copy(update={"deleting": renewed})

        self._change(key, renew)
        if lost:
            raise Superseded(key.assignment_name())
        return renewed

    def _end_deletion(
        self, key: GrantKey, deletion: Deletion, gone: bool, restore: str | None, known: Grant | None = None
    ) -> None:
        """Clear the intent if it is still `deletion`. Not `gone` (the delete failed, the assignment may still
        be there): the `restore` request's released hold is active again. `known`: see `_change`."""

        def end(grant: Grant, _: datetime) -> Grant | None:
            if grant.deleting is None or grant.deleting.token != deletion.token:
                return None
            ended = grant.model_copy(update={"deleting": None} | ({"provider_expires_at": None} if gone else {}))
            hold = ended.hold_of(restore) if restore is not None else None
            if hold is not None and hold.status is not HoldStatus.ACTIVE:
                ended = ended.with_hold(hold.model_copy(update={"status": HoldStatus.ACTIVE, "released_at": None}))
            return ended

        self._change(key, end, known)

    def _unless_deleting(self, key: GrantKey, decide: Callable[[Grant, datetime], Grant | None], what: str) -> Grant:
        """`_change` that writes nothing while another writer's deletion intent stands (a stale one is the
        decider's to take over or cancel). It looks again and again until that deletion is done or its lease
        has run out; TransientError if it is still standing then (its writer renews it: a deletion slower
        than one lease)."""
        busy: list[Deletion] = []

        def unless(grant: Grant, now: datetime) -> Grant | None:
            busy.clear()
            changed = decide(grant, now)
            if changed is None or changed == grant:
                return None
            standing = grant.deleting_now(now, self.b.delete_lease)
            if standing is not None:
                busy.append(standing)
                return None
            return changed

        waited, look, budget = 0.0, FIRST_LOOK, None
        while True:
            grant = self._change(key, unless)
            if not busy:
                return grant
            if budget is None:  # the lease left to the intent found first, and one look more
                budget = (busy[0].since + self.b.delete_lease - self.b.clock.now()).total_seconds() + LONGEST_LOOK
            if waited > budget:
                raise TransientError(f"{what}: the assignment of its grant key is still being deleted; try again")
            self.b.sleep(look)
            waited, look = waited + look, min(look * 2, LONGEST_LOOK)

    def _change(
        self, key: GrantKey, decide: Callable[[Grant, datetime], Grant | None], known: Grant | None = None
    ) -> Grant:
        """Read the key's document, decide, write it conditionally (None: nothing to write); when another
        writer got there first, read again and decide again. Returns the document as it stands.

        `known` is the document as this writer's own last write left it: the first try decides on it instead of
        reading it again. NB. The write is conditional on its version, so a document changed since is found out
        by the write, which loses and reads again; a decision to write nothing is only ever taken on a read."""
        conflicts = 0
        while True:
            current = self.grant_of(key) if known is None else known
            changed = decide(current, self.b.clock.now())
            if changed is None or changed == current:
                if known is None:
                    return current
                known = None  # nothing to write on what this writer last wrote: decide on the stored document
                continue
            known = None
            try:
                return self.b.ledger.put_grant(changed)
            except ConcurrencyConflict:
                conflicts += 1
                if conflicts == 8:
                    name = key.assignment_name()
                    raise ConcurrencyConflict(f"grant key {name}: too many concurrent writers") from None

    def _verify_gone(self, provider: GrantProvider, scope: str, name: str, delete: Callable[[], None]) -> None:
        """Read the assignment back after the delete until it is gone, deleting it again between reads;
        every delete is read back. TransientError when it is still there after `verify_attempts` reads."""
        delay = 0.2
        for attempt in range(self.b.verify_attempts):
            if attempt:
                self._call(delete)
                self.b.sleep(delay)
                delay = min(delay * 2, self.b.max_backoff)
            if self._call(lambda: provider.get_assignment(scope, name)) is None:
                return
        raise StillPresent(f"assignment {name} at {scope} still present after delete")

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
