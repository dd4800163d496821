"""An Azure SQL Database behind the DB-API, for the `azure-sql` provider: SQL Server cannot run here.

It keeps state like a tiny database (principals, role memberships, extended properties, database permissions,
sessions, and the Microsoft Entra tenant CREATE USER ... FROM EXTERNAL PROVIDER looks principals up in) and
executes what jitgate sends:

- Every statement is parsed by sqlglot's T-SQL dialect with ErrorLevel.RAISE, one statement per execute, and its
  `?` counted against the parameters. A syntax error raises FakeSqlSyntaxError, which no adapter catches: the test
  fails. sqlglot does not know CREATE USER, ALTER ROLE, DROP USER, GRANT and REVOKE: it returns them as a Command
  that would accept anything, so their grammar (Microsoft's syntax pages, as far as jitgate uses them) is checked
  here on sqlglot's own T-SQL tokens; identifiers must be bracketed there, as quote_name writes them.
- A SELECT is evaluated on its AST (joins, filters, casts, the few functions jitgate calls) against catalog views
  computed from the state: sys.database_principals, sys.database_role_members, sys.extended_properties,
  sys.database_permissions, sys.dm_exec_sessions (all sessions only with VIEW DATABASE STATE). Names compare
  case-insensitively, as under Azure SQL's default collation; a SID is bytes, a uniqueidentifier a uuid.UUID
  (mssql-python's default), converted as SQL Server does (the GUID's mixed-endian bytes).
- Errors are mssql-python's own exception classes, chosen by the driver's own SQLSTATE table
  (`mssql_python.exceptions.sqlstate_to_exception`), with SQL Server's message in the driver's format. The
  SQLSTATE each error number arrives with is assumed (42000 for statement errors, 28000 for a refused login),
  not observed.
"""

from __future__ import annotations

import copy
import logging
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlglot
from mssql_python.exceptions import sqlstate_to_exception
from sqlglot import exp
from sqlglot.dialects.tsql import TSQL
from sqlglot.errors import ErrorLevel, ParseError, TokenError
from sqlglot.tokens import Token, TokenType

from shared.adapters.databases.servers import Server

logging.getLogger("sqlglot").setLevel(logging.ERROR)  # "falling back to parsing as a Command" is expected here

JITGATE_OID = "0f0f0f0f-0000-4000-8000-00000000f00d"
ADMIN_OID = "0a0a0a0a-0000-4000-8000-0000000000ad"
JITGATE_USER = "jitgate-identity"
OWN_SESSION = 51

# SQL Server's messages (sys.messages, Microsoft's error pages) and the SQLSTATE assumed for each.
MESSAGES: dict[int, tuple[str, str]] = {
    1205: ("40001", "Transaction (Process ID {0}) was deadlocked on lock resources with another process and has "
                    "been chosen as the deadlock victim. Rerun the transaction."),
    4060: ("42000", 'Cannot open database "{0}" requested by the login. The login failed.'),
    6102: ("42000", "User does not have permission to use the KILL statement."),
    6104: ("42000", "Cannot use KILL to kill your own process."),
    6106: ("42000", "Process ID {0} is not an active process ID."),
    15023: ("42000", "User, group, or role '{0}' already exists in the current database."),
    15063: ("42000", "The login already has an account under a different user name."),
    15135: ("42000", "Object is invalid. Extended properties are not permitted on '{0}', or the object does not "
                     "exist."),
    15138: ("42000", "The database principal owns a schema in the database, and cannot be dropped."),
    15151: ("42000", "Cannot {0} the {1} '{2}', because it does not exist or you do not have permission."),
    15217: ("42000", "Property cannot be updated or deleted. Property '{0}' does not exist for '{1}'."),
    15233: ("42000", "Property cannot be added. Property '{0}' already exists for '{1}'."),
    15247: ("42000", "User does not have permission to perform this action."),
    18456: ("28000", "Login failed for user '<token-identified principal>'."),
    37545: ("42000", "'{0}' is not a valid object id for '{1}' or you do not have permission."),
    40501: ("42000", "The service is currently busy. Retry the request after 10 seconds. Incident ID: {0}. "
                     "Code: 4194307."),
    40613: ("42000", "Database '{0}' on server '{1}' is not currently available. Please retry the connection "
                     "later. If the problem persists, contact customer support, and provide them with the session "
                     "tracing ID of '{2}'."),
}
FIXED_ROLES = {"db_owner": 16384, "db_accessadmin": 16385, "db_securityadmin": 16386, "db_ddladmin": 16387,
               "db_backupoperator": 16389, "db_datareader": 16390, "db_datawriter": 16391,
               "db_denydatareader": 16392, "db_denydatawriter": 16393}
