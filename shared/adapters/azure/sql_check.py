"""`jitgate databases check` on an Azure SQL Database: whether jitgate can sign in and holds the rights it needs,
and the T-SQL an admin runs to give the ones it lacks (the script `jitgate infra sql` prints gives them all once,
from infra/sql/azure-sql-setup.sql and the policy's roles). Also lists the users jitgate made and had to keep
(they own something), for an admin to look at.

The rights: ALTER ANY USER (create and drop the users it grants to, and mark them), KILL DATABASE CONNECTION
(end a person's sessions at revoke), VIEW DATABASE STATE (see sessions other than its own), and per role the
policy grants there the right to change its members: ALTER on the role (or membership in db_securityadmin, which
covers every custom role); only db_owner members may change a fixed role's members.
"""

from __future__ import annotations

from ...domain.errors import JitgateError
from ..databases.check import Finding
from ..databases.servers import Server, Servers
from .sql import UNGRANTABLE, USER_MARK, AzureSqlGrants, Connector, Database, quote_name

_DATABASE_RIGHTS = (
    ("ALTER ANY USER", "to create and drop the users it grants to"),
    ("KILL DATABASE CONNECTION", "to end a person's sessions when access ends"),
    ("VIEW DATABASE STATE", "to see other people's sessions"),
)


def check_server(server: Server, roles: list[str] | None, connect: Connector | None = None) -> list[Finding]:
    """What jitgate can and cannot do in one Azure SQL database."""
    provider = AzureSqlGrants(Servers((server,)), connect=connect)
    me = quote_name(server.user)
    try:
        with provider.connect(server) as db:
            user, database = db.one("SELECT USER_NAME(), DB_NAME()") or ("", "")
            findings = [Finding(str(user).lower() == server.user.lower(),
                                f"signs in as {user} (Entra token) to database {database}",
                                f"set `user: {user}` for server '{server.name}' in the servers file")]
            for right, why in _DATABASE_RIGHTS:
                held = db.one("SELECT HAS_PERMS_BY_NAME(DB_NAME(), 'DATABASE', ?)", (right,))
                findings.append(Finding(bool(held and held[0]), f"has {right} ({why})", f"GRANT {right} TO {me};"))
            findings.extend(_role_findings(db, roles, me))
            findings.extend(_kept_users(db))
            return findings
    except JitgateError as exc:
        return [Finding(False, f"cannot sign in: {exc}",
                        "check host and database in the servers file, the server's firewall, and that jitgate's "
                        f"identity is a user of the database (`jitgate infra sql --server {server.name}` prints "
                        "infra/sql/azure-sql-setup.sql for it)")]


def _role_findings(db: Database, roles: list[str] | None, me: str) -> list[Finding]:
    if roles is None:
        return [Finding(False, "the policy allows any role here: name the roles, so that each can be checked",
                        "list the roles in the policy rule's match.roles")]
    if not roles:
        return [Finding(True, "no policy rule grants a role here")]
    findings = []
    owner = db.one("SELECT IS_ROLEMEMBER('db_owner')")
    for role in roles:
        row = db.one("SELECT name, type, is_fixed_role FROM sys.database_principals WHERE name = ?", (role,))
        if row is None or row[1] != "R":
            findings.append(Finding(False, f"role {role} exists", f"CREATE ROLE {quote_name(role)};"))
        elif str(row[0]).lower() in UNGRANTABLE:
            findings.append(Finding(False, f"role {role} is no role jitgate grants (its holder could escape every "
                                           "rule)", f"take {role} out of the policy"))
        elif row[2]:
            custom = quote_name(f"{row[0]}_jitgate")
            findings.append(Finding(bool(owner and owner[0]),
                                    f"may change the members of fixed role {role} (only db_owner members may)",
                                    f"grant a custom role that is its member instead: CREATE ROLE {custom}; ALTER "
                                    f"ROLE {quote_name(str(row[0]))} ADD MEMBER {custom}; GRANT ALTER ON "
                                    f"ROLE::{custom} TO {me}; (and name {row[0]}_jitgate in the policy)"))
        else:
            held = db.one("SELECT HAS_PERMS_BY_NAME(?, 'ROLE', 'ALTER')", (row[0],))
            findings.append(Finding(bool(held and held[0]), f"may change the members of role {role} (ALTER on it)",
                                    f"GRANT ALTER ON ROLE::{quote_name(str(row[0]))} TO {me};"))
    return findings


def _kept_users(db: Database) -> list[Finding]:
    """Users jitgate made that are a member of nothing: their last revoke could not drop them."""
    made = db.rows("SELECT u.principal_id, u.name FROM sys.extended_properties AS p"
                   " JOIN sys.database_principals AS u ON u.principal_id = p.major_id"
                   " WHERE p.class = 4 AND p.name = ?", (USER_MARK,))
    members = {int(row[0]) for row in db.rows("SELECT member_principal_id FROM sys.database_role_members")}
    return [Finding(False, f"user {name}, made by jitgate, is a member of nothing but was kept: it owns something",
                    f"look at what it owns, then DROP USER {quote_name(str(name))};")
            for principal, name in sorted(made, key=lambda r: str(r[1])) if int(principal) not in members]
