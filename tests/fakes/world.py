"""A whole jitgate on fakes: the lifecycle, the worker and every port, with a clock tests move."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from shared.domain.audit import ChainReport, verify_chain
from shared.domain.policy import Policy
from shared.lifecycle import Backends, Lifecycle
from shared.ports import QueueSettings
from shared.worker import Worker
from tests.fakes.bus import FakeBus
from tests.fakes.clock import FakeClock
from tests.fakes.grants import FakeDirectory, FakeGrantProvider, FakeNotifier
from tests.fakes.store import FakeStore

ALICE = "aaaaaaaa-0000-4000-8000-00000000000a"
BOB = "bbbbbbbb-0000-4000-8000-00000000000b"
CAROL = "cccccccc-0000-4000-8000-00000000000c"
JANE = "dddddddd-0000-4000-8000-00000000000d"
DEV_SUB = "11111111-1111-4111-8111-111111111111"
PROD_SUB = "22222222-2222-4222-8222-222222222222"
DEV_RG = f"/subscriptions/{DEV_SUB}/resourceGroups/rg-web-dev"
PROD_RG = f"/subscriptions/{PROD_SUB}/resourceGroups/rg-payments-prod"
QUEUES = ("access-requests", "access-lifecycle", "access-revocations")

POLICY = f"""
version: 1
groups:
  approvers: ["{ALICE}", "{BOB}", "{CAROL}"]
  engineers: ["{JANE}", "{ALICE}", "{BOB}"]
rules:
  - name: owner-never
    match: {{providers: "*", roles: [Owner], scopes: ["/**"]}}
    outcome: deny
    reason: Owner is never granted just in time
  - name: dev-any
    match: {{providers: [local], roles: [Reader, Contributor], scopes: ["/subscriptions/{DEV_SUB}/**"]}}
    outcome: auto
    maxDuration: PT8H
  - name: prod-contributor
    match: {{providers: [local], roles: [Contributor], scopes: ["/subscriptions/{PROD_SUB}/resourceGroups/*"]}}
    outcome: approval
    approval: {{groups: [approvers], required: 2, deadline: PT1H}}
    maxDuration: PT2H
"""


def access_request(
    principal: str = JANE,
    role: str = "Reader",
    scope: str = DEV_RG,
    duration: str = "PT1H",
    request_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "schemaVersion": 1,
        "requestId": request_id or str(uuid.uuid4()),
        "requester": {"principalId": principal, "displayName": "Someone"},
        "target": {"provider": "local", "scope": scope, "role": role},
        "duration": duration,
        "justification": "Investigating incident INC-1 in the web app",
        **extra,
    }


def body(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


@dataclass
class World:
    """Fakes wired together exactly as `runtime.build_local` wires the real adapters. `make_bus` builds the bus
    from the clock and the queues (default: the in-memory fake)."""

    clock: FakeClock = field(default_factory=FakeClock)
    max_deliveries: int = 5
    make_bus: Callable[[FakeClock, dict[str, QueueSettings]], Any] = FakeBus

    def __post_init__(self) -> None:
        self.store = FakeStore()
        settings = QueueSettings(lock_duration=timedelta(seconds=30), max_delivery_count=self.max_deliveries)
        self.bus = self.make_bus(self.clock, dict.fromkeys(QUEUES, settings))
        self.grants = FakeGrantProvider()
        self.notifier = FakeNotifier()
        self.policy = Policy.from_text(POLICY)
        self.sleeps: list[float] = []
        self.backends = Backends(
            requests=self.store,
            ledger=self.store,
            audit=self.store,
            bus=self.bus,
            providers={"local": self.grants},
            notifier=self.notifier,
            directory=FakeDirectory({name: set(members) for name, members in self.policy.groups.items()}),
            clock=self.clock,
            policy=self.policy,
            sleep=self.sleeps.append,
            delete_lease=timedelta(seconds=20),  # shorter than the lock, as in every deployment
        )
        self.lifecycle = Lifecycle(self.backends)
        self.worker = Worker(
            self.lifecycle,
            self.bus,
            "access-requests",
            "access-lifecycle",
            self.max_deliveries,
            reconcile_every=60,
        )

    def submit(self, doc: dict[str, Any]) -> str:
        self.lifecycle.submit(body(doc))
        self.worker.drain()
        return str(doc["requestId"]).lower()

    def state(self, request_id: str) -> str:
        record = self.store.get_request(request_id)
        assert record is not None
        return record.state.value

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.worker.drain()

    def event_types(self, request_id: str) -> list[str]:
        return [e.type.value for e in self.store.chain(request_id)]

    def verify(self, request_id: str) -> ChainReport:
        """The request's chain verified as the API does: against its record, when there is one."""
        record = self.store.get_request(request_id)
        return verify_chain(request_id, self.store.chain(request_id), None if record is None else record.anchor())

    def chains_ok(self) -> bool:
        return all(self.verify(rid).ok for rid in self.store.request_ids())

    def marked(self) -> list[Any]:
        return self.grants.list_marked()
