"""A throwaway PostgreSQL server set up as an admin would for jitgate: a `payments` database with a table
only `payments_read` may read, jitgate's own login with CREATEROLE, ADMIN OPTION on the roles it grants and
pg_signal_backend (as infra/sql/postgres-setup.sql does), and servers files pointing at it."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from shared.adapters.databases.servers import Server, Servers
from shared.adapters.postgres.provider import PostgresGrants
from shared.adapters.postgres.signin import PasswordEnv
from shared.adapters.postgres.throwaway import INSTALL_HINT, PAYMENTS_ROLES, NoPostgres, ThrowawayPostgres

JITGATE_PASSWORD = "jitgate-test-password"
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def postgres_required() -> bool:
    """In CI a missing PostgreSQL fails the `postgres` tests; elsewhere they skip."""
    return bool(os.environ.get("CI") or os.environ.get("JITGATE_REQUIRE_POSTGRES"))


def start_server() -> ThrowawayPostgres:
    try:
        return ThrowawayPostgres().start()
    except NoPostgres as exc:
        if postgres_required():
            pytest.fail(f"CI needs PostgreSQL for the postgres tests: {exc}")
        pytest.skip(f"{exc} ({INSTALL_HINT})")


def admin_sql(pg: ThrowawayPostgres, *statements: str, dbname: str = "postgres") -> list[Any]:
    """Run statements as the superuser; the rows of the last one that returns any."""
    return pg.sql(*statements, dbname=dbname)


def prepare(pg: ThrowawayPostgres) -> None:
    """The database, its roles and jitgate's login, as infra/sql/postgres-setup.sql leaves a server."""
    pg.prepare_payments(JITGATE_PASSWORD)


class Logins(Mapping[str, str]):
    """A directory for tests: every Entra object id has a login named after it (`u_<first 8 hex>`), and
    names given explicitly win."""

    def __init__(self, named: dict[str, str] | None = None) -> None:
        self.named = dict(named or {})
        self.seen: dict[str, str] = {}

    def __getitem__(self, principal: str) -> str:
        if principal in self.named:
            return self.named[principal]
        if not _GUID.match(principal):
            raise KeyError(principal)
        return self.seen.setdefault(principal, f"u_{principal[:8]}")

    def get(self, principal: str, default: Any = None) -> Any:
        try:
            return self[principal]
        except KeyError:
            return default

    def __iter__(self) -> Iterator[str]:
        return iter({**self.seen, **self.named})

    def __len__(self) -> int:
        return len({**self.seen, **self.named})


@dataclass
class PgWorld:
    """Servers named after the throwaway servers (`<name>/payments`) and a provider over them."""

    servers: dict[str, ThrowawayPostgres]
    logins: Logins = field(default_factory=Logins)

    def server(self, name: str, pg: ThrowawayPostgres, platform: str = "self-managed") -> Server:
        return Server(name=name, platform=platform, host="127.0.0.1", port=pg.port, database="payments",
                      user="jitgate", scope=f"{name}/payments", line=1, password_env="JITGATE_TEST_PG",
                      logins=self.logins)

    def config(self) -> Servers:
        return Servers(tuple(self.server(name, pg) for name, pg in self.servers.items()), "test-servers.yaml")

    def provider(self, **options: Any) -> PostgresGrants:
        env = {"JITGATE_TEST_PG": JITGATE_PASSWORD}
        return PostgresGrants(self.config(), sign_in=lambda server: PasswordEnv("JITGATE_TEST_PG", env), **options)

    def servers_yaml(self, name: str, password_file: str, logins: Mapping[str, str]) -> str:
        """A servers file for one of the servers, as an operator writes it."""
        pg = self.servers[name]
        listed = "".join(f'  "{principal}": "{login}"\n' for principal, login in logins.items())
        named = f"logins:\n{listed}" if listed else ""
        return (f"version: 1\n{named}servers:\n  - name: {name}\n    platform: self-managed\n"
                f"    host: 127.0.0.1\n    port: {pg.port}\n    database: payments\n    user: jitgate\n"
                f"    passwordFile: {password_file}\n")


def reset(pg: ThrowawayPostgres) -> None:
    """Drop every login and role the tests made, keeping the prepared ones."""
    keep = ", ".join(f"'{r}'" for r in (*PAYMENTS_ROLES, "jitgate", "postgres"))
    rows = admin_sql(pg, f"SELECT quote_ident(rolname) FROM pg_roles WHERE rolname NOT LIKE 'pg\\_%' "
                         f"AND rolname NOT IN ({keep})")
    for (role,) in rows:
        admin_sql(pg, f"DROP OWNED BY {role}", dbname="payments")
        admin_sql(pg, f"DROP ROLE {role}")
    admin_sql(pg, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename NOT IN "
                  "('postgres', 'jitgate') AND backend_type = 'client backend'")
