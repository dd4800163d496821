"""Scheduled messages for the Pub/Sub bus, on Cloud Tasks (`google-cloud-tasks`).

Pub/Sub cannot deliver later, so a scheduled message is an HTTP task that, at its time, calls Pub/Sub's REST
`topics.publish` with an OAuth token of the scheduler's service account: the message then takes the same path,
dead-letter topic and all, as one sent at once.

- The task's name is derived from the queue and the message id (`<number>-<queue>`, the number a 53-bit hash:
  hashed prefixes are what Cloud Tasks recommends for named tasks). So scheduling the same message twice is
  ALREADY_EXISTS, which is a no-op here, and the number `schedule` returns is all `cancel` needs to name the
  task: cancelling is deleting it, and a task already run or deleted (NOT_FOUND) is nothing left to cancel.
- 53 bits, so that the number survives every JSON reader the request record meets (Cosmos DB, JavaScript).
- Cloud Tasks refuses a schedule time more than 30 days ahead. Such a message is not scheduled:
  `BeyondScheduleLimit` says so, and the lifecycle leaves it to reconcile (docs/architecture.md, Google Cloud).
- Cloud Tasks keeps a deleted or executed task's name for about an hour: within it the same message id cannot be
  scheduled again, which is the duplicate detection Service Bus gives in its window.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from ...domain.errors import BeyondScheduleLimit, NotFound
from ...ports import Clock
from .errors import google_translated

if TYPE_CHECKING:
    from google.cloud.tasks_v2 import CloudTasksClient

MAX_AHEAD = timedelta(days=30)
# NB. Our clock and Cloud Tasks' may differ a little; a time this close to the limit is left to reconcile too.
CLOCK_MARGIN = timedelta(minutes=5)
PUBSUB_SCOPE = "https://www.googleapis.com/auth/pubsub"


def task_number(queue: str, message_id: str) -> int:
    """The 53-bit number that names a scheduled message's task: the same for the same queue and message id."""
    digest = hashlib.sha256(f"{queue}\n{message_id}".encode()).digest()
    return int.from_bytes(digest[:7], "big") >> 3


def task_id(queue: str, number: int) -> str:
    """`<number as 14 hex digits>-<queue>`: Cloud Tasks allows letters, digits, `-` and `_`, 500 at most."""
    return f"{number:014x}-{re.sub(r'[^A-Za-z0-9_-]', '_', queue)}"[:500]


class CloudTasksScheduler:
    """Schedules a Pub/Sub publish on one Cloud Tasks queue (`projects/p/locations/l/queues/q`)."""

    def __init__(
        self,
        queue_path: str,
        publish_url: str,
        service_account: str,
        clock: Clock,
        client_factory: Callable[[], CloudTasksClient],
    ) -> None:
        self.queue_path = queue_path
        self._publish_url = publish_url.rstrip("/")
        self._service_account = service_account
        self._clock = clock
        self._client_factory = client_factory
        self._client: CloudTasksClient | None = None

    @classmethod
    def connect(
        cls, queue_path: str, publish_url: str, service_account: str, clock: Clock, emulator_host: str = ""
    ) -> CloudTasksScheduler:
        """The production wiring (Application Default Credentials), or an emulator's insecure channel."""

        def client() -> CloudTasksClient:
            from google.cloud.tasks_v2 import CloudTasksClient

            if emulator_host:
                import grpc
                from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

                return CloudTasksClient(transport=CloudTasksGrpcTransport(channel=grpc.insecure_channel(emulator_host)))
            return CloudTasksClient()

        return cls(queue_path, publish_url, service_account, clock, client)

    def schedule(self, queue: str, topic_path: str, message_id: str, attributes: dict[str, str], body: bytes,
                 at: datetime) -> int:
        """Publish `body` to `topic_path` at `at`; returns the number that cancels it. Raises BeyondScheduleLimit
        when `at` is more than 30 days ahead."""
        from google.api_core.exceptions import AlreadyExists
        from google.cloud.tasks_v2 import HttpMethod, HttpRequest, OAuthToken, Task

        if at.tzinfo is None:
            raise ValueError(f"schedule time {at.isoformat()} is naive; pass a timezone-aware instant")
        ahead = at - self._clock.now()
        if ahead > MAX_AHEAD - CLOCK_MARGIN:
            raise BeyondScheduleLimit(
                f"{message_id} is due in {ahead.days} days; Cloud Tasks schedules at most 30 days ahead"
            )
        number = task_number(queue, message_id)
        payload = {"messages": [{"data": base64.b64encode(body).decode(), "attributes": attributes}]}
        task = Task(
            name=f"{self.queue_path}/tasks/{task_id(queue, number)}",
            schedule_time=at.astimezone(UTC),
            http_request=HttpRequest(
                url=f"{self._publish_url}/v1/{topic_path}:publish",
                http_method=HttpMethod.POST,
                headers={"Content-Type": "application/json"},
                body=json.dumps(payload).encode(),
                oauth_token=OAuthToken(service_account_email=self._service_account, scope=PUBSUB_SCOPE),
            ),
        )
        # NB. ALREADY_EXISTS: the same message scheduled again (a retried handler); the first task stands.
        with google_translated(f"schedule {message_id} on {queue}"), suppress(AlreadyExists):
            self._sdk().create_task(parent=self.queue_path, task=task)
        return number

    def cancel(self, queue: str, number: int) -> None:
        """Delete the task; one already run, deleted or never made is nothing left to cancel."""
        try:
            with google_translated(f"cancel {number} on {queue}"):
                self._sdk().delete_task(name=f"{self.queue_path}/tasks/{task_id(queue, number)}")
        except NotFound:
            pass

    def _sdk(self) -> CloudTasksClient:
        if self._client is None:
            self._client = self._client_factory()
        return self._client