DATABASE_PERMISSIONS = {"CONNECT": "CO", "ALTER ANY USER": "ALUS", "KILL DATABASE CONNECTION": "KIDC",
                        "VIEW DATABASE STATE": "VWDS", "ALTER ANY ROLE": "ALRL"}


class FakeSqlSyntaxError(AssertionError):
    """A statement SQL Server would refuse to parse (or one this fake was never taught): the test fails."""


def sql_error(number: int, *args: Any) -> Exception:
    """The exception mssql-python raises for SQL Server error `number`."""
    sqlstate, template = MESSAGES[number]
    made = sqlstate_to_exception(sqlstate, f"[Microsoft][ODBC Driver 18 for SQL Server][SQL Server]"
                                           f"{template.format(*args)}")
    assert made is not None
    return made


def sid_of(object_id: str) -> bytes:
    """A Microsoft Entra principal's SID: its object id's bytes, as CAST(<guid> AS VARBINARY(16)) gives them."""
    return uuid.UUID(object_id).bytes_le


class Tenant:
    """The Microsoft Entra tenant CREATE USER ... FROM EXTERNAL PROVIDER looks object ids up in. `everyone`: any
    object id not named otherwise is a user (tests make up principals freely), except those in `missing`."""

    def __init__(self, everyone: bool = False) -> None:
        self.objects: dict[str, tuple[str, str]] = {}  # object id -> (type E or X, UPN or display name)
        self.everyone = everyone
        self.missing: set[str] = set()

    def add(self, object_id: str, name: str, kind: str = "E") -> None:
        self.objects[object_id.lower()] = (kind, name)

    def lookup(self, object_id: str) -> tuple[str, str] | None:
        key = object_id.lower()
        if key in self.objects:
            return self.objects[key]
        if self.everyone and key not in self.missing:
            try:
                uuid.UUID(key)
            except ValueError:
                return None
            return ("E", f"user-{key[:8]}@example.com")
        return None

    def named(self, name: str) -> str | None:
        return next((oid for oid, (_, known) in self.objects.items() if known.casefold() == name.casefold()), None)


@dataclass
class Principal:
    principal_id: int
    name: str
    type: str  # R role, E Entra user, X Entra group, S SQL user
    sid: bytes | None = None
    is_fixed_role: bool = False
    owns_schema: bool = False  # DROP USER refuses it (15138)


@dataclass
class Session:
    session_id: int
    login_name: str
    sid: bytes


@dataclass
class State:
    principals: dict[int, Principal] = field(default_factory=dict)
    members: set[tuple[int, int]] = field(default_factory=set)  # (role, member)
    properties: dict[tuple[int, str], str] = field(default_factory=dict)  # (principal, name) -> value
    permissions: set[tuple[int, str, int]] = field(default_factory=set)  # (grantee, permission, role or 0)
    sessions: dict[int, Session] = field(default_factory=dict)
    next_id: int = 5
    next_session: int = 60


