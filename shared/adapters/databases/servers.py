"""The servers file (`JITGATE_DATABASES_FILE`): which database servers jitgate grants on (PostgreSQL for the
`postgres` provider, Azure SQL Database for `azure-sql`), how it reaches and signs in to each, and which login
stands for which person. Read like the policy file: pydantic models over the composed YAML, every problem named
with its line.

```yaml
version: 1
logins:                                   # Entra object id -> login name, on every server
  3f2c…-…: jane
servers:
  - name: payments-primary                # self-managed: the scope is payments-primary/<database>
    platform: self-managed
    host: db1.internal
    database: payments
    user: jitgate
    passwordFile: /run/secrets/jitgate-pg # or passwordEnv: JITGATE_PG_PASSWORD (self-managed only)
  - name: payments-azure
    platform: azure                       # signs in with an Entra token
    resourceId: /subscriptions/…/providers/Microsoft.DBforPostgreSQL/flexibleServers/pg-payments
    host: pg-payments.postgres.database.azure.com
    database: payments
    user: jitgate-identity
  - name: payments-sql                    # Azure SQL Database: signs in with an Entra token
    platform: azure-sql
    resourceId: /subscriptions/…/providers/Microsoft.Sql/servers/sql-payments
    host: sql-payments.database.windows.net
    database: payments
    user: jitgate-identity                # jitgate's database user (the managed identity's name)
```
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PlainValidator

from ...domain.errors import JitgateError, PolicyError
from ...domain.ids import is_guid
from ...domain.policy.yaml_source import (
    Findings,
    Refusal,
    Shape,
    Wording,
    YamlSource,
    keys_of,
    text,
    validate,
    whole_number,
)
from ...domain.request import Provider, validate_scope

Platform = Literal["self-managed", "azure", "cloud-sql", "azure-sql"]
SIGN_IN: Mapping[str, str] = {"self-managed": "password", "azure": "entra", "cloud-sql": "cloud-sql-iam",
                              "azure-sql": "entra"}
# The grant provider each platform's servers belong to, and how that provider's servers are called in words.
PROVIDER: Mapping[str, str] = {"self-managed": "postgres", "azure": "postgres", "cloud-sql": "postgres",
                               "azure-sql": "azure-sql"}
KIND: Mapping[str | None, str] = {"postgres": "PostgreSQL", "azure-sql": "Azure SQL", None: "database"}
DEFAULT_PORT: Mapping[str, int] = {"postgres": 5432, "azure-sql": 1433}
PG_LOGIN_BYTES = 63
_SERVER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")
_AZURE_SERVER = re.compile(
    r"^/subscriptions/[0-9a-f-]{36}/resourcegroups/[^/]+/providers/microsoft\.dbforpostgresql"
    r"/flexibleservers/[a-z0-9][a-z0-9-]{1,61}[a-z0-9]\Z"
)
_AZURE_SQL_SERVER = re.compile(
    r"^/subscriptions/[0-9a-f-]{36}/resourcegroups/[^/]+/providers/microsoft\.sql"
    r"/servers/(?P<name>[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)\Z"
)
_CLOUD_SQL_INSTANCE = re.compile(r"^projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/instances/[a-z][a-z0-9-]{0,97}\Z")


class ServersFileError(JitgateError):
    """A servers file that cannot be used; each message carries its line number."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("\n".join(errors))


def _server_name(value: object) -> str:
    given = text(value)
    if not _SERVER_NAME.match(given):
        raise Refusal("{what} must be 1-63 lower-case letters, digits or '-', starting alphanumeric")
    return given


def _login(value: object) -> str:
    """A login or database user name: at most 128 characters (SQL Server's sysname; a PostgreSQL server's are
    checked for its 63 bytes with the server), no control characters."""
    given = text(value)
    if len(given) > 128 or any(ord(c) < 32 or ord(c) == 127 for c in given):
        raise Refusal("{what} {value!r} must be at most 128 characters without control characters")
    return given


def _principal(value: object) -> str:
    given = text(value).lower()
    if not is_guid(given):
        raise Refusal("login key {value!r} is not an Entra object id (GUID)")
    return given


def _version(value: object) -> int:
    number = whole_number()(value)
    if number != 1:
        raise Refusal("version {number} is not supported; this jitgate reads version 1", number=number)
    return number


Logins = dict[Annotated[str, PlainValidator(_principal)], Annotated[str, PlainValidator(_login)]]


class ServerShape(Shape):
    """One entry of `servers`."""

    name: Annotated[str, PlainValidator(_server_name)]
    platform: Annotated[str, PlainValidator(text)]
    host: Annotated[str, PlainValidator(text)]
    port: Annotated[int | None, PlainValidator(whole_number(1, 65535))] = None
    database: Annotated[str, PlainValidator(text)]
    user: Annotated[str, PlainValidator(_login)]
    resource_id: Annotated[str | None, Field(alias="resourceId"), PlainValidator(text)] = None
    instance: Annotated[str | None, PlainValidator(text)] = None
    password_file: Annotated[str | None, Field(alias="passwordFile"), PlainValidator(text)] = None
    password_env: Annotated[str | None, Field(alias="passwordEnv"), PlainValidator(text)] = None
    sslmode: Annotated[str | None, PlainValidator(text)] = None
    logins: Logins = Field(default_factory=dict)


