"""ServiceBusBus beyond the bus contract: where Service Bus differs from it, message ids of replays, the
wire format, error translation and client reuse. All on the fake namespace (tests/azure/fake_servicebus.py)."""

from __future__ import annotations

import importlib
import inspect
import json
from datetime import timedelta

import pytest
from azure.servicebus.exceptions import (
    MessageSizeExceededError,
    OperationTimeoutError,
    ServiceBusAuthorizationError,
    ServiceBusConnectionError,
    ServiceBusServerBusyError,
)

from shared.adapters.azure.servicebus import REPLAY_OF, ServiceBusBus
from shared.domain.errors import LockLost, NotFound, PermanentError, TransientError
from shared.ports import QueueSettings
from tests.azure.fake_servicebus import FakeServiceBusNamespace
from tests.fakes.clock import FakeClock

Q = "access-lifecycle"
LOCK = timedelta(seconds=60)
SETTINGS = QueueSettings(lock_duration=LOCK, max_delivery_count=3, duplicate_window=timedelta(hours=1))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def namespace(clock: FakeClock) -> FakeServiceBusNamespace:
    return FakeServiceBusNamespace(clock, {Q: SETTINGS})


@pytest.fixture
def bus(namespace: FakeServiceBusNamespace) -> ServiceBusBus:
    return ServiceBusBus(namespace.client, receive_wait=0.0)


# ---------------------------------------------------------------- where Service Bus differs from the contract


def test_a_scheduled_message_is_received_under_a_new_sequence_number(bus: ServiceBusBus, clock: FakeClock) -> None:
    # GIVEN a scheduled revoke
    scheduled = bus.schedule(Q, "revoke:r1:1", b"{}", clock.now() + timedelta(hours=1))
    # WHEN it becomes due
    clock.advance(timedelta(hours=1))
    [message] = bus.receive(Q)
    # THEN it arrives numbered as if enqueued at its due time, and the old number cancels nothing
    assert message.sequence_number > scheduled
    assert message.enqueued_at == clock.now()
    bus.cancel_scheduled(Q, scheduled)
    bus.complete(message)


def test_due_scheduled_messages_arrive_in_due_time_order(bus: ServiceBusBus, clock: FakeClock) -> None:
    bus.schedule(Q, "due-second", b"a", clock.now() + timedelta(minutes=1))
    bus.schedule(Q, "due-first", b"b", clock.now() + timedelta(seconds=1))
    clock.advance(timedelta(minutes=2))
    assert [m.message_id for m in bus.receive(Q, max_messages=2)] == ["due-first", "due-second"]


def test_a_duplicate_schedule_returns_a_number_that_cancels_nothing(bus: ServiceBusBus, clock: FakeClock) -> None:
    # GIVEN a revoke scheduled twice within the window (a grant redelivered after a crash does this)
    first = bus.schedule(Q, "revoke:r1:1", b"first", clock.now() + timedelta(hours=2))
    second = bus.schedule(Q, "revoke:r1:1", b"second", clock.now() + timedelta(hours=3))
    # WHEN the second number is cancelled (an early revoke that kept it)
    assert second != first
    bus.cancel_scheduled(Q, second)
    # THEN the first revoke still fires, once; the lifecycle treats it as a revoke of a revoked request
    clock.advance(timedelta(hours=4))
    assert [m.body for m in bus.receive(Q, max_messages=10)] == [b"first"]


def test_dead_letters_are_listed_in_sequence_order_with_their_enqueue_time(
    bus: ServiceBusBus, clock: FakeClock
) -> None:
    for i in range(3):
        bus.send(Q, f"m-{i}", b"x")
    enqueued = clock.now()
    m0, m1, m2 = bus.receive(Q, max_messages=3)
    clock.advance(timedelta(seconds=5))
    bus.dead_letter(m2, "third")
    bus.dead_letter(m0, "first")
    bus.dead_letter(m1, "second")
    dead = bus.dead_letters(Q)
    assert [d.message_id for d in dead] == ["m-0", "m-1", "m-2"]
    assert {d.dead_lettered_at for d in dead} == {enqueued}


