"""GrantProvider `azure-sql`: a grant is membership in a database role of an Azure SQL Database
(`ALTER ROLE [role] ADD MEMBER [user]`), the user being the requester's contained Microsoft Entra user.

- A user is found by its SID, which for a Microsoft Entra user or group is its object id: whatever name an admin
  gave it, and even after it is dropped (the sessions it left still carry it). A missing user is created with
  `CREATE USER [name] FROM EXTERNAL PROVIDER WITH OBJECT_ID = '<object id>'`, the name taken from the servers
  file's `logins` map (a user's UPN, a group's display name: Azure requires the name to start with it).
- SQL Server keeps no grantor for a role membership and no comment on it, so jitgate marks its own with
  extended properties on the user, written in the transaction that makes them: `jitgate:member:<role
  principal_id>` (value: the role's name) per membership, `jitgate:user` on a user jitgate created. A membership
  without jitgate's property is access the person already had (preexisting, never touched); only a user carrying
  `jitgate:user` is dropped, once it is a member of nothing; one that owns something is kept (jitgate never
  touches data) and `jitgate databases check` lists it. Why properties rather than a table of jitgate's: they add
  no object to the application's database, need no right beyond ALTER ANY USER (which creating users needs
  anyway), live and die with the user, and there is one per membership, so concurrent grants to one person never
  race on one value.
- A revoke ends the person's sessions (`KILL`, found in `sys.dm_exec_sessions` by SID or user name) after
  `DROP MEMBER` commits: a session keeps the role memberships it signed in with until it ends.

Identifiers reach T-SQL only through `quote_name` (QUOTENAME's rule: `]` doubled inside brackets), values as
parameters, except where T-SQL takes no parameter: the object id literal of CREATE USER (a GUID, checked, and
quoted by `quote_literal`) and KILL's session id (an integer the catalog gave). The driver is Microsoft's
`mssql-python`, imported only when a connection is made; it signs in with an Entra token for
`https://database.windows.net/.default`.

mssql-python keeps no SQL Server error number on its exceptions (only the message and, in the class, the
SQLSTATE family; microsoft/mssql-python#581), so `error_number` recognises the numbers jitgate acts on by their
message (English, the language of jitgate's user unless an admin set another default language).
"""

from __future__ import annotations

import logging
import re
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

from ...domain.errors import AssignmentExists, PermanentError, TransientError
from ...domain.ids import is_guid
from ...domain.ledger import MARKER_PREFIX, Assignment, GrantKey, role_id, role_name
from ..databases.servers import Server, Servers

log = logging.getLogger("jitgate.azure-sql")

SQL_TOKEN_SCOPE: Final = "https://database.windows.net/.default"
SQL_COPT_SS_ACCESS_TOKEN: Final = 1256  # the ODBC connection attribute taking an Entra access token
USER_MARK: Final = "jitgate:user"
MEMBER_MARK: Final = "jitgate:member:"  # + the role's principal_id
USER_NOTE: Final = f"{MARKER_PREFIX} user created by jitgate; dropped when its last grant ends"
# Roles whose holder could escape every rule (change memberships or permissions, run DDL as dbo) or that everyone
# holds: jitgate never grants them, as it never grants a PostgreSQL superuser role.
UNGRANTABLE: Final = frozenset({"public", "db_owner", "db_securityadmin", "db_accessadmin", "db_ddladmin"})
USER_TYPES: Final = {"User": "E", "Group": "X"}  # the principal types jitgate grants to -> sys.database_principals type
_TYPE_WORDS: Final = {"E": "a Microsoft Entra user", "X": "a Microsoft Entra group"}

