"""The `azure-sql` provider without a database: its servers-file entries, how it writes names into T-SQL, how
it signs in (an Entra token handed to the driver), and how the driver's errors are told transient or permanent
(with mssql-python's own exception classes, and once with the real driver against a port nobody listens on)."""

from __future__ import annotations

import os
import re
import struct
from typing import Any

import mssql_python
import pytest

from shared.adapters.azure.sql import (
    SQL_COPT_SS_ACCESS_TOKEN,
    SQL_TOKEN_SCOPE,
    connection_string,
    entra_connector,
    error_number,
    quote_literal,
    quote_name,
    token_struct,
    translate,
)
from shared.adapters.databases.servers import Servers, ServersFileError
from shared.adapters.postgres.provider import PostgresGrants
from shared.adapters.postgres.signin import PasswordEnv
from shared.domain.errors import PermanentError, TransientError
from shared.domain.ledger import GrantKey
from shared.domain.request import Provider, validate_role, validate_scope
from tests.azure.fake_sql import sql_error

OID = "3f2c0000-0000-4000-8000-000000000001"
SQL_SERVER = ("/subscriptions/11111111-1111-4111-8111-111111111111/resourceGroups/rg-payments/providers/"
              "Microsoft.Sql/servers/sql-payments")
GOOD = f"""\
version: 1
logins:
  {OID}: jane@example.com
servers:
  - name: payments-sql
    platform: azure-sql
    resourceId: {SQL_SERVER}
    host: sql-payments.database.windows.net
    database: Payments
    user: jitgate-identity
  - name: orders-sql
    platform: azure-sql
    resourceId: {SQL_SERVER}
    host: sql-payments.database.windows.net
    database: orders
    user: jitgate-identity
  - name: payments-primary
    platform: self-managed
    host: db1.internal
    database: payments
    user: jitgate
    passwordEnv: PW
"""


def test_an_azure_sql_database_is_named_by_its_arm_id_and_found_in_any_case() -> None:
    servers = Servers.from_text(GOOD, "servers.yaml")
    sql = servers.for_provider("azure-sql")
    assert [s.scope for s in sql.servers] == [f"{SQL_SERVER}/databases/Payments", f"{SQL_SERVER}/databases/orders"]
    for server in sql.servers:
        validate_scope(Provider.AZURE_SQL, server.scope)
        assert (server.port, server.sign_in, server.provider) == (1433, "entra", "azure-sql")
    found = sql.for_scope(f"{SQL_SERVER}/databases/payments".upper())
    assert found.database == "Payments" and found.login_for(OID) == "jane@example.com"
    # AND each provider sees its own servers only, and says which kind it lacks
    assert [s.name for s in servers.for_provider("postgres").servers] == ["payments-primary"]
    assert servers.providers == ["azure-sql", "postgres"]
    with pytest.raises(PermanentError, match=r"no Azure SQL server in servers\.yaml serves scope 'payments-primary/"):
        sql.for_scope("payments-primary/payments")


AZURE_SQL_ENTRY = ("version: 1\nservers:\n  - name: a\n    platform: azure-sql\n"
                   "    host: sql-payments.database.windows.net\n    database: payments\n    user: jitgate-identity\n")


@pytest.mark.parametrize(("extra", "error"), [
    ("", "server 'a': an azure-sql server needs resourceId"),
    (f"    resourceId: {SQL_SERVER.replace('Microsoft.Sql', 'Microsoft.DBforPostgreSQL')}\n", "needs resourceId"),
    (f"    resourceId: {SQL_SERVER}\n    passwordEnv: PW\n", "no password for an azure-sql server"),
    (f"    resourceId: {SQL_SERVER}\n    sslmode: disable\n", "jitgate always encrypts its Azure SQL connections"),
    (f"    resourceId: {SQL_SERVER.replace('sql-payments', 'sql-orders')}\n",
     "host 'sql-payments.database.windows.net' is not server sql-orders's"),
])
def test_a_bad_azure_sql_entry_is_named(extra: str, error: str) -> None:
    with pytest.raises(ServersFileError) as raised:
        Servers.from_text(AZURE_SQL_ENTRY + extra, "servers.yaml")
    assert any(error in line for line in raised.value.errors), raised.value.errors


def test_one_database_is_one_entry_but_two_databases_of_a_server_may_be_two() -> None:
    twice = GOOD.replace("database: orders", "database: payments")
    with pytest.raises(ServersFileError, match=re.escape("servers.yaml:11: server 'orders-sql' is sql-payments.database"
                                                         ".windows.net:1433, database payments, again, like server "
                                                         "'payments-sql'")):
        Servers.from_text(twice, "servers.yaml")


