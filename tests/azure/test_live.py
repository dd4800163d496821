"""The Azure adapters against a real Service Bus namespace and Cosmos DB account.

Run only with JITGATE_LIVE_AZURE=1 and the settings below; skipped otherwise. The identity is whatever
DefaultAzureCredential finds (`az login` on a workstation): it needs Azure Service Bus Data Owner on the
queue and Cosmos DB Built-in Data Contributor on the account.

  ServiceBusConnection__fullyQualifiedNamespace  <namespace>.servicebus.windows.net
  JITGATE_LIVE_QUEUE                             a queue for these tests only (duplicate detection on)
  JITGATE_COSMOS_ENDPOINT, JITGATE_COSMOS_DATABASE  a database for these tests only, with the containers
                                                 requests (/requestId), ledger (/grantKey), audit (/requestId)

Every id is new per run; nothing is deleted afterwards (the ports have no delete), so point them at
throwaway resources. Besides the round trips, the Service Bus tests check on the real service the
differences from the embedded bus that tests/azure/fake_servicebus.py claims.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from shared.adapters.azure.cosmos import CosmosStore
from shared.adapters.azure.servicebus import ServiceBusBus
from shared.domain.audit import SYSTEM, EventType, make_event
from shared.domain.errors import ConcurrencyConflict
from shared.domain.ledger import Grant, GrantKey, Hold
from shared.domain.lifecycle import RequestRecord, RequestState
from shared.ports import AuditQuery, ReceivedMessage
from shared.runtime import azure_credential
from shared.settings import Settings

SETTINGS = Settings.from_env({k: v for k, v in os.environ.items() if k != "JITGATE_MODE"})
NAMESPACE = SETTINGS.servicebus_namespace
QUEUE = os.environ.get("JITGATE_LIVE_QUEUE", "")
COSMOS = SETTINGS.cosmos_endpoint
DATABASE = os.environ.get("JITGATE_COSMOS_DATABASE", "")
LIVE = os.environ.get("JITGATE_LIVE_AZURE") == "1"
RUN = uuid.uuid4().hex[:8]

live_servicebus = pytest.mark.skipif(
    not (LIVE and NAMESPACE and QUEUE),
    reason="live Azure tests need JITGATE_LIVE_AZURE=1, ServiceBusConnection__fullyQualifiedNamespace "
    "and JITGATE_LIVE_QUEUE",
)
live_cosmos = pytest.mark.skipif(
    not (LIVE and COSMOS and DATABASE),
    reason="live Azure tests need JITGATE_LIVE_AZURE=1, JITGATE_COSMOS_ENDPOINT and JITGATE_COSMOS_DATABASE",
)


@pytest.fixture(scope="module")
def bus() -> Iterator[ServiceBusBus]:
    made = ServiceBusBus.connect(NAMESPACE, azure_credential(SETTINGS), receive_wait=5.0)
    yield made
    made.close()


@pytest.fixture(scope="module")
def store() -> CosmosStore:
    return CosmosStore.connect(COSMOS, DATABASE, azure_credential(SETTINGS))


def receive(bus: ServiceBusBus, message_id: str, within: float = 60.0) -> ReceivedMessage:
    """Our message; leftovers of earlier runs are completed, anything else is given back."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for message in bus.receive(QUEUE, 10):
            if message.message_id == message_id:
                return message
            if message.message_id.startswith("live-"):
                bus.complete(message)
            else:
                bus.abandon(message)
    raise AssertionError(f"{message_id} did not arrive within {within}s")


# ---------------------------------------------------------------- Service Bus


@live_servicebus
def test_live_send_receive_complete(bus: ServiceBusBus) -> None:
    message_id = f"live-{RUN}-send"
    bus.send(QUEUE, message_id, b'{"command": "grant"}')
    message = receive(bus, message_id)
    assert (message.body, message.delivery_count) == (b'{"command": "grant"}', 1)
    renewed = bus.renew_lock(message)
    assert renewed.locked_until >= message.locked_until
    bus.complete(renewed)


@live_servicebus
def test_live_a_scheduled_message_arrives_under_a_new_sequence_number(bus: ServiceBusBus) -> None:
    message_id = f"live-{RUN}-scheduled"
    scheduled = bus.schedule(QUEUE, message_id, b"{}", datetime.now(UTC) + timedelta(seconds=5))
    message = receive(bus, message_id)
    assert message.sequence_number != scheduled
    bus.cancel_scheduled(QUEUE, scheduled)  # no longer scheduled: not an error
    bus.complete(message)


