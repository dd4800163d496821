"""The one settings object, read from JITGATE_* environment variables (app settings in Azure)."""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

Mode = Literal["local", "azure", "gcp"]

DEFAULT_POLICY = Path(__file__).resolve().parent.parent / "policies" / "example.yaml"


@dataclass(frozen=True)
class Settings:
    """Everything configurable. `local` is the embedded default: SQLite under `data_dir`."""

    mode: Mode = "local"
    data_dir: Path = Path(".jitgate")
    policy_path: Path = DEFAULT_POLICY
    requests_queue: str = "access-requests"
    lifecycle_queue: str = "access-lifecycle"
    teams_secret: str = ""  # base64, as Teams shows it when the outgoing webhook is created
    reconcile_interval: timedelta = timedelta(seconds=60)
    stale_after: timedelta = timedelta(seconds=60)  # reconcile re-drives a request stuck this long
    lock_duration: timedelta = timedelta(seconds=30)
    max_delivery_count: int = 10
    poll_interval: float = 0.05
    workers: int = 2
    public_url: str = ""
    seed_file: Path | None = None
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
    group_object_ids: dict[str, str] = field(default_factory=dict)  # policy group name -> Entra group object id
    # Teams, for people (docs/teams.md): the outgoing webhook's name, which cards tell approvers to @mention,
    # and the portal (Backstage) base URL each card links the request's page under.
    teams_webhook_name: str = "jitgate"
    portal_url: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def local(self) -> bool:
        return self.mode == "local"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        e = dict(os.environ if env is None else env)
        mode = e.get("JITGATE_MODE", "local")
        if mode not in ("local", "azure", "gcp"):
            raise ValueError(f"JITGATE_MODE must be local, azure or gcp, not {mode!r}")
        base = cls(mode=mode)  # type: ignore[arg-type]
        seed = e.get("JITGATE_SEED_FILE")
        return replace(
            base,
            data_dir=Path(e.get("JITGATE_DATA_DIR", str(base.data_dir))),
            policy_path=Path(e.get("JITGATE_POLICY", str(base.policy_path))),
            requests_queue=e.get("JITGATE_REQUESTS_QUEUE", base.requests_queue),
            lifecycle_queue=e.get("JITGATE_LIFECYCLE_QUEUE", base.lifecycle_queue),
            teams_secret=e.get("JITGATE_TEAMS_SECRET", ""),
            reconcile_interval=timedelta(seconds=float(e.get("JITGATE_RECONCILE_SECONDS", "60"))),
            stale_after=timedelta(seconds=float(e.get("JITGATE_STALE_SECONDS", "60"))),
            lock_duration=timedelta(seconds=float(e.get("JITGATE_LOCK_SECONDS", "30"))),
            max_delivery_count=int(e.get("JITGATE_MAX_DELIVERIES", "10")),
            workers=int(e.get("JITGATE_WORKERS", "2")),
            public_url=e.get("JITGATE_PUBLIC_URL", ""),
            seed_file=Path(seed) if seed else None,
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
            group_object_ids=_pairs("JITGATE_GROUP_OBJECT_IDS", e.get("JITGATE_GROUP_OBJECT_IDS", "")),
            teams_webhook_name=e.get("JITGATE_TEAMS_WEBHOOK_NAME", "").strip() or base.teams_webhook_name,
            portal_url=_base_url("JITGATE_PORTAL_URL", e.get("JITGATE_PORTAL_URL", "")),
        )

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
        return [name for name, value in required.items() if not value]

    def resolved_teams_secret(self) -> bytes:
        """The outgoing-webhook HMAC key. Locally one is generated once and kept in the data dir, so the
        CLI (`jitgate teams approve`) and the server agree; elsewhere it must be configured."""
        if self.teams_secret:
            return base64.b64decode(self.teams_secret)
        if not self.local:
            raise ValueError("JITGATE_TEAMS_SECRET is required outside local mode")
        path = self.data_dir / "teams-secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
            path.chmod(0o600)
        return base64.b64decode(path.read_text().strip())


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


def _pairs(name: str, text: str) -> dict[str, str]:
    """A setting of comma-separated `key=value` pairs."""
    pairs: dict[str, str] = {}
    for item in _listed(text):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{name}: {item!r} is not key=value")
        pairs[key.strip()] = value.strip()
    return pairs