class FakeSqlDatabase:
    """One Azure SQL Database (see the module docstring). `connect` is the provider's connector."""

    def __init__(self, name: str = "payments", server: str = "sql-main", tenant: Tenant | None = None,
                 bare: bool = False) -> None:
        """`bare`: a database nobody has set up for jitgate yet (no user for its identity, so it cannot sign in)."""
        self.name = name
        self.server = server
        self.state = State()
        self.tenant = tenant or Tenant()
        self.statements: list[tuple[str, tuple[Any, ...]]] = []
        self.faults: list[tuple[str, Exception, list[int]]] = []
        self.unkillable: set[int] = set()
        self.refuse_login = False
        for role_name, role_id in FIXED_ROLES.items():
            self.state.principals[role_id] = Principal(role_id, role_name, "R", is_fixed_role=True)
        self.state.principals[0] = Principal(0, "public", "R")
        self.state.principals[1] = Principal(1, "dbo", "S", sid=b"\x01")
        self.tenant.add(JITGATE_OID, JITGATE_USER)
        if not bare:
            self.add_user(JITGATE_OID, JITGATE_USER)
        self.admin = self.state.principals[1]
        self.state.sessions[OWN_SESSION] = Session(OWN_SESSION, JITGATE_USER, sid_of(JITGATE_OID))

    # ------------------------------------------------------------ what an admin does

    def add_role(self, name: str) -> Principal:
        return self._add(Principal(0, name, "R"))

    def add_user(self, object_id: str, name: str, kind: str = "E") -> Principal:
        """A user an admin made (as the tenant knows it: a user, or a group with kind X)."""
        if self.tenant.lookup(object_id) is None:
            self.tenant.add(object_id, name, kind)
        return self._add(Principal(0, name, kind, sid=sid_of(object_id)))

    def drop_role(self, name: str) -> None:
        role = self.principal(name).principal_id
        del self.state.principals[role]
        self.state.members = {(r, m) for r, m in self.state.members if r != role}

    def drop_member(self, role: str, member: str) -> None:
        self.state.members.discard((self.principal(role).principal_id, self.principal(member).principal_id))

    def add_member(self, role: str, member: str) -> None:
        self.state.members.add((self.principal(role).principal_id, self.principal(member).principal_id))

    def grant(self, permission: str, to: str = JITGATE_USER, role: str | None = None) -> None:
        self.state.permissions.add((self.principal(to).principal_id, permission,
                                    self.principal(role).principal_id if role else 0))

    def prepare(self, roles: tuple[str, ...] = ("payments_read", "payments_write")) -> None:
        """As infra/sql/azure-sql-setup.sql and the check's fixes leave a database, with two application roles."""
        for permission in ("ALTER ANY USER", "KILL DATABASE CONNECTION", "VIEW DATABASE STATE"):
            self.grant(permission)
        for role in roles:
            self.add_role(role)
            self.grant("ALTER", role=role)

    def open_session(self, object_id: str) -> int:
        """Someone signs in as the user with this object id (as its name, when there is one)."""
        sid = sid_of(object_id)
        user = next((p for p in self.state.principals.values() if p.sid == sid), None)
        session = self.state.next_session = self.state.next_session + 1
        self.state.sessions[session] = Session(session, user.name if user else object_id, sid)
        return session

    def fail(self, kind: str, number: int, *args: Any, times: int = 1) -> None:
        """The next `times` statements of this kind (`connect`, `SELECT`, `CREATE USER`, `ALTER ROLE`, `KILL`,
        `EXEC`, `DROP USER`...) fail with SQL Server error `number`."""
        self.faults.append((kind, sql_error(number, *args), [times]))

    # ------------------------------------------------------------ what tests read

    def principal(self, name: str) -> Principal:
        found = self.find(name)
        assert found is not None, f"no principal {name!r}"
        return found

    def find(self, name: str) -> Principal | None:
        return next((p for p in self.state.principals.values() if p.name.casefold() == name.casefold()), None)

    def user_of(self, object_id: str) -> Principal | None:
        return next((p for p in self.state.principals.values() if p.sid == sid_of(object_id)), None)

    def roles_of(self, name: str) -> list[str]:
        member = self.principal(name).principal_id
        return sorted(self.state.principals[r].name for r, m in self.state.members if m == member)

    def properties_of(self, name: str) -> dict[str, str]:
        user = self.principal(name).principal_id
        return {key: value for (major, key), value in self.state.properties.items() if major == user}

    def may_connect(self, name: str) -> bool:
        return (self.principal(name).principal_id, "CONNECT", 0) in self.state.permissions

    # ------------------------------------------------------------ the DB-API side

    def connect(self, server: Server | None = None, as_admin: bool = False) -> FakeSqlConnection:
        self._fault("connect")
        me = self.admin if as_admin else self.user_of(JITGATE_OID)
        if self.refuse_login or me is None:
            raise sql_error(18456)
        return FakeSqlConnection(self, me)

    def _fault(self, kind: str) -> None:
        for i, (when, error, left) in enumerate(self.faults):
            if when == kind:
                left[0] -= 1
                if left[0] == 0:
                    del self.faults[i]
                raise error

    def _add(self, principal: Principal) -> Principal:
        assert self.find(principal.name) is None, f"{principal.name!r} exists"
        principal.principal_id = self.state.next_id
        self.state.next_id += 1
        self.state.principals[principal.principal_id] = principal
        if principal.type in ("E", "X"):
            self.state.permissions.add((principal.principal_id, "CONNECT", 0))
        return principal


