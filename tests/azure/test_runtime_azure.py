"""JITGATE_MODE=azure: the settings it reads and the runtime it wires, without connecting to anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.adapters.azure.cosmos import CosmosStore
from shared.adapters.azure.cosmos_data import CosmosDataGrants
from shared.adapters.azure.graph import GraphDirectory
from shared.adapters.azure.pim import AzurePim
from shared.adapters.azure.rbac import AzureRbac
from shared.adapters.azure.servicebus import ServiceBusBus
from shared.adapters.azure.sql import AzureSqlGrants
from shared.adapters.teams.workflows import TeamsNotifier
from shared.notices import AddressedNotifier
from shared.runtime import build
from shared.settings import Settings

APPROVERS = "5e4d3c2b-1a09-4f8e-8d7c-6b5a49382716"
ENV = {
    "JITGATE_MODE": "azure",
    "ServiceBusConnection__fullyQualifiedNamespace": "sb-jit.servicebus.windows.net",
    "JITGATE_COSMOS_ENDPOINT": "https://cosmos-jit.documents.azure.com:443/",
    "JITGATE_GRANT_SCOPES": "/subscriptions/3d6a4adc-4ac3-43f4-a05a-2238e5eec649, "
    "/subscriptions/3d6a4adc-4ac3-43f4-a05a-2238e5eec649/resourceGroups/rg-web-dev",
    "JITGATE_GROUP_OBJECT_IDS": f"platform-approvers={APPROVERS}, oncall={APPROVERS}",
    "AZURE_CLIENT_ID": "0f9c1f6e-59a4-4a53-9d3a-2a3c1d6f0b11",
    "JITGATE_TEAMS_WEBHOOK_URL": "https://example.invalid/workflows/run?sig=secret",
}


def test_the_azure_settings_are_read_from_the_app_settings() -> None:
    settings = Settings.from_env(ENV)

    assert settings.servicebus_namespace == "sb-jit.servicebus.windows.net"
    assert settings.cosmos_database == "jitgate"
    assert settings.grant_scopes == (
        "/subscriptions/3d6a4adc-4ac3-43f4-a05a-2238e5eec649",
        "/subscriptions/3d6a4adc-4ac3-43f4-a05a-2238e5eec649/resourceGroups/rg-web-dev",
    )
    assert settings.group_object_ids == {"platform-approvers": APPROVERS, "oncall": APPROVERS}
    assert settings.providers == ("azure-rbac",)
    assert settings.missing_azure_settings() == []


def test_the_teams_settings_for_people_are_read_and_wired() -> None:
    default = Settings.from_env(ENV)
    assert (default.teams_webhook_name, default.portal_url) == ("jitgate", "")
    env = {**ENV, "JITGATE_TEAMS_WEBHOOK_NAME": " JIT Gate ", "JITGATE_PORTAL_URL": "https://backstage.example.com/"}
    settings = Settings.from_env(env)
    assert (settings.teams_webhook_name, settings.portal_url) == ("JIT Gate", "https://backstage.example.com")

    notifier = build(settings).backends.notifier
    assert isinstance(notifier, AddressedNotifier)
    assert (notifier.answer_to, notifier.portal_url) == ("JIT Gate", "https://backstage.example.com")


@pytest.mark.parametrize("url", ["backstage.example.com", "ftp://backstage.example.com", "https://", "https://b/?x=1"])
def test_a_portal_url_that_is_no_base_url_is_refused_by_name(url: str) -> None:
    with pytest.raises(ValueError, match="JITGATE_PORTAL_URL must be an http"):
        Settings.from_env({**ENV, "JITGATE_PORTAL_URL": url})


def test_a_malformed_group_map_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="JITGATE_GROUP_OBJECT_IDS"):
        Settings.from_env({**ENV, "JITGATE_GROUP_OBJECT_IDS": "platform-approvers"})


def test_azure_mode_wires_the_azure_adapters_without_connecting() -> None:
    runtime = build(Settings.from_env({**ENV, "JITGATE_PROVIDERS": "azure-rbac,azure-pim"}))

    backends = runtime.backends
    assert isinstance(runtime.bus, ServiceBusBus) and backends.bus is runtime.bus
    assert isinstance(runtime.requests, CosmosStore)
    assert backends.requests is backends.ledger is backends.audit is runtime.audit
    assert isinstance(backends.providers["azure-rbac"], AzureRbac)
    assert isinstance(backends.providers["azure-pim"], AzurePim)
    assert isinstance(backends.notifier, AddressedNotifier) and isinstance(backends.notifier.inner, TeamsNotifier)
    assert backends.notifier.directory is backends.directory
    assert isinstance(backends.directory, GraphDirectory)
    assert backends.activity is None
    assert runtime.backend_names == {
        "bus": "servicebus", "store": "cosmos", "grants": "azure-rbac,azure-pim", "notifier": "teams",
        "directory": "graph", "activity": "none", "archive": "none",
    }


def test_azure_mode_names_every_missing_setting() -> None:
    env = {k: v for k, v in ENV.items() if k not in ("JITGATE_COSMOS_ENDPOINT", "JITGATE_GROUP_OBJECT_IDS")}
    with pytest.raises(ValueError, match="JITGATE_COSMOS_ENDPOINT, JITGATE_GROUP_OBJECT_IDS"):
        build(Settings.from_env(env))


def test_a_provider_azure_cannot_serve_is_refused() -> None:
    with pytest.raises(ValueError, match="local"):
        build(Settings.from_env({**ENV, "JITGATE_PROVIDERS": "azure-rbac,local"}))


COSMOS_ACCOUNT_SUBSCRIPTION = "/subscriptions/3d6a4adc-4ac3-43f4-a05a-2238e5eec649"
COSMOS_ACCOUNT = (f"{COSMOS_ACCOUNT_SUBSCRIPTION}/resourceGroups/rg-data/providers/Microsoft.DocumentDB"
                  "/databaseAccounts/cosmos-payments")
SQL_SERVERS_FILE = f"""\
version: 1
servers:
  - name: payments-sql
    platform: azure-sql
    resourceId: {COSMOS_ACCOUNT_SUBSCRIPTION}/resourceGroups/rg-data/providers/Microsoft.Sql/servers/sql-payments
    host: sql-payments.database.windows.net
    database: payments
    user: jitgate-identity
