"""The one settings object, read from JITGATE_* environment variables (app settings in Azure)."""

from __future__ import annotations

import base64
import math
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit

Mode = Literal["local", "azure", "gcp"]
_T = TypeVar("_T")

DEFAULT_POLICY = Path(__file__).resolve().parent.parent / "policies" / "example.yaml"


def default_worker_processes(cores: int | None = None) -> int:
    """Consumer processes `jitgate serve` starts unless told: two where this process may run on two cores or more."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 2 if cores >= 2 else 0


class SettingsError(ValueError):
    """Settings the process cannot start with. The message names each setting and what is wrong with it."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class Settings:
    """Everything configurable. `local` is the embedded default: SQLite under `data_dir`."""

    mode: Mode = "local"
    data_dir: Path = Path(".jitgate")
    policy_path: Path = DEFAULT_POLICY
    requests_queue: str = "access-requests"
    lifecycle_queue: str = "access-lifecycle"
    revocations_queue: str = "access-revocations"
    teams_secret: str = ""  # base64, as Teams shows it when the outgoing webhook is created
    reconcile_interval: timedelta = timedelta(seconds=60)
    stale_after: timedelta = timedelta(seconds=60)  # reconcile re-drives a request stuck this long
    lock_duration: timedelta = timedelta(seconds=30)
    max_delivery_count: int = 10
    poll_interval: float = 0.05
    # NB. uvicorn waits for a stalled request forever; a client gets this long for the head and again for the body.
    request_read_timeout: timedelta = timedelta(seconds=10)
    # NB. `jitgate serve` only: processes that run the consumers (each with `workers` threads and one for revokes)
    # beside the serving process, which then keeps the API and the reconcile timer. 0: consumers are threads of
    # the serving process. By default two on a machine with two cores or more, one consumer thread each: one Python
    # process runs one thread at a time, so a second consumer thread costs more than it adds (architecture §8).
    workers: int = 1
    worker_processes: int = field(default_factory=default_worker_processes)
    public_url: str = ""
    seed_file: Path | None = None
    databases_file: Path | None = None  # the PostgreSQL servers file: with it, the `postgres` provider is served
    # Azure (JITGATE_MODE=azure). Every client authenticates as the managed identity; no keys anywhere.
    servicebus_namespace: str = ""  # <namespace>.servicebus.windows.net, the one the triggers use
    cosmos_endpoint: str = ""
    cosmos_database: str = "jitgate"
    azure_client_id: str = ""  # client id of the user-assigned managed identity
    teams_webhook_url: str = field(default="", repr=False)  # a secret: the Teams Workflows webhook for notices
    archive_account_url: str = ""  # Blob endpoint of the immutable audit archive
    archive_container: str = "audit-archive"
    activity_workspace_id: str = ""  # Log Analytics workspace with the AzureActivity table
    providers: tuple[str, ...] = ("azure-rbac",)  # grant providers this deployment serves
    grant_scopes: tuple[str, ...] = ()  # subscriptions and resource groups jitgate grants in (and reconciles)
    cosmos_accounts: tuple[str, ...] = ()  # the Cosmos DB accounts (ARM ids) `cosmos-data` grants on and reconciles
    group_object_ids: dict[str, str] = field(default_factory=dict)  # policy group name -> Entra group object id
    # Google Cloud grants (issue #12): where `gcp-iam` grants and reconciles, and the Cloud Identity groups that
    # stand for policy groups.
    gcp_grant_scopes: tuple[str, ...] = ()  # projects/<id>, folders/<number>, organizations/<number>
    gcp_groups: dict[str, str] = field(default_factory=dict)  # policy group name -> groups/<Cloud Identity id>
    # Teams, for people (docs/teams.md): the outgoing webhook's name, which cards tell approvers to @mention,
    # and the portal (Backstage) base URL each card links the request's page under.
    teams_webhook_name: str = "jitgate"
    portal_url: str = ""
    # Services behind Envoy (README "Protect a service with Envoy"): service name -> the audience of the tokens
    # its callers bring (the protected app's client id), the Entra tenant that issues them, and how often each
    # process reads the ledger's envoy holds again (the bound on how stale another instance's decisions may be).
    envoy_services: dict[str, str] = field(default_factory=dict)
    envoy_tenant: str = ""
    envoy_refresh: timedelta = timedelta(seconds=1)
    # Google Cloud (JITGATE_MODE=gcp; docs/architecture.md "Google Cloud"): Pub/Sub topics of one project, one
    # Cloud Tasks queue for scheduled messages, and the store in Cosmos DB reached by workload identity federation.
    gcp_project: str = ""
    tasks_queue: str = ""  # projects/<p>/locations/<l>/queues/<q>
    tasks_service_account: str = ""  # the account whose OAuth token a task publishes with
    pubsub_publish_url: str = "https://pubsub.googleapis.com"
    tasks_emulator_host: str = ""  # host:port of a local Cloud Tasks (tests, development)
    store: str = ""  # gcp: cosmos (the default) or sqlite under the data dir (one instance: development only)
    entra_tenant_id: str = ""
    entra_client_id: str = ""  # the Entra app whose federated credential trusts the Google service account
    federation_audience: str = "api://AzureADTokenExchange"
    # The API's callers on Google Cloud (docs/architecture.md §7.2): the audience their Google ID tokens must carry,
    # the roles members or policy groups have ((role, member) pairs), and where Google publishes its signing keys.
    gcp_api_audiences: tuple[str, ...] = ()
    gcp_roles: tuple[tuple[str, str], ...] = ()
    gcp_certs_url: str = "https://www.googleapis.com/oauth2/v3/certs"
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def local(self) -> bool:
        return self.mode == "local"

    @property
    def queues(self) -> tuple[str, str, str]:
        """jitgate's queues: access requests, lifecycle commands (grants, expiries), revocations."""
        return self.requests_queue, self.lifecycle_queue, self.revocations_queue

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """The settings in `env` (default: the process environment); SettingsError names every bad one."""
        read = _Reader(dict(os.environ if env is None else env))
        e = read.env
        mode = e.get("JITGATE_MODE", "local")
        if mode not in ("local", "azure", "gcp"):
            read.problems.append(f"JITGATE_MODE must be local, azure or gcp, not {mode!r}")
            mode = "local"
        base = cls(mode=mode)  # type: ignore[arg-type]
        seed = e.get("JITGATE_SEED_FILE")
        settings = replace(
            base,
            data_dir=Path(e.get("JITGATE_DATA_DIR", str(base.data_dir))),
            policy_path=Path(e.get("JITGATE_POLICY", str(base.policy_path))),
            requests_queue=e.get("JITGATE_REQUESTS_QUEUE", base.requests_queue),
            lifecycle_queue=e.get("JITGATE_LIFECYCLE_QUEUE", base.lifecycle_queue),
            revocations_queue=e.get("JITGATE_REVOCATIONS_QUEUE", base.revocations_queue),
            # NB. Decoded where it is used (resolved_teams_secret): the API does so at start and refuses a bad
            # one; `jitgate teams check` reports it among its checks.
            teams_secret=e.get("JITGATE_TEAMS_SECRET", ""),
            reconcile_interval=read.seconds("JITGATE_RECONCILE_SECONDS", base.reconcile_interval),
            stale_after=read.seconds("JITGATE_STALE_SECONDS", base.stale_after),
            lock_duration=read.seconds("JITGATE_LOCK_SECONDS", base.lock_duration),
            request_read_timeout=read.seconds("JITGATE_REQUEST_READ_SECONDS", base.request_read_timeout),
            max_delivery_count=read.count("JITGATE_MAX_DELIVERIES", base.max_delivery_count, minimum=1),
            workers=read.count("JITGATE_WORKERS", base.workers, minimum=0),
            worker_processes=read.count("JITGATE_WORKER_PROCESSES", base.worker_processes, minimum=0),
            public_url=e.get("JITGATE_PUBLIC_URL", ""),
            seed_file=Path(seed) if seed else None,
            databases_file=Path(e["JITGATE_DATABASES_FILE"]) if e.get("JITGATE_DATABASES_FILE") else None,
            # NB. The same setting the Service Bus trigger binding reads (connection "ServiceBusConnection"),
            # so that the triggers and the sender can never point at two namespaces.
            servicebus_namespace=e.get("ServiceBusConnection__fullyQualifiedNamespace", ""),
            cosmos_endpoint=e.get("JITGATE_COSMOS_ENDPOINT", ""),
            cosmos_database=e.get("JITGATE_COSMOS_DATABASE", base.cosmos_database),
            azure_client_id=e.get("AZURE_CLIENT_ID", ""),
            teams_webhook_url=e.get("JITGATE_TEAMS_WEBHOOK_URL", ""),
            activity_workspace_id=e.get("JITGATE_ACTIVITY_WORKSPACE_ID", ""),
            archive_account_url=e.get("JITGATE_ARCHIVE_ACCOUNT_URL", ""),
            archive_container=e.get("JITGATE_ARCHIVE_CONTAINER", base.archive_container),
            providers=_listed(e.get("JITGATE_PROVIDERS", ",".join(base.providers))),
            grant_scopes=_listed(e.get("JITGATE_GRANT_SCOPES", "")),
            cosmos_accounts=read.checked("JITGATE_COSMOS_ACCOUNTS", _cosmos_accounts, ()),
            group_object_ids=read.checked("JITGATE_GROUP_OBJECT_IDS", _pairs, {}),
            gcp_grant_scopes=read.checked("JITGATE_GCP_GRANT_SCOPES", _gcp_scopes, ()),
            gcp_groups=read.checked("JITGATE_GCP_GROUPS", _gcp_groups, {}),
            teams_webhook_name=e.get("JITGATE_TEAMS_WEBHOOK_NAME", "").strip() or base.teams_webhook_name,
            portal_url=read.checked("JITGATE_PORTAL_URL", _base_url, ""),
            envoy_services=read.checked("JITGATE_ENVOY_SERVICES", _envoy_services, {}),
            envoy_tenant=read.checked("JITGATE_ENVOY_TENANT", _tenant, ""),
            envoy_refresh=read.seconds("JITGATE_ENVOY_REFRESH_SECONDS", base.envoy_refresh),
            gcp_project=e.get("JITGATE_GCP_PROJECT", ""),
            tasks_queue=e.get("JITGATE_TASKS_QUEUE", ""),
            tasks_service_account=e.get("JITGATE_TASKS_SERVICE_ACCOUNT", ""),
            pubsub_publish_url=read.checked("JITGATE_PUBSUB_PUBLISH_URL", _base_url, "") or base.pubsub_publish_url,
            tasks_emulator_host=e.get("JITGATE_TASKS_EMULATOR_HOST", ""),
            store=read.checked("JITGATE_STORE", _store, ""),
            entra_tenant_id=e.get("JITGATE_ENTRA_TENANT_ID", ""),
            entra_client_id=e.get("JITGATE_ENTRA_CLIENT_ID", ""),
            federation_audience=e.get("JITGATE_FEDERATION_AUDIENCE", "").strip() or base.federation_audience,
            gcp_api_audiences=_listed(e.get("JITGATE_GCP_API_AUDIENCE", "")),
            gcp_roles=read.checked("JITGATE_GCP_ROLES", _gcp_roles, ()),
            gcp_certs_url=read.checked("JITGATE_GCP_CERTS_URL", _base_url, "") or base.gcp_certs_url,
        )
        if settings.envoy_services and not settings.envoy_tenant:
            read.problems.append("JITGATE_ENVOY_SERVICES needs JITGATE_ENVOY_TENANT (the Entra tenant id that "
                                 "issues its callers' tokens)")
        if settings.envoy_services and "JITGATE_WORKER_PROCESSES" not in e:
            # NB. Envoy's checks are decided in the serving process, which learns at once of the grants and revokes
            # its own consumers make, and of other processes' only at its next refresh (JITGATE_ENVOY_REFRESH_SECONDS).
            settings = replace(settings, worker_processes=0)
        read.problems += _queue_clashes(settings)
        if read.problems:
            raise SettingsError(read.problems)
        return settings

    def missing_azure_settings(self) -> list[str]:
        """The app settings Azure mode cannot start without, by their environment names."""
        required = {
            "ServiceBusConnection__fullyQualifiedNamespace": self.servicebus_namespace,
            "JITGATE_COSMOS_ENDPOINT": self.cosmos_endpoint,
            "JITGATE_GRANT_SCOPES": self.grant_scopes,
            # NB. Required: without the map Microsoft Graph would be asked by display name, and anyone who
            # may create a group could name one after an approver group.
            "JITGATE_GROUP_OBJECT_IDS": self.group_object_ids,
        }
        if "cosmos-data" in self.providers:
            required["JITGATE_COSMOS_ACCOUNTS"] = self.cosmos_accounts
        return [name for name, value in required.items() if not value]

    def missing_gcp_settings(self) -> list[str]:
        """The settings Google Cloud mode cannot start without, by their environment names."""
        required: dict[str, object] = {
            "JITGATE_GCP_PROJECT": self.gcp_project,
            "JITGATE_TASKS_QUEUE": self.tasks_queue,
            "JITGATE_TASKS_SERVICE_ACCOUNT": self.tasks_service_account,
        }
        if self.store != "sqlite":
            required["JITGATE_COSMOS_ENDPOINT"] = self.cosmos_endpoint
            required["JITGATE_ENTRA_TENANT_ID"] = self.entra_tenant_id
            required["JITGATE_ENTRA_CLIENT_ID"] = self.entra_client_id
        return [name for name, value in required.items() if not value]

    @property
    def has_teams_secret(self) -> bool:
        """Whether the Teams webhook can verify calls: a secret is set, or one is kept locally."""
        return bool(self.teams_secret) or self.local

    def resolved_teams_secret(self) -> bytes:
        """The outgoing-webhook HMAC key. Locally one is generated once and kept in the data dir, so the
        CLI (`jitgate teams approve`) and the server agree; elsewhere it must be configured.
        SettingsError when it is missing or not valid base64."""
        if self.teams_secret:
            return decode_teams_secret("JITGATE_TEAMS_SECRET", self.teams_secret)
        if not self.local:
            raise SettingsError(["JITGATE_TEAMS_SECRET is required outside local mode"])
        path = self.data_dir / "teams-secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
            path.chmod(0o600)
        return decode_teams_secret(str(path), path.read_text())