# SQL Server errors jitgate acts on, recognised by their message (see the module docstring). Transient ones are
# Microsoft's list for Azure SQL Database (troubleshoot-common-errors-issues) plus deadlocks and lock timeouts.
TRANSIENT_ERRORS: Final = {
    615: "Could not find database ID",
    926: "It has been marked SUSPECT by recovery",
    1205: "was deadlocked on",
    1222: "Lock request time out period exceeded",
    4060: "Cannot open database",
    4221: "Login to read-secondary failed",
    40197: "The service has encountered an error processing your request",
    40501: "The service is currently busy",
    40613: "is not currently available",
    49918: "Not enough resources to process request",
    49919: "Too many create or update operations in progress",
    49920: "Too many operations in progress for subscription",
}
PERMANENT_ERRORS: Final = {
    229: "permission was denied on the object",
    916: "is not able to access the database",
    6104: "Cannot use KILL to kill your own process",
    6106: "is not an active process ID",
    15023: "already exists in the current database",
    15135: "Extended properties are not permitted on",
    15138: "owns a schema in the database, and cannot be dropped",
    15151: "because it does not exist or you do not have permission",
    15247: "User does not have permission to perform this action",
    15284: "has granted or denied permissions to objects in the database and cannot be dropped",
    15421: "owns a database role and cannot be dropped",
    18456: "Login failed for user",
    33131: "has a duplicate display name",
    37545: "is not a valid object id for",
}
_CANNOT_DROP: Final = frozenset({15138, 15284, 15421})
_NO_RIGHT: Final = frozenset({229, 916, 15151, 15247})
_DRIVER_PREFIX: Final = re.compile(r"^(?:\[[^\]]*\])+")


class Connection(Protocol):
    """What jitgate uses of a DB-API connection (mssql-python's, or the tests' fake)."""

    autocommit: bool

    def cursor(self) -> Any: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...


Connector = Callable[[Server], Connection]


def quote_name(name: str) -> str:
    """An identifier as T-SQL's QUOTENAME writes it: in brackets, `]` doubled. The one place identifiers are
    written into T-SQL; a name that is no sysname (empty, over 128 characters, a NUL) is refused for good."""
    if not name or len(name) > 128 or "\x00" in name:
        raise PermanentError(f"{name[:40]!r} is not a SQL Server name (1 to 128 characters, no NUL)")
    return "[" + name.replace("]", "]]") + "]"


def quote_literal(text: str) -> str:
    """A string literal, `'` doubled (T-SQL takes no parameter in CREATE USER's OBJECT_ID)."""
    if "\x00" in text:
        raise PermanentError("a NUL cannot stand in a T-SQL literal")
    return "'" + text.replace("'", "''") + "'"


def error_number(exc: BaseException) -> int | None:
    """The SQL Server error number an mssql-python exception stands for, when it is one jitgate knows."""
    text = _message(exc)
    for number, fragment in (*TRANSIENT_ERRORS.items(), *PERMANENT_ERRORS.items()):
        if fragment.lower() in text.lower():
            return number
    return None


def _message(exc: BaseException) -> str:
    """The server's (or the driver's) own words, without the driver's `[Microsoft][SQL Server]` prefixes."""
    text = str(getattr(exc, "ddbc_error", "") or getattr(exc, "driver_error", "") or exc)
    return _DRIVER_PREFIX.sub("", text.strip()).strip() or type(exc).__name__


def translate(exc: BaseException, server: Server, doing: str) -> TransientError | PermanentError:
    """A driver error as jitgate's: transient when a retry may cure it, permanent with what to do when not."""
    from mssql_python import InterfaceError, OperationalError

    number = error_number(exc)
    where = f"Azure SQL server '{server.name}' ({server.host}, database {server.database})"
    said = _message(exc)
    # NB. Without a number jitgate knows, a connection that failed or broke (OperationalError: SQLSTATE 08xxx,
    # HYT00...) is worth retrying; anything the server refused for a reason it named is not.
    unreached = number is None and isinstance(exc, OperationalError | InterfaceError)
    if number in TRANSIENT_ERRORS or unreached:
        wait = 10.0 if number == 40501 else None  # "Retry the request after 10 seconds"
        return TransientError(f"{where}: cannot {doing} now: {said}", retry_after=wait)
    if number in _NO_RIGHT:
        hint = "run `jitgate databases check` for the rights jitgate needs and the statements that give them"
    elif number == 18456:
        hint = (f"jitgate's identity is no user of database {server.database}: the script `jitgate infra sql --server "
                f"{server.name}` prints (infra/sql/azure-sql-setup.sql) makes it one")
    elif number == 37545:
        hint = "that object id is not in the server's Microsoft Entra tenant"
    elif number == 33131:
        hint = "name the user under `logins` with a suffix, as Azure asks for duplicate display names"
    else:
        hint = f"SQL Server error {number}" if number else type(exc).__name__
    return PermanentError(f"{where}: {said} ({hint})")