EMBEDDED_ONLY = sorted(
    name for name, test in vars(importlib.import_module("tests.contract.test_bus_contract")).items()
    if name.startswith("test_") and "embedded_bus" in inspect.signature(test).parameters
)


@pytest.mark.parametrize("name", EMBEDDED_ONLY)
def test_each_embedded_only_promise_really_is_one_service_bus_does_not_make(name: str, clock: FakeClock) -> None:
    # NB. Keeps the split in the bus contract honest: a promise kept only for the embedded buses must be
    # one Service Bus does not keep; if it ever does, the test belongs in the common contract.
    contract = importlib.import_module("tests.contract.test_bus_contract")
    test = getattr(contract, name)
    queues = {contract.Q: contract.QUEUES[contract.Q], contract.OTHER: contract.DEFAULT}
    namespace = FakeServiceBusNamespace(clock, queues)
    arguments = {"embedded_bus": ServiceBusBus(namespace.client, receive_wait=0.0), "clock": clock}
    with pytest.raises(AssertionError):
        test(**{parameter: arguments[parameter] for parameter in inspect.signature(test).parameters})


# ---------------------------------------------------------------- messages on the wire


def test_messages_carry_their_id_and_a_json_content_type(
    bus: ServiceBusBus, namespace: FakeServiceBusNamespace
) -> None:
    bus.send(Q, "grant:r1:1", b'{"command": "grant"}')
    receiver = namespace.client().get_queue_receiver(Q)
    [raw] = receiver.receive_messages(max_message_count=1)
    assert (raw.message_id, raw.content_type) == ("grant:r1:1", "application/json")
    assert json.loads(b"".join(raw.body)) == {"command": "grant"}


def test_the_delivery_count_counts_this_delivery(bus: ServiceBusBus, clock: FakeClock) -> None:
    bus.send(Q, "m", b"x")
    first = bus.receive(Q)[0]
    bus.abandon(first)
    again = bus.receive(Q)[0]
    assert (first.delivery_count, again.delivery_count) == (1, 2)


def test_a_replay_is_sent_under_a_new_message_id_and_completes_the_dead_letter(
    bus: ServiceBusBus, namespace: FakeServiceBusNamespace
) -> None:
    # GIVEN a dead letter among others
    for message_id in ("before", "target", "after"):
        bus.send(Q, message_id, message_id.encode())
    for message in bus.receive(Q, max_messages=3):
        bus.dead_letter(message, "Poison")
    target = next(d for d in bus.dead_letters(Q) if d.message_id == "target")

    # WHEN it is replayed
    bus.replay_dead_letter(Q, target.sequence_number)

    # THEN it is back under "<id>:replay:<sequence number>" (duplicate detection would drop "target"),
    # the port still calls it "target", and the other dead letters stay
    receiver = namespace.client().get_queue_receiver(Q)
    [raw] = receiver.receive_messages(max_message_count=5)
    assert raw.message_id == f"target:replay:{target.sequence_number}"
    assert raw.application_properties == {REPLAY_OF.encode(): b"target"}
    receiver.abandon_message(raw)
    [replayed] = bus.receive(Q)
    assert (replayed.message_id, replayed.body) == ("target", b"target")
    assert [d.message_id for d in bus.dead_letters(Q)] == ["before", "after"]


def test_replaying_the_same_dead_letter_twice_sends_it_once(bus: ServiceBusBus) -> None:
    # A replay that crashed after sending and before completing the dead letter is run again.
    bus.send(Q, "m", b"x")
    bus.dead_letter(bus.receive(Q)[0], "Poison")
    [dead] = bus.dead_letters(Q)
    replay_id = f"m:replay:{dead.sequence_number}"
    bus.send(Q, "m", b"dropped")  # within the window: dropped, as the original id would be
    bus.replay_dead_letter(Q, dead.sequence_number)
    bus.send(Q, replay_id, b"the same replay again")
    assert [(m.message_id, m.body) for m in bus.receive(Q, max_messages=5)] == [("m", b"x")]


