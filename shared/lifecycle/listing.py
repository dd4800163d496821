"""Lists of requests for the pages (ARCHITECTURE §7): a person's own, those waiting for their approval, the
active ones, by target and by state; and who may read a request at all. Read-only: nothing here writes.

The store narrows by state and requester (what it indexes); the rest is decided here, one record at a time, by
the same rules the API's reads and the approvers' answers use, so that a list never shows what a read of the
request would refuse, and "waiting for me" is exactly what an approval would accept.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..domain.lifecycle import RequestRecord, RequestState
from ..ports import Person, RequestQuery
from .approvals import approver_refusal
from .backends import Backends
from .records import request_of

# NB. How many records one listing call reads at most before it answers with what it found and a continuation:
# a filter that matches little (a rare target) must not make one call read the whole store.
MAX_SCANNED = 2000
PEOPLE_SHOWN = 20


@dataclass(frozen=True)
class Viewer:
    """Who asks: an Entra object id, the groups the directory puts them in, and whether they may read every
    request (auditors and admins)."""

    principal_id: str
    groups: frozenset[str]
    reads_all: bool = False

    def may_read(self, record: RequestRecord) -> bool:
        """The requester, its approvers (anyone in one of its approver groups), auditors and admins."""
        if self.reads_all:
            return True
        if record.request is not None and record.request.requester.principal_id == self.principal_id:
            return True
        return record.decision is not None and bool(self.groups & set(record.decision.approver_groups))

    def may_decide(self, record: RequestRecord) -> str:
        """Why this viewer may not approve or deny the request now ('' when they may, and have not yet)."""
        refusal = approver_refusal(record, self.principal_id, self.groups)
        extension = record.extension if record.state is RequestState.ACTIVE else None
        counted = {a.approver_id for a in extension.approvals} if extension else record.approver_ids()
        if not refusal and self.principal_id in counted:
            return "your approval is already counted"
        return refusal


@dataclass(frozen=True)
class RequestFilter:
    """What a list shows; every given filter must hold. `scope` and `role` compare without regard to case, as the
    policy does."""

    mine: bool = False
    waiting_for_me: bool = False
    states: frozenset[RequestState] | None = None
    provider: str | None = None
    scope: str | None = None
    role: str | None = None

    def matches(self, record: RequestRecord, viewer: Viewer) -> bool:
        if not viewer.may_read(record):
            return False
        if self.states is not None and record.state not in self.states:
            return False
        if self.waiting_for_me and viewer.may_decide(record):
            return False
        target = record.request.target if record.request is not None else None
        if self.mine and (record.request is None or record.request.requester.principal_id != viewer.principal_id):
            return False
        if self.provider is not None and (target is None or target.provider.value != self.provider):
            return False
        if self.scope is not None and (target is None or target.scope.lower() != self.scope.lower()):
            return False
        return self.role is None or (target is not None and target.role.lower() == self.role.lower())

    def narrowed(self, viewer: Viewer) -> tuple[frozenset[RequestState] | None, str | None]:
        """The states and requester the store can narrow to."""
        states = self.states
        if self.waiting_for_me:  # requests waiting for approvals, and active grants whose more time does
            decidable = frozenset({RequestState.PENDING_APPROVAL, RequestState.ACTIVE})
            states = decidable & (states or frozenset(RequestState))
        return states, viewer.principal_id if self.mine else None


@dataclass(frozen=True)
class Listing:
    """One page: at most `limit` records, newest first; `continuation` is where the next call goes on (None: no
    more). A page may be short, even empty, with a continuation: the call stopped after `MAX_SCANNED` records."""

    records: list[RequestRecord]
    continuation: str | None


class Lists:
    """`list_requests` and `who_may_approve`."""

    def __init__(self, backends: Backends) -> None:
        self.b = backends

    def list_requests(self, wanted: RequestFilter, viewer: Viewer, limit: int, continuation: str | None) -> Listing:
        """Raises ValueError for a continuation the store did not give."""
        states, requester = wanted.narrowed(viewer)
        if states is not None and not states:
            return Listing([], None)  # e.g. waiting for me and active: nothing can be both
        found: list[RequestRecord] = []
        scanned = 0
        while True:
            # NB. Each store page asks only for as many records as the answer still lacks, so that the page the
            # caller gets is never longer than `limit` and the continuation never skips a record.
            page = self.b.requests.list_requests(RequestQuery(
                states=states, requester_id=requester, limit=limit - len(found), continuation=continuation))
            scanned += len(page.records)
            found.extend(record for record in page.records if wanted.matches(record, viewer))
            continuation = page.continuation
            if continuation is None or len(found) >= limit or scanned >= MAX_SCANNED:
                return Listing(found, continuation)

    def who_may_approve(self, record: RequestRecord) -> list[Person]:
        """The first people of the request's approver groups (or of its more time's) who may still approve it: not
        its requester, not who already did. Empty when nothing waits for approval."""
        extension = record.extension if record.state is RequestState.ACTIVE else None
        if extension is not None:
            groups, counted = extension.approver_groups, {a.approver_id for a in extension.approvals}
        elif record.state is RequestState.PENDING_APPROVAL and record.decision is not None:
            groups, counted = record.decision.approver_groups, record.approver_ids()
        else:
            return []
        requester = request_of(record).requester.principal_id
        people: dict[str, Person] = {}
        for group in groups:
            for person in self.b.directory.members_of(group, PEOPLE_SHOWN).people:
                if person.principal_id not in counted and person.principal_id != requester:
                    people.setdefault(person.principal_id, person)
        return list(people.values())[:PEOPLE_SHOWN]
