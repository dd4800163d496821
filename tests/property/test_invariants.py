"""Invariants of the whole lifecycle under delivery chaos, by property-based testing (issue 3, item 1).

A hypothesis state machine drives a `World` (jitgate on fakes, FakeClock) with up to 12 overlapping
requests over a handful of grant keys: auto-approved and approval-gated ones, approvals, denials,
decisions never taken, early revokes by the requester, access someone already had outside jitgate,
and time jumps. Meanwhile it plays the bus the way a bad day on Service Bus does: consumers take
messages and run them late, out of order, twice, after their lock expired, or never settle them;
abandoned and unsettled messages come back; some end in the dead-letter queue.

Checked after every step (between handlers, never inside one):
  I1 at most one assignment per grant key (ARCHITECTURE §5);
  I2 a jitgate (marked) assignment exists exactly while an active non-preexisting hold on its key does,
     and an active request holds exactly one active hold, a finished one none;
  I3 a pre-existing (seeded) assignment is never deleted nor changed, and only its key gets
     `preexisting` holds;
  I4 every request's audit chain verifies, the outbox is flushed, and events that happen once per
     request (`grant.applied`, `grant.revoked`, ...) are never doubled (§3 idempotency, §6);
  I5 the state-changing audit events follow the state machine of §4 (an independent copy of it is
     kept below as the oracle) and end in the record's state.
And at the end:
  I6 once every expiry and approval deadline has passed, one `reconcile()` (no message delivered)
     leaves no marked assignment and no active hold, and the messages still on the bus change nothing.

Runs are derandomized (the same examples on every machine, CI included) and use no example database.
`JITGATE_PROPERTY_EXAMPLES=2000` explores further locally.
"""

from __future__ import annotations

import itertools
import os
import sys
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from hypothesis import Phase, settings
from hypothesis import event as statistic
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from shared.adapters.azure.roles import resolve_builtin_role
from shared.domain.audit import AuditEvent, EventType, verify_chain
from shared.domain.errors import AuthError, LockLost, NotFound
from shared.domain.ledger import Assignment, GrantKey, Hold, HoldStatus
from shared.domain.lifecycle import RequestRecord, RequestState
from shared.lifecycle import LIFECYCLE_QUEUE, REQUESTS_QUEUE, REVOCATIONS_QUEUE
from shared.ports import ReceivedMessage
from shared.worker import on_access_request, on_lifecycle_command
from tests.fakes.world import ALICE, BOB, CAROL, DEV_RG, JANE, PROD_RG, QUEUES, World, access_request, body

# The World's policy: the dev subscription auto-approves Reader and Contributor; prod Contributor needs
# 2 approvals from Alice, Bob or Carol (deadline 1 h); prod Reader matches no rule and is rejected.
PRINCIPALS = (JANE, ALICE, BOB)
ROLES = ("Reader", "Contributor")
SCOPES = (DEV_RG, PROD_RG)
APPROVERS = (ALICE, BOB, CAROL)
MAX_REQUESTS = 12
LOCK_SECONDS = 30  # the World's lock duration on every queue
PROVIDER = "local"

R = RequestState
# I5's oracle: ARCHITECTURE §4, written out again here so that loosening the code's table is caught.
LEGAL: dict[RequestState | None, frozenset[RequestState]] = {
    None: frozenset({R.RECEIVED}),
    R.RECEIVED: frozenset({R.PENDING_APPROVAL, R.APPROVED, R.REJECTED, R.REVOKED}),  # withdrawn
    R.PENDING_APPROVAL: frozenset({R.APPROVED, R.DENIED, R.EXPIRED, R.REVOKED}),
    R.APPROVED: frozenset({R.ACTIVE, R.FAILED, R.REVOKED}),
    R.ACTIVE: frozenset({R.REVOKED}),
}
ENTERS: dict[EventType, RequestState] = {
    EventType.REQUEST_RECEIVED: R.RECEIVED,
    EventType.APPROVAL_REQUESTED: R.PENDING_APPROVAL,
    EventType.REQUEST_APPROVED: R.APPROVED,
    EventType.REQUEST_REJECTED: R.REJECTED,
    EventType.REQUEST_DENIED: R.DENIED,
    EventType.REQUEST_EXPIRED: R.EXPIRED,
    EventType.GRANT_APPLIED: R.ACTIVE,
    EventType.GRANT_FAILED: R.FAILED,
    EventType.GRANT_REVOKED: R.REVOKED,
}
# Once per request here: every body is valid and never reused with another body, so even
# `request.rejected` (policy denial) can happen at most once.
ONCE = frozenset(ENTERS) | {EventType.POLICY_EVALUATED, EventType.REVOKE_SCHEDULED}
REQUEST = st.tuples(  # who, role, scope (indices into the universe), duration in seconds, via HTTP?
    st.integers(0, 2), st.integers(0, 1), st.integers(0, 1), st.integers(1, 120), st.booleans()
)
PICK = st.integers(0, MAX_REQUESTS - 1)
# How a consumer treats a message: complete it, handle it twice (duplicate delivery) then complete,
# handle then abandon, handle then walk away (no settle: the lock expires), abandon unhandled.
HOW = st.sampled_from(["complete", "twice", "abandon", "walk_away", "give_back"])
FINISHED = frozenset({R.REVOKED, R.REJECTED, R.DENIED, R.EXPIRED, R.FAILED})
UNDECIDED = frozenset({None, R.RECEIVED, R.APPROVED})


