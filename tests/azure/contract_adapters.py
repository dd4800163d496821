"""The Azure adapters as the contract suites build them: on hand-written fakes of the SDK surface they call.

Where Service Bus promises less than the embedded bus (sequence numbers of scheduled messages, ordering,
dead-letter times), the contract suite tests only the common promise and keeps the stronger one for the
embedded adapters; tests/azure/test_servicebus_bus.py pins Service Bus's own behaviour against the fake.
"""

from __future__ import annotations

from pathlib import Path

from shared.adapters.azure.cosmos import CosmosStore
from shared.adapters.azure.servicebus import ServiceBusBus
from shared.ports import Clock, QueueSettings
from tests.azure.fake_cosmos import FakeCosmosAccount
from tests.azure.fake_servicebus import FakeServiceBusNamespace


def servicebus_bus(clock: Clock, queues: dict[str, QueueSettings]) -> ServiceBusBus:
    """A ServiceBusBus on a fake namespace holding `queues` (any other queue does not exist)."""
    namespace = FakeServiceBusNamespace(clock, queues)
    return ServiceBusBus(namespace.client, receive_wait=0.0)


def cosmos_store(tmp_path: Path | None = None) -> CosmosStore:
    """A CosmosStore on a fake account with the three containers and their partition keys."""
    return CosmosStore(FakeCosmosAccount().container)
