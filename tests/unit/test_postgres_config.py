"""The `postgres` provider's configuration and sign-in, without a server: the servers file with its
line-numbered errors, the token sources (with fakes for the SDK credentials), and how driver errors are told
transient or permanent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from shared.adapters.databases.servers import Server, Servers, ServersFileError
from shared.adapters.postgres.provider import translate
from shared.adapters.postgres.signin import (
    CLOUD_SQL_SCOPE,
    ENTRA_SCOPE,
    CloudSqlToken,
    EntraToken,
    PasswordEnv,
    PasswordFile,
)
from shared.domain.errors import PermanentError, TransientError
from shared.domain.request import Provider, validate_role, validate_scope

OID = "3f2c0000-0000-4000-8000-000000000001"
ARM = ("/subscriptions/11111111-1111-4111-8111-111111111111/resourceGroups/rg-payments/providers/"
       "Microsoft.DBforPostgreSQL/flexibleServers/pg-payments")

GOOD = f"""\
version: 1
logins:
  {OID.upper()}: jane
servers:
  - name: payments-primary
    platform: self-managed
    host: db1.internal
    database: payments
    user: jitgate
    passwordEnv: JITGATE_PG_PASSWORD
  - name: payments-azure
    platform: azure
    resourceId: {ARM}
    host: pg-payments.postgres.database.azure.com
    database: Payments
    user: jitgate-identity
    logins:
      {OID}: jane@example.com
  - name: payments-gcp
    platform: cloud-sql
    instance: projects/acme-payments/instances/pg-main
    host: 10.1.2.3
    port: 6432
    database: payments
    user: jitgate@acme-payments.iam
