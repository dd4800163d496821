"""The Pub/Sub bus as the contract suite builds it: the real adapter on the real gRPC clients, talking to the
local Pub/Sub and Cloud Tasks servers (fake_pubsub.py, fake_tasks.py) that share the suite's clock."""

from __future__ import annotations

import grpc
from google.cloud.tasks_v2 import CloudTasksClient
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport
from google.pubsub_v1 import PublisherClient, SubscriberClient
from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

from shared.adapters.gcp.pubsub import PubSubBus
from shared.adapters.gcp.tasks import CloudTasksScheduler
from shared.ports import Clock, QueueSettings
from tests.gcp.fake_pubsub import FakePubSub, provision
from tests.gcp.fake_tasks import FakeCloudTasks

PROJECT = "jitgate-test"
TASKS_QUEUE = f"projects/{PROJECT}/locations/europe-west1/queues/jitgate-schedule"
SCHEDULER_ACCOUNT = f"jitgate-scheduler@{PROJECT}.iam.gserviceaccount.com"


class GcpWorld:
    """Both local services, provisioned for `queues`, and the clients' factories pointing at them."""

    def __init__(self, clock: Clock, queues: dict[str, QueueSettings]) -> None:
        self.clock = clock
        self.pubsub = FakePubSub(clock).serve()
        self.tasks = FakeCloudTasks(clock, [TASKS_QUEUE]).serve()
        self.pubsub.before_pull = self.tasks.dispatch_due
        list(provision(self.pubsub, PROJECT, {
            name: (int(q.lock_duration.total_seconds()), q.max_delivery_count) for name, q in queues.items()
        }))

    def scheduler(self) -> CloudTasksScheduler:
        return CloudTasksScheduler(
            TASKS_QUEUE, self.pubsub.rest_url, SCHEDULER_ACCOUNT, self.clock,
            lambda: CloudTasksClient(transport=CloudTasksGrpcTransport(channel=grpc.insecure_channel(self.tasks.host))),
        )

    def bus(
        self,
        queues: dict[str, QueueSettings],
        default: QueueSettings = QueueSettings(),  # noqa: B008
        bus_type: type[PubSubBus] = PubSubBus,
    ) -> PubSubBus:
        host = self.pubsub.host
        return bus_type(
            PROJECT, self.clock, self.scheduler(),
            lambda: PublisherClient(transport=PublisherGrpcTransport(channel=grpc.insecure_channel(host))),
            lambda: SubscriberClient(transport=SubscriberGrpcTransport(channel=grpc.insecure_channel(host))),
            queues, default,
        )

    def close(self) -> None:
        self.tasks.close()
        self.pubsub.close()


class _WorldBus(PubSubBus):
    """A bus that stops its local servers when it is closed."""

    world: GcpWorld

    def close(self) -> None:
        super().close()
        self.world.close()


def pubsub_bus(clock: Clock, queues: dict[str, QueueSettings]) -> PubSubBus:
    """A PubSubBus on fresh local servers holding `queues`; closing the bus stops them."""
    world = GcpWorld(clock, queues)
    bus = world.bus(queues, bus_type=_WorldBus)
    assert isinstance(bus, _WorldBus)
    bus.world = world
    return bus