class ServersShape(Shape):
    version: Annotated[int, PlainValidator(_version)]
    logins: Logins = Field(default_factory=dict)
    servers: Annotated[list[ServerShape], Field(min_length=1)]


class _ServersWording(Wording):
    mappings = {(): keys_of(ServersShape), ("servers", "#"): keys_of(ServerShape), ("logins",): None,
                ("servers", "#", "logins"): None}

    def label(self, loc: tuple[Any, ...]) -> str:
        if len(loc) >= 2 and loc[0] == "servers" and isinstance(loc[1], int):
            entry = self.source.data["servers"][loc[1]] if isinstance(self.source.data, dict) else None
            name = entry.get("name") if isinstance(entry, dict) else None
            server = f"server '{name}'" if isinstance(name, str) else f"server #{loc[1] + 1}"
            return server if len(loc) == 2 else f"{loc[-1]} of {server}"
        return super().label(loc)


@dataclass(frozen=True)
class Server:
    """One server entry: where it is, how jitgate signs in, and the one database it grants in."""

    name: str
    platform: str
    host: str
    port: int
    database: str
    user: str
    scope: str  # the target scope a request names, as written here
    line: int
    password_file: str | None = None
    password_env: str | None = None
    sslmode: str = "prefer"
    logins: Mapping[str, str] = field(default_factory=dict)

    @property
    def sign_in(self) -> str:
        return SIGN_IN[self.platform]

    @property
    def provider(self) -> str:
        """The grant provider this server serves: `postgres` or `azure-sql`."""
        return PROVIDER[self.platform]

    def login_for(self, principal_id: str) -> str | None:
        """The login name that stands for this Entra principal here, if the servers file names one."""
        return self.logins.get(principal_id.lower())

    def principal_for(self, login: str) -> str | None:
        """The Entra principal a login stands for here, if the servers file says so."""
        return next((p for p, name in self.logins.items() if name == login), None)


@dataclass(frozen=True)
class Servers:
    """Every configured server (or, from `for_provider`, one provider's), found by the scope a request names
    (compared case-insensitively, as grant keys are lower-cased; the entry keeps the database's exact name)."""

    servers: tuple[Server, ...]
    source: str = "<servers>"
    provider: str | None = None

    def for_provider(self, provider: str) -> Servers:
        """The servers of one grant provider."""
        return Servers(tuple(s for s in self.servers if s.provider == provider), self.source, provider)

    @property
    def providers(self) -> list[str]:
        """The grant providers some configured server serves, in the order they first appear."""
        return list(dict.fromkeys(s.provider for s in self.servers))

    def by_scope(self, scope: str) -> Server | None:
        wanted = scope.lower()
        return next((s for s in self.servers if s.scope.lower() == wanted), None)

    def for_scope(self, scope: str) -> Server:
        from ...domain.errors import PermanentError

        server = self.by_scope(scope)
        if server is None:
            known = ", ".join(s.scope for s in self.servers) or "none"
            raise PermanentError(
                f"no {KIND[self.provider]} server in {self.source} serves scope '{scope}' (configured: {known}); "
                "add the server to the servers file"
            )
        return server

    @classmethod
    def load(cls, path: str | Path) -> Servers:
        try:
            source = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ServersFileError([f"{path}: cannot read the servers file: {exc}"]) from None
        return cls.from_text(source, str(path))

    @classmethod
    def from_text(cls, source: str, name: str = "<servers>") -> Servers:
        try:
            return _read(source, name)
        except PolicyError as exc:
            raise ServersFileError(exc.errors) from None


def _read(source: str, name: str) -> Servers:
    yaml_source = YamlSource(source, name)
    findings = Findings(name)
    shape = validate(ServersShape, _ServersWording(yaml_source), findings)
    servers: list[Server] = []
    if shape is not None:
        seen_names: dict[str, int] = {}
        seen_hosts: dict[tuple[str, int, str], str] = {}
        for i, entry in enumerate(shape.servers):
            line = yaml_source.line(("servers", i))
            problems, server = _server(entry, shape.logins, line)
            for problem in problems:
                findings.add(line, f"server '{entry.name}': {problem}")
            if entry.name in seen_names:
                findings.add(line, f"server name '{entry.name}' is used twice (first on line {seen_names[entry.name]})")
            seen_names.setdefault(entry.name, line)
            if server is None:
                continue
            # NB. PostgreSQL's roles and their memberships belong to the whole server, not to one database: two
            # entries for one server would let two grant keys stand on one membership and cut each other short.
            # An Azure SQL Database's users and roles are its own, so there one entry per database is the rule.
            per_database = server.provider == "azure-sql"
            where = (server.host.lower(), server.port, server.database.lower() if per_database else "")
            if where in seen_hosts:
                again = f"{server.host}:{server.port}" + (f", database {server.database}," if per_database else "")
                findings.add(line, f"server '{entry.name}' is {again} again, like server '{seen_hosts[where]}'"
                                   + ("" if per_database else "; roles belong to the whole server, so name one "
                                                              "database per server"))
            seen_hosts.setdefault(where, entry.name)
            servers.append(server)
    findings.raise_if_any()
    return Servers(tuple(servers), name)


