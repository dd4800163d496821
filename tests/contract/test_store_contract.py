"""One contract for RequestStore, LedgerStore and AuditStore, run against every adapter.

A new adapter joins by adding one line to STORES: a factory from a temporary directory to a store.
"""

from __future__ import annotations

import base64
import json
import multiprocessing
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

import pytest

from shared.adapters.embedded.store import LEDGER_SCHEMA_VERSION, SCHEMA_VERSION, SqliteStore, ledger_path
from shared.domain.audit import SYSTEM, Actor, AuditEvent, EventType, make_event, verify_chain
from shared.domain.decision import Decision, Outcome
from shared.domain.errors import AlreadyExists, ConcurrencyConflict, NotFound
from shared.domain.ledger import RELEASED_KEPT, Deletion, Grant, GrantKey, Hold, HoldStatus
from shared.domain.lifecycle import Approval, Extension, RequestRecord, RequestState
from shared.domain.request import parse_access_request
from shared.ports import AuditQuery, AuditStore, LedgerStore, RequestQuery, RequestStore
from tests.azure.contract_adapters import cosmos_store
from tests.fakes.store import FakeStore


class Store(RequestStore, LedgerStore, AuditStore, Protocol):
    """What every adapter under contract is."""


STORES: list[Any] = [
    pytest.param(lambda tmp: FakeStore(), id="fake"),
    pytest.param(lambda tmp: SqliteStore(tmp / "jitgate.db"), id="sqlite"),
    pytest.param(cosmos_store, id="cosmos"),
]

T0 = datetime(2026, 11, 26, 9, 0, 0, 123456, tzinfo=UTC)
JANE = "2c5f39cb-3fb2-42e3-994f-1127d4ddb538"
BOB = "8a0c2f7e-5d1b-4c3a-9e8f-7a6b5c4d3e2f"
APPROVER = "5e4d3c2b-1a09-4f8e-8d7c-6b5a49382716"
KEY = GrantKey.of("azure-rbac", JANE, "b24988ac-6180-42a0-ab88-20f7382dd24c", "/subscriptions/s1/resourcegroups/rg")
OTHER_KEY = GrantKey.of(
    "azure-rbac", BOB, "b24988ac-6180-42a0-ab88-20f7382dd24c", "/subscriptions/s1/resourcegroups/rg"
)


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    factory: Callable[[Path], Store] = request.param
    made = factory(tmp_path)
    yield made
    close = getattr(made, "close", None)
    if close is not None:
        close()


# ---------------------------------------------------------------- builders


