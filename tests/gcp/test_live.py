"""Against a real Google Cloud project, opt in with JITGATE_LIVE_GCP=1 and the gcp settings of a deployment
(JITGATE_GCP_PROJECT, JITGATE_TASKS_QUEUE, JITGATE_TASKS_SERVICE_ACCOUNT; Application Default Credentials).
They use a queue of their own, JITGATE_LIVE_GCP_QUEUE (default `jitgate-live-test`): a topic, its pull subscription
(exactly-once) and its dead-letter topic as docs/architecture.md lays out a queue, never one carrying real traffic.
Not marked `gcp`: CI has no project, so these skip there, with the reason."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from shared.adapters.gcp.pubsub import PubSubBus
from shared.adapters.gcp.tasks import CloudTasksScheduler
from shared.clock import SystemClock
from shared.settings import Settings

LIVE = os.environ.get("JITGATE_LIVE_GCP") == "1"
pytestmark = pytest.mark.skipif(not LIVE, reason="live Google Cloud tests run only with JITGATE_LIVE_GCP=1")


def _bus() -> PubSubBus:
    settings = Settings.from_env()
    clock = SystemClock()
    scheduler = CloudTasksScheduler.connect(settings.tasks_queue, settings.pubsub_publish_url,
                                            settings.tasks_service_account, clock)
    return PubSubBus.connect(settings.gcp_project, clock, scheduler)


def test_send_receive_complete_and_schedule_cancel_on_the_real_services() -> None:
    bus = _bus()
    queue = os.environ.get("JITGATE_LIVE_GCP_QUEUE", "jitgate-live-test")
    message_id = f"live:{uuid.uuid4()}"
    bus.send(queue, message_id, b'{"live": true}')
    deadline = datetime.now(UTC) + timedelta(seconds=30)
    while not (received := bus.receive(queue, 10)) and datetime.now(UTC) < deadline:
        pass
    assert [m.message_id for m in received] == [message_id]
    bus.complete(received[0])
    number = bus.schedule(queue, f"{message_id}:later", b"{}", datetime.now(UTC) + timedelta(hours=1))
    bus.cancel_scheduled(queue, number)
    bus.cancel_scheduled(queue, number)  # NOT_FOUND now: a no-op
    bus.close()
