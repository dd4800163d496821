"""CosmosStore beyond the store contract: document layout and partitioning, etag concurrency across
processes, SDK paging, error translation and lazy containers. All on the fake account
(tests/azure/fake_cosmos.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from azure.cosmos.exceptions import CosmosHttpResponseError

from shared.adapters.azure.cosmos import CosmosStore
from shared.domain.audit import SYSTEM, EventType, make_event
from shared.domain.errors import ConcurrencyConflict, PermanentError, TransientError
from shared.domain.ledger import GrantKey, Hold
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


def record(request_id: str = "r1") -> RequestRecord:
    return RequestRecord(request_id=request_id, state=RequestState.RECEIVED, created_at=T0, updated_at=T0)


def hold(request_id: str = "r1", key: GrantKey = KEY) -> Hold:
    return Hold.for_key(key, request_id, T0, T0 + timedelta(hours=2), False, "User")


# ---------------------------------------------------------------- layout


def test_documents_live_where_the_infrastructure_partitions_them(
    store: CosmosStore, account: FakeCosmosAccount
) -> None:
    store.create_request(record())
    store.put_hold(hold())
    store.append(make_event("r1", 0, "", EventType.REQUEST_RECEIVED, T0, SYSTEM, {}), "jane")

    request = account.container("requests").read_item(item="r1", partition_key="r1")
    ledger = account.container("ledger").read_item(item="r1", partition_key=KEY.assignment_name())
    event = account.container("audit").read_item(item="r1:000000", partition_key="r1")

    assert (request["id"], request["requestId"], request["version"]) == ("r1", "r1", 1)
    assert request["updatedOrder"] == "2026-11-26T09:00:00.000000Z r1"
    assert (ledger["grantKey"], ledger["expiresAt"]) == (KEY.assignment_name(), "2026-11-26T11:00:00.000000Z")
    assert (event["requesterId"], event["atOrder"]) == ("jane", "2026-11-26T09:00:00.000000Z r1:000000")


def test_the_hold_question_of_every_revoke_stays_in_one_partition(
    store: CosmosStore, account: FakeCosmosAccount
) -> None:
    store.put_hold(hold("r1"))
    store.put_hold(hold("r2"))

    assert [h.request_id for h in store.active_holds(KEY)] == ["r1", "r2"]
    assert store.get_hold(KEY, "r2") == hold("r2")

    [(container, _, partition)] = account.queries
    assert (container, partition) == ("ledger", KEY.assignment_name())


def test_a_hold_document_written_before_holds_kept_the_principal_type_still_loads(
    store: CosmosStore, account: FakeCosmosAccount
) -> None:
    store.put_hold(hold("r1"))
    ledger = account.container("ledger")
    doc = ledger.read_item(item="r1", partition_key=KEY.assignment_name())
    assert doc["principalType"] == "User"
    ledger.upsert_item(body={k: v for k, v in doc.items() if k != "principalType"})

    assert store.get_hold(KEY, "r1") == hold("r1").model_copy(update={"principal_type": None})


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
    account.fail_next("create_item", CosmosHttpResponseError(status_code=503, message="Service Unavailable"))
    with pytest.raises(TransientError):
        store.create_request(record())
    store.create_request(record())


def test_a_missing_container_is_a_deployment_fault_not_an_absent_record() -> None:
    store = CosmosStore(FakeCosmosAccount({"ledger": "grantKey"}).container)
    with pytest.raises(PermanentError, match="container"):
        store.get_request("r1")


# ---------------------------------------------------------------- containers


def test_containers_are_opened_on_first_use_once_each(account: FakeCosmosAccount) -> None:
    store = CosmosStore(account.container)
    assert account.containers_made == []
    store.create_request(record())
    store.get_request("r1")
    store.put_hold(hold())
    assert account.containers_made == ["requests", "ledger"]