def decode_teams_secret(name: str, text: str) -> bytes:
    """The HMAC key in the security token Teams shows (`teams.decode_secret`); SettingsError naming `name`."""
    from .teams import decode_secret

    try:
        return decode_secret(text)
    except ValueError as exc:
        token = text.strip()
        unpadded = re.fullmatch(r"[A-Za-z0-9+/]+", token) is not None and len(token) % 4 != 0
        hint = " (is the '=' padding at its end missing?)" if unpadded else ""
        raise SettingsError([f"{name}: {exc}{hint}"]) from None


class _Reader:
    """Reads settings from an environment, collecting every problem instead of stopping at the first."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def seconds(self, name: str, default: timedelta) -> timedelta:
        text = self.env.get(name)
        if text is None:
            return default
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value <= 0:
            self.problems.append(f"{name} must be a positive number of seconds, not {text[:40]!r}")
            return default
        return timedelta(seconds=value)

    def count(self, name: str, default: int, minimum: int) -> int:
        text = self.env.get(name)
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            self.problems.append(f"{name} must be a whole number of at least {minimum}, not {text[:40]!r}")
            return default
        return value

    def checked(self, name: str, parse: Callable[[str, str], _T], default: _T) -> _T:
        """`parse(name, value)`; its ValueError is a problem, and `default` stands in meanwhile."""
        try:
            return parse(name, self.env.get(name, ""))
        except ValueError as exc:
            self.problems.append(str(exc))
            return default


def _queue_clashes(settings: Settings) -> list[str]:
    """Each queue carries one kind of message to one handler, so two settings may not name the same queue."""
    named = {"JITGATE_REQUESTS_QUEUE": settings.requests_queue, "JITGATE_LIFECYCLE_QUEUE": settings.lifecycle_queue,
             "JITGATE_REVOCATIONS_QUEUE": settings.revocations_queue}
    by_queue: dict[str, list[str]] = {}
    for name, queue in named.items():
        by_queue.setdefault(queue, []).append(name)
    return [f"{' and '.join(names)} name the same queue {queue!r}; each needs its own"
            for queue, names in by_queue.items() if len(names) > 1]


def _listed(text: str) -> tuple[str, ...]:
    """A comma-separated setting."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _base_url(name: str, text: str) -> str:
    """An http(s) base URL without a trailing slash; '' when unset."""
    url = text.strip().rstrip("/")
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"{name} must be an http(s) base URL such as https://backstage.example.com, not {text!r}")
    return url