class FakeSqlConnection:
    """A DB-API connection to the fake, signed in as `me`. Changes made with autocommit off are undone by
    rollback; turning autocommit back on commits, as ODBC does."""

    def __init__(self, db: FakeSqlDatabase, me: Principal) -> None:
        self.db = db
        self.me = me
        self.timeout = 0
        self.closed = False
        self._autocommit = True
        self._snapshot: State | None = None

    @property
    def autocommit(self) -> bool:
        return self._autocommit

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        if value:
            self._snapshot = None
        self._autocommit = value

    def cursor(self) -> FakeSqlCursor:
        assert not self.closed, "cursor on a closed connection"
        return FakeSqlCursor(self)

    def commit(self) -> None:
        self._snapshot = None

    def rollback(self) -> None:
        if self._snapshot is not None:
            self.db.state = self._snapshot
            self._snapshot = None

    def close(self) -> None:
        self.closed = True

    def may(self, permission: str, role: Principal | None = None) -> bool:
        """Whether the signed-in principal holds a database permission, or may change a role's members."""
        me = self.me
        if me is self.db.admin:
            return True
        granted = self.db.state.permissions
        if role is not None and role.is_fixed_role:
            return self.member_of("db_owner")
        if role is not None:
            return ((me.principal_id, "ALTER", role.principal_id) in granted
                    or (me.principal_id, "ALTER ANY ROLE", 0) in granted or self.member_of("db_securityadmin"))
        return (me.principal_id, permission, 0) in granted or self.member_of("db_owner")

    def member_of(self, role: str) -> bool:
        found = self.db.find(role)
        return found is not None and (found.principal_id, self.me.principal_id) in self.db.state.members

    def changing(self) -> None:
        if not self._autocommit and self._snapshot is None:
            self._snapshot = copy.deepcopy(self.db.state)


