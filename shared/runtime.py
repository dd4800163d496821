"""Builds the process's backends from settings. Adapters are imported here, lazily, per mode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .clock import SystemClock
from .lifecycle import Backends, Lifecycle
from .ports import AuditStore, Bus, QueueSettings, RequestStore
from .settings import Settings

if TYPE_CHECKING:
    from .adapters.local_rbac import LocalRbac
    from .domain.policy import Policy


@dataclass
class Runtime:
    """One per process: the lifecycle plus what the API and workers need beside it."""

    settings: Settings
    lifecycle: Lifecycle
    bus: Bus
    requests: RequestStore
    audit: AuditStore
    policy: Policy
    backend_names: dict[str, str]
    rbac: LocalRbac | None = None

    @property
    def backends(self) -> Backends:
        return self.lifecycle.b


def build(settings: Settings) -> Runtime:
    if settings.mode != "local":
        raise NotImplementedError(
            f"mode {settings.mode!r} is not wired in this build; use JITGATE_MODE=local"
        )
    return build_local(settings)


def build_local(settings: Settings) -> Runtime:
    """The embedded default: SQLite bus, store and simulated RBAC plane under `settings.data_dir`."""
    from .adapters.local_rbac import LocalRbac
    from .adapters.outbox_notifier import OutboxNotifier
    from .adapters.policy_directory import PolicyDirectory
    from .adapters.sqlite_bus import SqliteBus
    from .adapters.sqlite_store import SqliteStore
    from .domain.policy import Policy

    data = settings.data_dir
    data.mkdir(parents=True, exist_ok=True)
    clock = SystemClock()
    policy = Policy.load(settings.policy_path)
    queue = QueueSettings(
        lock_duration=settings.lock_duration, max_delivery_count=settings.max_delivery_count
    )
    bus = SqliteBus(data / "bus.db", clock, {settings.requests_queue: queue, settings.lifecycle_queue: queue})
    store = SqliteStore(data / "store.db")
    rbac = LocalRbac(data / "rbac.db")
    backends = Backends(
        requests=store,
        ledger=store,
        audit=store,
        bus=bus,
        providers={"local": rbac},
        notifier=OutboxNotifier(data / "outbox.jsonl"),
        directory=PolicyDirectory(policy),
        clock=clock,
        policy=policy,
        requests_queue=settings.requests_queue,
        lifecycle_queue=settings.lifecycle_queue,
    )
    names = {
        "bus": "sqlite",
        "store": "sqlite",
        "grants": "local",
        "notifier": "outbox",
        "directory": "policy",
    }
    return Runtime(settings, Lifecycle(backends), bus, store, store, policy, names, rbac)