@dataclass(frozen=True)
class Submitted:
    request_id: str
    principal: str
    raw: bytes


def _key(principal: str, role: str, scope: str) -> GrantKey:
    return GrantKey.of(PROVIDER, principal, resolve_builtin_role(role), scope)


def _request_id(n: int) -> str:
    # Deterministic ids: holds and records are ordered by request id, so random ids would make a
    # failing example irreproducible.
    return str(uuid.UUID(int=n, version=4))


class LifecycleUnderChaos(RuleBasedStateMachine):
    """One jitgate, one bus played badly, and the invariants above checked between every two steps."""

    def __init__(self) -> None:
        super().__init__()
        self.world = World(max_deliveries=4)  # low, so that the dead-letter path is reached too
        self.lifecycle = self.world.lifecycle
        self.bus = self.world.bus
        self.principals: tuple[str, ...] = PRINCIPALS
        self.roles: tuple[str, ...] = ROLES
        self.scopes: tuple[str, ...] = SCOPES
        self.requests: list[Submitted] = []
        self.seeded: dict[GrantKey, Assignment] = {}
        # Messages taken by consumers that have not finished with them (possibly long after their lock).
        self.inflight: list[ReceivedMessage] = []
        self.audited: dict[str, int] = {}  # request id -> record version whose trail was checked
        self.runs: Counter[str] = Counter()  # message id -> times a handler ran it
        self.seen: set[str] = set()  # what this run exercised, for `--hypothesis-show-statistics`

    # ------------------------------------------------------------ the scenario

    @initialize(
        principals=st.integers(2, 3),
        roles=st.sampled_from([ROLES, ROLES[:1], ROLES[1:]]),
        scopes=st.sampled_from([SCOPES, SCOPES[:1], SCOPES[1:]]),
        seeds=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1), st.integers(0, 1)), max_size=2),
        first=st.lists(REQUEST, min_size=1, max_size=8),
        evaluated=st.booleans(),
    )
    def universe(
        self,
        principals: int,
        roles: tuple[str, ...],
        scopes: tuple[str, ...],
        seeds: list[tuple[int, int, int]],
        first: list[tuple[int, int, int, int, bool]],
        evaluated: bool,
    ) -> None:
        # GIVEN a few grant keys (2-3 principals x 1-2 roles x 1-2 scopes), so that requests overlap
        self.principals = PRINCIPALS[:principals]
        self.roles = roles
        self.scopes = scopes
        # AND some access that people already have outside jitgate
        for n, (who, role, scope) in enumerate(seeds):
            principal, role_name, scope_name = self._pick(who, role, scope)
            key = _key(principal, role_name, scope_name)
            if key not in self.seeded:
                name = str(uuid.UUID(int=0xA55 + n, version=4))
                self.seeded[key] = self.world.grants.seed(principal, role_name, scope_name, name=name)
        # AND a first wave of requests (more may come later, up to 12)
        for spec in first:
            self.submit(*spec)
        if evaluated:  # (so that approvers have pending requests to answer from the first step)
            for message in self.bus.receive(REQUESTS_QUEUE, MAX_REQUESTS):
                self._deliver(message, "complete")

    @rule(spec=REQUEST)
    def submit_later(self, spec: tuple[int, int, int, int, bool]) -> None:
        self.submit(*spec)

    def submit(self, who: int, role: int, scope: int, seconds: int, via_http: bool) -> None:
        # WHEN someone asks for access, through the HTTP intake or straight onto the queue (Backstage)
        if len(self.requests) >= MAX_REQUESTS:
            return
        principal, role_name, scope_name = self._pick(who, role, scope)
        doc = access_request(
            principal=principal,
            role=role_name,
            scope=scope_name,
            duration=f"PT{seconds}S",
            request_id=_request_id(len(self.requests) + 1),
        )
        submitted = Submitted(doc["requestId"], principal, body(doc))
        self.requests.append(submitted)
        self._send(submitted, via_http)

    @rule(pick=PICK, via_http=st.booleans())
    def submit_again(self, pick: int, via_http: bool) -> None:
        # WHEN the same request is sent again (client retry; after 10 min the bus no longer drops it)
        self._send(self._request(pick), via_http)

    @rule(queue=st.sampled_from(QUEUES), count=st.integers(1, 4))
    def receive(self, queue: str, count: int) -> None:
        # WHEN a consumer locks some due messages and has not handled them yet
        self.inflight.extend(self.bus.receive(queue, count))

    @rule(pick=st.integers(0, 15), how=HOW)
    def handle(self, pick: int, how: str) -> None:
        # WHEN a consumer handles one of the messages it holds, in any order, possibly after its lock
        # expired and another consumer took the message too, and settles it (or not)
        if not self.inflight:
            return  # (no precondition: hypothesis would spend its time retrying draws)
        self._deliver(self.inflight.pop(pick % len(self.inflight)), how)

    @rule(queue=st.sampled_from(QUEUES), times=st.integers(1, 3))
    def crash_loop(self, queue: str, times: int) -> None:
        # WHEN consumers take the first due message and die before handling it, again and again
        # (abandoned: the bus redelivers it at once, and dead-letters it after the maximum deliveries)
        for _ in range(times):
            for message in self.bus.receive(queue, 1):
                self._settle(self.bus.abandon, message)

    @rule()
    def let_locks_expire(self) -> None:
        # WHEN consumers stall past their lock duration (they may still run their message later)
        self.world.clock.advance(LOCK_SECONDS + 1)

    @rule(seconds=st.one_of(st.integers(1, 90), st.sampled_from([601, 3601])))
    def advance(self, seconds: int) -> None:
        # WHEN time passes: expiries fall due, approval deadlines pass, duplicate detection forgets
        self.world.clock.advance(seconds)

    @rule(pattern=st.lists(st.sampled_from(["complete", "twice", "walk_away"]), min_size=1, max_size=6))
    def drain(self, pattern: list[str]) -> None:
        # WHEN a consumer handles everything that is due, in order, each message in the next way of
        # `pattern` (["complete"] is a healthy consumer; "twice" is a duplicate delivery; messages
        # left unsettled come back once their lock expires)
        self._drain(pattern)

    @rule(pick=PICK, approvers=st.permutations(APPROVERS), count=st.integers(1, 3))
    def approve(self, pick: int, approvers: list[str], count: int) -> None:
        # WHEN one, two or three approvers say yes in Teams (refused, and audited, when not theirs
        # to decide; one person approving twice takes two steps)
        request = self._request(pick, preferring={R.PENDING_APPROVAL})
        for approver in approvers[:count]:
            try:
                self.lifecycle.approve(request.request_id, approver, "ok")
            except AuthError:
                pass
            except NotFound:
                assert self.world.store.get_request(request.request_id) is None

    @rule(pick=PICK, approver=st.sampled_from(APPROVERS))
    def deny(self, pick: int, approver: str) -> None:
        # WHEN an approver says no (also too late: after the approval, before the grant ran)
        request = self._request(pick, preferring={R.PENDING_APPROVAL, R.APPROVED})
        try:
            self.lifecycle.deny(request.request_id, approver, "not now")
        except AuthError:
            pass
        except NotFound:
            assert self.world.store.get_request(request.request_id) is None

    @rule(pick=PICK)
    def revoke_early(self, pick: int) -> None:
        # WHEN the requester says "I'm done" before the expiry
        request = self._request(pick, preferring={R.ACTIVE, R.APPROVED, R.PENDING_APPROVAL})
        try:
            self.lifecycle.request_revoke(request.request_id, request.principal, is_admin=False)
        except NotFound:
            assert self.world.store.get_request(request.request_id) is None

    @rule()
    def reconcile(self) -> None:
        # WHEN the reconcile timer fires
        self.lifecycle.flush_pending()
        report = self.lifecycle.reconcile()
        assert report.errors == [], report.errors

    # ------------------------------------------------------------ invariants between steps

    @invariant()
    def between_steps(self) -> None:
        # THEN the provider, the ledger and the audit trail agree (one invariant, so that a failing
        # example prints one line per step)
        self._check(everything=False)

    def _check(self, everything: bool) -> None:
        records = {r.request_id: self.world.store.get_request(r.request_id) for r in self.requests}
        self.one_assignment_per_grant_key()
        self.assignment_exists_exactly_while_held(records)
        self.preexisting_assignments_survive()
        self.audit_trail_is_whole_and_follows_the_state_machine(records, everything)

    def one_assignment_per_grant_key(self) -> None:
        # THEN I1
        counts = Counter(a.key for a in self.world.grants.all_assignments())
        doubled = {key: n for key, n in counts.items() if n > 1}
        assert not doubled, f"I1: several assignments for one grant key: {doubled}"

    def assignment_exists_exactly_while_held(self, records: Mapping[str, RequestRecord | None]) -> None:
        # THEN I2 (and the preexisting half of I3)
        marked: dict[GrantKey, Assignment] = {}
        for assignment in self.world.grants.all_assignments():
            if assignment.marked_request_id is not None:
                marked[assignment.key] = assignment
            else:
                assert assignment.key in self.seeded, f"I2: an unmarked assignment jitgate did not seed: {assignment}"
        holds: dict[GrantKey, list[Hold]] = defaultdict(list)
        for hold in self.world.store.all_active_holds():
            holds[hold.key].append(hold)
        for key in set(marked) | set(holds):
            ours = [h.request_id for h in holds.get(key, []) if not h.preexisting]
            theirs = [h.request_id for h in holds.get(key, []) if h.preexisting]
            if len(ours) > 1:
                self.seen.add("overlapping holds")
            if theirs:
                self.seen.add("pre-existing hold")
            if key in self.seeded:
                assert key not in marked and not ours, f"I3: jitgate granted over pre-existing access on {key}"
            else:
                assert not theirs, f"I3: holds {theirs} call {key} pre-existing, but nobody seeded it"
                assert (key in marked) == bool(ours), (
                    f"I2: assignment {'present' if key in marked else 'missing'} on {key} with active holds {ours}"
                )
        for request in self.requests:
            record = records[request.request_id]
            holds_of_request = self.world.store.holds_for_request(request.request_id)
            active = [h for h in holds_of_request if h.status is HoldStatus.ACTIVE]
            if record is not None and record.state is R.ACTIVE:
                assert [h.key for h in active] == [record.grant_key], (
                    f"I2: active request {request.request_id} has active holds {active}"
                )
            else:
                assert not active, f"I2: {record.state if record else 'unknown'} request holds {active}"

    def preexisting_assignments_survive(self) -> None:
        # THEN I3
        for key, seeded in self.seeded.items():
            now = self.world.grants.get_assignment(seeded.scope, seeded.name)
            assert now == seeded, f"I3: pre-existing assignment on {key} was deleted or changed: {now}"

    def audit_trail_is_whole_and_follows_the_state_machine(
        self, records: Mapping[str, RequestRecord | None], everything: bool
    ) -> None:
        # THEN I4 and I5. Between steps only the trails of records that changed are read again (the
        # audit store copies every event it hands out); the end reads them all.
        for request in self.requests:
            record = records[request.request_id]
            if not everything and record is not None and self.audited.get(request.request_id) == record.version:
                continue
            chain = self.world.store.chain(request.request_id)
            report = verify_chain(request.request_id, chain)
            assert report.ok, f"I4: {report.as_dict()}"
            if record is None:
                assert chain == [], f"I4: events without a record: {[e.type.value for e in chain]}"
                continue
            assert not record.pending_events, f"I4: unflushed outbox {[e.type.value for e in record.pending_events]}"
            assert record.audit_seq == len(chain), f"I4: record at seq {record.audit_seq}, chain has {len(chain)}"
            assert record.audit_head == (chain[-1].hash if chain else "")
            doubled = {t.value: n for t, n in Counter(e.type for e in chain).items() if n > 1 and t in ONCE}
            assert not doubled, f"I4: {request.request_id} audited more than once: {doubled}"
            assert record.request is not None
            ended = _replay(request.request_id, request.principal, chain)
            assert ended is record.state, f"I5: trail ends in {ended}, record is {record.state.value}"
            required = record.decision.required_approvals if record.decision else 0
            assert len(record.approvals) <= max(required, 0), f"I5: {len(record.approvals)} of {required} approvals"
            self.audited[request.request_id] = record.version

    # ------------------------------------------------------------ the end

    def teardown(self) -> None:
        if sys.exc_info()[1] is not None:
            return  # a step already failed: report that, not a consequence of it
        # WHEN the stalled consumers are gone, an operator replays the dead-letter queues, and a
        # healthy consumer handles everything that is due
        self.inflight.clear()
        self.world.clock.advance(LOCK_SECONDS + 1)
        self._drain()
        for queue in QUEUES:
            for dead in self.bus.dead_letters(queue):
                self.seen.add(f"dead-lettered on {queue}")
                self.bus.replay_dead_letter(queue, dead.sequence_number)
            self._drain()
        # THEN every request has been decided, and every approved one granted
        self._check(everything=True)
        undecided = [(r.request_id, self._state(r)) for r in self.requests if self._state(r) in UNDECIDED]
        assert not undecided, f"requests left undecided or approved but never granted: {undecided}"
        # AND every expiry and approval deadline passes, with no message delivered, and then
        # exactly one reconcile runs (the revokes of the holds still active wait on the bus)
        held = len(self.world.store.all_active_holds())
        self.world.clock.advance(self._horizon() + 1)
        report = self.lifecycle.reconcile()
        # THEN I6: nothing jitgate granted is left, nothing is held, nothing is left undecided
        assert report.errors == [], report.errors
        assert self.world.marked() == [], f"I6: marked assignments left: {self.world.marked()}"
        assert self.world.store.all_active_holds() == [], "I6: active holds left"
        assert all(self._state(r) in FINISHED for r in self.requests), [
            (r.request_id, self._state(r)) for r in self.requests
        ]
        self._check(everything=True)
        # AND the revokes and expiries still on the bus, arriving late, change nothing
        trail = {r.request_id: len(self.world.store.chain(r.request_id)) for r in self.requests}
        self._drain()
        self._check(everything=True)
        late = {r.request_id: len(self.world.store.chain(r.request_id)) for r in self.requests}
        assert late == trail, f"I4: late messages added audit events (events per request {trail} -> {late})"
        assert self.world.marked() == [] and self.world.store.all_active_holds() == []
        self._tell_statistics()
        if held:
            statistic("the last reconcile revoked holds")

    # ------------------------------------------------------------ plumbing

    def _tell_statistics(self) -> None:
        for feature in sorted(self.seen):
            statistic(feature)
        for request in self.requests:
            trail = {e.type for e in self.world.store.chain(request.request_id)}
            for kind in (EventType.REQUEST_DENIED, EventType.REQUEST_EXPIRED, EventType.GRANT_REVOKED):
                if kind in trail:
                    statistic(f"some request {kind.value}")
            if EventType.APPROVAL_REQUESTED in trail and EventType.GRANT_APPLIED in trail:
                statistic("approval-gated request granted")
            if any(e.data.get("reason") == "early" for e in self.world.store.chain(request.request_id)):
                statistic("revoked early")
        statistic(f"requests: {len(self.requests) // 4 * 4}-{len(self.requests) // 4 * 4 + 3}")
        statistic(f"final states: {sorted({str(self._state(r)) for r in self.requests})}")

    def _pick(self, who: int, role: int, scope: int) -> tuple[str, str, str]:
        return (
            self.principals[who % len(self.principals)],
            self.roles[role % len(self.roles)],
            self.scopes[scope % len(self.scopes)],
        )

    def _request(self, pick: int, preferring: frozenset[RequestState] | set[RequestState] = frozenset()) -> Submitted:
        """The request `pick` points at, among those in a preferred state if there are any (so that
        approvals mostly reach pending requests, yet refusals still happen)."""
        preferred = [r for r in self.requests if self._state(r) in preferring]
        candidates = preferred or self.requests
        return candidates[pick % len(candidates)]

    def _state(self, request: Submitted) -> RequestState | None:
        record = self.world.store.get_request(request.request_id)
        return None if record is None else record.state

    def _send(self, request: Submitted, via_http: bool) -> None:
        if via_http:
            self.lifecycle.submit(request.raw)
        else:
            self.bus.send(REQUESTS_QUEUE, request.request_id, request.raw)

    def _run(self, message: ReceivedMessage) -> None:
        """The worker's dispatch, minus its safety net: under these fakes no handler may raise."""
        self.runs[message.message_id] += 1
        if self.runs[message.message_id] == 2:
            self.seen.add(
                f"handled again: {message.message_id.split(':')[0] if ':' in message.message_id else 'evaluate'}"
            )
        if message.queue == REQUESTS_QUEUE:
            on_access_request(self.lifecycle, message.body)
        else:
            on_lifecycle_command(self.lifecycle, message.body, message.delivery_count, self.world.max_deliveries)

    def _settle(self, settle: Callable[[ReceivedMessage], None], message: ReceivedMessage) -> None:
        try:
            settle(message)
        except LockLost:  # the lock expired first: the bus delivers it again
            self.seen.add("settled after lock lost")

    def _deliver(self, message: ReceivedMessage, how: str) -> None:
        if how != "give_back":
            self._run(message)
        if how == "twice":  # a duplicate delivery: the same body handled again before settling
            self._run(message)
        if how in ("complete", "twice"):
            self._settle(self.bus.complete, message)
        elif how in ("abandon", "give_back"):
            self._settle(self.bus.abandon, message)
        # walk_away: the consumer dies after the work; the lock expires and the bus redelivers

    def _drain(self, pattern: list[str] | None = None) -> None:
        ways = itertools.cycle(pattern or ["complete"])
        for _ in range(100):
            batch = self.bus.receive(REVOCATIONS_QUEUE, 16) or (
                self.bus.receive(LIFECYCLE_QUEUE, 16) + self.bus.receive(REQUESTS_QUEUE, 16)
            )
            if not batch:
                return
            for message in batch:
                self._deliver(message, next(ways))
        raise AssertionError("the bus does not drain: handlers keep sending")

    def _horizon(self) -> float:
        """Seconds from now until every active hold has expired and every approval deadline passed."""
        now = self.world.clock.now()
        ends = [h.expires_at for h in self.world.store.all_active_holds()]
        for request in self.requests:
            record = self.world.store.get_request(request.request_id)
            if record is not None and record.approval_deadline is not None:
                ends.append(record.approval_deadline)
        return max([(end - now) / timedelta(seconds=1) for end in ends] + [0.0])