class FakeSqlCursor:
    """Executes one statement per call (see the module docstring)."""

    def __init__(self, conn: FakeSqlConnection) -> None:
        self.conn = conn
        self.db = conn.db
        self._rows: list[tuple[Any, ...]] = []

    def close(self) -> None:
        pass

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows, self._rows = self._rows, []
        return rows

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> FakeSqlCursor:
        params = tuple(params)
        self.db.statements.append((sql, params))
        try:
            parsed = sqlglot.parse(sql, read="tsql", error_level=ErrorLevel.RAISE)
        except (ParseError, TokenError) as exc:
            raise FakeSqlSyntaxError(f"T-SQL syntax error in {sql!r}: {exc}") from None
        if len(parsed) != 1 or parsed[0] is None:
            raise FakeSqlSyntaxError(f"one statement per execute, not {len(parsed)}: {sql!r}")
        statement = parsed[0]
        holders = [node for node in statement.walk(bfs=False) if isinstance(node, exp.Placeholder)]
        if len(holders) != len(params):
            raise FakeSqlSyntaxError(f"{len(holders)} parameter markers, {len(params)} parameters: {sql!r}")
        bound = {id(node): value for node, value in zip(holders, params, strict=True)}
        kind = _kind(statement)
        self.db._fault(kind)
        if isinstance(statement, exp.Select):
            self._rows = Evaluator(self.conn, bound).select(statement)
        elif isinstance(statement, exp.Command):
            self._command(statement)
        elif isinstance(statement, exp.Kill):
            self._kill(statement)
        elif isinstance(statement, exp.Execute):
            self._procedure(statement, bound)
        else:
            raise FakeSqlSyntaxError(f"the fake was never taught {kind}: {sql!r}")
        return self

    # ------------------------------------------------------------ DDL and permissions (Commands)

    def _command(self, statement: exp.Command) -> None:
        text = str(statement.args.get("expression") or "")
        if "?" in text:
            raise FakeSqlSyntaxError(f"T-SQL takes no parameter in {statement.this} {text!r}")
        tokens = Tokens(TSQL().tokenize(text), f"{statement.this} {text}")
        verb = str(statement.this).upper()
        self.conn.changing()
        if verb == "CREATE" and tokens.peek() == "ROLE":
            tokens.word("ROLE")
            name = tokens.identifier()
            tokens.end()
            if not self.conn.may("ALTER ANY ROLE"):
                raise sql_error(15247)
            if self.db.find(name) is not None:
                raise sql_error(15023, name)
            self.db._add(Principal(0, name, "R"))
        elif verb == "CREATE":
            tokens.word("USER")
            name = tokens.identifier()
            tokens.word("FROM"), tokens.word("EXTERNAL"), tokens.word("PROVIDER")
            object_id = None
            if tokens.more():
                tokens.word("WITH"), tokens.word("OBJECT_ID"), tokens.symbol("=")
                object_id = tokens.string()
            tokens.end()
            self._create_user(name, object_id)
        elif verb == "ALTER":
            tokens.word("ROLE")
            role = tokens.identifier()
            action = tokens.word("ADD", "DROP")
            tokens.word("MEMBER")
            member = tokens.identifier()
            tokens.end()
            self._alter_role(role, action, member)
        elif verb == "DROP":
            tokens.word("USER")
            name = tokens.identifier()
            tokens.end()
            self._drop_user(name)
        elif verb in ("GRANT", "REVOKE"):
            words = []
            while tokens.peek() not in ("ON", "TO", "FROM"):
                words.append(tokens.word())
            permission = " ".join(words)
            role = None
            if tokens.peek() == "ON":
                tokens.word("ON"), tokens.word("ROLE"), tokens.symbol("::")
                role = tokens.identifier()
            tokens.word("TO" if verb == "GRANT" else "FROM")
            grantee = tokens.identifier()
            tokens.end()
            self._permission(verb, permission, role, grantee)
        else:
            raise FakeSqlSyntaxError(f"the fake was never taught {verb} {text!r}")

    def _create_user(self, name: str, object_id: str | None) -> None:
        if not self.conn.may("ALTER ANY USER"):
            raise sql_error(15247)
        if self.db.find(name) is not None:
            raise sql_error(15023, name)
        found = self.db.tenant.named(name) if object_id is None else object_id.lower()
        known = self.db.tenant.lookup(found) if found else None
        if found is None or known is None:
            raise sql_error(37545, object_id or "", name)
        if self.db.user_of(found) is not None:
            raise sql_error(15063)
        self.db._add(Principal(0, name, known[0], sid=sid_of(found)))

    def _alter_role(self, role_name: str, action: str, member_name: str) -> None:
        role = self.db.find(role_name)
        if role is None or role.type != "R" or not self.conn.may("ALTER", role):
            raise sql_error(15151, "alter", "role", role_name)
        member = self.db.find(member_name)
        if member is None:
            raise sql_error(15151, action.lower(), "principal", member_name)
        pair = (role.principal_id, member.principal_id)
        if action == "ADD":
            self.db.state.members.add(pair)
        else:
            self.db.state.members.discard(pair)

    def _drop_user(self, name: str) -> None:
        user = self.db.find(name)
        if user is None or user.type == "R" or not self.conn.may("ALTER ANY USER"):
            raise sql_error(15151, "drop", "user", name)
        if user.owns_schema:
            raise sql_error(15138)
        state = self.db.state
        del state.principals[user.principal_id]
        state.members = {(r, m) for r, m in state.members if m != user.principal_id}
        state.properties = {k: v for k, v in state.properties.items() if k[0] != user.principal_id}
        state.permissions = {p for p in state.permissions if p[0] != user.principal_id}

    def _permission(self, verb: str, permission: str, role_name: str | None, grantee_name: str) -> None:
        grantee = self.db.find(grantee_name)
        role = self.db.find(role_name) if role_name else None
        known = permission in DATABASE_PERMISSIONS if role_name is None else permission == "ALTER"
        if not known:
            raise FakeSqlSyntaxError(f"the fake was never taught {verb} {permission}")
        if grantee is None or (role_name and (role is None or role.type != "R")):
            raise sql_error(15151, "find", "user" if grantee is None else "role", role_name or grantee_name)
        conn = self.conn
        if not (conn.me is self.db.admin or conn.member_of("db_securityadmin") or conn.member_of("db_owner")):
            raise sql_error(15247)
        entry = (grantee.principal_id, permission, role.principal_id if role else 0)
        if verb == "GRANT":
            self.db.state.permissions.add(entry)
        else:
            self.db.state.permissions.discard(entry)

    def _kill(self, statement: exp.Kill) -> None:
        target = statement.this
        if not isinstance(target, exp.Literal) or target.is_string:
            raise FakeSqlSyntaxError(f"KILL takes a session id, not {target}")
        session = int(target.this)
        if not self.conn.may("KILL DATABASE CONNECTION"):
            raise sql_error(6102)
        if session == OWN_SESSION:
            raise sql_error(6104)
        if session not in self.db.state.sessions:
            raise sql_error(6106, session)
        if session not in self.db.unkillable:
            del self.db.state.sessions[session]

    # ------------------------------------------------------------ extended properties (EXEC)

    def _procedure(self, statement: exp.Execute, bound: dict[int, Any]) -> None:
        procedure = statement.this.sql(dialect="tsql").lower()
        named: dict[str, Any] = {}
        evaluator = Evaluator(self.conn, bound)
        for argument in statement.expressions:
            if not (isinstance(argument, exp.EQ) and isinstance(argument.this, exp.Parameter)):
                raise FakeSqlSyntaxError(f"{procedure} takes named arguments: {argument}")
            named[argument.this.name.lower()] = evaluator.value(argument.expression, {})
        verb = {"sys.sp_addextendedproperty": "add", "sys.sp_updateextendedproperty": "update",
                "sys.sp_dropextendedproperty": "drop"}.get(procedure)
        expected = {"name", "level0type", "level0name"} | ({"value"} if verb in ("add", "update") else set())
        if verb is None or set(named) != expected or str(named["level0type"]).upper() != "USER":
            raise FakeSqlSyntaxError(f"the fake was never taught EXEC {procedure} with {sorted(named)}")
        self.conn.changing()
        owner = self.db.find(str(named["level0name"]))
        if owner is None or owner.type == "R":
            raise sql_error(15135, named["level0name"])
        if not self.conn.may("ALTER ANY USER"):
            raise sql_error(15247)
        key = (owner.principal_id, str(named["name"]))
        exists = key in self.db.state.properties
        if verb == "add" and exists:
            raise sql_error(15233, key[1], owner.name)
        if verb != "add" and not exists:
            raise sql_error(15217, key[1], owner.name)
        if verb == "drop":
            del self.db.state.properties[key]
        else:
            self.db.state.properties[key] = str(named["value"])


