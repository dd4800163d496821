"""What the lifecycle talks to (`Backends`), what a handler answers (`Result`), and the two queues."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..domain.lifecycle import LifecycleCommand, RequestState
from ..domain.policy import Policy
from ..ports import (
    ActivityReader,
    AuditStore,
    Clock,
    Directory,
    GrantProvider,
    LedgerStore,
    MessageSender,
    Notifier,
    RequestStore,
)

REQUESTS_QUEUE = "access-requests"
LIFECYCLE_QUEUE = "access-lifecycle"


@dataclass
class Backends:
    """Everything the lifecycle talks to, behind ports. Built once per process by `runtime`."""

    requests: RequestStore
    ledger: LedgerStore
    audit: AuditStore
    bus: MessageSender
    providers: Mapping[str, GrantProvider]
    notifier: Notifier
    directory: Directory
    clock: Clock
    policy: Policy
    activity: ActivityReader | None = None
    requests_queue: str = REQUESTS_QUEUE
    lifecycle_queue: str = LIFECYCLE_QUEUE
    sleep: Callable[[float], None] = time.sleep
    provider_attempts: int = 4
    max_backoff: float = 8.0
    verify_attempts: int = 6
    stale_after: timedelta = timedelta(seconds=60)

    def send_command(self, command: LifecycleCommand) -> None:
        """Put a command on the lifecycle queue now; bus duplicate detection drops a repeat."""
        self.bus.send(self.lifecycle_queue, command.message_id, command.body())

    def schedule_command(self, command: LifecycleCommand, at: datetime) -> int:
        """Put a command on the lifecycle queue for `at`; the sequence number cancels it."""
        return self.bus.schedule(self.lifecycle_queue, command.message_id, command.body(), at)


@dataclass(frozen=True)
class Result:
    """What a handler did, for the caller (HTTP response, Teams reply, CLI line)."""

    request_id: str
    state: RequestState
    message: str