@dataclass(frozen=True)
class User:
    """A database user as sys.database_principals shows it."""

    principal_id: int
    name: str
    type: str


class Database:
    """One connection to one database, its errors jitgate's (see `AzureSqlGrants.connect`)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._executed(sql, params) as cursor:
            return [tuple(row) for row in cursor.fetchall()]

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        found = self.rows(sql, params)
        return found[0] if found else None

    def run(self, sql: str, params: Sequence[Any] = ()) -> None:
        """A statement that returns no rows."""
        with self._executed(sql, params):
            pass

    @contextmanager
    def _executed(self, sql: str, params: Sequence[Any]) -> Iterator[Any]:
        cursor = self.conn.cursor()
        try:
            cursor.execute(sql, tuple(params))
            yield cursor
        finally:
            cursor.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """The statements inside commit together, or not at all."""
        self.conn.autocommit = False
        try:
            yield
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise
        finally:
            self.conn.autocommit = True


class AzureSqlGrants:
    """GrantProvider `azure-sql` over the Azure SQL databases of a servers file (see the module docstring)."""

    name: str = "azure-sql"

    def __init__(self, servers: Servers, connect: Connector | None = None, session_end_wait: float = 5.0) -> None:
        self.servers = servers.for_provider(self.name)
        self._connect = connect or entra_connector()
        self.session_end_wait = session_end_wait

    # ------------------------------------------------------------ GrantProvider

    def resolve_role(self, scope: str, role: str) -> str:
        server = self.servers.for_scope(scope)
        with self.connect(server) as db:
            row = db.one("SELECT name, type FROM sys.database_principals WHERE name = ?", (role,))
        if row is None or row[1] != "R":
            raise PermanentError(f"unknown role '{role}' in Azure SQL database {server.database} on server "
                                 f"'{server.name}': ask for a role that exists there")
        name = str(row[0])
        if name.lower() in UNGRANTABLE:
            raise PermanentError(f"role '{name}' in database {server.database} lets its holder escape every rule "
                                 "(or is everyone's); jitgate grants no such role")
        return role_id(name)

    def find_assignment(self, key: GrantKey) -> Assignment | None:
        server = self._server_of(key)
        with self.connect(server) as db:
            return self._membership(db, server, key.principal_id, role_name(key.role_definition_id))

    def get_assignment(self, scope: str, name: str) -> Assignment | None:
        server = self.servers.for_scope(scope)
        principal, role = self._parse_name(server, name)
        with self.connect(server) as db:
            found = self._membership(db, server, principal, role)
        return found if found is not None and found.name == name else None

    def create_assignment(
        self,
        key: GrantKey,
        name: str,
        description: str,
        principal_type: str = "User",
        expires_at: datetime | None = None,
    ) -> Assignment:
        server = self._server_of(key)
        role = role_name(key.role_definition_id)
        ours = key.assignment_name()
        kind = USER_TYPES.get(principal_type)
        if kind is None:
            raise PermanentError(f"UnmatchedPrincipalType: jitgate grants Azure SQL roles to Entra users and groups, "
                                 f"not to a {principal_type}")
        with self.connect(server) as db:
            found = self._membership(db, server, key.principal_id, role)
            if found is not None and (found.name != ours or name != ours):
                raise AssignmentExists(found.name)
            if name != ours:
                raise PermanentError(f"'{name}' is not the name of this grant on server '{server.name}' "
                                     f"(it is '{ours}')")
            if found is not None:
                return found
            target = self._role_principal(db, role)
            if target is None:
                raise PermanentError(f"RoleDefinitionDoesNotExist: role '{role}' does not exist in database "
                                     f"{server.database} on server '{server.name}'")
            with db.transaction():
                user = self._ensure_user(db, server, key.principal_id, kind)
                db.run(f"ALTER ROLE {quote_name(role)} ADD MEMBER {quote_name(user.name)}")
                self._mark(db, user, f"{MEMBER_MARK}{target}", role)
            found = self._membership(db, server, key.principal_id, role)
        if found is None:
            raise TransientError(f"added '{key.principal_id}' to role '{role}' on server '{server.name}' but cannot "
                                 "read the membership back")
        log.info("added %s to role %r in database %s on server %s", key.principal_id, role, server.database,
                 server.name)
        return found

    def delete_assignment(self, scope: str, name: str) -> None:
        server = self.servers.for_scope(scope)
        principal, role = self._parse_name(server, name)
        with self.connect(server) as db:
            user = self._user(db, principal)
            target = self._role_principal(db, role)
            if user is not None and target is not None and f"{MEMBER_MARK}{target}" in self._marks(db, user):
                with db.transaction():
                    if self._is_member(db, user, target):
                        db.run(f"ALTER ROLE {quote_name(role)} DROP MEMBER {quote_name(user.name)}")
                    self._unmark(db, user, f"{MEMBER_MARK}{target}")
                if self._is_member(db, user, target):
                    raise TransientError(f"'{user.name}' is still a member of role '{role}' on server "
                                         f"'{server.name}' after DROP MEMBER")
            elif user is not None and target is None:
                # NB. The role was dropped meanwhile, and its memberships with it: the grant is gone, only
                # jitgate's mark of it is left on the user.
                for mark, value in self._marks(db, user).items():
                    if mark.startswith(MEMBER_MARK) and value == role:
                        self._unmark(db, user, mark)
            # NB. Sessions are found by SID as well as by name, so a revoke that dies after dropping the user and
            # runs again still ends them; the user is dropped last for the same reason.
            ended = self._end_sessions(db, principal, user.name if user is not None else "")
            if user is not None and self._drop_user_if_done(db, server, user):
                ended += self._end_sessions(db, principal, user.name)
        if ended:
            log.info("ended %d session(s) of %s in database %s on server %s", ended, principal, server.database,
                     server.name)

    def list_marked(self) -> list[Assignment]:
        marked: list[Assignment] = []
        for server in self.servers.servers:
            with self.connect(server) as db:
                rows = db.rows(
                    "SELECT CAST(u.sid AS UNIQUEIDENTIFIER), r.name FROM sys.extended_properties AS p"
                    " JOIN sys.database_principals AS u ON u.principal_id = p.major_id"
                    " JOIN sys.database_role_members AS m ON m.member_principal_id = u.principal_id"
                    " JOIN sys.database_principals AS r ON r.principal_id = m.role_principal_id"
                    " WHERE p.class = 4 AND p.name = N'jitgate:member:' + CAST(r.principal_id AS NVARCHAR(12))"
                    " AND CAST(p.value AS NVARCHAR(128)) = r.name"
                )
            marked.extend(self._assignment(server, str(sid).lower(), str(role), mine=True) for sid, role in rows)
        return sorted(marked, key=lambda a: (a.scope.lower(), a.name))

    # ------------------------------------------------------------ the pieces

    def _server_of(self, key: GrantKey) -> Server:
        if key.provider != self.name:
            raise PermanentError(f"grant key of provider {key.provider!r} sent to provider {self.name!r}")
        return self.servers.for_scope(key.scope)

    def _parse_name(self, server: Server, name: str) -> tuple[str, str]:
        principal, sep, encoded = name.rpartition("/")
        if not sep or not is_guid(principal.lower()) or not encoded:
            raise PermanentError(f"'{name}' is not an azure-sql grant name (<object id>/<role id>) on '{server.name}'")
        return principal.lower(), role_name(encoded)

    def _assignment(self, server: Server, principal: str, role: str, mine: bool) -> Assignment:
        key = GrantKey.of(self.name, principal, role_id(role), server.scope)
        name, description = (
            (key.assignment_name(), f"{MARKER_PREFIX} membership granted by jitgate") if mine
            else (f"{key.assignment_name()}@outside-jitgate", "membership granted outside jitgate")
        )
        return Assignment(name=name, provider=self.name, principal_id=key.principal_id,
                          role_definition_id=key.role_definition_id, scope=server.scope, description=description)

    def _user(self, db: Database, principal: str) -> User | None:
        """The database user whose SID is this Entra object id, whatever its name."""
        if not is_guid(principal.lower()):
            return None
        row = db.one("SELECT principal_id, name, type FROM sys.database_principals"
                     " WHERE sid = CAST(CAST(? AS UNIQUEIDENTIFIER) AS VARBINARY(16))", (principal,))
        return None if row is None else User(int(row[0]), str(row[1]), str(row[2]))

    def _role_principal(self, db: Database, role: str) -> int | None:
        row = db.one("SELECT principal_id FROM sys.database_principals WHERE name = ? AND type = 'R'", (role,))
        return None if row is None else int(row[0])

    def _is_member(self, db: Database, user: User, role_principal: int) -> bool:
        return db.one("SELECT 1 FROM sys.database_role_members WHERE role_principal_id = ? AND member_principal_id = ?",
                      (role_principal, user.principal_id)) is not None

    def _marks(self, db: Database, user: User) -> dict[str, str]:
        """jitgate's extended properties on a user: name -> value."""
        rows = db.rows("SELECT name, CAST(value AS NVARCHAR(256)) FROM sys.extended_properties"
                       " WHERE class = 4 AND major_id = ? AND name LIKE N'jitgate:%'", (user.principal_id,))
        return {str(name): str(value) for name, value in rows}

    def _mark(self, db: Database, user: User, mark: str, value: str) -> None:
        verb = "update" if mark in self._marks(db, user) else "add"
        db.run(f"EXEC sys.sp_{verb}extendedproperty @name = ?, @value = ?, @level0type = N'USER', @level0name = ?",
               (mark, value, user.name))

    def _unmark(self, db: Database, user: User, mark: str) -> None:
        db.run("EXEC sys.sp_dropextendedproperty @name = ?, @level0type = N'USER', @level0name = ?", (mark, user.name))

    def _membership(self, db: Database, server: Server, principal: str, role: str) -> Assignment | None:
        """jitgate's membership of the principal's user in the role, or someone else's, or None."""
        user = self._user(db, principal)
        if user is None:
            return None
        row = db.one("SELECT r.principal_id, r.name FROM sys.database_principals AS r"
                     " JOIN sys.database_role_members AS m ON m.role_principal_id = r.principal_id"
                     " WHERE r.name = ? AND r.type = 'R' AND m.member_principal_id = ?", (role, user.principal_id))
        if row is None:
            return None
        mine = self._marks(db, user).get(f"{MEMBER_MARK}{row[0]}") == str(row[1])
        return self._assignment(server, principal, str(row[1]), mine)

    def _ensure_user(self, db: Database, server: Server, principal: str, kind: str) -> User:
        """The principal's user, created (and marked as jitgate's) when there is none."""
        if not is_guid(principal.lower()):
            raise PermanentError(f"PrincipalNotFound: {principal!r} is not a Microsoft Entra object id")
        user = self._user(db, principal)
        if user is None:
            name = server.login_for(principal)
            if name is None:
                raise PermanentError(
                    f"no user for principal {principal} in Azure SQL database {server.database} on server "
                    f"'{server.name}': name it under `logins` in {self.servers.source} (a user's UPN, a group's "
                    "display name)"
                )
            db.run(f"CREATE USER {quote_name(name)} FROM EXTERNAL PROVIDER WITH OBJECT_ID = {quote_literal(principal)}")
            user = self._user(db, principal)
            if user is None:
                raise TransientError(f"created user '{name}' on server '{server.name}' but cannot read it back")
            self._mark(db, user, USER_MARK, USER_NOTE)
            log.info("created user %r in database %s on server %s", name, server.database, server.name)
        if user.type != kind:
            raise PermanentError(f"UnmatchedPrincipalType: {principal} is {_TYPE_WORDS.get(user.type, user.type)} in "
                                 f"database {server.database}, not {_TYPE_WORDS[kind]}")
        return user

    def _drop_user_if_done(self, db: Database, server: Server, user: User) -> bool:
        """Drop a user jitgate created once it is a member of nothing (True when dropped); one that owns something
        is kept."""
        marks = self._marks(db, user)
        if USER_MARK not in marks or any(mark.startswith(MEMBER_MARK) for mark in marks):
            return False
        if db.one("SELECT 1 FROM sys.database_role_members WHERE member_principal_id = ?", (user.principal_id,)):
            return False
        from mssql_python import Error

        try:
            with db.transaction():
                self._unmark(db, user, USER_MARK)
                db.run(f"DROP USER {quote_name(user.name)}")
        except Error as exc:
            if error_number(exc) not in _CANNOT_DROP:
                raise
            # NB. It owns something made while it had access. jitgate never touches data, so the user stays (a
            # member of no role jitgate granted) for an admin to look at: `jitgate databases check` lists it.
            log.warning("user %r on server %s is kept, not dropped: %s", user.name, server.name, _message(exc))
            return False
        log.info("dropped user %r in database %s on server %s", user.name, server.database, server.name)
        return True

    def _end_sessions(self, db: Database, principal: str, user_name: str) -> int:
        """KILL every session of the principal in this database and wait until sys.dm_exec_sessions shows none."""
        from mssql_python import Error

        query = ("SELECT session_id FROM sys.dm_exec_sessions WHERE is_user_process = 1 AND session_id <> @@SPID"
                 " AND (original_security_id = CAST(CAST(? AS UNIQUEIDENTIFIER) AS VARBINARY(16))"
                 " OR original_login_name = ?)")
        found = [int(row[0]) for row in db.rows(query, (principal, user_name))]
        for session in found:
            try:
                db.run(f"KILL {session:d}")
            except Error as exc:
                if error_number(exc) != 6106:  # it ended meanwhile
                    raise
        deadline = time.monotonic() + self.session_end_wait
        delay = 0.01
        while found:
            left = db.rows(query, (principal, user_name))
            if not left:
                break
            if time.monotonic() > deadline:
                raise TransientError(f"{len(left)} session(s) of {principal} still open after KILL")
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
        return len(found)

    @contextmanager
    def connect(self, server: Server) -> Iterator[Database]:
        """One connection per operation, autocommit (changes run in explicit transactions), errors translated."""
        from mssql_python import Error

        try:
            conn = self._connect(server)
        except Error as exc:
            raise translate(exc, server, "connect") from exc
        try:
            yield Database(conn)
        except Error as exc:
            raise translate(exc, server, "query") from exc
        finally:
            try:
                conn.close()
            except Error:
                log.debug("closing a connection to server %s failed", server.name, exc_info=True)


