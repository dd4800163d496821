"""GrantProvider `postgres`: a grant is membership in a database role (`GRANT <role> TO <login>`).

What jitgate made is told from what it found by PostgreSQL's own records, read back after every change:
- a membership is jitgate's when `pg_auth_members.grantor` is jitgate's own login (it grants `GRANTED BY
  CURRENT_USER`); one granted by anyone else is access the person already had (preexisting, never touched).
  PostgreSQL 16 keeps one row per grantor, so jitgate revokes only its own (`REVOKE … GRANTED BY
  CURRENT_USER`) and another grantor's membership stays; up to 15 there is one row per membership, and a
  membership jitgate granted is revoked even if someone "granted" it again meanwhile (PostgreSQL only said
  NOTICE to them).
- a login is jitgate's when its comment carries jitgate's marker, written in the transaction that created
  it. Only such a login is dropped, and only once it is a member of nothing; one that owns objects is not
  dropped (jitgate never touches data) but made NOLOGIN, and a later grant lets it log in again.

A revoke ends the login's open sessions (`pg_terminate_backend`) after the REVOKE commits, so a session
that already `SET ROLE` to the granted role ends too, and waits until `pg_stat_activity` shows them gone.

Grant keys lower-case scope and role, and PostgreSQL names are case-sensitive, so a role is kept in the key
as `role_id` (letters other than a-z, 0-9 and `_` percent-encoded: `Payments` → `%50ayments`), and the
scope is matched to its server entry case-insensitively (the entry keeps the database's exact name).
Identifiers only ever reach SQL through `psycopg.sql.Identifier`, values through parameters or
`sql.Literal`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from ...domain.errors import AssignmentExists, PermanentError, TransientError
from ...domain.ledger import MARKER_PREFIX, Assignment, GrantKey, role_id, role_name
from ..databases.servers import PG_LOGIN_BYTES, Server, Servers
from .signin import SignIn, sign_in_for

log = logging.getLogger("jitgate.postgres")

LOGIN_MARKER = f"{MARKER_PREFIX} login created by jitgate; dropped when its last grant ends"
_UNKNOWN_LOGIN = "login:"  # the principal of a login the servers file does not name (found by reconcile)
_AZURE_TYPES = {"user": "user", "group": "group", "serviceprincipal": "service"}

# NB. SQLSTATEs that a retry may cure: connection failures (08), too many connections and other
# insufficient resources (53), operator intervention such as a shutting-down server (57P0x) or a statement
# or lock timeout (57014, 55P03), serialization failures and deadlocks (40).
_TRANSIENT_CLASSES = ("08", "53", "57", "40", "55P03", "58")


class PostgresGrants:
    """GrantProvider `postgres` over the servers of a servers file (see the module docstring)."""

    name: str = "postgres"

    def __init__(
        self,
        servers: Servers,
        sign_in: Callable[[Server], SignIn] = sign_in_for,
        connect_timeout: float = 5.0,
        statement_timeout_ms: int = 5000,
        session_end_wait: float = 5.0,
    ) -> None:
        self.servers = servers.for_provider(self.name)
        self._sign_in = sign_in
        self._sign_ins: dict[str, SignIn] = {}
        self.connect_timeout = connect_timeout
        self.statement_timeout_ms = statement_timeout_ms
        self.session_end_wait = session_end_wait

    # ------------------------------------------------------------ GrantProvider

    def resolve_role(self, scope: str, role: str) -> str:
        server = self.servers.for_scope(scope)
        with self.connect(server) as conn:
            rows = conn.execute(
                "SELECT rolname, rolsuper FROM pg_roles WHERE lower(rolname) = lower(%s)", (role,)
            ).fetchall()
        exact = [r for r in rows if r[0] == role]
        if not exact:
            raise PermanentError(f"unknown role '{role}' on PostgreSQL server '{server.name}' "
                                 f"(database {server.database}): ask for a role that exists there")
        if len(rows) > 1:
            others = ", ".join(repr(r[0]) for r in rows if r[0] != role)
            raise PermanentError(f"role '{role}' on server '{server.name}' differs only in case from {others}; "
                                 "jitgate refuses to grant either, as a policy matches role names in any case")
        if exact[0][1]:
            raise PermanentError(f"role '{role}' on server '{server.name}' is a superuser; jitgate grants no such role")
        return role_id(role)

    def find_assignment(self, key: GrantKey) -> Assignment | None:
        server = self._server_of(key)
        login = self._login_name(server, key.principal_id)
        if login is None:
            return None
        with self.connect(server) as conn:
            return self._membership(conn, server, login, role_name(key.role_definition_id))

    def get_assignment(self, scope: str, name: str) -> Assignment | None:
        server = self.servers.for_scope(scope)
        principal, role = self._parse_name(server, name)
        login = self._login_name(server, principal)
        if login is None:
            return None
        with self.connect(server) as conn:
            found = self._membership(conn, server, login, role)
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
        login = self._login(server, key.principal_id)
        ours = key.assignment_name()
        with self.connect(server) as conn:
            found = self._membership(conn, server, login, role)
            if found is not None and (found.name != ours or name != ours):
                raise AssignmentExists(found.name)
            if name != ours:
                raise PermanentError(f"'{name}' is not the name of this grant on server '{server.name}' "
                                     f"(it is '{ours}')")
            if found is not None:
                return found
            if not self._role_exists(conn, role):
                raise PermanentError(f"RoleDefinitionDoesNotExist: role '{role}' does not exist on server "
                                     f"'{server.name}' (database {server.database})")
            with conn.transaction():
                self._ensure_login(conn, server, login, key.principal_id, principal_type)
                conn.execute(self._sql("GRANT {} TO {} GRANTED BY CURRENT_USER", role, login))
            found = self._membership(conn, server, login, role)
        if found is None:
            raise TransientError(f"granted role '{role}' to '{login}' on server '{server.name}' but cannot read "
                                 "the membership back")
        if found.name != ours:
            # NB. Someone granted the same membership between our read and our GRANT; up to PostgreSQL 15 ours
            # then only raised a NOTICE. It is theirs: the hold is preexisting.
            raise AssignmentExists(found.name)
        log.info("granted role %r to login %r on server %s", role, login, server.name)
        return found

    def delete_assignment(self, scope: str, name: str) -> None:
        server = self.servers.for_scope(scope)
        principal, role = self._parse_name(server, name)
        login = self._login(server, principal)
        with self.connect(server) as conn:
            row = conn.execute("SELECT oid FROM pg_roles WHERE rolname = %s", (login,)).fetchone()
            if row is None:
                return
            # NB. Sessions are found by the login's oid: once a login is dropped, pg_stat_activity no longer shows
            # its name, but its sessions live on until they are ended. The login is dropped last, so that a
            # revoke that dies half way and runs again still finds the sessions it has to end.
            login_oid = row[0]
            if self._granted_by_me(conn, login, role):
                conn.execute(self._sql("REVOKE {} FROM {} GRANTED BY CURRENT_USER", role, login))
            ended = self._end_sessions(conn, login, login_oid)
            if self._granted_by_me(conn, login, role):
                raise TransientError(f"role '{role}' is still granted to '{login}' on server '{server.name}' "
                                     "after REVOKE")
            if self._drop_login_if_done(conn, server, login):
                ended += self._end_sessions(conn, login, login_oid)  # any opened since, with no role left
        if ended:
            log.info("ended %d session(s) of login %r on server %s", ended, login, server.name)

    def list_marked(self) -> list[Assignment]:
        marked: list[Assignment] = []
        for server in self.servers.servers:
            with self.connect(server) as conn:
                rows = conn.execute(
                    "SELECT r.rolname, u.rolname FROM pg_auth_members m"
                    " JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member"
                    " WHERE m.grantor = (SELECT oid FROM pg_roles WHERE rolname = current_user)"
                    " ORDER BY 2, 1"
                ).fetchall()
            marked.extend(self._assignment(server, login, role, current_user=None) for role, login in rows)
        return marked

    # ------------------------------------------------------------ the pieces

    def _server_of(self, key: GrantKey) -> Server:
        if key.provider != self.name:
            raise PermanentError(f"grant key of provider {key.provider!r} sent to provider {self.name!r}")
        return self.servers.for_scope(key.scope)

    def _login_name(self, server: Server, principal: str) -> str | None:
        """The login that stands for a principal here, if any (see the servers file's `logins`)."""
        if principal.startswith(_UNKNOWN_LOGIN):
            return role_name(principal[len(_UNKNOWN_LOGIN):])
        return server.login_for(principal)

    def _login(self, server: Server, principal: str) -> str:
        login = self._login_name(server, principal)
        if login is None:
            raise PermanentError(
                f"no login for principal {principal} on PostgreSQL server '{server.name}': name it under "
                f"`logins` in {self.servers.source} (the login this person signs in with)"
            )
        if len(login.encode()) > PG_LOGIN_BYTES:
            raise PermanentError(f"login '{login}' for principal {principal} is longer than PostgreSQL's "
                                 f"{PG_LOGIN_BYTES} bytes: name a shorter one under this server's `logins`")
        return login

    def _principal_of(self, server: Server, login: str) -> str:
        return server.principal_for(login) or f"{_UNKNOWN_LOGIN}{role_id(login)}"

    def _parse_name(self, server: Server, name: str) -> tuple[str, str]:
        principal, sep, encoded = name.rpartition("/")
        if not sep or not principal or not encoded:
            raise PermanentError(f"'{name}' is not a postgres grant name (<principal>/<role id>) on '{server.name}'")
        return principal, role_name(encoded)

    def _assignment(self, server: Server, login: str, role: str, current_user: str | None) -> Assignment:
        """jitgate's membership (current_user None: the caller knows it is) or another grantor's."""
        key = GrantKey.of(self.name, self._principal_of(server, login), role_id(role), server.scope)
        if current_user is None:
            name, description = key.assignment_name(), f"{MARKER_PREFIX} membership granted by jitgate"
        else:
            name, description = f"{key.assignment_name()}@{current_user}", f"granted by {current_user}"
        return Assignment(
            name=name,
            provider=self.name,
            principal_id=key.principal_id,
            role_definition_id=key.role_definition_id,
            scope=server.scope,
            description=description,
        )

    def _membership(self, conn: Any, server: Server, login: str, role: str) -> Assignment | None:
        """jitgate's membership of `login` in `role` if it granted one, else another grantor's, else None."""
        rows = conn.execute(
            "SELECT coalesce(g.rolname, ''), g.rolname = current_user FROM pg_auth_members m"
            " JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member"
            " LEFT JOIN pg_roles g ON g.oid = m.grantor"
            " WHERE r.rolname = %s AND u.rolname = %s ORDER BY 2 DESC NULLS LAST, 1",
            (role, login),
        ).fetchall()
        if not rows:
            return None
        grantor, mine = rows[0]
        return self._assignment(server, login, role, None if mine else (grantor or "a dropped role"))

    def _granted_by_me(self, conn: Any, login: str, role: str) -> bool:
        row = conn.execute(
            "SELECT 1 FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid"
            " JOIN pg_roles u ON u.oid = m.member JOIN pg_roles g ON g.oid = m.grantor"
            " WHERE r.rolname = %s AND u.rolname = %s AND g.rolname = current_user",
            (role, login),
        ).fetchone()
        return row is not None

    def _role_exists(self, conn: Any, role: str) -> bool:
        return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None

    def _login_state(self, conn: Any, login: str) -> tuple[bool, bool] | None:
        """(whether jitgate created the login, whether it may log in), or None when there is no such login."""
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_authid'), rolcanlogin FROM pg_roles WHERE rolname = %s", (login,)
        ).fetchone()
        return None if row is None else (row[0] == LOGIN_MARKER, bool(row[1]))

    def _ensure_login(self, conn: Any, server: Server, login: str, principal: str, principal_type: str) -> None:
        """Create the login (marked as jitgate's) when it does not exist; let a NOLOGIN one of jitgate's log in."""
        state = self._login_state(conn, login)
        if state is not None:
            ours, can_login = state
            if ours and not can_login:
                conn.execute(self._sql("ALTER ROLE {} LOGIN", login))
            return
        if server.platform == "cloud-sql":
            raise PermanentError(
                f"login '{login}' does not exist on Cloud SQL server '{server.name}': IAM database users are made "
                f"through the Cloud SQL Admin API (gcloud sql users create {login} --type=cloud_iam_user "
                "--instance=…); jitgate grants roles to them but cannot create them"
            )
        if server.platform == "azure":
            kind = _AZURE_TYPES.get(principal_type.lower())
            if kind is None:
                raise PermanentError(f"UnmatchedPrincipalType: principal type {principal_type!r} has no Entra "
                                     "login kind on Azure Database for PostgreSQL")
            conn.execute(
                "SELECT * FROM pgaadauth_create_principal_with_oid(%s, %s, %s, false, false)",
                (login, principal, kind),
            )
        else:
            conn.execute(self._sql("CREATE ROLE {} WITH LOGIN", login))
        from psycopg import sql

        conn.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(sql.Identifier(login), sql.Literal(LOGIN_MARKER)))
        log.info("created login %r on server %s", login, server.name)

    def _drop_login_if_done(self, conn: Any, server: Server, login: str) -> bool:
        """Drop a login jitgate created once it is a member of nothing (True when dropped); NOLOGIN if it owns
        objects."""
        ours, can_login = self._login_state(conn, login) or (False, False)
        if not ours:
            return False
        member_of = conn.execute(
            "SELECT count(*) FROM pg_auth_members m JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s",
            (login,),
        ).fetchone()[0]
        if member_of:
            return False
        import psycopg

        try:
            with conn.transaction():
                conn.execute(self._sql("DROP ROLE {}", login))
            log.info("dropped login %r on server %s", login, server.name)
            return True
        except psycopg.errors.DependentObjectsStillExist as exc:
            # NB. It owns objects or holds privileges made while it had access: jitgate never touches data, so
            # the login stays, unable to log in, for an admin to look at.
            log.warning("login %r on server %s is kept as NOLOGIN, not dropped: %s", login, server.name,
                        str(exc).splitlines()[0])
            if can_login:
                conn.execute(self._sql("ALTER ROLE {} NOLOGIN", login))
            return False

    def _end_sessions(self, conn: Any, login: str, login_oid: int) -> int:
        """Terminate every backend of the login and wait until pg_stat_activity shows none of them."""
        pids = [
            row[0]
            for row in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE usesysid = %s AND pid <> pg_backend_pid()", (login_oid,)
            ).fetchall()
        ]
        if not pids:
            return 0
        conn.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))
        deadline = time.monotonic() + self.session_end_wait
        delay = 0.01
        while True:
            left = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s::int[])", (pids,)
            ).fetchone()[0]
            if not left:
                return len(pids)
            if time.monotonic() > deadline:
                raise TransientError(f"{left} session(s) of login '{login}' still open after pg_terminate_backend")
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    @staticmethod
    def _sql(template: str, *identifiers: str) -> Any:
        from psycopg import sql

        return sql.SQL(template).format(*(sql.Identifier(name) for name in identifiers))

    @contextmanager
    def connect(self, server: Server) -> Iterator[Any]:
        """One connection per operation, autocommit (changes run in explicit transactions), errors translated."""
        import psycopg

        sign_in = self._sign_ins.get(server.name)
        if sign_in is None:
            sign_in = self._sign_ins[server.name] = self._sign_in(server)
        try:
            conn = psycopg.connect(
                host=server.host,
                port=server.port,
                dbname=server.database,
                user=server.user,
                password=sign_in.password(),
                sslmode=server.sslmode,
                connect_timeout=max(1, round(self.connect_timeout)),
                application_name="jitgate",
                options=f"-c statement_timeout={self.statement_timeout_ms} -c lock_timeout={self.statement_timeout_ms}",
                autocommit=True,
            )
        except psycopg.Error as exc:
            raise translate(exc, server, "connect") from exc
        try:
            with conn:
                yield conn
        except psycopg.Error as exc:
            raise translate(exc, server, "query") from exc


def translate(exc: Exception, server: Server, doing: str) -> TransientError | PermanentError:
    """A psycopg error as jitgate's: transient when a retry may cure it, permanent with what to do when not."""
    import psycopg

    sqlstate = getattr(exc, "sqlstate", None) or ""
    where = f"PostgreSQL server '{server.name}' ({server.host}:{server.port}, database {server.database})"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # NB. Without a SQLSTATE the server said nothing: a connection that failed or broke is worth retrying,
    # a value the driver itself refused (a NUL in a name) is not.
    unreached = not sqlstate and isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    if unreached or sqlstate.startswith(_TRANSIENT_CLASSES):
        return TransientError(f"{where}: cannot {doing} now: {first}")
    if sqlstate == "42501":
        hint = "run `jitgate databases check` for the rights jitgate needs and the statements that give them"
    elif sqlstate == "3D000":
        hint = "the database does not exist: fix `database` in the servers file"
    elif sqlstate.startswith("28"):
        hint = f"jitgate cannot sign in as '{server.user}': check its {server.sign_in} sign-in"
    elif sqlstate == "42704":
        hint = "a role or login it names does not exist"
    else:
        hint = f"SQLSTATE {sqlstate}"
    return PermanentError(f"{where}: {first} ({hint})")