def full_record(request_id: str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427") -> RequestRecord:
    """A record with every field set to something other than its default."""
    body = {
        "schemaVersion": 1,
        "requestId": request_id,
        "requester": {
            "principalId": JANE,
            "principalType": "User",
            "displayName": "Jane Doe",
            "email": "jane@example.com",
            "backstageRef": "user:default/jane",
        },
        "target": {
            "provider": "azure-rbac",
            "scope": "/subscriptions/3d6a4adc-4ac3-43f4-a05a-2238e5eec649/resourceGroups/rg-payments-prod",
            "role": "Contributor",
        },
        "duration": "PT2H",
        "justification": "Rotate the payments DB firewall rule for INC-4711 — ünïcode too",
        "ticket": "INC-4711",
        "context": {"entityRef": "component:default/payments-api", "taskId": "task-1"},
    }
    access = parse_access_request(json.dumps(body))
    record = RequestRecord(
        request_id=request_id,
        state=RequestState.RECEIVED,
        created_at=T0,
        updated_at=T0,
        request=access,
        fingerprint=access.fingerprint(),
        errors=[{"loc": "ticket", "msg": "an old complaint"}],
        decision=Decision(
            outcome=Outcome.APPROVAL,
            rule="prod-contributor",
            reasons=["production scope", "contributor role"],
            required_approvals=2,
            approver_groups=["payments-leads"],
            approval_deadline=timedelta(hours=4),
            max_duration=timedelta(hours=8),
            break_glass=True,
        ),
        approvals=[Approval(approver_id=APPROVER, at=T0 + timedelta(minutes=5), comment="ok")],
        denial={"by": BOB, "reason": "changed mind", "nested": {"n": 1.5}},
        approval_deadline=T0 + timedelta(hours=4),
        grant_key=KEY,
        granted_at=T0 + timedelta(minutes=6),
        expires_at=T0 + timedelta(hours=2, minutes=6),
        revoked_at=T0 + timedelta(hours=1),
        revoke_reason="done early",
        revoke_sequence=42,
        revoke_n=2,
        failure="a transient hiccup",
        extension=Extension(until=T0 + timedelta(hours=3, minutes=6), asked_at=T0 + timedelta(minutes=30),
                            reason="the migration runs long", rule="prod-contributor", required_approvals=2,
                            approver_groups=["payments-leads"],
                            approvals=[Approval(approver_id=APPROVER, at=T0 + timedelta(minutes=31))]),
    )
    record.emit(EventType.REQUEST_RECEIVED, T0, {"ticket": "INC-4711"}, Actor(principal_id=JANE, kind="user"))
    record.emit(EventType.POLICY_EVALUATED, T0 + timedelta(seconds=1), {"outcome": "approval", "score": 0.25})
    return record


def chain_of(
    request_id: str,
    length: int,
    start: datetime = T0,
    step: timedelta = timedelta(seconds=1),
    actor: Actor = SYSTEM,
    types: tuple[EventType, ...] = (EventType.REQUEST_RECEIVED, EventType.POLICY_EVALUATED),
) -> list[AuditEvent]:
    events: list[AuditEvent] = []
    head = ""
    for seq in range(length):
        event = make_event(
            request_id, seq, head, types[seq % len(types)], start + step * seq, actor, {"n": seq, "note": "ü"}
        )
        events.append(event)
        head = event.hash
    return events


def append_all(store: Store, events: list[AuditEvent], principal_id: str | None = None) -> None:
    for event in events:
        store.append(event, principal_id)


def hold(
    key: GrantKey = KEY,
    request_id: str = "r1",
    expires_at: datetime = T0 + timedelta(hours=2),
    **changes: Any,
) -> Hold:
    return Hold.for_key(key, request_id, T0, expires_at, preexisting=False, principal_type="Group").model_copy(
        update=changes
    )


def put(store: Store, *holds: Hold, **changes: Any) -> Grant:
    """Put `holds` (of one key) on the stored document of their key, as one conditional write."""
    key = holds[0].key
    grant = store.get_grant(key) or Grant.new(key)
    for h in holds:
        grant = grant.with_hold(h)
    return store.put_grant(grant.model_copy(update=changes))


def all_pages(store: Store, query: AuditQuery) -> tuple[list[AuditEvent], int]:
    events: list[AuditEvent] = []
    pages = 0
    continuation: str | None = None
    while True:
        page = store.query(AuditQuery(**{**query.__dict__, "continuation": continuation}))
        pages += 1
        events.extend(page.events)
        continuation = page.continuation
        if continuation is None:
            return events, pages
        assert pages < 1000, "pagination does not terminate"


def ids(events: list[AuditEvent]) -> list[str]:
    return [e.id for e in events]


# ---------------------------------------------------------------- requests


def test_a_created_record_round_trips_every_field_at_version_1(store: Store) -> None:
    # GIVEN a record with every field populated, and a version the store must not trust
    record = full_record().model_copy(update={"version": 7})

    # WHEN it is created and read back
    created = store.create_request(record)
    got = store.get_request(record.request_id)

    # THEN it is the same record, at version 1, in the model and in its document, its events committed with it
    assert created.version == 1
    assert created.document()["version"] == 1
    assert got == created
    assert got is not None
    assert got.model_copy(update={"version": 7, "pending_events": record.pending_events}) == record
    assert got.document() == {**record.document(), "version": 1, "pendingEvents": []}
    assert verify_chain(got.request_id, store.chain(got.request_id)).ok


def test_save_writes_the_next_version_and_returns_it(store: Store) -> None:
    created = store.create_request(full_record())
    created.move_to(RequestState.PENDING_APPROVAL, T0 + timedelta(minutes=1))
    created.emit(EventType.APPROVAL_REQUESTED, T0 + timedelta(minutes=1), {"groups": ["payments-leads"]})

    saved = store.save_request(created)

    assert saved.version == 2
    assert saved.document()["version"] == 2
    assert saved.state is RequestState.PENDING_APPROVAL
    assert store.get_request(created.request_id) == saved
    assert saved.model_copy(update={"version": 1, "pending_events": created.pending_events}) == created
    again = store.save_request(saved)
    assert again.version == 3


def test_a_returned_record_is_a_copy_not_the_stored_state(store: Store) -> None:
    created = store.create_request(full_record())
    created.approvals.append(Approval(approver_id=BOB, at=T0))

    got = store.get_request(created.request_id)

    assert got is not None and [a.approver_id for a in got.approvals] == [APPROVER]


def test_creating_an_existing_id_raises_already_exists_and_keeps_the_first(store: Store) -> None:
    first = store.create_request(full_record())
    second = full_record().model_copy(update={"state": RequestState.REJECTED, "failure": "other"})

    with pytest.raises(AlreadyExists):
        store.create_request(second)

    assert store.get_request(first.request_id) == first


def test_a_stale_save_raises_conflict_and_leaves_the_stored_record_unchanged(store: Store) -> None:
    # GIVEN two writers that read version 1
    created = store.create_request(full_record())
    mine, theirs = created.model_copy(deep=True), created.model_copy(deep=True)
    mine.move_to(RequestState.PENDING_APPROVAL, T0 + timedelta(minutes=1))
    winner = store.save_request(mine)

    # WHEN the other writes on top of the version it read
    theirs.move_to(RequestState.REJECTED, T0 + timedelta(minutes=2))
    with pytest.raises(ConcurrencyConflict):
        store.save_request(theirs)

    # THEN the winner's write stands
    assert store.get_request(created.request_id) == winner
    assert winner.state is RequestState.PENDING_APPROVAL and winner.version == 2


def test_a_save_from_the_future_also_conflicts(store: Store) -> None:
    created = store.create_request(full_record())

    with pytest.raises(ConcurrencyConflict):
        store.save_request(created.model_copy(update={"version": 5}))

    assert store.get_request(created.request_id) == created


def test_saving_an_unknown_id_raises_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.save_request(full_record("00000000-0000-0000-0000-000000000000").model_copy(update={"version": 1}))
    assert store.get_request("00000000-0000-0000-0000-000000000000") is None


def test_get_of_an_unknown_id_is_none(store: Store) -> None:
    assert store.get_request("nope") is None


def test_requests_in_returns_the_chosen_states_oldest_update_first(store: Store) -> None:
    def make(request_id: str, state: RequestState, minutes: int) -> None:
        at = T0 + timedelta(minutes=minutes)
        store.create_request(RequestRecord(request_id=request_id, state=state, created_at=T0, updated_at=at))

    make("late-pending", RequestState.PENDING_APPROVAL, 30)
    make("early-active", RequestState.ACTIVE, 10)
    make("revoked", RequestState.REVOKED, 1)
    make("middle-pending", RequestState.PENDING_APPROVAL, 20)
    make("micro-later", RequestState.ACTIVE, 10)
    saved = store.get_request("micro-later")
    assert saved is not None
    saved.updated_at += timedelta(microseconds=1)
    store.save_request(saved)

    wanted = {RequestState.PENDING_APPROVAL, RequestState.ACTIVE}
    found = [r.request_id for r in store.requests_in(wanted)]

    assert found == ["early-active", "micro-later", "middle-pending", "late-pending"]
    assert [r.request_id for r in store.requests_in(wanted, limit=2)] == ["early-active", "micro-later"]
    assert [r.request_id for r in store.requests_in({RequestState.REVOKED})] == ["revoked"]
    assert store.requests_in({RequestState.FAILED}) == []
    assert store.requests_in(set()) == []


def test_list_requests_newest_first_by_state_and_requester_in_pages(store: Store) -> None:
    # GIVEN records made a minute apart, Jane's and Bob's, in several states; one written again later
    def make(n: int, state: RequestState, requester: str | None) -> str:
        request_id = f"{n:08d}-0000-4000-8000-000000000000"
        at = T0 + timedelta(minutes=n)
        record = full_record(request_id) if requester else None
        if record is not None:
            assert record.request is not None
            record = record.model_copy(update={
                "state": state, "created_at": at, "updated_at": at, "pending_events": [],
                "request": record.request.model_copy(update={"requester": record.request.requester.model_copy(
                    update={"principal_id": requester})})})
        store.create_request(record or RequestRecord(request_id=request_id, state=state, created_at=at, updated_at=at))
        return request_id

    jane = [make(n, RequestState.ACTIVE if n % 2 else RequestState.REVOKED, JANE) for n in range(1, 6)]
    bob = make(6, RequestState.ACTIVE, BOB)
    invalid = make(7, RequestState.REJECTED, None)
    touched = store.get_request(jane[0])
    assert touched is not None
    touched.updated_at = T0 + timedelta(hours=1)
    store.save_request(touched)

    def listed(**filters: Any) -> list[str]:
        found: list[str] = []
        continuation = None
        while True:
            page = store.list_requests(RequestQuery(limit=2, continuation=continuation, **filters))
            assert len(page.records) <= 2
            found += [r.request_id for r in page.records]
            continuation = page.continuation
            if continuation is None:
                return found

    # THEN pages of two add up to every record, newest created first (a later write does not move it)
    assert listed() == [invalid, bob, *reversed(jane)]
    assert listed(states=frozenset({RequestState.ACTIVE})) == [bob, jane[4], jane[2], jane[0]]
    assert listed(requester_id=JANE, states=frozenset({RequestState.REVOKED})) == [jane[3], jane[1]]
    assert listed(requester_id=BOB) == [bob]
    assert store.list_requests(RequestQuery(states=frozenset({RequestState.FAILED}))).records == []
    with pytest.raises(ValueError):
        store.list_requests(RequestQuery(continuation="bm90IGEgdG9rZW4"))


def test_requests_in_follows_state_changes(store: Store) -> None:
    created = store.create_request(
        RequestRecord(request_id="r", state=RequestState.RECEIVED, created_at=T0, updated_at=T0)
    )
    created.move_to(RequestState.APPROVED, T0 + timedelta(seconds=1))
    store.save_request(created)

    assert store.requests_in({RequestState.RECEIVED}) == []
    assert [r.version for r in store.requests_in({RequestState.APPROVED})] == [2]


def test_a_record_and_its_events_are_committed_together(store: Store) -> None:
    # GIVEN a record with two events in its outbox
    record = full_record()
    emitted = list(record.pending_events)

    # WHEN it is created
    created = store.create_request(record)

    # THEN the events are in the audit log, indexed under the requester, and no outbox is left anywhere
    assert store.chain(record.request_id) == emitted
    assert store.query(AuditQuery(principal_id=JANE)).events == emitted
    assert created.pending_events == []
    assert store.get_request(record.request_id) == created
    assert store.requests_with_outbox() == []
    # AND a save commits the next event with the next version, in the same way
    created.move_to(RequestState.PENDING_APPROVAL, T0 + timedelta(minutes=1))
    event = created.emit(EventType.APPROVAL_REQUESTED, T0 + timedelta(minutes=1), {"groups": ["payments-leads"]})
    saved = store.save_request(created)
    assert (saved.version, saved.pending_events) == (2, [])
    assert store.chain(record.request_id) == [*emitted, event]
    assert verify_chain(record.request_id, store.chain(record.request_id)).ok
    assert store.requests_with_outbox() == [] and store.requests_with_outbox(limit=0) == []


def test_a_write_whose_event_is_taken_writes_nothing(store: Store) -> None:
    # GIVEN a stored record, and an event appended on its chain behind its back at the next seq
    created = store.create_request(full_record())
    chain = store.chain(created.request_id)
    intruder = make_event(created.request_id, len(chain), chain[-1].hash, EventType.ACCESS_REFUSED, T0, SYSTEM, {})
    store.append(intruder)

    # WHEN a save emits its own event at that seq
    created.move_to(RequestState.APPROVED, T0 + timedelta(minutes=1))
    created.emit(EventType.REQUEST_APPROVED, T0 + timedelta(minutes=1), {"by": "policy"})
    with pytest.raises(AlreadyExists):
        store.save_request(created)

    # THEN neither the record nor the event was written
    stored = store.get_request(created.request_id)
    assert stored is not None and (stored.version, stored.state) == (1, RequestState.RECEIVED)
    assert store.chain(created.request_id) == [*chain, intruder]
    # AND a new record whose event is taken is not created
    taken = full_record("0f0f0f0f-0000-4000-8000-000000000000")
    store.append(taken.pending_events[0])
    with pytest.raises(AlreadyExists):
        store.create_request(taken)
    assert store.get_request(taken.request_id) is None
    assert store.chain(taken.request_id) == taken.pending_events[:1]


def test_a_stale_save_writes_none_of_its_events(store: Store) -> None:
    created = store.create_request(full_record())
    mine, theirs = created.model_copy(deep=True), created.model_copy(deep=True)
    mine.emit(EventType.APPROVAL_REQUESTED, T0 + timedelta(minutes=1), {})
    store.save_request(mine)
    theirs.emit(EventType.REQUEST_DENIED, T0 + timedelta(minutes=2), {})

    with pytest.raises(ConcurrencyConflict):
        store.save_request(theirs)

    assert [e.type for e in store.chain(created.request_id)][-1] is EventType.APPROVAL_REQUESTED


# ---------------------------------------------------------------- ledger


def test_a_grant_round_trips_exactly_at_version_1(store: Store) -> None:
    # GIVEN a grant document with every field set, instants to the microsecond
    deletion = Deletion(token="t-1", since=T0 + timedelta(minutes=3, microseconds=5), request_id="r0")
    grant = (
        Grant.new(KEY)
        .with_hold(hold(request_id="r1", preexisting=True, expires_at=T0 + timedelta(hours=2, microseconds=7)))
        .with_hold(hold(request_id="r0", status=HoldStatus.RELEASED, released_at=T0 + timedelta(minutes=3)))
        .model_copy(update={"principal_type": "Group", "provider_expires_at": T0 + timedelta(hours=2),
                            "deleting": deletion, "version": 0})
    )

    # WHEN it is written to a key that has no document and read back
    stored = store.put_grant(grant)
    got = store.get_grant(KEY)

    # THEN it is the same document at version 1, its instants UTC
    assert stored == got == grant.model_copy(update={"version": 1})
    assert got is not None and all(h.expires_at.utcoffset() == timedelta(0) for h in got.holds)
    assert store.get_grant(OTHER_KEY) is None


def test_a_grant_in_another_offset_is_the_same_instant(store: Store) -> None:
    plus_two = timezone(timedelta(hours=2))
    put(store, hold(expires_at=datetime(2026, 11, 26, 13, 0, tzinfo=plus_two)))

    got = store.get_grant(KEY)

    assert got is not None and got.holds[0].expires_at == datetime(2026, 11, 26, 11, 0, tzinfo=UTC)


def test_a_naive_timestamp_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="timezone"):
        put(store, hold(expires_at=datetime(2026, 11, 26, 11, 0)))
    with pytest.raises(ValueError, match="timezone"):
        store.overdue_holds(datetime(2026, 11, 26, 11, 0))
    assert store.get_grant(KEY) is None