def test_a_replayed_message_that_dies_again_can_be_replayed_again(bus: ServiceBusBus) -> None:
    bus.send(Q, "m", b"x")
    bus.dead_letter(bus.receive(Q)[0], "Poison")
    bus.replay_dead_letter(Q, bus.dead_letters(Q)[0].sequence_number)
    bus.dead_letter(bus.receive(Q)[0], "Poison again")
    [dead] = bus.dead_letters(Q)
    assert (dead.message_id, dead.reason) == ("m", "Poison again")
    bus.replay_dead_letter(Q, dead.sequence_number)
    assert [m.message_id for m in bus.receive(Q)] == ["m"]


def test_replay_of_an_unknown_queue_or_number_is_not_found(bus: ServiceBusBus) -> None:
    with pytest.raises(NotFound):
        bus.replay_dead_letter("no-such-queue", 1)
    with pytest.raises(NotFound):
        bus.replay_dead_letter(Q, 42)


def test_a_naive_schedule_time_is_refused(bus: ServiceBusBus, clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="naive"):
        bus.schedule(Q, "m", b"x", clock.now().replace(tzinfo=None))


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("error", "expected", "retry_after"),
    [
        (ServiceBusServerBusyError(), TransientError, 10.0),
        (OperationTimeoutError(), TransientError, None),
        (ServiceBusConnectionError(), TransientError, None),
        (ServiceBusAuthorizationError(), PermanentError, None),
        (MessageSizeExceededError(message="too big"), PermanentError, None),
    ],
)
def test_sdk_errors_become_jitgate_errors(
    bus: ServiceBusBus,
    namespace: FakeServiceBusNamespace,
    error: Exception,
    expected: type[Exception],
    retry_after: float | None,
) -> None:
    namespace.fail_next("send_messages", error)
    with pytest.raises(expected) as raised:
        bus.send(Q, "m", b"x")
    assert raised.value.__cause__ is error
    if expected is TransientError:
        assert getattr(raised.value, "retry_after", None) == retry_after
    bus.send(Q, "m", b"x")  # the sender is still usable
    assert [m.message_id for m in bus.receive(Q)] == ["m"]


def test_sending_to_a_queue_that_does_not_exist_is_not_found(bus: ServiceBusBus) -> None:
    with pytest.raises(NotFound, match="no-such-queue"):
        bus.send("no-such-queue", "m", b"x")


def test_a_transient_error_while_cancelling_is_raised_not_swallowed(
    bus: ServiceBusBus, namespace: FakeServiceBusNamespace, clock: FakeClock
) -> None:
    seq = bus.schedule(Q, "revoke:r1:1", b"x", clock.now() + timedelta(hours=1))
    namespace.fail_next("cancel_scheduled_messages", ServiceBusServerBusyError())
    with pytest.raises(TransientError):
        bus.cancel_scheduled(Q, seq)
    bus.cancel_scheduled(Q, seq)
    clock.advance(timedelta(hours=2))
    assert bus.receive(Q) == []


def test_a_settlement_that_failed_transiently_can_be_tried_again(
    bus: ServiceBusBus, namespace: FakeServiceBusNamespace
) -> None:
    bus.send(Q, "m", b"x")
    message = bus.receive(Q)[0]
    namespace.fail_next("complete_message", ServiceBusConnectionError())
    with pytest.raises(TransientError):
        bus.complete(message)
    bus.complete(message)
    assert bus.receive(Q) == []


def test_settling_a_message_this_process_does_not_hold_is_lock_lost(bus: ServiceBusBus) -> None:
    bus.send(Q, "m", b"x")
    message = bus.receive(Q)[0]
    other_process = ServiceBusBus(lambda: pytest.fail("no client needed"))  # type: ignore[arg-type,return-value]
    with pytest.raises(LockLost):
        other_process.complete(message)
    bus.complete(message)


# ---------------------------------------------------------------- clients


def test_no_client_is_made_until_first_use_and_then_one_is_shared(namespace: FakeServiceBusNamespace) -> None:
    bus = ServiceBusBus(namespace.client, receive_wait=0.0)
    assert namespace.clients_made == 0
    bus.send(Q, "a", b"x")
    bus.send(Q, "b", b"x")
    bus.complete(bus.receive(Q)[0])
    assert bus.dead_letters(Q) == []
    assert namespace.clients_made == 1
    bus.close()
    bus.send(Q, "c", b"x")  # reopens after close
    assert namespace.clients_made == 2