def connection_string(server: Server) -> str:
    """The ODBC connection string: the server over TCP, the database, always encrypted, the certificate checked."""
    return (f"Server={_odbc_value(f'tcp:{server.host},{server.port}')};Database={_odbc_value(server.database)};"
            "Encrypt=yes;TrustServerCertificate=no")


def _odbc_value(value: str) -> str:
    return "{" + value.replace("}", "}}") + "}"


def token_struct(token: str) -> bytes:
    """An access token as the ODBC driver takes it (SQL_COPT_SS_ACCESS_TOKEN): its UTF-16-LE bytes, prefixed
    with their length as a 4-byte little-endian integer."""
    raw = token.encode("utf-16-le")
    return struct.pack("<I", len(raw)) + raw


def entra_connector(credential: Any = None, login_timeout: int = 15, statement_timeout: int = 15,
                    driver_connect: Callable[..., Any] | None = None) -> Connector:
    """Connections signed in with an Entra token for Azure SQL (the managed identity's in Azure), the token
    cached until shortly before it expires. `driver_connect` is mssql_python.connect unless given."""
    from .arm import CachedToken

    token = CachedToken(SQL_TOKEN_SCOPE, credential)

    def connect(server: Server) -> Connection:
        attrs: dict[int, int | str | bytes] = {SQL_COPT_SS_ACCESS_TOKEN: token_struct(token())}
        if driver_connect is None:
            import mssql_python

            conn = mssql_python.connect(connection_string(server), autocommit=True, attrs_before=attrs,
                                        timeout=login_timeout)
        else:
            conn = driver_connect(connection_string(server), autocommit=True, attrs_before=attrs,
                                  timeout=login_timeout)
        conn.timeout = statement_timeout
        return conn

    return connect