def test_a_grant_write_is_conditional_on_the_version_it_read(store: Store) -> None:
    # GIVEN two writers that read version 1 of a key's document
    put(store, hold(request_id="r1"))
    mine, theirs = store.get_grant(KEY), store.get_grant(KEY)
    assert mine is not None and theirs is not None and mine.version == 1
    winner = store.put_grant(mine.with_hold(hold(request_id="r2")))

    # WHEN the other writes what it decided on the version it read, or writes as if the key had no document
    with pytest.raises(ConcurrencyConflict):
        store.put_grant(theirs.released("r1", T0 + timedelta(minutes=1)))
    with pytest.raises(ConcurrencyConflict):
        store.put_grant(Grant.new(KEY).with_hold(hold(request_id="r3")))
    with pytest.raises(ConcurrencyConflict):
        store.put_grant(winner.model_copy(update={"version": 7}))

    # THEN the winner's write stands, whole
    assert store.get_grant(KEY) == winner
    assert winner.version == 2 and [h.request_id for h in winner.active_holds] == ["r1", "r2"]
    assert sorted(h.request_id for h in store.all_active_holds()) == ["r1", "r2"]


def test_the_active_holds_of_one_provider(store: Store) -> None:
    # GIVEN active holds on two providers and a released one on the provider asked for
    envoy = GrantKey.of("envoy", JANE, "read", "payments-api/invoices")
    put(store, hold())
    put(store, hold(key=envoy, request_id="r2"), hold(key=envoy, request_id="r3"))
    put(store, hold(key=envoy, request_id="r3", status=HoldStatus.RELEASED, released_at=T0))
    # THEN only the provider's active ones are its active holds
    assert [h.request_id for h in store.all_active_holds("envoy")] == ["r2"]
    assert sorted(h.request_id for h in store.all_active_holds()) == ["r1", "r2"]


