"""Which Google Cloud grant providers a deployment serves, built from settings (local mode, and the Google Cloud
entry): `gcp-iam` when JITGATE_PROVIDERS names it, and Cloud SQL's IAM layer around `postgres` whenever the servers
file lists a Cloud SQL server. Nothing connects here, and no Google library is imported."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .iam import IAM, RESOURCE_MANAGER, STORAGE, GcpIam
from .rest import GoogleToken, TokenProvider

if TYPE_CHECKING:
    from ...ports import Clock, GrantProvider
    from ...settings import Settings

log = logging.getLogger("jitgate.gcp")


def gcp_grant_providers(
    settings: Settings,
    providers: Mapping[str, GrantProvider],
    token: TokenProvider | None = None,
    resource_manager_url: str = RESOURCE_MANAGER,
    iam_url: str = IAM,
    storage_url: str = STORAGE,
    clock: Clock | None = None,
) -> dict[str, GrantProvider]:
    """`providers` with `gcp-iam` added, and `postgres` wrapped in `CloudSqlGrants`, where the deployment needs
    them; both share one IAM client (Application Default Credentials unless `token` is given)."""
    from ..postgres.provider import PostgresGrants

    served = dict(providers)
    database = served.get("postgres")
    cloud_sql = isinstance(database, PostgresGrants) and any(
        s.platform == "cloud-sql" for s in database.servers.servers)
    if "gcp-iam" not in settings.providers and not cloud_sql:
        return served
    iam = GcpIam(token or GoogleToken(), target_scopes=settings.gcp_grant_scopes,
                 resource_manager_url=resource_manager_url, iam_url=iam_url, storage_url=storage_url)
    if "gcp-iam" in settings.providers:
        if not settings.gcp_grant_scopes:
            log.warning("JITGATE_GCP_GRANT_SCOPES is empty: reconcile cannot find gcp-iam bindings left behind")
        served["gcp-iam"] = iam
    if cloud_sql and isinstance(database, PostgresGrants):
        from .cloudsql import CloudSqlGrants

        both = CloudSqlGrants(database, iam) if clock is None else CloudSqlGrants(database, iam, now=clock.now)
        served["postgres"] = both
    return served
