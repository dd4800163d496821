"""Two fake Azure SQL databases (`sql-main`, `sql-dr`) in one Microsoft Entra tenant, prepared as
infra/sql/azure-sql-setup.sql and the check's fixes leave them, and the `azure-sql` provider over them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.adapters.azure.sql import AzureSqlGrants
from shared.adapters.databases.servers import Server, Servers
from tests.azure.fake_sql import JITGATE_USER, FakeSqlConnection, FakeSqlDatabase, Tenant
from tests.postgres import Logins

SUBSCRIPTION = "/subscriptions/00000000-0000-0000-0000-00000000c0de"
SQL_SERVERS = f"{SUBSCRIPTION}/resourceGroups/rg-payments-prod/providers/Microsoft.Sql/servers"
SCOPE = f"{SQL_SERVERS}/sql-main/databases/payments"
OTHER_SCOPE = f"{SQL_SERVERS}/sql-dr/databases/payments"


@dataclass
class SqlWorld:
    """The databases, by server name; every made-up object id is a user of the tenant and has a user name."""

    tenant: Tenant = field(default_factory=lambda: Tenant(everyone=True))
    logins: Logins = field(default_factory=Logins)
    databases: dict[str, FakeSqlDatabase] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("sql-main", "sql-dr"):
            self.databases[name] = FakeSqlDatabase(server=name, tenant=self.tenant)
            self.databases[name].prepare()

    @property
    def main(self) -> FakeSqlDatabase:
        return self.databases["sql-main"]

    def server(self, name: str) -> Server:
        return Server(name=name, platform="azure-sql", host=f"{name}.database.windows.net", port=1433,
                      database="payments", user=JITGATE_USER, scope=f"{SQL_SERVERS}/{name}/databases/payments",
                      line=1, sslmode="require", logins=self.logins)

    def servers(self) -> Servers:
        return Servers(tuple(self.server(name) for name in self.databases), "test-servers.yaml")

    def connect(self, server: Server) -> FakeSqlConnection:
        return self.databases[server.name].connect(server)

    def provider(self, **options: Any) -> AzureSqlGrants:
        return AzureSqlGrants(self.servers(), connect=self.connect, **options)
