"""GrantProvider `cosmos-data`: Azure Cosmos DB data-plane role assignments
(`Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments`, API for NoSQL) over the Azure Resource Manager REST
API (api-version 2024-11-15, the spec's rbac.json; 2025-10-15 is the same), with httpx over `arm.ArmClient`.

- A scope is a data-plane path as the assignment's `scope` names it: the account's ARM id, optionally
  `/dbs/<database>` and `/colls/<container>`. Assignments live on the account; jitgate grants only on the
  accounts it is configured with (`JITGATE_COSMOS_ACCOUNTS`), which are the ones reconcile lists.
- Grant keys lower-case their scope, but Cosmos DB's database and container ids are case-sensitive: before it
  assigns, jitgate reads the account's databases (and the database's containers) through ARM and writes the scope
  with their exact ids; a name that matches none, or several that differ only in case, is refused.
- Roles are the account's role definitions: the built-in Data Reader (`...0001`) and Data Contributor (`...0002`)
  by name or id, or custom ones by id or name. A role definition id is kept as its GUID, lower-cased.
- Assignments have no description, so jitgate's marker is its deterministic name: an assignment named
  `key.assignment_name()` of its own (principal, role, scope) is jitgate's; the same grant under any other name
  is access the person already had (preexisting, never touched).
- PUT and DELETE are long-running operations (200, or 202 with Azure-AsyncOperation and Location, which are
  followed); every change is read back.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

import httpx

from ...domain.errors import AssignmentExists, PermanentError, TransientError
from ...domain.ids import is_guid
from ...domain.ledger import MARKER_PREFIX, Assignment, GrantKey
from .arm import ARM_ENDPOINT, ArmClient, ArmFailure, TokenProvider, checked_scope, guid_of

log = logging.getLogger("jitgate.azure")

COSMOS_API_VERSION: Final = "2024-11-15"
COSMOS_BUILTIN_ROLES: Final[dict[str, str]] = {
    "Cosmos DB Built-in Data Reader": "00000000-0000-0000-0000-000000000001",
    "Cosmos DB Built-in Data Contributor": "00000000-0000-0000-0000-000000000002",
}
MARKER: Final = f"{MARKER_PREFIX} data-plane role assignment made by jitgate"
_SCOPE: Final = re.compile(
    r"^(?P<account>/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.DocumentDB"
    r"/databaseAccounts/[^/]+)(?:/dbs/[^/]+(?:/colls/[^/]+)?)?$",
    re.IGNORECASE,
)


def account_of(scope: str) -> str:
    """The account's ARM id a data-plane scope lies in; PermanentError when it is no Cosmos DB data-plane scope."""
    found = _SCOPE.match(checked_scope(scope))
    if found is None:
        raise PermanentError(f"InvalidScope: {scope!r} is not a Cosmos DB account, /dbs/<database> or "
                             "/colls/<container> scope")
    return found["account"]