def test_azure_sql_user_names_may_be_long_postgres_logins_may_not() -> None:
    upn = "a-rather-long-user-principal-name-of-someone@payments.subsidiary.example.com"
    assert len(upn.encode()) > 63
    servers = Servers.from_text(GOOD.replace("jane@example.com", upn), "servers.yaml")
    assert servers.servers[0].login_for(OID) == upn
    # AND the postgres provider refuses that login when it needs it, as a server's own too long login at once
    postgres = PostgresGrants(servers, sign_in=lambda server: PasswordEnv("PW", {"PW": "x"}))
    key = GrantKey.of("postgres", OID, "payments_read", "payments-primary/payments")
    with pytest.raises(PermanentError, match="longer than PostgreSQL's 63 bytes"):
        postgres.create_assignment(key, key.assignment_name(), "jitgate:")
    long_pg = GOOD.replace("    user: jitgate\n", f"    user: {upn}\n")
    with pytest.raises(ServersFileError, match=f"login '{upn}' is longer than PostgreSQL's 63 bytes"):
        Servers.from_text(long_pg, "servers.yaml")


@pytest.mark.parametrize(("scope", "problem"), [
    (f"{SQL_SERVER}/databases/payments", None),
    (f"{SQL_SERVER}", "an Azure SQL scope must be"),
    (f"{SQL_SERVER}/databases/payments/schemas/dbo", "an Azure SQL scope must be"),
    (f"{SQL_SERVER.replace('sql-payments', 'SQL_Payments')}/databases/payments", "an Azure SQL scope must be"),
    (f"{SQL_SERVER}/databases/pay;ments", "scope segment 'pay;ments' is not allowed"),
])
def test_azure_sql_scopes(scope: str, problem: str | None) -> None:
    if problem is None:
        assert validate_scope(Provider.AZURE_SQL, scope) == scope
    else:
        with pytest.raises(ValueError, match=problem):
            validate_scope(Provider.AZURE_SQL, scope)


@pytest.mark.parametrize("role", ["db_datareader", "Payments Read", "pay]ments", "x'; DROP USER y; --", "r" * 128])
def test_brackets_quotes_and_comments_are_legal_azure_sql_role_names(role: str) -> None:
    assert validate_role(Provider.AZURE_SQL, role) == role


@pytest.mark.parametrize(("role", "problem"), [
    ("r" * 129, "at most 128 characters"), ("pay\u0430ments", "ASCII"), ("a\tb", "printable"), (" a", "space"),
])
def test_what_no_azure_sql_role_can_be_called_is_refused(role: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        validate_role(Provider.AZURE_SQL, role)


# ---------------------------------------------------------------- T-SQL text


@pytest.mark.parametrize(("name", "quoted"), [
    ("payments_read", "[payments_read]"), ("pay]ments", "[pay]]ments]"), ("]]", "[]]]]]"),
    ("x]; DROP USER [y", "[x]]; DROP USER [y]"), ("jane@example.com", "[jane@example.com]"), ("名前", "[名前]"),
])
def test_quote_name_is_quotename(name: str, quoted: str) -> None:
    assert quote_name(name) == quoted


@pytest.mark.parametrize("name", ["", "x" * 129, "a\x00b"])
def test_what_is_no_sql_server_name_is_refused_for_good(name: str) -> None:
    with pytest.raises(PermanentError, match="is not a SQL Server name"):
        quote_name(name)


def test_quote_literal_doubles_quotes() -> None:
    assert quote_literal("it's") == "'it''s'"
    with pytest.raises(PermanentError):
        quote_literal("a\x00")


# ---------------------------------------------------------------- sign-in


class FakeAzureCredential:
    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str) -> Any:
        self.scopes.append(scopes)
        return type("AccessToken", (), {"token": "entra-token", "expires_on": 4_102_444_800})()