class Tokens:
    """sqlglot's T-SQL tokens of a statement's text, read against a grammar."""

    def __init__(self, tokens: list[Token], text: str) -> None:
        self.tokens = tokens
        self.text = text
        self.at = 0

    def _next(self) -> Token:
        if self.at >= len(self.tokens):
            raise FakeSqlSyntaxError(f"incomplete statement: {self.text!r}")
        token = self.tokens[self.at]
        self.at += 1
        return token

    def peek(self) -> str:
        return self.tokens[self.at].text.upper() if self.at < len(self.tokens) else ""

    def more(self) -> bool:
        return self.at < len(self.tokens)

    def word(self, *allowed: str) -> str:
        token = self._next()
        if token.token_type in (TokenType.IDENTIFIER, TokenType.STRING) or not re.fullmatch(r"[A-Za-z_]+", token.text):
            raise FakeSqlSyntaxError(f"expected a keyword, found {token.text!r} in {self.text!r}")
        word = token.text.upper()
        if allowed and word not in allowed:
            raise FakeSqlSyntaxError(f"expected {' or '.join(allowed)}, found {token.text!r} in {self.text!r}")
        return word

    def identifier(self) -> str:
        token = self._next()
        if token.token_type is not TokenType.IDENTIFIER:
            raise FakeSqlSyntaxError(f"expected a [bracketed] identifier, found {token.text!r} in {self.text!r}")
        return token.text

    def string(self) -> str:
        token = self._next()
        if token.token_type is not TokenType.STRING:
            raise FakeSqlSyntaxError(f"expected a string literal, found {token.text!r} in {self.text!r}")
        return token.text

    def symbol(self, text: str) -> None:
        token = self._next()
        if token.text != text:
            raise FakeSqlSyntaxError(f"expected {text!r}, found {token.text!r} in {self.text!r}")

    def end(self) -> None:
        if self.more():
            raise FakeSqlSyntaxError(f"unexpected {self.tokens[self.at].text!r} in {self.text!r}")