def _store(name: str, text: str) -> str:
    """Where Google Cloud mode keeps state: cosmos, or sqlite (development); '' when unset (cosmos)."""
    store = text.strip().lower()
    if store not in ("", "cosmos", "sqlite"):
        raise ValueError(f"{name} must be cosmos or sqlite, not {text!r}")
    return store


def _cosmos_accounts(name: str, text: str) -> tuple[str, ...]:
    """Cosmos DB account ARM ids, comma-separated."""
    from .domain.request import Provider, validate_scope

    accounts = _listed(text)
    for account in accounts:
        try:
            validate_scope(Provider.COSMOS_DATA, account)
        except ValueError as exc:
            raise ValueError(f"{name}: {account!r} is not a Cosmos DB account's ARM id: {exc}") from None
        if "/dbs/" in account.lower():
            raise ValueError(f"{name}: {account!r} is below an account; name the account")
    return accounts


def _envoy_services(name: str, text: str) -> dict[str, str]:
    """`service=audience` pairs: each service as an envoy scope names it."""
    from .domain.request import Provider, validate_scope

    services = _pairs(name, text)
    for service in services:
        try:
            validate_scope(Provider.ENVOY, service)
        except ValueError:
            raise ValueError(f"{name}: {service!r} is not a service name (a DNS label such as payments-api)") from None
        if "/" in service:
            raise ValueError(f"{name}: {service!r} names a route; name the service")
    return services


