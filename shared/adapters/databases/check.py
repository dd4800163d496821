"""`jitgate databases check`: per server, whether jitgate can sign in and holds the rights it needs, and the
statements an admin runs to give the ones it lacks. The checks themselves are each provider's
(`postgres.check`, `azure.sql_check`); the roles to check come from the policy; the report is one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...domain.decision import Outcome
from ...domain.policy import Policy
from .servers import Server, Servers

if TYPE_CHECKING:
    from ..azure.sql import Connector
    from ..postgres.signin import SignIn


@dataclass(frozen=True)
class Finding:
    """One check on one server: passed or not, and how to fix it when not."""

    ok: bool
    what: str
    fix: str = ""


def policy_roles(policy: Policy, server: Server) -> list[str] | None:
    """The roles some non-deny rule of the server's provider can grant at its scope (sorted); None when a rule
    allows any role there."""
    roles: set[str] = set()
    path = server.scope.lower() + "/"
    for rule in policy.rules:
        if rule.outcome is Outcome.DENY or (rule.providers is not None and server.provider not in rule.providers):
            continue
        if not rule.scope_regex.fullmatch(path):
            continue
        if rule.roles is None:
            return None
        roles.update(rule.roles)
    return sorted(roles)


def check_all(servers: Servers, policy: Policy, sign_in: Callable[[Server], SignIn] | None = None,
              connect: Connector | None = None) -> dict[str, list[Finding]]:
    """Every server's findings, by server name. `sign_in` (PostgreSQL) and `connect` (Azure SQL) default to the
    real sign-ins."""
    from ..azure import sql_check
    from ..postgres import check as postgres_check
    from ..postgres.signin import sign_in_for

    results: dict[str, list[Finding]] = {}
    for server in servers.servers:
        roles = policy_roles(policy, server)
        if server.provider == "azure-sql":
            results[server.name] = sql_check.check_server(server, roles, connect)
        else:
            results[server.name] = postgres_check.check_server(server, roles, sign_in or sign_in_for)
    return results


def render(results: dict[str, list[Finding]], servers: Servers) -> str:
    lines = []
    for server in servers.servers:
        lines.append(f"{server.name} ({server.platform}, {server.host}:{server.port}, database {server.database}, "
                     f"scope {server.scope})")
        for finding in results[server.name]:
            lines.append(f"  {'ok  ' if finding.ok else 'FAIL'} {finding.what}")
            if not finding.ok and finding.fix:
                lines.append(f"       fix: {finding.fix}")
    return "\n".join(lines)

