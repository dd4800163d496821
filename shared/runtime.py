"""Builds the process's backends from settings. Adapters are imported here, lazily, per mode."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

from .clock import SystemClock
from .lifecycle import Backends, Lifecycle
from .notices import AddressedNotifier
from .ports import AuditStore, Bus, Directory, Notifier, QueueSettings, RequestStore
from .settings import Settings, SettingsError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from .adapters.embedded.rbac import LocalRbac
    from .domain.policy import Policy
    from .ports import GrantProvider

log = logging.getLogger("jitgate.runtime")


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
    archive: Callable[[datetime, datetime], list[str]] | None = None  # (since, until) -> blobs written

    @property
    def backends(self) -> Backends:
        return self.lifecycle.b


def build(settings: Settings) -> Runtime:
    if settings.mode == "local":
        return build_local(settings)
    if settings.mode == "azure":
        return build_azure(settings)
    raise SettingsError([f"JITGATE_MODE={settings.mode} is not wired in this build; use local or azure"])


def build_local(settings: Settings) -> Runtime:
    """The embedded default: SQLite bus, store and simulated RBAC plane under `settings.data_dir`."""
    from .adapters.embedded.bus import SqliteBus
    from .adapters.embedded.outbox import OutboxNotifier
    from .adapters.embedded.policy_directory import PolicyDirectory
    from .adapters.embedded.rbac import LocalRbac
    from .adapters.embedded.store import SqliteStore
    from .domain.policy import Policy

    data = settings.data_dir
    data.mkdir(parents=True, exist_ok=True)
    clock = SystemClock()
    policy = Policy.load(settings.policy_path)
    queue = QueueSettings(
        lock_duration=settings.lock_duration, max_delivery_count=settings.max_delivery_count
    )
    bus = SqliteBus(data / "bus.db", clock, dict.fromkeys(settings.queues, queue))
    store = SqliteStore(data / "store.db")
    rbac = LocalRbac(data / "rbac.db")
    directory = PolicyDirectory(policy)
    providers: dict[str, GrantProvider] = {"local": rbac, **database_providers(settings)}
    backends = Backends(
        stale_after=settings.stale_after,
        # NB. The simulated plane answers in milliseconds: an interrupted deletion is taken over within seconds.
        delete_lease=timedelta(seconds=2),
        requests=store,
        ledger=store,
        audit=store,
        bus=bus,
        providers=providers,
        notifier=addressed(OutboxNotifier(data / "outbox.jsonl"), directory, settings),
        directory=directory,
        clock=clock,
        policy=policy,
        requests_queue=settings.requests_queue,
        lifecycle_queue=settings.lifecycle_queue,
        revocations_queue=settings.revocations_queue,
    )
    names = {
        "bus": "sqlite",
        "store": "sqlite",
        "grants": ",".join(providers),
        "notifier": "outbox",
        "directory": "policy",
    }
    return Runtime(settings, Lifecycle(backends), bus, store, store, policy, names, rbac)


def build_azure(settings: Settings) -> Runtime:
    """Azure: Service Bus, Cosmos DB, Azure RBAC (and PIM), Teams, Microsoft Graph and Azure Monitor, every
    client authenticated as the managed identity. Nothing connects here: each client is made on first use."""
    missing = settings.missing_azure_settings()
    if missing:
        raise SettingsError([f"JITGATE_MODE=azure needs these settings, which are missing: {', '.join(missing)}"])
    from .adapters.azure.arm import arm_token_provider
    from .adapters.azure.blob_archive import BlobAuditArchive
    from .adapters.azure.cosmos import CosmosStore
    from .adapters.azure.cosmos_data import CosmosDataGrants
    from .adapters.azure.graph import GraphDirectory, graph_token_provider
    from .adapters.azure.monitor import AzureActivity
    from .adapters.azure.pim import AzurePim
    from .adapters.azure.rbac import AzureRbac
    from .adapters.azure.servicebus import ServiceBusBus
    from .adapters.teams.workflows import TeamsNotifier
    from .domain.policy import Policy

    credential = azure_credential(settings)
    arm = arm_token_provider(credential)
    known: dict[str, type[AzureRbac] | type[AzurePim]] = {"azure-rbac": AzureRbac, "azure-pim": AzurePim}
    databases = database_providers(settings, credential)
    served = [*known, "cosmos-data", *databases]
    unknown = [name for name in settings.providers if name not in served]
    if unknown:
        raise SettingsError([f"JITGATE_PROVIDERS: {', '.join(unknown)} cannot run in Azure mode; known: "
                             f"{', '.join(served)}"])
    providers: dict[str, GrantProvider] = {
        name: known[name](arm, target_scopes=settings.grant_scopes) for name in settings.providers if name in known
    }
    if "cosmos-data" in settings.providers:
        providers["cosmos-data"] = CosmosDataGrants(arm, accounts=settings.cosmos_accounts)
    providers.update({name: p for name, p in databases.items() if name in settings.providers})
    if not settings.teams_webhook_url:
        log.warning("JITGATE_TEAMS_WEBHOOK_URL is not set: approvers will not hear of requests")
    policy = Policy.load(settings.policy_path)
    bus = ServiceBusBus.connect(settings.servicebus_namespace, credential)
    store = CosmosStore.connect(settings.cosmos_endpoint, settings.cosmos_database, credential)
    activity = (
        AzureActivity(settings.activity_workspace_id, credential) if settings.activity_workspace_id else None
    )
    directory = GraphDirectory(graph_token_provider(credential), settings.group_object_ids)
    backends = Backends(
        stale_after=settings.stale_after,
        requests=store,
        ledger=store,
        audit=store,
        bus=bus,
        providers=providers,
        notifier=addressed(TeamsNotifier(lambda: settings.teams_webhook_url), directory, settings),
        directory=directory,
        clock=SystemClock(),
        policy=policy,
        activity=activity,
        requests_queue=settings.requests_queue,
        lifecycle_queue=settings.lifecycle_queue,
        revocations_queue=settings.revocations_queue,
    )
    names = {
        "bus": "servicebus",
        "store": "cosmos",
        "grants": ",".join(providers),
        "notifier": "teams",
        "directory": "graph",
        "activity": "azure-monitor" if activity is not None else "none",
    }
    archive = None
    if settings.archive_account_url:
        archiver = BlobAuditArchive(settings.archive_account_url, settings.archive_container, credential)
        archive = partial(archiver.archive_closed, store)
    names["archive"] = "blob" if archive is not None else "none"
    return Runtime(settings, Lifecycle(backends), bus, store, store, policy, names, archive=archive)


def database_providers(settings: Settings, credential: TokenCredential | None = None) -> dict[str, GrantProvider]:
    """The `postgres` and `azure-sql` providers over the servers file, each when the file names a server of it.
    Nothing connects here; Azure SQL signs in with `credential` (the process's, in Azure mode)."""
    if settings.databases_file is None:
        return {}
    from .adapters.databases.servers import Servers, ServersFileError

    try:
        servers = Servers.load(settings.databases_file)
    except ServersFileError as exc:
        raise SettingsError([f"JITGATE_DATABASES_FILE: {error}" for error in exc.errors]) from None
    providers: dict[str, GrantProvider] = {}
    if "postgres" in servers.providers:
        from .adapters.postgres.provider import PostgresGrants
        from .adapters.postgres.signin import sign_in_for

        sign_in = partial(sign_in_for, azure_client_id=settings.azure_client_id)
        providers["postgres"] = PostgresGrants(servers, sign_in=sign_in)
    if "azure-sql" in servers.providers:
        from .adapters.azure.sql import AzureSqlGrants, entra_connector

        connect = entra_connector(credential or azure_credential(settings))
        providers["azure-sql"] = AzureSqlGrants(servers, connect=connect)
    return providers


def addressed(notifier: Notifier, directory: Directory, settings: Settings) -> Notifier:
    """Notices that @mention the approvers, name the outgoing webhook to answer and link the portal page."""
    return AddressedNotifier(
        notifier, directory, answer_to=settings.teams_webhook_name, portal_url=settings.portal_url
    )


def azure_credential(settings: Settings) -> TokenCredential:
    """The one credential of the process: the user-assigned managed identity in Azure (AZURE_CLIENT_ID), the
    developer's login elsewhere. Tokens are fetched on first use, per audience, and cached by the SDK."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=settings.azure_client_id or None)