def _replay(request_id: str, requester: str, chain: list[AuditEvent]) -> RequestState | None:
    """Walk the trail through §4 and return the state it ends in; AssertionError on an illegal step."""
    state: RequestState | None = None
    previous: EventType | None = None
    for event in chain:
        where = f"{request_id} seq {event.seq} {event.type.value} in state {state}"
        if event.type in ENTERS:
            target = ENTERS[event.type]
            assert target in LEGAL.get(state, frozenset()), f"I5: {where}: illegal transition to {target.value}"
            state = target
        elif event.type is EventType.POLICY_EVALUATED:
            assert state is R.RECEIVED, f"I5: {where}"
        elif event.type is EventType.REVOKE_SCHEDULED:
            assert previous is EventType.GRANT_APPLIED, f"I5: {where}"
        elif event.type is EventType.APPROVAL_RECORDED and event.data.get("counted"):
            assert state is R.PENDING_APPROVAL, f"I5: {where}"
        elif event.type is EventType.ACTIVITY_SUMMARY:
            assert state is R.REVOKED, f"I5: {where}"
        elif event.type is EventType.RECONCILE_ORPHAN_REMOVED:
            raise AssertionError(f"I2: {where}: reconcile found an orphan, so one existed between steps")
        previous = event.type
    approvals = [e.data["approver"] for e in chain if e.type is EventType.APPROVAL_RECORDED and e.data["counted"]]
    assert len(approvals) == len(set(approvals)), f"I5: {request_id}: one approver counted twice: {approvals}"
    assert requester not in approvals, f"I5: {request_id}: the requester approved their own request"
    return state


LifecycleUnderChaos.TestCase.settings = settings(
    max_examples=int(os.environ.get("JITGATE_PROPERTY_EXAMPLES", "150")),
    stateful_step_count=50,
    deadline=None,  # a step runs a whole jitgate; its time varies with the machine, not the code
    derandomize=True,
    database=None,
    report_multiple_bugs=False,
    # No explain phase: on a failure it spent minutes re-running variants of the shrunk example.
    phases=[
        Phase.explicit,
        Phase.reuse,
        Phase.generate,
        Phase.target,
        Phase.shrink,
    ],  # one bug, shrunk fast, rather than every way the others show
)
TestLifecycleUnderChaos = LifecycleUnderChaos.TestCase