def test_a_released_hold_leaves_the_active_set_and_stays_on_record(store: Store) -> None:
    # GIVEN two requests holding one key, and a third holding another key
    put(
        store,
        hold(request_id="r1", expires_at=T0 + timedelta(hours=1)),
        hold(request_id="r2", expires_at=T0 + timedelta(hours=3)),
    )
    put(store, hold(key=OTHER_KEY, request_id="r3"))
    extended = put(store, hold(request_id="r1", expires_at=T0 + timedelta(hours=2)))  # the same hold, extended
    assert [(h.request_id, h.expires_at) for h in extended.active_holds] == [
        ("r1", T0 + timedelta(hours=2)),
        ("r2", T0 + timedelta(hours=3)),
    ]

    # WHEN one is released
    released = store.put_grant(extended.released("r1", T0 + timedelta(hours=1)))

    # THEN only the other request still holds the key; the released hold stays on record
    assert [h.request_id for h in released.active_holds] == ["r2"]
    [r1] = store.holds_for_request("r1")
    assert (r1.status, r1.released_at) == (HoldStatus.RELEASED, T0 + timedelta(hours=1))
    assert sorted(h.request_id for h in store.all_active_holds()) == ["r2", "r3"]


def test_released_holds_beyond_the_kept_ones_are_pruned_from_the_store(store: Store) -> None:
    # GIVEN a hot key: one active hold and more released holds than a document keeps
    grant = Grant.new(KEY).with_hold(hold(request_id="active"))
    for n in range(RELEASED_KEPT + 3):
        grant = grant.with_hold(
            hold(request_id=f"old-{n:02d}", status=HoldStatus.RELEASED, released_at=T0 + timedelta(minutes=n))
        )

    # WHEN it is written
    store.put_grant(grant)

    # THEN the oldest released holds are gone from every query; the active one and the newest released stay
    assert store.holds_for_request("old-00") == [] and store.holds_for_request("old-02") == []
    assert [h.request_id for h in store.holds_for_request(f"old-{RELEASED_KEPT + 2:02d}")] == [
        f"old-{RELEASED_KEPT + 2:02d}"
    ]
    stored = store.get_grant(KEY)
    assert stored is not None and len(stored.holds) == RELEASED_KEPT + 1
    assert [h.request_id for h in store.all_active_holds()] == ["active"]


def test_a_hold_keeps_its_principal_type_and_one_stored_without_it_loads(store: Store) -> None:
    put(store, hold(request_id="r1"), hold(request_id="r2", principal_type=None))  # as holds were written before

    got = store.get_grant(KEY)

    assert got is not None
    assert [(h.request_id, h.principal_type) for h in got.active_holds] == [("r1", "Group"), ("r2", None)]


V1_HOLDS = """
    CREATE TABLE holds (provider TEXT NOT NULL, principal_id TEXT NOT NULL,
        role_definition_id TEXT NOT NULL, scope TEXT NOT NULL, request_id TEXT NOT NULL,
        granted_at TEXT NOT NULL, expires_at TEXT NOT NULL, preexisting INTEGER NOT NULL,
        status TEXT NOT NULL, released_at TEXT,
        PRIMARY KEY (provider, principal_id, role_definition_id, scope, request_id)) WITHOUT ROWID;
    PRAGMA user_version = 1;
"""


def test_a_version_1_sqlite_store_is_upgraded_and_its_holds_still_load(tmp_path: Path) -> None:
    # GIVEN a store file written before holds kept the principal type
    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as db:
        db.executescript(V1_HOLDS)
        db.execute("INSERT INTO holds VALUES (?, ?, ?, ?, 'r1', '2026-11-26T09:00:00.123456Z',"
                   " '2026-11-26T11:00:00.123456Z', 0, 'active', NULL)",
                   (KEY.provider, KEY.principal_id, KEY.role_definition_id, KEY.scope))
    # WHEN this jitgate opens it THEN the old hold loads without a type, and new holds keep theirs
    with SqliteStore(path) as store:
        grant = store.get_grant(KEY)
        assert grant is not None and grant.version == 1
        [old] = grant.active_holds
        assert (old.request_id, old.principal_type) == ("r1", None)
        put(store, hold(request_id="r2"))
        stored = store.get_grant(KEY)
        assert stored is not None and stored.hold_of("r2") == hold(request_id="r2")
    # AND it is upgraded all the way: the ledger's tables are in the ledger file, and only there
    assert_ledger_moved(path)


