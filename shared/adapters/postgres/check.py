"""`jitgate databases check` on a PostgreSQL server: whether jitgate can sign in and holds the rights it needs,
and the statements an admin runs to give the ones it lacks (the script `jitgate infra sql` prints does all of
them once)."""

from __future__ import annotations

from collections.abc import Callable

from ...domain.errors import JitgateError
from ..databases.check import Finding
from ..databases.servers import Server, Servers
from .provider import PostgresGrants
from .signin import SignIn, sign_in_for


def check_server(server: Server, roles: list[str] | None,
                 sign_in: Callable[[Server], SignIn] = sign_in_for) -> list[Finding]:
    """What jitgate can and cannot do on one server."""
    me = _quoted(server.user)
    provider = PostgresGrants(Servers((server,)), sign_in=sign_in)
    try:
        with provider.connect(server) as conn:
            version, createrole, superuser = conn.execute(
                "SELECT current_setting('server_version_num')::int, rolcreaterole, rolsuper"
                " FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
            findings = [Finding(True, f"signs in as {server.user} ({server.sign_in}); PostgreSQL {version // 10000}")]
            can_create = bool(createrole or superuser)
            findings.append(Finding(can_create, "has CREATEROLE (to create and drop the logins it grants to)",
                                    _createrole_fix(server, me)))
            signal = conn.execute("SELECT pg_has_role(current_user, 'pg_signal_backend', 'MEMBER')").fetchone()[0]
            findings.append(Finding(bool(signal or superuser), "may end sessions (pg_signal_backend)",
                                    f"GRANT pg_signal_backend TO {me};"))
            if roles is None:
                findings.append(Finding(False, "the policy allows any role here: name the roles, so that each can "
                                               "be checked and granted WITH ADMIN OPTION",
                                        "list the roles in the policy rule's match.roles"))
                return findings
            if not roles:
                findings.append(Finding(True, "no policy rule grants a role here"))
            for role in roles:
                row = conn.execute(
                    "SELECT rolsuper, pg_has_role(current_user, oid, 'MEMBER WITH ADMIN OPTION') FROM pg_roles"
                    " WHERE rolname = %s", (role,)
                ).fetchone()
                if row is None:
                    findings.append(Finding(False, f"role {role} exists", f"CREATE ROLE {_quoted(role)} NOLOGIN;"))
                elif row[0]:
                    findings.append(Finding(False, f"role {role} is not a superuser role (jitgate never grants one)",
                                            f"take {role} out of the policy"))
                else:
                    findings.append(Finding(bool(row[1] or superuser), f"has ADMIN OPTION on role {role}",
                                            f"GRANT {_quoted(role)} TO {me} WITH ADMIN OPTION;"))
            return findings
    except JitgateError as exc:
        return [Finding(False, f"cannot sign in: {exc}",
                        "check host, port, database and the sign-in in the servers file; "
                        f"`jitgate infra sql --server {server.name}` prints the script that creates jitgate's "
                        "login (infra/sql)")]


def _createrole_fix(server: Server, me: str) -> str:
    if server.platform == "azure":
        return (f"run the script `jitgate infra sql --server {server.name} --identity-object-id <id>` prints, as a "
                f"Microsoft Entra administrator of the server (or ALTER ROLE {me} CREATEROLE;)")
    if server.platform == "cloud-sql":
        return f"GRANT cloudsqlsuperuser TO {me}; (or ALTER ROLE {me} CREATEROLE;)"
    return f"ALTER ROLE {me} CREATEROLE;"


def _quoted(name: str) -> str:
    """An identifier as an admin types it into psql (the statements are shown, never run)."""
    return name if name.isidentifier() and name.islower() and name.isascii() else '"' + name.replace('"', '""') + '"'