@live_servicebus
def test_live_cancel_before_due(bus: ServiceBusBus) -> None:
    cancelled, kept = f"live-{RUN}-cancelled", f"live-{RUN}-kept"
    due = datetime.now(UTC) + timedelta(seconds=5)
    bus.cancel_scheduled(QUEUE, bus.schedule(QUEUE, cancelled, b"{}", due))
    bus.schedule(QUEUE, kept, b"{}", due + timedelta(seconds=1))
    message = receive(bus, kept)
    bus.complete(message)


@live_servicebus
def test_live_a_duplicate_schedule_returns_a_number_that_cancels_nothing(bus: ServiceBusBus) -> None:
    message_id = f"live-{RUN}-duplicate"
    due = datetime.now(UTC) + timedelta(seconds=5)
    first = bus.schedule(QUEUE, message_id, b"first", due)
    second = bus.schedule(QUEUE, message_id, b"second", due)
    assert second != first
    bus.cancel_scheduled(QUEUE, second)
    message = receive(bus, message_id)
    assert message.body == b"first"
    bus.complete(message)


@live_servicebus
def test_live_dead_letter_list_and_replay(bus: ServiceBusBus) -> None:
    message_id = f"live-{RUN}-dead"
    bus.send(QUEUE, message_id, b"poison")
    bus.dead_letter(receive(bus, message_id), "Poison", "live test")
    [dead] = [d for d in bus.dead_letters(QUEUE) if d.message_id == message_id]
    assert (dead.reason, dead.description, dead.body) == ("Poison", "live test", b"poison")
    bus.replay_dead_letter(QUEUE, dead.sequence_number)
    replayed = receive(bus, message_id)
    assert (replayed.body, replayed.delivery_count) == (b"poison", 1)
    bus.complete(replayed)
    assert not [d for d in bus.dead_letters(QUEUE) if d.message_id == message_id]


# ---------------------------------------------------------------- Cosmos DB


@live_cosmos
def test_live_request_records_with_optimistic_concurrency(store: CosmosStore) -> None:
    request_id = f"live-{RUN}-request"
    now = datetime.now(UTC)
    created = store.create_request(
        RequestRecord(request_id=request_id, state=RequestState.RECEIVED, created_at=now, updated_at=now)
    )
    stale = created.model_copy(deep=True)
    created.move_to(RequestState.PENDING_APPROVAL, now + timedelta(seconds=1))
    assert store.save_request(created).version == 2
    stale.move_to(RequestState.REJECTED, now + timedelta(seconds=1))
    with pytest.raises(ConcurrencyConflict):
        store.save_request(stale)
    assert request_id in [r.request_id for r in store.requests_in({RequestState.PENDING_APPROVAL})]


@live_cosmos
def test_live_holds(store: CosmosStore) -> None:
    key = GrantKey.of("azure-rbac", str(uuid.uuid4()), "acdd72a7-3385-48ef-bd42-f606fba81ae7",
                      f"/subscriptions/{uuid.uuid4()}/resourceGroups/rg-live-{RUN}")
    now = datetime.now(UTC)
    grant = Grant.new(key)
    for suffix, expires_at in (("a", now - timedelta(minutes=1)), ("b", now + timedelta(hours=1))):
        grant = grant.with_hold(Hold.for_key(key, f"live-{RUN}-{suffix}", now, expires_at, False, "User"))
    stored = store.put_grant(grant)
    with pytest.raises(ConcurrencyConflict):
        store.put_grant(grant)
    assert store.get_grant(key) == stored
    assert [h.request_id for h in stored.active_holds] == [f"live-{RUN}-a", f"live-{RUN}-b"]
    assert f"live-{RUN}-a" in [h.request_id for h in store.overdue_holds(now)]


@live_cosmos
def test_live_audit_append_chain_and_paged_query(store: CosmosStore) -> None:
    request_id = f"live-{RUN}-audit"
    start = datetime.now(UTC)
    head = ""
    events = []
    for seq in range(5):
        at = start + timedelta(seconds=seq)
        event = make_event(request_id, seq, head, EventType.POLICY_EVALUATED, at, SYSTEM, {})
        store.append(event, "live-principal")
        events.append(event)
        head = event.hash
    assert store.chain(request_id) == events
    first = store.query(AuditQuery(request_id=request_id, limit=2))
    rest = store.query(AuditQuery(request_id=request_id, limit=10, continuation=first.continuation))
    assert [e.seq for e in first.events + rest.events] == [0, 1, 2, 3, 4]
    assert rest.continuation is None