"""


def test_a_servers_file_names_each_database_as_its_platform_does() -> None:
    servers = Servers.from_text(GOOD, "servers.yaml")
    scopes = [s.scope for s in servers.servers]
    assert scopes == ["payments-primary/payments", f"{ARM}/databases/Payments",
                      "projects/acme-payments/instances/pg-main/databases/payments"]
    for scope in scopes:
        validate_scope(Provider.POSTGRES, scope)
    # THEN scopes are found in any case, keeping the database's exact name, and logins per server win
    azure = servers.for_scope(f"{ARM}/databases/payments".upper())
    assert azure.database == "Payments" and azure.sign_in == "entra" and azure.sslmode == "require"
    assert azure.login_for(OID) == "jane@example.com"
    assert servers.servers[0].login_for(OID.upper()) == "jane" and servers.servers[0].sslmode == "prefer"
    assert servers.servers[0].principal_for("jane") == OID
    assert servers.servers[2].port == 6432 and servers.servers[2].sign_in == "cloud-sql-iam"


def test_an_unknown_scope_is_permanent_and_lists_what_is_configured() -> None:
    servers = Servers.from_text(GOOD, "servers.yaml")
    with pytest.raises(PermanentError, match=r"serves scope 'pg-x/payments'.*payments-primary/payments"):
        servers.for_scope("pg-x/payments")


@pytest.mark.parametrize(("body", "error"), [
    ("version: 2\nservers: []\n", "servers.yaml:1: version 2 is not supported"),
    ("version: 1\nservers:\n  - name: a\n    platform: self-managed\n    host: h\n    databse: d\n    user: u\n"
     "    passwordEnv: X\n", "servers.yaml:6: unknown key 'databse' in server 'a' (did you mean 'database'?)"),
    ("version: 1\nservers:\n  - name: a\n    platform: self-managed\n    host: h\n    database: d\n    user: u\n",
     "servers.yaml:3: server 'a': a self-managed server needs exactly one of passwordFile or passwordEnv"),
    ("version: 1\nservers:\n  - name: a\n    platform: azure\n    host: h\n    database: d\n    user: u\n"
     f"    resourceId: {ARM}\n    passwordFile: /x\n",
     "servers.yaml:3: server 'a': no password for a azure server: jitgate signs in with an Entra token"),
    ("version: 1\nservers:\n  - name: a\n    platform: oracle\n    host: h\n    database: d\n    user: u\n",
     "servers.yaml:3: server 'a': platform 'oracle' is not one of self-managed, azure, cloud-sql"),
    ("version: 1\nservers:\n  - name: a\n    platform: self-managed\n    host: h\n    port: 70000\n    database: d\n"
     "    user: u\n    passwordEnv: X\n",
     "servers.yaml:6: port of server 'a' is 70000; it must be between 1 and 65535"),
    ("version: 1\nservers:\n  - name: a\n    platform: self-managed\n    host: h\n    database: d\n    user: u\n"
     "    passwordEnv: X\n  - name: b\n    platform: self-managed\n    host: H\n    database: e\n    user: u\n"
     "    passwordEnv: X\n", "servers.yaml:9: server 'b' is H:5432 again, like server 'a'; roles belong to the whole"),
    ("version: 1\nlogins:\n  jane: jane\nservers:\n  - name: a\n    platform: self-managed\n    host: h\n"
     "    database: d\n    user: u\n    passwordEnv: X\n", "login key 'jane' is not an Entra object id"),
    ("version: 1\nservers:\n  - name: a\n    platform: self-managed\n    host: h\n    database: 'pay;ments'\n"
     "    user: u\n    passwordEnv: X\n", "its scope 'a/pay;ments' is not a valid postgres scope"),
])
def test_a_bad_servers_file_is_named_line_by_line(body: str, error: str) -> None:
    with pytest.raises(ServersFileError) as raised:
        Servers.from_text(body, "servers.yaml")
    assert any(line.startswith(error) or error in line for line in raised.value.errors), raised.value.errors


def test_an_unreadable_servers_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ServersFileError, match="cannot read the servers file"):
        Servers.load(tmp_path / "missing.yaml")


@pytest.mark.parametrize("role", ["payments_read", "Payments Read", 'pay"ments', "x'; DROP ROLE y; --", "r" * 63])
def test_quotes_semicolons_and_comments_are_legal_role_names(role: str) -> None:
    assert validate_role(Provider.POSTGRES, role) == role


# ---------------------------------------------------------------- sign-in


class FakeAzureCredential:
    def __init__(self, fail: bool = False) -> None:
        self.scopes: list[tuple[str, ...]] = []
        self.fail = fail

    def get_token(self, *scopes: str) -> Any:
        self.scopes.append(scopes)
        if self.fail:
            raise RuntimeError("IMDS unreachable")
        return type("AccessToken", (), {"token": "entra-token", "expires_on": 0})()


class FakeGoogleCredentials:
    def __init__(self) -> None:
        self.token: str | None = None
        self.valid = False
        self.refreshed = 0

    def refresh(self, request: Any) -> None:
        self.refreshed += 1
        self.token, self.valid = f"iam-token-{self.refreshed}", True


def test_azure_signs_in_with_an_entra_token_for_the_oss_rdbms_audience() -> None:
    credential = FakeAzureCredential()
    assert EntraToken(credential).password() == "entra-token"
    assert credential.scopes == [(ENTRA_SCOPE,)]
    assert ENTRA_SCOPE == "https://ossrdbms-aad.database.windows.net/.default"


def test_a_token_that_cannot_be_had_is_transient() -> None:
    with pytest.raises(TransientError, match="Entra token"):
        EntraToken(FakeAzureCredential(fail=True)).password()


def test_cloud_sql_refreshes_its_iam_token_only_when_it_is_no_longer_valid() -> None:
    credentials = FakeGoogleCredentials()
    source = CloudSqlToken(credentials, request=object())
    assert source.password() == "iam-token-1"
    assert source.password() == "iam-token-1"
    credentials.valid = False
    assert source.password() == "iam-token-2"
    assert CLOUD_SQL_SCOPE.endswith("/sqlservice.login")


def test_a_self_managed_password_comes_from_a_file_or_the_environment(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    assert PasswordFile(secret).password() == "s3cret"
    assert PasswordEnv("PW", {"PW": "from-env"}).password() == "from-env"
    with pytest.raises(PermanentError, match="not set"):
        PasswordEnv("PW", {}).password()
    with pytest.raises(PermanentError, match="cannot read the password file"):
        PasswordFile(tmp_path / "none").password()
    secret.write_text("\n")
    with pytest.raises(PermanentError, match="is empty"):
        PasswordFile(secret).password()


# ---------------------------------------------------------------- errors


SERVER = Server(name="pg-main", platform="self-managed", host="db", port=5432, database="payments", user="jitgate",
                scope="pg-main/payments", line=1, password_env="X")


def ServerError(sqlstate: str) -> Exception:
    """The exception psycopg raises for an error the server answered with this SQLSTATE."""
    error: Exception = psycopg.errors.lookup(sqlstate)(f"server said {sqlstate}")
    return error


@pytest.mark.parametrize("sqlstate", ["57P01", "57P03", "40001", "40P01", "53300", "08006", "57014", "55P03"])
def test_what_a_retry_may_cure_is_transient(sqlstate: str) -> None:
    assert isinstance(translate(ServerError(sqlstate), SERVER, "query"), TransientError)


@pytest.mark.parametrize(("sqlstate", "hint"), [
    ("42501", "jitgate databases check"), ("3D000", "database does not exist"), ("28P01", "cannot sign in"),
    ("42704", "does not exist"), ("2BP01", "SQLSTATE 2BP01"),
])
def test_what_a_retry_cannot_cure_is_permanent_and_says_what_to_do(sqlstate: str, hint: str) -> None:
    error = translate(ServerError(sqlstate), SERVER, "query")
    assert isinstance(error, PermanentError)
    assert "PostgreSQL server 'pg-main' (db:5432, database payments)" in str(error) and hint in str(error)


def test_a_connection_that_fails_without_an_answer_is_transient_a_value_the_driver_refuses_is_not() -> None:
    assert isinstance(translate(psycopg.OperationalError("connection refused"), SERVER, "connect"), TransientError)
    assert isinstance(translate(psycopg.DataError("NUL bytes"), SERVER, "query"), PermanentError)
