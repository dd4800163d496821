"""The Pub/Sub bus and its Cloud Tasks scheduler against the local gRPC servers: what the contract suite does not
pin (task names, the 30-day limit, errors, Pub/Sub's own dead-lettering) and the whole lifecycle on top of them."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import timedelta

import pytest

from shared.adapters.gcp.pubsub import MESSAGE_ID, PubSubBus
from shared.adapters.gcp.tasks import task_id, task_number
from shared.domain.errors import BeyondScheduleLimit, LockLost, NotFound, PermanentError
from shared.ports import QueueSettings
from tests.fakes.clock import FakeClock
from tests.fakes.world import World, access_request
from tests.gcp.contract_adapters import PROJECT, SCHEDULER_ACCOUNT, TASKS_QUEUE, GcpWorld, pubsub_bus

pytestmark = pytest.mark.gcp

Q = "access-revocations"
SETTINGS = QueueSettings(lock_duration=timedelta(seconds=30), max_delivery_count=5)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def gcp(clock: FakeClock) -> Iterator[GcpWorld]:
    world = GcpWorld(clock, {Q: SETTINGS})
    yield world
    world.close()


@pytest.fixture
def bus(gcp: GcpWorld) -> Iterator[PubSubBus]:
    bus = gcp.bus({Q: SETTINGS})
    yield bus
    bus.close()


def test_a_scheduled_message_is_a_named_task_that_publishes_through_the_rest_api(
    gcp: GcpWorld, bus: PubSubBus, clock: FakeClock
) -> None:
    # WHEN a revoke is scheduled an hour ahead
    number = bus.schedule(Q, "revoke:r1:1", b'{"command": "revoke"}', clock.now() + timedelta(hours=1))
    # THEN one task waits under the name derived from the queue and the message id
    name = f"{TASKS_QUEUE}/tasks/{task_id(Q, number)}"
    assert number == task_number(Q, "revoke:r1:1") < 2**53
    task = gcp.tasks.tasks[name].task
    assert task.schedule_time == clock.now() + timedelta(hours=1)
    request = task.http_request
    assert request.url == f"{gcp.pubsub.rest_url}/v1/projects/{PROJECT}/topics/{Q}:publish"
    assert request.oauth_token.service_account_email == SCHEDULER_ACCOUNT
    [message] = json.loads(request.body)["messages"]
    assert base64.b64decode(message["data"]) == b'{"command": "revoke"}'
    assert message["attributes"] == {MESSAGE_ID: "revoke:r1:1"}
    # AND at its time Cloud Tasks publishes it with a bearer token, and it is received like any other
    clock.advance(timedelta(hours=1))
    [received] = bus.receive(Q)
    assert (received.message_id, received.body, received.enqueued_at) == (
        "revoke:r1:1", b'{"command": "revoke"}', clock.now())
    assert gcp.tasks.dispatched == [(name, 200)]


def test_scheduling_the_same_message_again_is_a_no_op_and_cancel_deletes_the_task(
    gcp: GcpWorld, bus: PubSubBus, clock: FakeClock
) -> None:
    at = clock.now() + timedelta(hours=1)
    first = bus.schedule(Q, "revoke:r1:1", b"first", at)
    assert bus.schedule(Q, "revoke:r1:1", b"second", at + timedelta(hours=1)) == first  # ALREADY_EXISTS
    assert len(gcp.tasks.tasks) == 1
    bus.cancel_scheduled(Q, first)
    assert gcp.tasks.tasks == {}
    bus.cancel_scheduled(Q, first)  # NOT_FOUND: nothing left to cancel
    clock.advance(timedelta(hours=3))
    assert bus.receive(Q) == []


def test_a_message_due_beyond_thirty_days_is_not_scheduled(gcp: GcpWorld, bus: PubSubBus, clock: FakeClock) -> None:
    with pytest.raises(BeyondScheduleLimit, match="30 days"):
        bus.schedule(Q, "revoke:r1:1", b"x", clock.now() + timedelta(days=31))
    assert gcp.tasks.tasks == {}
    assert bus.schedule(Q, "revoke:r2:1", b"x", clock.now() + timedelta(days=29))


def test_the_local_cloud_tasks_refuses_what_the_service_refuses(gcp: GcpWorld, clock: FakeClock) -> None:
    # the fake holds the adapter to the documented limit: a task 30 days and a second ahead is INVALID_ARGUMENT
    from google.cloud.tasks_v2 import Task

    client = gcp.scheduler()._sdk()
    with pytest.raises(Exception, match="30 days"):
        client.create_task(parent=TASKS_QUEUE, task=Task(schedule_time=clock.now() + timedelta(days=30, seconds=1)))
    with pytest.raises(Exception, match="Queue does not exist"):
        client.create_task(parent=TASKS_QUEUE + "-other", task=Task())


def test_pubsub_dead_letters_after_max_delivery_attempts_with_its_attributes(
    gcp: GcpWorld, bus: PubSubBus, clock: FakeClock
) -> None:
    bus.send(Q, "revoke:r1:1", b"poison")
    for attempt in range(1, 6):
        [message] = bus.receive(Q)
        assert message.delivery_count == attempt
        bus.abandon(message)
    assert bus.receive(Q) == []
    [dead] = bus.dead_letters(Q)
    assert (dead.message_id, dead.reason, dead.delivery_count) == ("revoke:r1:1", "MaxDeliveryCountExceeded", 5)
    [forwarded] = gcp.pubsub.backlog(f"projects/{PROJECT}/subscriptions/{Q}-dead-letter")
    assert forwarded.attributes["CloudPubSubDeadLetterSourceSubscription"] == Q
    # reading the dead letters gives them back: a second look finds the same
    assert bus.dead_letters(Q) == [dead]


def test_settling_a_lost_lock_is_refused_by_exactly_once_delivery(bus: PubSubBus, clock: FakeClock) -> None:
    bus.send(Q, "m-1", b"x")
    [message] = bus.receive(Q)
    clock.advance(timedelta(seconds=30))
    with pytest.raises(LockLost, match="PERMANENT_FAILURE_INVALID_ACK_ID"):
        bus.complete(message)


def test_a_missing_topic_or_subscription_is_a_clear_error(bus: PubSubBus) -> None:
    with pytest.raises(NotFound, match="Topic not found"):
        bus.send("no-such-queue", "m-1", b"x")
    with pytest.raises(NotFound, match="Subscription does not exist"):
        bus.receive("no-such-queue")
    with pytest.raises(PermanentError, match="no data and no attributes"):
        bus._publish(bus.topic(Q), b"", {}, "publish nothing")


def test_the_whole_lifecycle_runs_on_pubsub_and_cloud_tasks() -> None:
    # GIVEN jitgate on fakes, but its bus the Pub/Sub adapter on the local servers
    world = World(make_bus=pubsub_bus)
    try:
        # WHEN a request is granted, and another one revoked early
        rid = world.submit(access_request(duration="PT10S"))
        early = world.submit(access_request(duration="PT1H", role="Contributor"))
        assert (world.state(rid), world.state(early)) == ("active", "active")
        tasks = world.bus.world.tasks
        assert len(tasks.tasks) == 2
        world.lifecycle.request_revoke(early, access_request()["requester"]["principalId"], is_admin=False)
        assert len(tasks.tasks) == 1  # the early revoke deleted its task
        # THEN the revoke at expiry comes through Cloud Tasks and Pub/Sub
        world.advance(11)
        assert (world.state(rid), world.state(early)) == ("revoked", "revoked")
        assert world.marked() == []
        assert world.chains_ok()
    finally:
        world.bus.close()