def assert_ledger_moved(path: Path) -> None:
    """The store file at `path` is of the current schema, and its ledger's tables are in its ledger file alone."""
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert db.execute("SELECT name FROM sqlite_master WHERE name IN ('holds', 'grants')").fetchall() == []
    with closing(sqlite3.connect(ledger_path(path))) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (LEDGER_SCHEMA_VERSION,)
        assert sorted(db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")) == [("grants",), ("holds",)]


def test_a_version_2_sqlite_store_gets_one_grant_document_per_key_of_its_holds(tmp_path: Path) -> None:
    # GIVEN a store file of the previous version: holds only, two on one key (one released), one on another
    path = tmp_path / "v2.db"
    with sqlite3.connect(path) as db:
        db.executescript(V1_HOLDS.replace("released_at TEXT,", "released_at TEXT, principal_type TEXT,")
                         .replace("user_version = 1", "user_version = 2"))
        rows = [
            (*_key_columns(KEY), "r1", "2026-11-26T09:00:00.000000Z", "2026-11-26T11:00:00.000000Z", 0, "active",
             None, "Group"),
            (*_key_columns(KEY), "r0", "2026-11-26T08:00:00.000000Z", "2026-11-26T08:30:00.000000Z", 0, "released",
             "2026-11-26T08:30:00.000000Z", "User"),
            (*_key_columns(OTHER_KEY), "r2", "2026-11-26T09:00:00.000000Z", "2026-11-26T10:00:00.000000Z", 1,
             "active", None, None),
        ]
        db.executemany("INSERT INTO holds VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    # WHEN this jitgate opens it
    with SqliteStore(path) as store:
        # THEN each key is one document at version 1, its holds as they were, typed as its latest hold
        grant = store.get_grant(KEY)
        assert grant is not None and (grant.version, grant.principal_type, grant.deleting) == (1, "Group", None)
        assert [(h.request_id, h.status) for h in grant.holds] == [
            ("r0", HoldStatus.RELEASED), ("r1", HoldStatus.ACTIVE)]
        other = store.get_grant(OTHER_KEY)
        assert other is not None and [(h.request_id, h.preexisting) for h in other.holds] == [("r2", True)]
        assert sorted(h.request_id for h in store.all_active_holds()) == ["r1", "r2"]
        # AND it is written like any other: conditionally
        store.put_grant(grant.released("r1", T0))
        with pytest.raises(ConcurrencyConflict):
            store.put_grant(grant)
    with SqliteStore(path) as reopened:  # opening again changes nothing
        again = reopened.get_grant(KEY)
        assert again is not None and again.version == 2
    assert_ledger_moved(path)


def _key_columns(key: GrantKey) -> tuple[str, str, str, str]:
    return key.provider, key.principal_id, key.role_definition_id, key.scope


def test_holds_for_request_spans_keys_and_statuses(store: Store) -> None:
    put(store, hold(key=KEY, request_id="r1"), hold(key=KEY, request_id="r2"))
    put(store, hold(key=OTHER_KEY, request_id="r1", status=HoldStatus.RELEASED, released_at=T0))

    assert sorted((h.key, h.status) for h in store.holds_for_request("r1")) == sorted(
        [(KEY, HoldStatus.ACTIVE), (OTHER_KEY, HoldStatus.RELEASED)]
    )
    assert store.holds_for_request("none") == []


def test_overdue_includes_expiry_exactly_now_and_excludes_released_and_future(store: Store) -> None:
    now = T0 + timedelta(hours=2)
    put(
        store,
        hold(request_id="long-ago", expires_at=now - timedelta(hours=1)),
        hold(request_id="exactly-now", expires_at=now),
        hold(request_id="one-micro-later", expires_at=now + timedelta(microseconds=1)),
    )
    put(
        store,
        hold(
            key=OTHER_KEY,
            request_id="released",
            expires_at=now - timedelta(hours=1),
            status=HoldStatus.RELEASED,
            released_at=now - timedelta(hours=1),
        ),
    )

    assert [h.request_id for h in store.overdue_holds(now)] == ["long-ago", "exactly-now"]
    assert [h.request_id for h in store.overdue_holds(now - timedelta(microseconds=1))] == ["long-ago"]
    assert [h.request_id for h in store.overdue_holds(now + timedelta(microseconds=1))] == [
        "long-ago",
        "exactly-now",
        "one-micro-later",
    ]


def test_no_holds_means_empty_answers(store: Store) -> None:
    assert store.all_active_holds() == []
    assert store.overdue_holds(T0) == []
    assert store.holds_for_request("r1") == []
    assert store.get_grant(KEY) is None


# ---------------------------------------------------------------- audit: append and chain


def test_events_round_trip_with_their_hashes_intact(store: Store) -> None:
    events = full_record().pending_events + chain_of("other", 3)

    append_all(store, events, JANE)
    got = store.chain(events[0].request_id)

    assert got == events[:2]
    assert [e.document() for e in got] == [e.document() for e in events[:2]]
    assert verify_chain(events[0].request_id, got).ok
    assert verify_chain("other", store.chain("other")).ok


def test_a_duplicate_event_id_raises_already_exists_and_does_not_fork_the_chain(store: Store) -> None:
    # GIVEN a chain of two links
    events = chain_of("r1", 2)
    append_all(store, events)

    # WHEN a competing writer appends another event for seq 1
    fork = make_event("r1", 1, events[0].hash, EventType.REQUEST_DENIED, T0, SYSTEM, {"fork": True})
    with pytest.raises(AlreadyExists):
        store.append(fork)
    with pytest.raises(AlreadyExists):
        store.append(events[1])

    # AND the id alone is enough to conflict, whatever seq the document claims
    with pytest.raises(AlreadyExists):
        store.append(fork.model_copy(update={"seq": 7}))

    # THEN the chain is the original
    assert store.chain("r1") == events
    assert store.query(AuditQuery(request_id="r1")).events == events


def test_chain_is_in_seq_order_whatever_the_append_order(store: Store) -> None:
    events = chain_of("r1", 4, step=-timedelta(seconds=1))  # later seqs carry earlier times
    noise = chain_of("r2", 2)
    for event in (events[2], noise[0], events[0], events[3], noise[1], events[1]):
        store.append(event)

    assert [e.seq for e in store.chain("r1")] == [0, 1, 2, 3]
    assert verify_chain("r1", store.chain("r1")).ok
    assert store.chain("unknown") == []


def test_request_ids_lists_each_request_once(store: Store) -> None:
    append_all(store, chain_of("b", 3) + chain_of("a", 2) + chain_of("c", 1))

    assert sorted(store.request_ids()) == ["a", "b", "c"]


def test_bulk_append_is_all_or_nothing(store: Store) -> None:
    bulk = getattr(store, "bulk_append", None)
    if bulk is None:
        pytest.skip("this adapter has no bulk_append")
    append_all(store, chain_of("r1", 1))
    fresh = chain_of("r2", 3)

    with pytest.raises(AlreadyExists):
        bulk([(fresh[0], JANE), (fresh[1], JANE), (chain_of("r1", 1)[0], JANE)])
    with pytest.raises(AlreadyExists):
        bulk([(fresh[0], JANE), (fresh[0], JANE)])
    with pytest.raises(AlreadyExists):
        bulk([(fresh[0], JANE), (fresh[0].model_copy(update={"seq": 9}), JANE)])

    assert store.chain("r2") == []
    assert store.query(AuditQuery(principal_id=JANE)).events == []
    assert bulk([(e, JANE) for e in fresh]) == 3
    assert store.chain("r2") == fresh
    assert store.query(AuditQuery(principal_id=JANE)).events == fresh


def test_iter_chains_yields_every_chain_once_in_request_id_order(store: Store) -> None:
    iter_chains = getattr(store, "iter_chains", None)
    if iter_chains is None:
        pytest.skip("this adapter has no iter_chains")
    # GIVEN enough events and requests to cross any internal batch boundary
    chains = {f"req-{i:05d}": chain_of(f"req-{i:05d}", 1 + i % 2) for i in range(2_100)}
    events = [e for chain in chains.values() for e in chain]
    bulk = getattr(store, "bulk_append", None)
    if bulk is not None:
        bulk([(e, None) for e in events])
    else:
        append_all(store, events)

    # WHEN every chain is read in one pass
    seen = list(iter_chains())

    # THEN each chain comes once, whole, in order, and verifies
    assert [request_id for request_id, _ in seen] == sorted(chains)
    assert all(chain == chains[request_id] for request_id, chain in seen)
    assert all(verify_chain(request_id, chain).ok for request_id, chain in seen)
    assert list(store.request_ids()) == sorted(chains)


# ---------------------------------------------------------------- audit: query


@pytest.fixture
def journal(store: Store) -> dict[str, list[AuditEvent]]:
    """Three requests: Jane's (approved by APPROVER), Bob's, and one Jane acted on for Bob."""
    jane = chain_of(
        "jane-req",
        4,
        start=T0,
        step=timedelta(minutes=10),
        types=(EventType.REQUEST_RECEIVED, EventType.GRANT_APPLIED),
    )
    approval = make_event(
        "jane-req",
        4,
        jane[-1].hash,
        EventType.APPROVAL_RECORDED,
        T0 + timedelta(minutes=35),
        Actor(principal_id=APPROVER, kind="user"),
        {},
    )
    bob = chain_of(
        "bob-req",
        3,
        start=T0 + timedelta(minutes=5),
        step=timedelta(minutes=10),
        types=(EventType.REQUEST_RECEIVED, EventType.GRANT_APPLIED),
    )
    acted = chain_of(
        "bob-req-2",
        1,
        start=T0 + timedelta(minutes=15),
        actor=Actor(principal_id=JANE, kind="user"),
        types=(EventType.GRANT_REVOKED,),
    )
    append_all(store, [*jane, approval], JANE)
    append_all(store, bob, BOB)
    append_all(store, acted, BOB)
    return {"jane": [*jane, approval], "bob": bob, "acted": acted}


def in_time_order(*groups: list[AuditEvent]) -> list[AuditEvent]:
    return sorted((e for group in groups for e in group), key=lambda e: (e.at, e.id))


def test_query_without_filters_returns_everything_in_time_order(
    store: Store, journal: dict[str, list[AuditEvent]]
) -> None:
    page = store.query(AuditQuery())

    assert page.events == in_time_order(*journal.values())
    assert page.continuation is None


def test_query_by_request_id(store: Store, journal: dict[str, list[AuditEvent]]) -> None:
    assert store.query(AuditQuery(request_id="bob-req")).events == journal["bob"]
    assert store.query(AuditQuery(request_id="nobody")).events == []


def test_query_by_principal_matches_the_requester_or_the_actor(
    store: Store, journal: dict[str, list[AuditEvent]]
) -> None:
    # Jane requested jane-req and acted on bob-req-2; APPROVER only acted once.
    assert store.query(AuditQuery(principal_id=JANE)).events == in_time_order(journal["jane"], journal["acted"])
    assert store.query(AuditQuery(principal_id=BOB)).events == in_time_order(journal["bob"], journal["acted"])
    assert store.query(AuditQuery(principal_id=APPROVER)).events == journal["jane"][-1:]
    assert store.query(AuditQuery(principal_id="jitgate")).events == in_time_order(journal["jane"][:-1], journal["bob"])
    assert store.query(AuditQuery(principal_id="stranger")).events == []


def test_query_by_type(store: Store, journal: dict[str, list[AuditEvent]]) -> None:
    applied = [e for e in in_time_order(*journal.values()) if e.type is EventType.GRANT_APPLIED]

    assert store.query(AuditQuery(type="grant.applied")).events == applied
    assert store.query(AuditQuery(type=EventType.GRANT_REVOKED)).events == journal["acted"]
    assert store.query(AuditQuery(type="request.denied")).events == []


def test_since_is_inclusive_and_until_exclusive(store: Store, journal: dict[str, list[AuditEvent]]) -> None:
    everything = in_time_order(*journal.values())
    since, until = T0 + timedelta(minutes=10), T0 + timedelta(minutes=25)

    assert store.query(AuditQuery(since=since)).events == [e for e in everything if e.at >= since]
    assert store.query(AuditQuery(until=until)).events == [e for e in everything if e.at < until]
    window = store.query(AuditQuery(since=since, until=until)).events
    assert window == [e for e in everything if since <= e.at < until]
    assert window[0].at == since  # the boundary event itself
    # the same instants written in another offset select the same events
    plus_two = timezone(timedelta(hours=2))
    assert store.query(AuditQuery(since=since.astimezone(plus_two), until=until.astimezone(plus_two))).events == window
    assert store.query(AuditQuery(since=until, until=since)).events == []


def test_filters_combine_with_and(store: Store, journal: dict[str, list[AuditEvent]]) -> None:
    since, until = T0 + timedelta(minutes=10), T0 + timedelta(minutes=40)
    jane_in_window = [e for e in in_time_order(journal["jane"], journal["acted"]) if since <= e.at < until]

    assert store.query(AuditQuery(principal_id=JANE, since=since, until=until)).events == jane_in_window
    assert store.query(AuditQuery(principal_id=JANE, type="grant.applied", since=since, until=until)).events == [
        e for e in jane_in_window if e.type is EventType.GRANT_APPLIED
    ]
    assert store.query(AuditQuery(request_id="bob-req-2", principal_id=JANE)).events == journal["acted"]
    assert store.query(AuditQuery(request_id="bob-req", principal_id=JANE)).events == []
    assert (
        store.query(
            AuditQuery(
                request_id="jane-req",
                principal_id=APPROVER,
                type="approval.recorded",
                since=since,
                until=until,
            )
        ).events
        == journal["jane"][-1:]
    )
    assert store.query(AuditQuery(request_id="jane-req", type="grant.applied", until=since)).events == []
    assert store.query(AuditQuery(request_id="jane-req", type="grant.applied", since=since)).events == [
        e for e in journal["jane"] if e.type is EventType.GRANT_APPLIED and e.at >= since
    ]


@pytest.mark.parametrize("principal_id", [None, JANE])
@pytest.mark.parametrize("total", [25, 21])
def test_pagination_returns_each_event_once_in_order(store: Store, principal_id: str | None, total: int) -> None:
    # GIVEN more events than a page, several of them at the same instant, in several requests
    events = [
        e
        for r in range(total // 3)
        for e in chain_of(f"r{r:02d}", 3, start=T0 + timedelta(microseconds=r % 4), step=timedelta(0))
    ] + chain_of("tail", total % 3, start=T0 + timedelta(seconds=1))
    append_all(store, events, JANE)
    assert len(events) == total

    # WHEN read page by page
    got, pages = all_pages(store, AuditQuery(principal_id=principal_id, limit=7))

    # THEN every event comes exactly once, in (at, id) order, and the last page says there is no more
    assert ids(got) == ids(in_time_order(events))
    assert pages == -(-total // 7)


def test_pagination_under_filters_and_across_equal_instants(store: Store) -> None:
    events = chain_of("same", 10, step=timedelta(0)) + chain_of("other", 10, step=timedelta(0))
    append_all(store, events, BOB)

    got, pages = all_pages(store, AuditQuery(type="policy.evaluated", since=T0, until=T0 + timedelta(1), limit=3))

    assert ids(got) == ids(in_time_order([e for e in events if e.type is EventType.POLICY_EVALUATED]))
    assert pages == 4


def test_limit_is_clamped_between_1_and_1000(store: Store) -> None:
    events = chain_of("big", 1_001, step=timedelta(milliseconds=1))
    bulk = getattr(store, "bulk_append", None)
    if bulk is not None:
        bulk([(e, None) for e in events])
    else:
        append_all(store, events)

    for limit in (0, -5):
        page = store.query(AuditQuery(limit=limit))
        assert ids(page.events) == [events[0].id] and page.continuation is not None
    page = store.query(AuditQuery(limit=5_000))
    assert ids(page.events) == ids(events[:1000])
    last = store.query(AuditQuery(limit=5_000, continuation=page.continuation))
    assert ids(last.events) == [events[-1].id] and last.continuation is None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


@pytest.mark.parametrize(
    "token",
    [
        "not a token!",
        "%%%",
        _b64(b"\xff\xfe"),
        _b64(b"{}"),
        _b64(b"[1, 2]"),
        _b64(b'["2026-11-26T09:00:00.000000Z"]'),
        _b64(b'["yesterday", "r:000001"]'),
        _b64(b'["2026-11-26T09:00:00.000000Z", "r:000001", "extra"]'),
    ],
)
def test_a_malformed_continuation_raises_value_error(store: Store, token: str) -> None:
    append_all(store, chain_of("r", 2))

    with pytest.raises(ValueError, match="continuation"):
        store.query(AuditQuery(continuation=token))


def test_a_continuation_resumes_after_the_last_event(store: Store) -> None:
    events = chain_of("r", 5)
    append_all(store, events)

    first = store.query(AuditQuery(limit=2))
    assert first.continuation is not None
    # a later append after the page boundary is seen by the next page
    late = make_event("s", 0, "", EventType.REQUEST_RECEIVED, T0 + timedelta(hours=1), SYSTEM, {})
    store.append(late)
    rest = store.query(AuditQuery(limit=10, continuation=first.continuation))

    assert ids(first.events) == ids(events[:2])
    assert ids(rest.events) == [*ids(events[2:]), late.id]
    assert rest.continuation is None


# ---------------------------------------------------------------- SQLite only


def test_sqlite_data_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "jitgate.db"
    record = full_record()
    with SqliteStore(path) as first:
        created = first.create_request(record)
        stored = put(first, hold())

    with SqliteStore(path) as reopened:
        assert reopened.get_request(created.request_id) == created
        assert reopened.get_grant(KEY) == stored
        assert reopened.chain(created.request_id) == record.pending_events
        assert reopened.query(AuditQuery(principal_id=JANE)).events == record.pending_events


def test_sqlite_threads_racing_optimistic_saves_have_one_winner_per_round(tmp_path: Path) -> None:
    # GIVEN one record and two threads, each with its own connection of one store
    rounds = 25
    with SqliteStore(tmp_path / "jitgate.db") as store:
        store.create_request(RequestRecord(request_id="r", state=RequestState.RECEIVED, created_at=T0, updated_at=T0))
        barrier = threading.Barrier(2)
        outcomes: list[list[str]] = [[] for _ in range(rounds)]
        failures: list[BaseException] = []

        def writer(name: str) -> None:
            try:
                for n in range(rounds):
                    barrier.wait()
                    current = store.get_request("r")
                    assert current is not None
                    current.revoke_reason = f"{name}-{n}"
                    barrier.wait()  # both have read the same version before either writes
                    try:
                        store.save_request(current)
                        outcomes[n].append(name)
                    except ConcurrencyConflict:
                        pass
            except BaseException as exc:  # surfaced below; a dead thread would otherwise pass silently
                failures.append(exc)
                barrier.abort()

        # WHEN they race round after round
        threads = [threading.Thread(target=writer, args=(name,)) for name in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

        # THEN exactly one save wins each round, and the store counted every win
        assert not failures
        assert all(len(winners) == 1 for winners in outcomes), outcomes
        final = store.get_request("r")
        assert final is not None
        assert final.version == 1 + rounds
        assert final.revoke_reason == f"{outcomes[-1][0]}-{rounds - 1}"


V3_REQUESTS = """
    CREATE TABLE requests (request_id TEXT PRIMARY KEY, state TEXT NOT NULL, version INTEGER NOT NULL,
        updated_at TEXT NOT NULL, doc TEXT NOT NULL);
    CREATE INDEX requests_by_state ON requests (state, updated_at);
    CREATE INDEX requests_by_requester ON requests (json_extract(doc, '$.request.requester.principalId'));
    CREATE INDEX requests_with_outbox ON requests (updated_at) WHERE json_array_length(doc, '$.pendingEvents') > 0;
    PRAGMA user_version = 3;
"""


def test_sqlite_a_version_3_store_gets_requester_and_outbox_columns_and_its_records_are_found(tmp_path: Path) -> None:
    # GIVEN a store file of version 3: a record an earlier jitgate wrote before appending its events (its outbox
    # full), a record of Bob's without one, and a rejected body's record (no request, so no requester)
    path = tmp_path / "v3.db"
    left = full_record()
    assert left.request is not None
    bobs = left.model_copy(update={
        "request_id": "00000000-0000-4000-8000-000000000002", "pending_events": [],
        "request": left.request.model_copy(update={
            "requester": left.request.requester.model_copy(update={"principal_id": BOB})})})
    rejected = RequestRecord(request_id="00000000-0000-4000-8000-000000000003", state=RequestState.REJECTED,
                             created_at=T0, updated_at=T0)
    with sqlite3.connect(path) as db:
        db.executescript(V3_REQUESTS)
        db.executemany(
            "INSERT INTO requests (request_id, state, version, updated_at, doc) VALUES (?, ?, 1, ?, ?)",
            [(r.request_id, r.state.value, "2026-11-26T09:00:00.123456Z", json.dumps({**r.document(), "version": 1}))
             for r in (left, bobs, rejected)],
        )

    # WHEN this jitgate opens it
    with SqliteStore(path) as store:
        # THEN the record with an outbox is the one found, with its events, until its outbox is cleared
        [found] = store.requests_with_outbox()
        assert (found.request_id, found.pending_events) == (left.request_id, left.pending_events)
        # AND each record is found by its requester
        assert [r.request_id for r in store.list_requests(RequestQuery(requester_id=JANE)).records] == [left.request_id]
        assert [r.request_id for r in store.list_requests(RequestQuery(requester_id=BOB)).records] == [bobs.request_id]
        assert len(store.list_requests(RequestQuery()).records) == 3

        found.pending_events = []
        store.save_request(found)
        assert store.requests_with_outbox() == []
        assert [r.request_id for r in store.list_requests(RequestQuery(requester_id=JANE)).records] == [left.request_id]

    # AND the file is of the current version, its indexes on columns, none on an expression over the document
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        indexes = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'requests'"
                                  " AND sql IS NOT NULL"))
        assert sorted(indexes) == ["requests_by_requester_id", "requests_by_state", "requests_with_pending_events"]
        assert not any("json" in sql for sql in indexes.values())
    with SqliteStore(path) as reopened:  # opening again changes nothing
        assert [r.request_id for r in reopened.list_requests(RequestQuery(requester_id=BOB)).records] == [
            bobs.request_id]


def test_sqlite_two_stores_on_one_file_see_each_others_writes(tmp_path: Path) -> None:
    path = tmp_path / "jitgate.db"
    with SqliteStore(path) as a, SqliteStore(path) as b:
        created = a.create_request(full_record())
        assert b.get_request(created.request_id) == created

        created.move_to(RequestState.PENDING_APPROVAL, T0 + timedelta(minutes=1))
        saved = b.save_request(created)
        assert a.get_request(created.request_id) == saved
        with pytest.raises(ConcurrencyConflict):
            a.save_request(created)

        stored = put(b, hold())
        assert a.get_grant(KEY) == stored
        with pytest.raises(ConcurrencyConflict):
            a.put_grant(Grant.new(KEY).with_hold(hold(request_id="r2")))

        events = chain_of("r", 2)
        a.append(events[0], JANE)
        with pytest.raises(AlreadyExists):
            b.append(events[0], JANE)
        b.append(events[1], JANE)
        assert a.chain("r") == events
        assert a.query(AuditQuery(request_id="r", principal_id=JANE)).events == events


def _append_racing(path: str, writer: str, links: int) -> None:
    """Child process: append links of a shared chain, re-reading the head after each lost race."""
    store = SqliteStore(path)
    appended = 0
    while appended < links:
        chain = store.chain("shared")
        head = chain[-1].hash if chain else ""
        event = make_event(
            "shared",
            len(chain),
            head,
            EventType.APPROVAL_RECORDED,
            T0 + timedelta(seconds=len(chain)),
            Actor(principal_id=writer, kind="service"),
            {"writer": writer},
        )
        try:
            store.append(event, writer)
            appended += 1
        except AlreadyExists:
            continue
    store.close()


def test_sqlite_processes_appending_to_one_chain_never_fork_it(tmp_path: Path) -> None:
    # GIVEN two processes that both extend the same chain on the same file
    path = str(tmp_path / "jitgate.db")
    SqliteStore(path).close()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_racing, args=(path, name, 30)) for name in ("w1", "w2")]

    # WHEN they race
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)

    # THEN every append of both landed as its own link and the chain verifies
    assert [worker.exitcode for worker in workers] == [0, 0]
    with SqliteStore(path) as store:
        chain = store.chain("shared")
        assert len(chain) == 60
        assert verify_chain("shared", chain).ok
        assert sorted(e.data["writer"] for e in chain) == ["w1"] * 30 + ["w2"] * 30
        assert len(store.query(AuditQuery(principal_id="w1", limit=1000)).events) == 30