"""


def test_azure_mode_wires_the_data_plane_providers_without_connecting(tmp_path: Path) -> None:
    servers = tmp_path / "servers.yaml"
    servers.write_text(SQL_SERVERS_FILE)
    env = {**ENV, "JITGATE_PROVIDERS": "azure-rbac,cosmos-data,azure-sql", "JITGATE_COSMOS_ACCOUNTS": COSMOS_ACCOUNT,
           "JITGATE_DATABASES_FILE": str(servers)}

    runtime = build(Settings.from_env(env))

    cosmos, sql = runtime.backends.providers["cosmos-data"], runtime.backends.providers["azure-sql"]
    assert isinstance(cosmos, CosmosDataGrants) and cosmos.accounts == (COSMOS_ACCOUNT,)
    assert isinstance(sql, AzureSqlGrants) and [s.name for s in sql.servers.servers] == ["payments-sql"]
    assert runtime.backend_names["grants"] == "azure-rbac,cosmos-data,azure-sql"


def test_cosmos_data_needs_its_accounts_named_and_each_must_be_one() -> None:
    with pytest.raises(ValueError, match="JITGATE_COSMOS_ACCOUNTS"):
        build(Settings.from_env({**ENV, "JITGATE_PROVIDERS": "azure-rbac,cosmos-data"}))
    with pytest.raises(ValueError, match=r"JITGATE_COSMOS_ACCOUNTS: '/subscriptions/x' is not a Cosmos DB account"):
        Settings.from_env({**ENV, "JITGATE_COSMOS_ACCOUNTS": "/subscriptions/x"})
    with pytest.raises(ValueError, match="is below an account"):
        Settings.from_env({**ENV, "JITGATE_COSMOS_ACCOUNTS": f"{COSMOS_ACCOUNT}/dbs/payments"})


def test_azure_sql_is_served_only_when_the_servers_file_names_an_azure_sql_server() -> None:
    with pytest.raises(ValueError, match=r"azure-sql cannot run in Azure mode; known: azure-rbac, azure-pim, "
                                         r"cosmos-data$"):
        build(Settings.from_env({**ENV, "JITGATE_PROVIDERS": "azure-rbac,azure-sql"}))