def _kind(statement: exp.Expression) -> str:
    if isinstance(statement, exp.Command):
        text = str(statement.args.get("expression") or "").split()
        return f"{statement.this} {text[0] if text else ''}".upper().strip()
    return {exp.Select: "SELECT", exp.Kill: "KILL", exp.Execute: "EXEC"}.get(type(statement), type(statement).__name__)


# ---------------------------------------------------------------- SELECT


Row = dict[tuple[str, str], Any]


class Evaluator:
    """Evaluates a SELECT's AST over the catalog views (see the module docstring)."""

    def __init__(self, conn: FakeSqlConnection, bound: dict[int, Any]) -> None:
        self.conn = conn
        self.db = conn.db
        self.bound = bound

    def select(self, select: exp.Select) -> list[tuple[Any, ...]]:
        source = select.args.get("from_") or select.args.get("from")
        rows: list[Row] = [{}]
        if source is not None:
            rows = list(self._table(source.this))
        for join in select.args.get("joins") or []:
            if join.side or join.kind not in ("", None, "INNER"):
                raise FakeSqlSyntaxError(f"the fake joins INNER only: {join}")
            right = list(self._table(join.this))
            rows = [{**left, **other} for left in rows for other in right
                    if _true(self.value(join.args["on"], {**left, **other}))]
        where = select.args.get("where")
        if where is not None:
            rows = [row for row in rows if _true(self.value(where.this, row))]
        result = [tuple(self.value(column, row) for column in select.expressions) for row in rows]
        order = select.args.get("order")
        if order is not None:
            for ordered in reversed(order.expressions):
                position = int(ordered.this.this) - 1 if isinstance(ordered.this, exp.Literal) else None
                if position is None:
                    raise FakeSqlSyntaxError("the fake orders by column position only")
                result.sort(key=lambda r, p=position: (r[p] is None, _sortable(r[p])),
                            reverse=bool(ordered.args.get("desc")))
        return result

    def _table(self, table: exp.Expression) -> Iterator[Row]:
        if not isinstance(table, exp.Table) or table.db.lower() != "sys":
            raise FakeSqlSyntaxError(f"the fake has sys catalog views only, not {table}")
        alias = (table.alias or table.name).lower()
        for row in self._view(table.name.lower()):
            yield {(alias, column): value for column, value in row.items()}

    def _view(self, name: str) -> list[dict[str, Any]]:
        state = self.db.state
        if name == "database_principals":
            return [{"name": p.name, "principal_id": p.principal_id, "type": p.type, "sid": p.sid,
                     "is_fixed_role": p.is_fixed_role} for p in state.principals.values()]
        if name == "database_role_members":
            return [{"role_principal_id": r, "member_principal_id": m} for r, m in state.members]
        if name == "extended_properties":
            return [{"class": 4, "class_desc": "DATABASE_PRINCIPAL", "major_id": major, "minor_id": 0, "name": key,
                     "value": value} for (major, key), value in state.properties.items()]
        if name == "database_permissions":
            return [{"class": 0 if role == 0 else 4, "major_id": role, "grantee_principal_id": grantee,
                     "type": DATABASE_PERMISSIONS.get(permission, "AL"), "permission_name": permission,
                     "state": "G"} for grantee, permission, role in state.permissions]
        if name == "dm_exec_sessions":
            mine = self.conn.me
            sees_all = mine is self.db.admin or (mine.principal_id, "VIEW DATABASE STATE", 0) in state.permissions
            return [{"session_id": s.session_id, "login_name": s.login_name, "original_login_name": s.login_name,
                     "security_id": s.sid, "original_security_id": s.sid, "is_user_process": 1, "database_id": 5}
                    for s in state.sessions.values() if sees_all or s.session_id == OWN_SESSION]
        raise FakeSqlSyntaxError(f"the fake has no sys.{name}")

    def value(self, node: exp.Expression, row: Row) -> Any:
        if isinstance(node, exp.Placeholder):
            return self.bound[id(node)]
        if isinstance(node, exp.Alias):
            return self.value(node.this, row)
        if isinstance(node, exp.Paren):
            return self.value(node.this, row)
        if isinstance(node, exp.Column):
            return self._column(node, row)
        if isinstance(node, exp.Literal):
            return node.this if node.is_string else int(node.this)
        if isinstance(node, exp.National):
            return node.this
        if isinstance(node, exp.Null):
            return None
        if isinstance(node, exp.Parameter) and isinstance(node.this, exp.Parameter) and node.this.name == "SPID":
            return OWN_SESSION  # @@SPID
        if isinstance(node, exp.And):
            return _true(self.value(node.this, row)) and _true(self.value(node.expression, row))
        if isinstance(node, exp.Or):
            return _true(self.value(node.this, row)) or _true(self.value(node.expression, row))
        if isinstance(node, exp.Not):
            return not _true(self.value(node.this, row))
        if isinstance(node, exp.EQ | exp.NEQ):
            left, right = self.value(node.this, row), self.value(node.expression, row)
            if left is None or right is None:
                return None
            same = _comparable(left) == _comparable(right)
            return same if isinstance(node, exp.EQ) else not same
        if isinstance(node, exp.Is):
            return self.value(node.this, row) is None
        if isinstance(node, exp.In):
            left = self.value(node.this, row)
            return any(_comparable(left) == _comparable(self.value(e, row)) for e in node.expressions)
        if isinstance(node, exp.Like):
            text, pattern = self.value(node.this, row), self.value(node.expression, row)
            if "[" in pattern:
                raise FakeSqlSyntaxError("the fake's LIKE knows % and _ only")
            regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
            return re.fullmatch(regex, text, re.IGNORECASE | re.DOTALL) is not None
        if isinstance(node, exp.Add):
            left, right = self.value(node.this, row), self.value(node.expression, row)
            return None if left is None or right is None else left + right
        if isinstance(node, exp.Cast):
            return _cast(self.value(node.this, row), node.to)
        if isinstance(node, exp.Anonymous):
            return self._function(node.name.upper(), [self.value(a, row) for a in node.expressions])
        raise FakeSqlSyntaxError(f"the fake cannot evaluate {type(node).__name__}: {node.sql(dialect='tsql')}")

    def _column(self, column: exp.Column, row: Row) -> Any:
        name, table = column.name.lower(), column.table.lower()
        found = [key for key in row if key[1] == name and (not table or key[0] == table)]
        if len(found) != 1:
            raise FakeSqlSyntaxError(f"column {column.sql()} is {'ambiguous' if found else 'unknown'}")
        return row[found[0]]

    def _function(self, name: str, args: list[Any]) -> Any:
        me = self.conn.me
        if name == "USER_NAME" and not args:
            return me.name
        if name == "DB_NAME" and not args:
            return self.db.name
        if name == "IS_ROLEMEMBER" and len(args) == 1:
            role = self.db.find(args[0])
            return None if role is None else int((role.principal_id, me.principal_id) in self.db.state.members
                                                 or me is self.db.admin)
        if name == "HAS_PERMS_BY_NAME" and len(args) == 3:
            securable, kind, permission = args
            if str(kind).upper() == "DATABASE":
                return int(self.conn.may(str(permission).upper()))
            if str(kind).upper() == "ROLE" and str(permission).upper() == "ALTER":
                role = self.db.find(securable)
                return None if role is None else int(self.conn.may("ALTER", role))
        raise FakeSqlSyntaxError(f"the fake was never taught {name}({', '.join(map(repr, args))})")


def _cast(value: Any, to: exp.DataType) -> Any:
    if value is None:
        return None
    kind = to.this
    if kind == exp.DataType.Type.UUID:
        if isinstance(value, bytes):
            return uuid.UUID(bytes_le=value[:16])
        return uuid.UUID(str(value))
    if kind == exp.DataType.Type.VARBINARY:
        return value.bytes_le if isinstance(value, uuid.UUID) else bytes(value)
    if kind in (exp.DataType.Type.NVARCHAR, exp.DataType.Type.VARCHAR):
        return str(value)
    if kind == exp.DataType.Type.INT:
        return int(value)
    raise FakeSqlSyntaxError(f"the fake cannot cast to {to.sql(dialect='tsql')}")


def _comparable(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


def _sortable(value: Any) -> Any:
    return str(value).casefold() if isinstance(value, str | uuid.UUID) else value


def _true(value: Any) -> bool:
    return bool(value) and value is not None
