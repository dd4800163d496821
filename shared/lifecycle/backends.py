"""What the lifecycle talks to (`Backends`), what a handler answers (`Result`), and the three queues."""

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
# NB. Revokes have a queue of their own so that no backlog of grants can stand between a due revoke and
# its consumer (docs/architecture.md §3).
REVOCATIONS_QUEUE = "access-revocations"


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
    revocations_queue: str = REVOCATIONS_QUEUE
    sleep: Callable[[float], None] = time.sleep
    provider_attempts: int = 4
    max_backoff: float = 8.0
    verify_attempts: int = 6
    stale_after: timedelta = timedelta(seconds=60)
    # NB. Longer than one provider call can take (ARM's client timeout is 30 s): a deletion intent older than
    # this is taken to be abandoned, and another writer may take it over or a grant cancel it.
    delete_lease: timedelta = timedelta(seconds=45)

    def queue_of(self, command: LifecycleCommand) -> str:
        """Where a command goes: a revoke on the revocations queue, any other on the lifecycle queue."""
        return self.revocations_queue if command.command == "revoke" else self.lifecycle_queue

    def send_command(self, command: LifecycleCommand) -> None:
        """Put a command on its queue now; bus duplicate detection drops a repeat."""
        self.bus.send(self.queue_of(command), command.message_id, command.body())

    def schedule_command(self, command: LifecycleCommand, at: datetime) -> int:
        """Put a command on its queue for `at`; the sequence number cancels it, on that queue only."""
        return self.bus.schedule(self.queue_of(command), command.message_id, command.body(), at)


@dataclass(frozen=True)
class Result:
    """What a handler did, for the caller (HTTP response, Teams reply, CLI line)."""

    request_id: str
    state: RequestState
    message: str
