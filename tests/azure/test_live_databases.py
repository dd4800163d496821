"""The `azure-sql` and `cosmos-data` providers against a real Azure SQL Database and a real Cosmos DB account.

Skipped unless asked for, each saying which settings it lacks. The identity is whatever DefaultAzureCredential
finds (`az login` on a workstation). Nothing here ran in this project's CI: SQL Server and Cosmos DB cannot run
on its machines, and it has no Azure subscription.

azure-sql (JITGATE_LIVE_AZURE_SQL=1):
  JITGATE_LIVE_SQL_SERVERS_FILE   a servers file with one azure-sql server, set up with infra/sql/azure-sql-setup.sql
                                  for the identity, and naming the test principal under `logins`
  JITGATE_LIVE_SQL_ROLE           a custom role of that database the identity holds ALTER on
  JITGATE_LIVE_PRINCIPAL          the Entra object id of a test user (not the identity's)

cosmos-data (JITGATE_LIVE_AZURE=1, as tests/azure/test_live.py):
  JITGATE_LIVE_COSMOS_ACCOUNT     the ARM id of a throwaway account; the identity needs
                                  Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments/* and sqlRoleDefinitions/read
  JITGATE_LIVE_PRINCIPAL          the Entra object id of a test user
"""

from __future__ import annotations

import os

import pytest

from shared.adapters.azure.arm import arm_token_provider
from shared.adapters.azure.cosmos_data import COSMOS_BUILTIN_ROLES, CosmosDataGrants
from shared.adapters.azure.sql import AzureSqlGrants, entra_connector
from shared.adapters.azure.sql_check import check_server
from shared.adapters.databases.servers import Servers
from shared.domain.ledger import GrantKey, marker_for

REQUEST_ID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
PRINCIPAL = os.environ.get("JITGATE_LIVE_PRINCIPAL", "")
SQL_SERVERS = os.environ.get("JITGATE_LIVE_SQL_SERVERS_FILE", "")
SQL_ROLE = os.environ.get("JITGATE_LIVE_SQL_ROLE", "")
COSMOS_ACCOUNT = os.environ.get("JITGATE_LIVE_COSMOS_ACCOUNT", "")

live_sql = pytest.mark.skipif(
    not (os.environ.get("JITGATE_LIVE_AZURE_SQL") == "1" and SQL_SERVERS and SQL_ROLE and PRINCIPAL),
    reason="live Azure SQL tests need JITGATE_LIVE_AZURE_SQL=1, JITGATE_LIVE_SQL_SERVERS_FILE, JITGATE_LIVE_SQL_ROLE "
    "and JITGATE_LIVE_PRINCIPAL",
)
live_cosmos = pytest.mark.skipif(
    not (os.environ.get("JITGATE_LIVE_AZURE") == "1" and COSMOS_ACCOUNT and PRINCIPAL),
    reason="live Cosmos DB tests need JITGATE_LIVE_AZURE=1, JITGATE_LIVE_COSMOS_ACCOUNT and JITGATE_LIVE_PRINCIPAL",
)


@live_sql
def test_live_azure_sql_check_grant_read_back_and_revoke() -> None:
    servers = Servers.load(SQL_SERVERS).for_provider("azure-sql")
    [server] = servers.servers
    connect = entra_connector()
    # GIVEN a database set up for jitgate THEN the check finds every right it needs for the role
    findings = check_server(server, [SQL_ROLE], connect)
    assert [f.what for f in findings if not f.ok] == []
    # WHEN the test principal is granted the role THEN jitgate reads it back as its own, and revokes it
    provider = AzureSqlGrants(servers, connect=connect)
    key = GrantKey.of("azure-sql", PRINCIPAL, provider.resolve_role(server.scope, SQL_ROLE), server.scope)
    created = provider.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID))
    try:
        assert provider.find_assignment(key) == created
        assert key in [a.key for a in provider.list_marked()]
    finally:
        provider.delete_assignment(server.scope, key.assignment_name())
    assert provider.find_assignment(key) is None


@live_cosmos
def test_live_cosmos_data_grant_read_back_and_revoke() -> None:
    provider = CosmosDataGrants(arm_token_provider(), accounts=[COSMOS_ACCOUNT])
    role = provider.resolve_role(COSMOS_ACCOUNT, "Cosmos DB Built-in Data Reader")
    assert role == COSMOS_BUILTIN_ROLES["Cosmos DB Built-in Data Reader"]
    key = GrantKey.of("cosmos-data", PRINCIPAL, role, COSMOS_ACCOUNT)
    created = provider.create_assignment(key, key.assignment_name(), marker_for(REQUEST_ID))
    try:
        assert provider.find_assignment(key) == created
        assert key in [a.key for a in provider.list_marked()]
    finally:
        provider.delete_assignment(COSMOS_ACCOUNT, key.assignment_name())
    assert provider.find_assignment(key) is None