def _tenant(name: str, text: str) -> str:
    from .domain.ids import is_guid

    tenant = text.strip().lower()
    if tenant and not is_guid(tenant):
        raise ValueError(f"{name} must be the Entra tenant id (a GUID), not {text[:40]!r}")
    return tenant
def _gcp_scopes(name: str, text: str) -> tuple[str, ...]:
    """Google Cloud resources whose allow policies `gcp-iam` changes, comma-separated."""
    scopes = _listed(text)
    bad = [s for s in scopes if not re.fullmatch(r"projects/[a-z][a-z0-9-]{4,28}[a-z0-9]|folders/\d{1,20}"
                                                 r"|organizations/\d{1,20}|projects/_/buckets/[a-z0-9][a-z0-9._-]+", s)]
    if bad:
        raise ValueError(f"{name}: {bad[0]!r} is not projects/<id>, folders/<number>, organizations/<number> or "
                         "projects/_/buckets/<bucket>")
    return scopes


def _gcp_groups(name: str, text: str) -> dict[str, str]:
    """`policy group=groups/<Cloud Identity group id>` pairs."""
    pairs = _pairs(name, text)
    bad = [v for v in pairs.values() if not re.fullmatch(r"groups/[A-Za-z0-9]+", v)]
    if bad:
        raise ValueError(f"{name}: {bad[0]!r} is not a Cloud Identity group name (groups/<id>)")
    return pairs