def _server(entry: ServerShape, logins: Mapping[str, str], line: int) -> tuple[list[str], Server | None]:
    problems: list[str] = []
    if entry.platform not in SIGN_IN:
        return [f"platform '{entry.platform}' is not one of {', '.join(SIGN_IN)}"], None
    logins = {**logins, **entry.logins}
    if PROVIDER[entry.platform] == "azure-sql":
        return _azure_sql_server(entry, logins, line)
    # NB. The file's own `logins` serve every server, Azure SQL ones too (whose user names may be longer): the
    # provider refuses a login too long for PostgreSQL when it is needed.
    for login in (entry.user, *entry.logins.values()):
        if len(login.encode()) > PG_LOGIN_BYTES:
            problems.append(f"login {login!r} is longer than PostgreSQL's {PG_LOGIN_BYTES} bytes")
    scope = ""
    if entry.platform == "self-managed":
        scope = f"{entry.name}/{entry.database}"
        if (entry.password_file is None) == (entry.password_env is None):
            problems.append("a self-managed server needs exactly one of passwordFile or passwordEnv")
    else:
        if entry.password_file is not None or entry.password_env is not None:
            problems.append(f"no password for a {entry.platform} server: jitgate signs in with "
                            f"{'an Entra token' if entry.platform == 'azure' else 'an IAM token'}")
        if entry.platform == "azure":
            if entry.resource_id is None or not _AZURE_SERVER.match(entry.resource_id.lower()):
                problems.append("an azure server needs resourceId: the flexible server's ARM id "
                                "(/subscriptions/<guid>/resourceGroups/<rg>/providers/Microsoft.DBforPostgreSQL"
                                "/flexibleServers/<name>)")
            else:
                scope = f"{entry.resource_id}/databases/{entry.database}"
        else:
            if entry.instance is None or not _CLOUD_SQL_INSTANCE.match(entry.instance):
                problems.append("a cloud-sql server needs instance: projects/<project>/instances/<instance>")
            else:
                scope = f"{entry.instance}/databases/{entry.database}"
    if scope:
        try:
            validate_scope(Provider.POSTGRES, scope)
        except ValueError as exc:
            problems.append(f"its scope '{scope}' is not a valid postgres scope: {exc}")
    if problems:
        return problems, None
    sslmode = entry.sslmode or ("prefer" if entry.platform == "self-managed" else "require")
    return [], Server(
        name=entry.name,
        platform=entry.platform,
        host=entry.host,
        port=entry.port or DEFAULT_PORT["postgres"],
        database=entry.database,
        user=entry.user,
        scope=scope,
        line=line,
        password_file=entry.password_file,
        password_env=entry.password_env,
        sslmode=sslmode,
        logins=logins,
    )


def _azure_sql_server(entry: ServerShape, logins: Mapping[str, str], line: int) -> tuple[list[str], Server | None]:
    """An Azure SQL Database: the logical server's ARM id, its host, one database (its scope is the database's
    ARM id); jitgate signs in with an Entra token, so no password and no sslmode (connections are encrypted)."""
    problems: list[str] = []
    if entry.password_file is not None or entry.password_env is not None:
        problems.append("no password for an azure-sql server: jitgate signs in with an Entra token")
    if entry.sslmode is not None:
        problems.append("sslmode is for PostgreSQL; jitgate always encrypts its Azure SQL connections")
    found = _AZURE_SQL_SERVER.match((entry.resource_id or "").lower())
    if found is None:
        problems.append("an azure-sql server needs resourceId: the logical server's ARM id "
                        "(/subscriptions/<guid>/resourceGroups/<rg>/providers/Microsoft.Sql/servers/<name>)")
    elif not entry.host.lower().startswith(found["name"] + "."):
        problems.append(f"host '{entry.host}' is not server {found['name']}'s "
                        f"(it is {found['name']}.database.windows.net in Azure's public cloud)")
    scope = f"{entry.resource_id}/databases/{entry.database}"
    if found is not None:
        try:
            validate_scope(Provider.AZURE_SQL, scope)
        except ValueError as exc:
            problems.append(f"its scope '{scope}' is not a valid azure-sql scope: {exc}")
    if problems:
        return problems, None
    return [], Server(
        name=entry.name,
        platform=entry.platform,
        host=entry.host,
        port=entry.port or DEFAULT_PORT["azure-sql"],
        database=entry.database,
        user=entry.user,
        scope=scope,
        line=line,
        sslmode="require",
        logins=logins,
    )
