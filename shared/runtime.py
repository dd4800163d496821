"""Builds the process's backends from settings. Adapters are imported here, lazily, per mode."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from .clock import SystemClock
from .lifecycle import Backends, Lifecycle
from .notices import AddressedNotifier
from .ports import AuditStore, Bus, Clock, Directory, Notifier, QueueSettings, RequestStore
from .settings import Settings, SettingsError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from .adapters.embedded.rbac import LocalRbac
    from .domain.policy import Policy
    from .envoy_authz import EnvoyAuthorizer
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
    envoy: EnvoyAuthorizer | None = None  # Envoy's ext_authz service, when services behind Envoy are configured

    @property
    def backends(self) -> Backends:
        return self.lifecycle.b


def build(settings: Settings) -> Runtime:
    if settings.mode == "local":
        return build_local(settings)
    if settings.mode == "azure":
        return build_azure(settings)
    return build_gcp(settings)


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
    directory = google_directory(settings, PolicyDirectory(policy))
    providers: dict[str, GrantProvider] = {"local": rbac, **database_providers(settings)}
    envoy = None
    if settings.envoy_services:
        from .adapters.embedded.envoy_plane import EnvoyGrants
        from .envoy_authz import EnvoyAuthorizer

        envoy = EnvoyAuthorizer(store, clock, settings.envoy_services, settings.envoy_tenant,
                                summarize=lambda request_id, data: lifecycle.record_usage(request_id, data),
                                portal_url=settings.portal_url, refresh_every=settings.envoy_refresh)
        providers["envoy"] = EnvoyGrants(data / "envoy.db", on_change=envoy.changed)
    if "gcp-iam" in settings.providers or "postgres" in providers:
        from .adapters.gcp.grants import gcp_grant_providers

        providers = gcp_grant_providers(settings, providers, clock=clock)
    backends = _backends(
        settings, store, bus, providers, OutboxNotifier(data / "outbox.jsonl"), directory, clock, policy,
        # NB. The simulated plane answers in milliseconds: an interrupted deletion is taken over within seconds.
        delete_lease=timedelta(seconds=2),
    )
    names = {
        "bus": "sqlite",
        "store": "sqlite",
        "grants": ",".join(providers),
        "notifier": "outbox",
        "directory": "cloud-identity" if settings.gcp_groups else "policy",
    }
    lifecycle = Lifecycle(backends)
    if envoy is not None:
        envoy.refresh()
    return Runtime(settings, lifecycle, bus, store, store, policy, names, rbac, envoy=envoy)


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

    if settings.envoy_services:
        raise SettingsError(["JITGATE_ENVOY_SERVICES: services behind Envoy are served by `jitgate serve` (local mode) "
                             "only; the function app has no envoy plane and no ext_authz endpoint yet"])
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
    backends = _backends(
        settings, store, bus, providers, TeamsNotifier(lambda: settings.teams_webhook_url), directory, SystemClock(),
        policy, activity=activity,
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


def build_gcp(settings: Settings) -> Runtime:
    """Google Cloud: Pub/Sub with Cloud Tasks, the Cosmos DB store through workload identity federation (or
    SQLite under the data dir for development), the policy file's groups as the directory. Nothing connects here.
    Grant providers: `gcp-iam`, the database providers (Cloud SQL's through both layers) and `local` (the
    simulated plane, for development and tests)."""
    missing = settings.missing_gcp_settings()
    if missing:
        raise SettingsError([f"JITGATE_MODE=gcp needs these settings, which are missing: {', '.join(missing)}"])
    from .adapters.embedded.outbox import OutboxNotifier
    from .adapters.embedded.policy_directory import PolicyDirectory
    from .adapters.gcp.pubsub import PubSubBus
    from .adapters.gcp.tasks import CloudTasksScheduler
    from .adapters.teams.workflows import TeamsNotifier
    from .domain.policy import Policy

    clock = SystemClock()
    data = settings.data_dir
    databases = database_providers(settings)
    served = ["local", "gcp-iam", *databases]
    unknown = [name for name in settings.providers if name not in served]
    if unknown:
        raise SettingsError([f"JITGATE_PROVIDERS: {', '.join(unknown)} cannot run in gcp mode; known: "
                             f"{', '.join(served)}"])
    providers: dict[str, GrantProvider] = {n: p for n, p in databases.items() if n in settings.providers}
    rbac = None
    if "local" in settings.providers:
        from .adapters.embedded.rbac import LocalRbac

        data.mkdir(parents=True, exist_ok=True)
        rbac = LocalRbac(data / "rbac.db")
        providers = {"local": rbac, **providers}
    from .adapters.gcp.grants import gcp_grant_providers

    providers = gcp_grant_providers(settings, providers, clock=clock)
    if settings.store == "sqlite":
        from .adapters.embedded.store import SqliteStore

        data.mkdir(parents=True, exist_ok=True)
        store: Any = SqliteStore(data / "store.db")
    else:
        from .adapters.azure.cosmos import CosmosStore
        from .adapters.gcp.federation import federated_credential

        credential = federated_credential(
            settings.entra_tenant_id, settings.entra_client_id, settings.federation_audience
        )
        store = CosmosStore.connect(settings.cosmos_endpoint, settings.cosmos_database, credential)
    policy = Policy.load(settings.policy_path)
    queue = QueueSettings(lock_duration=settings.lock_duration, max_delivery_count=settings.max_delivery_count)
    scheduler = CloudTasksScheduler.connect(
        settings.tasks_queue, settings.pubsub_publish_url, settings.tasks_service_account, clock,
        settings.tasks_emulator_host,
    )
    bus = PubSubBus.connect(settings.gcp_project, clock, scheduler, dict.fromkeys(settings.queues, queue), queue)
    directory = google_directory(settings, PolicyDirectory(policy))
    if settings.teams_webhook_url:
        notifier: Notifier = TeamsNotifier(lambda: settings.teams_webhook_url)
    else:
        log.warning("JITGATE_TEAMS_WEBHOOK_URL is not set: notices go to %s", data / "outbox.jsonl")
        data.mkdir(parents=True, exist_ok=True)
        notifier = OutboxNotifier(data / "outbox.jsonl")
    backends = _backends(settings, store, bus, providers, notifier, directory, clock, policy)
    names = {
        "bus": "pubsub",
        "store": settings.store or "cosmos",
        "grants": ",".join(providers),
        "notifier": "teams" if settings.teams_webhook_url else "outbox",
        "directory": "cloud-identity" if settings.gcp_groups else "policy",
    }
    return Runtime(settings, Lifecycle(backends), bus, store, store, policy, names, rbac)


def _backends(
    settings: Settings,
    store: Any,
    bus: Bus,
    providers: dict[str, GrantProvider],
    notifier: Notifier,
    directory: Directory,
    clock: Clock,
    policy: Policy,
    **more: Any,
) -> Backends:
    """What the lifecycle runs on: one store for requests, ledger and audit, the notifier told who to address, the
    settings' queues and stale bound; `more` for what one platform adds."""
    return Backends(
        stale_after=settings.stale_after,
        requests=store,
        ledger=store,
        audit=store,
        bus=bus,
        providers=providers,
        notifier=addressed(notifier, directory, settings),
        directory=directory,
        clock=clock,
        policy=policy,
        requests_queue=settings.requests_queue,
        lifecycle_queue=settings.lifecycle_queue,
        revocations_queue=settings.revocations_queue,
        **more,
    )


def google_directory(settings: Settings, policy_groups: Directory) -> Directory:
    """The policy file's groups, and Cloud Identity's for the policy groups `JITGATE_GCP_GROUPS` maps."""
    if not settings.gcp_groups:
        return policy_groups
    from .adapters.gcp.cloudidentity import CLOUD_IDENTITY_SCOPE, CloudIdentityDirectory
    from .adapters.gcp.rest import GoogleToken

    return CloudIdentityDirectory(GoogleToken((CLOUD_IDENTITY_SCOPE,)), settings.gcp_groups, policy_groups)


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