class RecordingDriver:
    """Stands in for mssql_python.connect and keeps what it was called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, connection_string: str, **options: Any) -> Any:
        self.calls.append((connection_string, options))
        return type("Conn", (), {"timeout": 0, "autocommit": True})()


def test_the_driver_gets_an_entra_token_for_azure_sql_and_an_encrypted_connection() -> None:
    server = Servers.from_text(GOOD, "servers.yaml").servers[0]
    credential, driver = FakeAzureCredential(), RecordingDriver()
    connect = entra_connector(credential, login_timeout=7, statement_timeout=9, driver_connect=driver)
    first, second = connect(server), connect(server)
    # THEN the token is asked once for the Azure SQL audience (and cached), and handed over as ODBC wants it
    assert credential.scopes == [(SQL_TOKEN_SCOPE,)] and SQL_TOKEN_SCOPE == "https://database.windows.net/.default"
    text, options = driver.calls[0]
    assert text == ("Server={tcp:sql-payments.database.windows.net,1433};Database={Payments};Encrypt=yes;"
                    "TrustServerCertificate=no")
    assert options == {"autocommit": True, "attrs_before": {1256: token_struct("entra-token")}, "timeout": 7}
    assert mssql_python.ConstantsDDBC.SQL_COPT_SS_ACCESS_TOKEN.value == SQL_COPT_SS_ACCESS_TOKEN
    assert first.timeout == second.timeout == 9


def test_the_token_struct_is_length_prefixed_utf16() -> None:
    raw = token_struct("ab")
    assert raw == struct.pack("<I", 4) + "ab".encode("utf-16-le")


def test_braces_in_a_connection_string_value_are_escaped() -> None:
    server = Servers.from_text(GOOD, "servers.yaml").servers[0]
    hostile = type(server)(**{**server.__dict__, "database": "pay}ments;x"})
    assert "Database={pay}}ments;x};" in connection_string(hostile)


# ---------------------------------------------------------------- errors

SERVER = Servers.from_text(GOOD, "servers.yaml").servers[0]


@pytest.mark.parametrize(("number", "args"), [
    (40613, ("payments", "sql-payments", "abc")), (40501, ("1234",)), (4060, ("payments",)), (1205, (57,)),
])
def test_what_azure_calls_transient_is_transient(number: int, args: tuple[Any, ...]) -> None:
    raised = sql_error(number, *args)
    assert error_number(raised) == number
    error = translate(raised, SERVER, "query")
    assert isinstance(error, TransientError)
    assert "Azure SQL server 'payments-sql' (sql-payments.database.windows.net, database Payments)" in str(error)
    assert "[Microsoft]" not in str(error)
    assert error.retry_after == (10.0 if number == 40501 else None)


@pytest.mark.parametrize(("number", "args", "hint"), [
    (15151, ("alter", "role", "payments_read"), "jitgate databases check"),
    (15247, (), "jitgate databases check"),
    (18456, (), "infra/sql/azure-sql-setup.sql"),
    (37545, ("x", "y"), "not in the server's Microsoft Entra tenant"),
    (15023, ("jane",), "SQL Server error 15023"),
])
def test_what_a_retry_cannot_cure_is_permanent_and_says_what_to_do(number: int, args: tuple[Any, ...],
                                                                     hint: str) -> None:
    raised = sql_error(number, *args)
    assert error_number(raised) == number
    error = translate(raised, SERVER, "query")
    assert isinstance(error, PermanentError) and hint in str(error)


def test_a_40613_comes_as_a_programming_error_and_is_still_transient() -> None:
    # NB. The driver picks the class by SQLSTATE; 40613 arrives with 42000, the class of a syntax error.
    raised = sql_error(40613, "payments", "sql-payments", "abc")
    assert isinstance(raised, mssql_python.ProgrammingError)
    assert isinstance(translate(raised, SERVER, "connect"), TransientError)


def test_an_unknown_operational_error_is_transient_an_unknown_programming_error_permanent() -> None:
    driver = "[Microsoft][ODBC Driver 18 for SQL Server]"
    broken = mssql_python.OperationalError("Communication link failure", f"{driver}TCP Provider: Error code 0x68")
    refused = mssql_python.ProgrammingError("Syntax error or access violation", f"{driver}[SQL Server]Whatever.")
    assert isinstance(translate(broken, SERVER, "query"), TransientError)
    assert isinstance(translate(refused, SERVER, "query"), PermanentError)


def _driver_loads() -> bool:
    try:
        mssql_python.connect("Server=tcp:127.0.0.1,1;Encrypt=yes", timeout=1)
    except mssql_python.Error as exc:
        return "Failed to load the driver" not in str(exc)
    return True


def test_with_the_real_driver_an_unreachable_server_is_a_transient_error() -> None:
    # GIVEN mssql-python itself (its bundled ODBC driver needs libltdl7 on Debian)
    if not _driver_loads():
        if os.environ.get("CI") or os.environ.get("JITGATE_REQUIRE_MSSQL"):
            pytest.fail("CI needs mssql-python's driver to load: apt-get install libltdl7")
        pytest.skip("mssql-python's bundled ODBC driver does not load here: apt-get install libltdl7")
    server = type(SERVER)(**{**SERVER.__dict__, "host": "127.0.0.1", "port": 1})
    connect = entra_connector(FakeAzureCredential(), login_timeout=1)
    # WHEN jitgate connects to a port nobody listens on, with its token handed to the real driver
    with pytest.raises(mssql_python.OperationalError) as raised:
        connect(server)
    # THEN the driver took the token and the options, and failed to reach the server: a transient error
    assert "Client unable to establish connection" in str(raised.value)
    assert isinstance(translate(raised.value, server, "connect"), TransientError)
