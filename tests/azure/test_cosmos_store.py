"""CosmosStore beyond the store contract: document layout and partitioning, transactional batches, the
documents of the earlier layout (records in `requests`, one document per hold in `ledger`), etag concurrency
across processes, SDK paging, error translation and lazy containers. All on the fake account
(tests/azure/fake_cosmos.py), whose batch semantics are pinned at the end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.cosmos.exceptions import CosmosBatchOperationError, CosmosHttpResponseError

from shared.adapters.azure.cosmos import CosmosStore
from shared.domain.audit import SYSTEM, EventType, make_event
from shared.domain.errors import AlreadyExists, ConcurrencyConflict, PermanentError, TransientError
from shared.domain.ledger import Grant, GrantKey, Hold, HoldStatus
from shared.domain.lifecycle import RequestRecord, RequestState
from shared.ports import AuditQuery
from tests.azure.fake_cosmos import FakeCosmosAccount

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
KEY = GrantKey.of("azure-rbac", "2c5f39cb-3fb2-42e3-994f-1127d4ddb538", "b24988ac-6180-42a0-ab88-20f7382dd24c",
                  "/subscriptions/s1/resourceGroups/rg")


@pytest.fixture
def account() -> FakeCosmosAccount:
    return FakeCosmosAccount()


@pytest.fixture
def store(account: FakeCosmosAccount) -> CosmosStore:
    return CosmosStore(account.container)


def record(request_id: str = "r1", events: int = 0) -> RequestRecord:
    made = RequestRecord(request_id=request_id, state=RequestState.RECEIVED, created_at=T0, updated_at=T0)
    for n in range(events):
        made.emit(EventType.REQUEST_RECEIVED if n == 0 else EventType.POLICY_EVALUATED, T0, {"n": n})
    return made


def hold(request_id: str = "r1", key: GrantKey = KEY, **changes: Any) -> Hold:
    return Hold.for_key(key, request_id, T0, T0 + timedelta(hours=2), False, "User").model_copy(update=changes)


def legacy_hold_document(h: Hold, principal_type: bool = True) -> dict[str, Any]:
    """A hold as the earlier layout wrote it: one document per hold, `id` = the request id."""
    doc = {
        "id": h.request_id,
        "grantKey": h.key.assignment_name(),
        "provider": h.provider,
        "principalId": h.principal_id,
        "roleDefinitionId": h.role_definition_id,
        "scope": h.scope,
        "requestId": h.request_id,
        "grantedAt": "2026-11-26T09:00:00.000000Z",
        "expiresAt": "2026-11-26T11:00:00.000000Z",
        "preexisting": h.preexisting,
        "status": h.status.value,
        "releasedAt": None if h.released_at is None else "2026-11-26T09:30:00.000000Z",
        "principalType": h.principal_type,
    }
    if not principal_type:
        del doc["principalType"]
    return doc


def legacy_record_document(made: RequestRecord, version: int = 3) -> dict[str, Any]:
    """A record as the earlier layout wrote it, in `requests`: `id` = the request id, its outbox in it."""
    return {**made.document(), "version": version, "id": made.request_id,
            "updatedOrder": f"2026-11-26T09:00:00.000000Z {made.request_id}"}


def only_ids(account: FakeCosmosAccount, partition: str) -> list[str]:
    return [d["id"] for d in account.container("ledger").query_items("SELECT * FROM c", partition_key=partition)]


# ---------------------------------------------------------------- layout


def test_documents_live_where_the_infrastructure_partitions_them(
    store: CosmosStore, account: FakeCosmosAccount
) -> None:
    store.create_request(record(events=1))
    store.put_grant(Grant.new(KEY).with_hold(hold()))
    store.append(make_event("r2", 0, "", EventType.REQUEST_RECEIVED, T0, SYSTEM, {}), "jane")

    request = account.container("audit").read_item(item="request", partition_key="r1")
    received = account.container("audit").read_item(item="r1:000000", partition_key="r1")
    grant = account.container("ledger").read_item(item=KEY.assignment_name(), partition_key=KEY.assignment_name())
    event = account.container("audit").read_item(item="r2:000000", partition_key="r2")

    assert (request["docType"], request["requestId"], request["version"], request["pendingEvents"]) == (
        "request", "r1", 1, [])
    assert request["updatedOrder"] == "2026-11-26T09:00:00.000000Z r1"
    assert (received["docType"], received["type"]) == ("event", "request.received")
    assert (grant["docType"], grant["grantKey"], grant["version"]) == ("grant", KEY.assignment_name(), 1)
    assert (grant["requestIds"], grant["activeHolds"], grant["nextExpiry"]) == (
        ["r1"], 1, "2026-11-26T11:00:00.000000Z")
    assert grant["holds"][0]["expiresAt"] == "2026-11-26T11:00:00.000000Z"
    assert (event["docType"], event["requesterId"], event["atOrder"]) == (
        "event", "jane", "2026-11-26T09:00:00.000000Z r2:000000")
    with pytest.raises(CosmosHttpResponseError):
        account.container("requests").read_item(item="r1", partition_key="r1")  # nothing written there


def test_a_grant_keys_document_is_read_and_written_within_its_partition_without_a_query(
    store: CosmosStore, account: FakeCosmosAccount
) -> None:
    stored = store.put_grant(Grant.new(KEY).with_hold(hold("r1")))
    account.queries.clear()

    again = store.put_grant(stored.with_hold(hold("r2")))

    assert store.get_grant(KEY) == again and [h.request_id for h in again.active_holds] == ["r1", "r2"]
    assert account.queries == []  # point reads and conditional replaces only


def test_a_transition_and_its_events_are_one_batch_and_a_refused_batch_writes_nothing(
    store: CosmosStore, account: FakeCosmosAccount
) -> None:
    created = store.create_request(record(events=1))
    before = store.get_request("r1")
    created.move_to(RequestState.APPROVED, T0 + timedelta(minutes=1))
    created.emit(EventType.POLICY_EVALUATED, T0, {})
    created.emit(EventType.REQUEST_APPROVED, T0, {})
    account.fail_next("execute_item_batch", CosmosHttpResponseError(status_code=503, message="Service Unavailable"))

    with pytest.raises(TransientError):
        store.save_request(created)
    assert store.get_request("r1") == before
    assert [e.seq for e in store.chain("r1")] == [0]

    saved = store.save_request(created)
    assert (saved.version, saved.state, saved.pending_events) == (2, RequestState.APPROVED, [])
    assert [e.type for e in store.chain("r1")] == [
        EventType.REQUEST_RECEIVED, EventType.POLICY_EVALUATED, EventType.REQUEST_APPROVED]


def test_a_write_too_large_for_one_batch_keeps_its_events_in_the_records_outbox(store: CosmosStore) -> None:
    # GIVEN a record whose write would carry more events than one batch holds
    big = record(events=120)

    # WHEN it is created
    created = store.create_request(big)

    # THEN the record is written alone, its events left in its outbox for the lifecycle to append
    assert len(created.pending_events) == 120 and store.chain("r1") == []
    [waiting] = store.requests_with_outbox()
    assert waiting == created
    for event in waiting.pending_events:
        store.append(event)
    waiting.pending_events = []
    store.save_request(waiting)
    assert store.requests_with_outbox() == [] and len(store.chain("r1")) == 120


def test_records_are_never_events(store: CosmosStore) -> None:
    # GIVEN requests with records and events, and an event of the earlier layout (no docType)
    store.create_request(record("r1", events=2))
    store.create_request(record("r2"))  # a record without events
    store.append(make_event("old", 0, "", EventType.REQUEST_RECEIVED, T0, SYSTEM, {}))

    # THEN every question about events answers with events only
    assert [e.request_id for e in store.query(AuditQuery()).events] == ["old", "r1", "r1"]
    assert sorted(store.request_ids()) == ["old", "r1"]
    assert [e.seq for e in store.chain("r1")] == [0, 1] and store.chain("r2") == []


# ---------------------------------------------------------------- the earlier layout


def test_hold_documents_of_the_earlier_layout_are_read_as_the_keys_document(
    store: CosmosStore, account: FakeCosmosAccount
) -> None:
    # GIVEN a key held under the earlier layout: one document per hold, one of them without a principal type
    ledger = account.container("ledger")
    ledger.create_item(body=legacy_hold_document(hold("r1")))
    ledger.create_item(body=legacy_hold_document(hold("r0", status=HoldStatus.RELEASED, released_at=T0), False))

    # THEN it reads as the key's document, not yet stored (version 0), and reconcile's queries find its holds
    grant = store.get_grant(KEY)
    assert grant is not None and grant.version == 0
    assert [(h.request_id, h.status, h.principal_type) for h in grant.holds] == [
        ("r0", HoldStatus.RELEASED, None), ("r1", HoldStatus.ACTIVE, "User")]
    assert [h.request_id for h in store.all_active_holds()] == ["r1"]
    assert [h.request_id for h in store.overdue_holds(T0 + timedelta(hours=3))] == ["r1"]
    assert [h.status for h in store.holds_for_request("r0")] == [HoldStatus.RELEASED]

    # WHEN it is first written
    stored = store.put_grant(grant.released("r1", T0 + timedelta(minutes=5)))

    # THEN the grant document replaces the hold documents in one batch, and each hold is found once
    assert stored.version == 1 and store.get_grant(KEY) == stored
    assert only_ids(account, KEY.assignment_name()) == [KEY.assignment_name()]
    assert store.all_active_holds() == []
    assert [h.status for h in store.holds_for_request("r1")] == [HoldStatus.RELEASED]


def test_two_writers_moving_one_key_of_the_earlier_layout_have_one_winner(account: FakeCosmosAccount) -> None:
    account.container("ledger").create_item(body=legacy_hold_document(hold("r1")))
    mine, theirs = CosmosStore(account.container), CosmosStore(account.container)
    read_by_me, read_by_them = mine.get_grant(KEY), theirs.get_grant(KEY)
    assert read_by_me is not None and read_by_them is not None

    theirs.put_grant(read_by_them.with_hold(hold("r2")))
    with pytest.raises(ConcurrencyConflict):
        mine.put_grant(read_by_me.released("r1", T0))

    assert sorted(h.request_id for h in mine.all_active_holds()) == ["r1", "r2"]


def test_a_key_with_more_hold_documents_than_a_batch_holds_still_moves_whole(
    store: CosmosStore, account: FakeCosmosAccount
) -> None:
    ledger = account.container("ledger")
    for n in range(150):
        ledger.create_item(body=legacy_hold_document(hold(f"old-{n:03d}", status=HoldStatus.RELEASED, released_at=T0)))
    ledger.create_item(body=legacy_hold_document(hold("live")))
    grant = store.get_grant(KEY)
    assert grant is not None

    store.put_grant(grant.released("live", T0 + timedelta(minutes=1)))

    assert only_ids(account, KEY.assignment_name()) == [KEY.assignment_name()]
    assert store.all_active_holds() == []


def test_a_record_of_the_earlier_layout_is_read_and_moves_with_its_next_write(
    store: CosmosStore, account: FakeCosmosAccount
) -> None:
    # GIVEN a record in `requests`, as the earlier layout wrote it, with an event still in its outbox
    old = record("r1", events=1)
    old.move_to(RequestState.APPROVED, T0)
    account.container("requests").create_item(body=legacy_record_document(old))

    # THEN it is read, found by reconcile's queries, and its id is taken
    got = store.get_request("r1")
    assert got is not None and (got.version, got.state, len(got.pending_events)) == (3, RequestState.APPROVED, 1)
    assert [r.request_id for r in store.requests_in({RequestState.APPROVED})] == ["r1"]
    assert [r.request_id for r in store.requests_with_outbox()] == ["r1"]
    with pytest.raises(AlreadyExists):
        store.create_request(record("r1"))

    # WHEN it is written next (its outbox flushed first, as the lifecycle does)
    store.append(got.pending_events[0])
    got.pending_events = []
    stale = got.model_copy(deep=True)
    got.move_to(RequestState.ACTIVE, T0 + timedelta(minutes=1))
    got.emit(EventType.GRANT_APPLIED, T0 + timedelta(minutes=1), {})
    saved = store.save_request(got)

    # THEN it lives in `audit` with its events, and the old document is gone
    assert saved.version == 4 and store.get_request("r1") == saved
    assert [e.type for e in store.chain("r1")] == [EventType.REQUEST_RECEIVED, EventType.GRANT_APPLIED]
    with pytest.raises(CosmosHttpResponseError):
        account.container("requests").read_item(item="r1", partition_key="r1")
    assert [r.request_id for r in store.requests_in({RequestState.ACTIVE})] == ["r1"]
    assert store.requests_in({RequestState.APPROVED}) == [] and store.requests_with_outbox() == []
    # AND a writer still holding the old version conflicts
    with pytest.raises(ConcurrencyConflict):
        CosmosStore(account.container).save_request(stale)


def test_an_old_record_left_behind_after_its_move_is_never_read_again(
    store: CosmosStore, account: FakeCosmosAccount
) -> None:
    account.container("requests").create_item(body=legacy_record_document(record("r1")))
    got = store.get_request("r1")
    assert got is not None
    account.fail_next("delete_item", CosmosHttpResponseError(status_code=503, message="Service Unavailable"))
    got.move_to(RequestState.REJECTED, T0 + timedelta(minutes=1))
    store.save_request(got)  # moved; deleting the old document failed

    assert account.container("requests").read_item(item="r1", partition_key="r1")["state"] == "received"
    moved = store.get_request("r1")
    assert moved is not None and moved.state is RequestState.REJECTED
    assert store.requests_in({RequestState.RECEIVED}) == []


def test_a_deployment_without_the_requests_container_has_no_old_records() -> None:
    store = CosmosStore(FakeCosmosAccount({"audit": "requestId", "ledger": "grantKey"}).container)
    assert store.get_request("r1") is None
    assert store.create_request(record("r1")).version == 1
    assert [r.request_id for r in store.requests_in({RequestState.RECEIVED})] == ["r1"]
    assert store.requests_with_outbox() == []


def test_a_chain_longer_than_an_sdk_page_comes_back_whole(store: CosmosStore) -> None:
    head = ""
    for seq in range(250):
        event = make_event("long", seq, head, EventType.POLICY_EVALUATED, T0 + timedelta(seconds=seq), SYSTEM, {})
        store.append(event)
        head = event.hash
    assert [e.seq for e in store.chain("long")] == list(range(250))
    assert len(store.query(AuditQuery(request_id="long", limit=1000)).events) == 250


# ---------------------------------------------------------------- concurrency


def test_a_writer_in_another_process_saves_without_having_read_first(account: FakeCosmosAccount) -> None:
    # GIVEN a record created by one instance and read by nobody in another
    created = CosmosStore(account.container).create_request(record())
    other = CosmosStore(account.container)

    # WHEN the other saves the version it was handed (by a message, say)
    created.move_to(RequestState.APPROVED, T0 + timedelta(minutes=1))
    saved = other.save_request(created)

    # THEN it reads the current etag and writes conditionally on it
    assert saved.version == 2


def test_a_write_between_read_and_save_is_a_conflict(account: FakeCosmosAccount) -> None:
    mine, theirs = CosmosStore(account.container), CosmosStore(account.container)
    mine.create_request(record())
    read_by_me = mine.get_request("r1")
    read_by_them = theirs.get_request("r1")
    assert read_by_me is not None and read_by_them is not None

    read_by_them.move_to(RequestState.APPROVED, T0 + timedelta(minutes=1))
    theirs.save_request(read_by_them)
    read_by_me.move_to(RequestState.REJECTED, T0 + timedelta(minutes=1))

    with pytest.raises(ConcurrencyConflict):
        mine.save_request(read_by_me)
    assert mine.get_request("r1") is not None
    assert mine.get_request("r1").state is RequestState.APPROVED  # type: ignore[union-attr]


# ---------------------------------------------------------------- errors


def _throttled(retry_after_ms: str) -> CosmosHttpResponseError:
    error = CosmosHttpResponseError(status_code=429, message="Request rate is large.")
    error.headers = {"x-ms-retry-after-ms": retry_after_ms}
    return error


def test_throttling_is_transient_with_the_services_retry_after(store: CosmosStore, account: FakeCosmosAccount) -> None:
    account.fail_next("read_item", _throttled("1500"))
    with pytest.raises(TransientError) as raised:
        store.get_request("r1")
    assert raised.value.retry_after == 1.5
    assert store.get_request("r1") is None


@pytest.mark.parametrize(("status", "expected"), [(503, TransientError), (408, TransientError),
                                                  (403, PermanentError), (400, PermanentError)])
def test_service_errors_are_transient_or_permanent_by_status(
    store: CosmosStore, account: FakeCosmosAccount, status: int, expected: type[Exception]
) -> None:
    account.fail_next("query_items", CosmosHttpResponseError(status_code=status, message="no"))
    with pytest.raises(expected):
        store.all_active_holds()


def test_a_write_that_failed_transiently_can_be_retried(store: CosmosStore, account: FakeCosmosAccount) -> None:
    account.fail_next("execute_item_batch", CosmosHttpResponseError(status_code=503, message="Service Unavailable"))
    with pytest.raises(TransientError):
        store.create_request(record())
    store.create_request(record())


def test_a_missing_container_is_a_deployment_fault_not_an_absent_record() -> None:
    store = CosmosStore(FakeCosmosAccount({"ledger": "grantKey"}).container)
    with pytest.raises(PermanentError, match="container"):
        store.get_request("r1")
    with pytest.raises(PermanentError, match="container"):
        CosmosStore(FakeCosmosAccount({"audit": "requestId"}).container).get_grant(KEY)


# ---------------------------------------------------------------- containers


def test_containers_are_opened_on_first_use_once_each(account: FakeCosmosAccount) -> None:
    store = CosmosStore(account.container)
    assert account.containers_made == []
    store.create_request(record())
    store.get_request("r1")
    store.put_grant(Grant.new(KEY).with_hold(hold()))
    assert account.containers_made == ["requests", "audit", "ledger"]


# ---------------------------------------------------------------- the fake's transactional batch


def test_the_fake_batch_is_all_or_nothing_and_names_the_first_failing_operation(account: FakeCosmosAccount) -> None:
    audit = account.container("audit")
    first = audit.create_item(body={"id": "a", "requestId": "p"})
    operations: list[tuple[Any, ...]] = [
        ("upsert", ({"id": "b", "requestId": "p"},)),
        ("replace", ("a", {"id": "a", "requestId": "p", "n": 1}), {"if_match_etag": '"stale"'}),
        ("create", ({"id": "a", "requestId": "p"},)),
    ]

    with pytest.raises(CosmosBatchOperationError) as refused:
        audit.execute_item_batch(batch_operations=operations, partition_key="p")

    assert (refused.value.status_code, refused.value.error_index) == (412, 1)
    assert [r["statusCode"] for r in refused.value.operation_responses] == [424, 412, 424]
    assert audit.read_item(item="a", partition_key="p") == first
    with pytest.raises(CosmosHttpResponseError):
        audit.read_item(item="b", partition_key="p")  # the upsert before the failure was undone


@pytest.mark.parametrize(("operation", "status"), [
    (("create", ({"id": "a", "requestId": "p"},)), 409),
    (("replace", ("nope", {"id": "nope", "requestId": "p"})), 404),
    (("delete", ("nope",)), 404),
    (("delete", ("a",), {"if_match_etag": '"stale"'}), 412),
])
def test_the_fake_batch_refuses_as_the_service_does(
    account: FakeCosmosAccount, operation: tuple[Any, ...], status: int
) -> None:
    audit = account.container("audit")
    audit.create_item(body={"id": "a", "requestId": "p"})
    with pytest.raises(CosmosBatchOperationError) as refused:
        audit.execute_item_batch(batch_operations=[operation], partition_key="p")
    assert refused.value.status_code == status


def test_the_fake_batch_holds_at_most_100_operations_and_answers_each(account: FakeCosmosAccount) -> None:
    audit = account.container("audit")
    too_many = [("create", ({"id": str(n), "requestId": "p"},)) for n in range(101)]
    with pytest.raises(CosmosHttpResponseError) as refused:
        audit.execute_item_batch(batch_operations=too_many, partition_key="p")
    assert refused.value.status_code == 400

    results = audit.execute_item_batch(batch_operations=too_many[:100], partition_key="p")
    assert [r["statusCode"] for r in results] == [201] * 100
    assert results[0]["resourceBody"]["_etag"] == results[0]["eTag"]