CALLER_ROLES = ("Jit.Submitter", "Jit.Auditor", "Jit.Admin")


def _gcp_roles(name: str, text: str) -> tuple[tuple[str, str], ...]:
    """Comma-separated `role=member` (a role may repeat): member `user:<email>`, `serviceAccount:<email>`, or
    `group:<policy group>`, whose members the directory answers (the policy file, or Cloud Identity)."""
    from .domain.ids import google_principal

    roles: list[tuple[str, str]] = []
    for item in _listed(text):
        role, sep, member = (part.strip() for part in item.partition("="))
        if not sep:
            raise ValueError(f"{name}: {item!r} is not <role>=<member>, such as Jit.Auditor=group:auditors")
        if role not in CALLER_ROLES:
            raise ValueError(f"{name}: {item!r} names no role of jitgate ({', '.join(CALLER_ROLES)})")
        kind, _, rest = member.partition(":")
        if kind == "group" and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", rest):
            roles.append((role, member))
        elif kind in ("user", "serviceAccount") and (found := google_principal(member)):
            roles.append((role, found))
        elif kind == "group" and "@" in rest:
            raise ValueError(f"{name}: {member!r}: group: names a policy group (map it to a Google group with "
                             "JITGATE_GCP_GROUPS), not an e-mail address")
        else:
            raise ValueError(f"{name}: {member!r} is not user:<email>, serviceAccount:<email> or "
                             "group:<policy group>")
    return tuple(roles)


def _pairs(name: str, text: str) -> dict[str, str]:
    """A setting of comma-separated `key=value` pairs."""
    pairs: dict[str, str] = {}
    for item in _listed(text):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{name}: {item!r} is not key=value")
        pairs[key.strip()] = value.strip()
    return pairs