class CosmosDataGrants:
    """GrantProvider `cosmos-data` over the data-plane role assignments of the configured accounts (see the
    module docstring). Azure cannot expire such an assignment, so `expires_at` is ignored, and an assignment
    has no principal type, so `principal_type` is too: jitgate's revoke and reconcile end the grant."""

    name: str = "cosmos-data"

    def __init__(
        self,
        token_provider: TokenProvider,
        base_url: str = ARM_ENDPOINT,
        http: httpx.Client | None = None,
        *,
        accounts: Sequence[str],
        operation_timeout: float = 120.0,
        poll_interval: float = 1.0,
    ) -> None:
        self._arm = ArmClient(token_provider, base_url, http)
        self.accounts = tuple(account_of(account) for account in accounts)
        self._operation_timeout = operation_timeout
        self._poll = poll_interval
        self._roles: dict[tuple[str, str], str] = {}

    def close(self) -> None:
        self._arm.close()

    # ------------------------------------------------------------ GrantProvider

    def resolve_role(self, scope: str, role: str) -> str:
        account = self._account(scope)
        candidate = role.strip()
        if "/sqlroledefinitions/" in candidate.lower():
            candidate = guid_of(candidate)
        cached = self._roles.get((account.lower(), candidate.lower()))
        if cached is not None:
            return cached
        what = f"resolve Cosmos DB role {candidate!r}"
        found: str | None = None
        if is_guid(candidate.lower()):
            definition = self._arm.get(_definition_path(account, candidate.lower()), COSMOS_API_VERSION, what)
            found = candidate.lower() if definition is not None else None
        elif candidate:
            # NB. As ARM does for its role names: any case, an exact match first.
            matches = [d for d in self._arm.pages(f"{account}/sqlRoleDefinitions", COSMOS_API_VERSION, what)
                       if str((d.get("properties") or {}).get("roleName", "")).lower() == candidate.lower()]
            matches.sort(key=lambda d: (d.get("properties") or {}).get("roleName") != candidate)
            found = guid_of(str(matches[0].get("name") or matches[0].get("id", ""))) if matches else None
        if found is None:
            raise PermanentError(f"RoleDefinitionDoesNotExist: unknown role '{role}' in Cosmos DB account {account}")
        self._roles[(account.lower(), candidate.lower())] = found
        return found

    def find_assignment(self, key: GrantKey) -> Assignment | None:
        key = self._own(key)
        found = [a for a in self._assignments(self._account(key.scope)) if a.key == key]
        # NB. Should the service hold one grant twice (its spec does not say it cannot), jitgate's is the one
        # jitgate answers for; the other stays when jitgate's goes.
        return next((a for a in found if a.description == MARKER), found[0] if found else None)

    def get_assignment(self, scope: str, name: str) -> Assignment | None:
        if not is_guid(name.lower()):
            return None  # assignment ids are GUIDs; nothing else can exist
        account = self._account(scope)
        item = self._arm.get(_assignment_path(account, name), COSMOS_API_VERSION, f"get Cosmos DB assignment {name}")
        found = None if item is None else self._assignment(item)
        return found if found is not None and found.scope.lower() == scope.lower() else None

    def create_assignment(
        self,
        key: GrantKey,
        name: str,
        description: str,
        principal_type: str = "User",
        expires_at: datetime | None = None,
    ) -> Assignment:
        wanted = self._own(key)
        account = self._account(key.scope)
        if not is_guid(name.lower()):
            raise PermanentError(f"InvalidRoleAssignmentId: Cosmos DB role assignment name {name!r} is not a GUID")
        what = f"create Cosmos DB role assignment {name} at {key.scope}"
        same_name = self._arm.get(_assignment_path(account, name), COSMOS_API_VERSION, what)
        if same_name is not None:
            existing = self._assignment(same_name)
            if existing.key != wanted:
                raise PermanentError(f"RoleAssignmentUpdateNotPermitted: {what}: the name is another grant's "
                                     f"({existing.principal_id}, role {existing.role_definition_id}, {existing.scope})")
            return existing
        holder = self.find_assignment(wanted)
        if holder is not None:
            raise AssignmentExists(holder.name)
        if self._arm.get(_definition_path(account, wanted.role_definition_id), COSMOS_API_VERSION, what) is None:
            raise PermanentError(f"RoleDefinitionDoesNotExist: role definition {wanted.role_definition_id} is not "
                                 f"one of account {account}'s")
        body = {"properties": {"roleDefinitionId": _definition_path(account, wanted.role_definition_id),
                               "scope": self._exact_scope(account, key.scope), "principalId": wanted.principal_id}}
        response = self._arm.send("PUT", _assignment_path(account, name), COSMOS_API_VERSION, what, body=body)
        if response.status_code == 409:
            # NB. Whether the service refuses a second assignment of one grant is not in its spec: if it does, the
            # grant was given under another name between jitgate's look and its PUT.
            holder = self.find_assignment(wanted)
            if holder is not None and holder.name != name.lower():
                raise AssignmentExists(holder.name)
            raise ArmFailure.of(response).error(what)
        if not response.is_success:
            raise ArmFailure.of(response).error(what)
        self._arm.finish(response, what, self._operation_timeout, self._poll)
        created = self.get_assignment(key.scope, name)
        if created is None:
            raise TransientError(f"{what}: accepted but not visible yet")
        log.info("assigned Cosmos DB role %s to %s at %s", wanted.role_definition_id, wanted.principal_id, key.scope)
        return created

    def delete_assignment(self, scope: str, name: str) -> None:
        if self.get_assignment(scope, name) is None:
            return  # missing, or another scope's: nothing of this grant to delete
        account = self._account(scope)
        what = f"delete Cosmos DB role assignment {name} at {scope}"
        response = self._arm.send("DELETE", _assignment_path(account, name), COSMOS_API_VERSION, what)
        if not (response.is_success or response.status_code == 404):
            raise ArmFailure.of(response).error(what)
        self._arm.finish(response, what, self._operation_timeout, self._poll)
        if self.get_assignment(scope, name) is not None:
            raise TransientError(f"{what}: still present after the delete")

    def list_marked(self) -> list[Assignment]:
        marked = [a for account in self.accounts for a in self._assignments(account) if a.description == MARKER]
        return sorted(marked, key=lambda a: (a.scope.lower(), a.name))

    # ------------------------------------------------------------ internals

    def _account(self, scope: str) -> str:
        """The configured account (as configured) a scope lies in."""
        account = account_of(scope)
        found = next((a for a in self.accounts if a.lower() == account.lower()), None)
        if found is None:
            raise PermanentError(f"Cosmos DB account {account} is not one jitgate grants on (JITGATE_COSMOS_ACCOUNTS:"
                                 f" {', '.join(self.accounts) or 'none'}); reconcile would never see its grants")
        return found

    def _exact_scope(self, account: str, scope: str) -> str:
        """The scope with the database's and container's ids as the account spells them (see the module
        docstring)."""
        parts = scope[len(account):].strip("/").split("/") if len(scope) > len(account) else []
        exact = account
        if parts:
            database = self._one_named(f"{account}/sqlDatabases", parts[1], "database", account)
            exact += f"/dbs/{database}"
            if len(parts) == 4:
                container = self._one_named(f"{account}/sqlDatabases/{database}/containers", parts[3],
                                            f"container of database {database}", account)
                exact += f"/colls/{container}"
        return exact

    def _one_named(self, path: str, name: str, kind: str, account: str) -> str:
        names = [str(item.get("name", "")) for item in self._arm.pages(path, COSMOS_API_VERSION, f"list {path}")]
        matches = sorted(n for n in names if n.lower() == name.lower())
        if not matches:
            raise PermanentError(f"Cosmos DB account {account} has no {kind} '{name}'")
        if len(matches) > 1:
            raise PermanentError(f"Cosmos DB account {account} has {kind}s {', '.join(matches)}, which differ only in "
                                 f"case: jitgate cannot tell which one '{name}' means")
        return matches[0]

    def _own(self, key: GrantKey) -> GrantKey:
        if key.provider != self.name:
            raise PermanentError(f"grant key of provider {key.provider!r} sent to provider {self.name!r}")
        normal = GrantKey.of(key.provider, key.principal_id, key.role_definition_id, key.scope)
        if not is_guid(normal.principal_id):
            raise PermanentError(f"PrincipalNotFound: principal id {key.principal_id!r} is not an object id")
        return normal

    def _assignments(self, account: str) -> list[Assignment]:
        items = self._arm.pages(f"{account}/sqlRoleAssignments", COSMOS_API_VERSION,
                                f"list Cosmos DB role assignments of {account}")
        return [self._assignment(item) for item in items]

    def _assignment(self, item: dict[str, Any]) -> Assignment:
        try:
            properties = item["properties"]
            name = str(item["name"]).lower()
            key = GrantKey.of(self.name, str(properties["principalId"]), guid_of(str(properties["roleDefinitionId"])),
                              str(properties["scope"]))
        except (KeyError, TypeError) as exc:
            raise PermanentError(f"unexpected Cosmos DB role assignment shape from ARM: missing {exc}") from exc
        return Assignment(name=name, provider=self.name, principal_id=key.principal_id,
                          role_definition_id=key.role_definition_id, scope=str(properties["scope"]),
                          description=MARKER if name == key.assignment_name() else "")


def _assignment_path(account: str, name: str) -> str:
    return f"{account}/sqlRoleAssignments/{name.lower()}"


def _definition_path(account: str, guid: str) -> str:
    return f"{account}/sqlRoleDefinitions/{guid}"

