"""Cosmos DB data-plane role assignments and definitions, as the fake ARM (tests/azure/fake_arm.py) serves them:
`Microsoft.DocumentDB/databaseAccounts/{account}/sqlRoleAssignments[/{id}]` and `.../sqlRoleDefinitions[/{id}]`
at api-version 2024-11-15, with the shapes of the spec (azure-rest-api-specs, cosmos-db stable/2024-11-15
rbac.json and its examples):

- PUT and DELETE are long-running operations: by default they answer 202 with `Azure-AsyncOperation` and
  `Location` headers (as the spec's delete example shows them, under .../locations/<region>/operationsStatus/<id>),
  and the change happens when the operation is first reported done (`Succeeded` on the status URL, 200 on the
  Location URL) after `cosmos_polls` reports of `InProgress`. With `cosmos_async = False` they answer 200 at once.
  DELETE of a missing assignment answers 204; GET of one 404.
- A PUT body is `{"properties": {"roleDefinitionId", "scope", "principalId"}}`: the role definition must be one of
  the account's (its full id), the scope the account's id or below it as /dbs/<db>[/colls/<container>] (else 400
  BadRequest in the words the service used in a reported case), the principal a GUID, the assignment id a GUID.
  A PUT under an existing id for another grant is refused (400, assumed: the service's answer is not in the
  spec). The same grant under another id: `cosmos_duplicates = "conflict"` answers 409 Conflict, `"allowed"`
  stores it twice; the spec does not say which the service does, so the adapter is tested against both.
- Lists have no nextLink (the spec's `nextLinkName: null`). Errors are `{"error": {"code", "message"}}` (the
  spec's CloudError).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from shared.adapters.azure.cosmos_data import COSMOS_API_VERSION, COSMOS_BUILTIN_ROLES
from tests.azure.fake_http import Call, Reply, error

GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
RESOURCE_ROUTE = re.compile(
    r"^(?P<account>/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.DocumentDB/databaseAccounts/[^/]+)"
    r"/sqlDatabases(?:/(?P<database>[^/]+)/containers)?/?$",
    re.IGNORECASE,
)
ACCOUNT_ROUTE = re.compile(
    r"^(?P<account>/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.DocumentDB/databaseAccounts/[^/]+)"
    r"/(?P<kind>sqlRoleAssignments|sqlRoleDefinitions)(?:/(?P<name>[^/]+))?/?$",
    re.IGNORECASE,
)
OPERATION_ROUTE = re.compile(
    r"^/subscriptions/[^/]+/providers/Microsoft\.DocumentDB/locations/[^/]+/(?P<kind>operationsStatus|operationResults)"
    r"/(?P<id>[^/]+)$",
    re.IGNORECASE,
)
DATA_READER = COSMOS_BUILTIN_ROLES["Cosmos DB Built-in Data Reader"]
DATA_CONTRIBUTOR = COSMOS_BUILTIN_ROLES["Cosmos DB Built-in Data Contributor"]
_DATA_ACTIONS = {
    DATA_READER: ["Microsoft.DocumentDB/databaseAccounts/readMetadata",
                  "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/executeQuery",
                  "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/readChangeFeed",
                  "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/items/read"],
    DATA_CONTRIBUTOR: ["Microsoft.DocumentDB/databaseAccounts/readMetadata",
                       "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/*",
                       "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/items/*"],
}


@dataclass
class CosmosAccount:
    """One account's role definitions and assignments (by lower-cased id)."""

    id: str
    databases: dict[str, list[str]] = field(default_factory=dict)  # database id -> its containers' ids
    definitions: dict[str, dict[str, Any]] = field(default_factory=dict)
    assignments: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Operation:
    """A long-running operation: what it does when it completes, and how many more polls it runs for."""

    apply: Any
    polls_left: int
    done: bool = False
    failure: tuple[str, str] | None = None


@dataclass
class CosmosTenant:
    accounts: dict[str, CosmosAccount] = field(default_factory=dict)
    operations: dict[str, Operation] = field(default_factory=dict)
    asynchronous: bool = True
    polls: int = 1
    duplicates: str = "conflict"
    fail_next_operation: tuple[str, str] | None = None


class CosmosRoutes:
    """What FakeArm adds for Cosmos DB (mixed in; `url` is the server's)."""

    url: str

    def seed_cosmos_account(self, cosmos: CosmosTenant, account: str) -> CosmosAccount:
        """An account with the two built-in data roles."""
        made = cosmos.accounts.setdefault(account.lower(), CosmosAccount(account))
        for role, guid in COSMOS_BUILTIN_ROLES.items():
            self.seed_cosmos_role(cosmos, account, guid, role, "BuiltInRole")
        return made

    def seed_cosmos_database(self, cosmos: CosmosTenant, account: str, database: str,
                             containers: tuple[str, ...] = ()) -> None:
        cosmos.accounts[account.lower()].databases.setdefault(database, []).extend(containers)

    def seed_cosmos_role(self, cosmos: CosmosTenant, account: str, guid: str, role: str,
                         kind: str = "CustomRole") -> None:
        cosmos.accounts[account.lower()].definitions[guid.lower()] = {
            "id": f"{account}/sqlRoleDefinitions/{guid}", "name": guid,
            "type": "Microsoft.DocumentDB/databaseAccounts/sqlRoleDefinitions",
            "properties": {"roleName": role, "type": kind, "assignableScopes": [account],
                           "permissions": [{"dataActions": _DATA_ACTIONS.get(guid, []), "notDataActions": []}]},
        }

    def seed_cosmos_assignment(self, cosmos: CosmosTenant, scope: str, principal: str, role_guid: str,
                               name: str | None = None) -> dict[str, Any]:
        """An assignment made outside jitgate (under a random id unless named)."""
        account = self._cosmos_account_of(cosmos, scope)
        assert account is not None, scope
        item = self._cosmos_assignment(account, name or str(uuid.uuid4()), role_guid, scope, principal)
        account.assignments[item["name"].lower()] = item
        return item

    def cosmos_route(self, cosmos: CosmosTenant, tenant_url: str, path: str, call: Call) -> Reply | None:
        """The answer for a Cosmos DB path, or None when the path is not one."""
        operation = OPERATION_ROUTE.match(path)
        found = ACCOUNT_ROUTE.match(path)
        resources = RESOURCE_ROUTE.match(path)
        if operation is None and found is None and resources is None:
            return None
        if call.query.get("api-version") != COSMOS_API_VERSION:
            return error(400, "InvalidApiVersionParameter",
                         f"The api-version '{call.query.get('api-version')}' is invalid.")
        if operation is not None:
            return self._cosmos_operation(cosmos, operation["kind"].lower(), operation["id"], call)
        if resources is not None:
            return self._cosmos_resources(cosmos, resources["account"], resources["database"], call)
        assert found is not None
        account = cosmos.accounts.get(found["account"].lower())
        if account is None:
            return error(404, "ResourceNotFound",
                         f"The Resource 'Microsoft.DocumentDB/databaseAccounts/{found['account'].rsplit('/', 1)[-1]}'"
                         " under resource group was not found.")
        kind, name = found["kind"].lower(), found["name"]
        if kind == "sqlroledefinitions":
            if call.method != "GET":
                return error(405, "MethodNotAllowed")
            if name is None:
                return Reply(200, {"value": list(account.definitions.values())})
            definition = account.definitions.get(name.lower())
            return Reply(200, definition) if definition else error(
                404, "NotFound", f"The Role Definition with id [{name}] was not found.")
        if call.method == "GET":
            if name is None:
                return Reply(200, {"value": list(account.assignments.values())})
            item = account.assignments.get(name.lower())
            return Reply(200, item) if item else error(
                404, "NotFound", f"The Role Assignment with id [{name}] was not found.")
        if name is None:
            return error(405, "MethodNotAllowed")
        if call.method == "PUT":
            return self._cosmos_put(cosmos, tenant_url, account, name, call)
        if call.method == "DELETE":
            if name.lower() not in account.assignments:
                return Reply(204)
            return self._cosmos_finish(cosmos, tenant_url, lambda: account.assignments.pop(name.lower(), None),
                                       Reply(200))
        return error(405, "MethodNotAllowed")

    def _cosmos_resources(self, cosmos: CosmosTenant, account_id: str, database: str | None, call: Call) -> Reply:
        """SqlResources_ListSqlDatabases and _ListSqlContainers: ARM paths ignore case, Cosmos DB ids do not."""
        account = cosmos.accounts.get(account_id.lower())
        if account is None or call.method != "GET":
            return error(404 if account is None else 405, "NotFound" if account is None else "MethodNotAllowed")
        if database is None:
            names = list(account.databases)
            kind = "sqlDatabases"
        else:
            found = [d for d in account.databases if d.lower() == database.lower()]
            if len(found) != 1:
                return error(404, "NotFound", f"The database {database} was not found.")
            names, kind = account.databases[found[0]], f"sqlDatabases/{found[0]}/containers"
        return Reply(200, {"value": [{"id": f"{account.id}/{kind}/{name}", "name": name,
                                      "type": f"Microsoft.DocumentDB/databaseAccounts/{kind.split('/')[-1]}",
                                      "properties": {"resource": {"id": name}}} for name in names]})

    def _cosmos_put(self, cosmos: CosmosTenant, tenant_url: str, account: CosmosAccount, name: str,
                    call: Call) -> Reply:
        if not GUID.match(name):
            return error(400, "BadRequest", f"The provided role assignment id [{name}] is not a valid GUID.")
        properties = (call.json() or {}).get("properties") or {}
        definition = str(properties.get("roleDefinitionId", ""))
        scope = str(properties.get("scope", ""))
        principal = str(properties.get("principalId", ""))
        prefix = f"{account.id}/sqlRoleDefinitions/".lower()
        guid = definition[len(prefix):].lower() if definition.lower().startswith(prefix) else ""
        if guid not in account.definitions:
            return error(400, "BadRequest", f"The provided role definition id [{definition}] does not exist for "
                                            f"the database account.")
        rest = scope[len(account.id):] if scope.lower().startswith(account.id.lower()) else None
        if rest is None or not re.fullmatch(r"(/dbs/[^/]+(/colls/[^/]+)?)?", rest, re.IGNORECASE):
            segment = (rest or scope).strip("/").split("/", 1)[0]
            return error(400, "BadRequest", "Failed to parse the incoming request payload. Exception: "
                                            f"System.FormatException: Could not parse property [scope] with value "
                                            f"[{scope}]: Expected path segment [dbs] at position [0] but found "
                                            f"[{segment}].")
        if not GUID.match(principal):
            return error(400, "BadRequest", f"The provided principal id [{principal}] is not a valid GUID.")
        item = self._cosmos_assignment(account, name.lower(), guid, scope, principal)
        grant = _grant(item)
        same_name = account.assignments.get(name.lower())
        if same_name is not None and _grant(same_name) != grant:
            return error(400, "BadRequest", "The scope, role definition and principal of an existing role "
                                            "assignment cannot be updated.")
        holder = next((a for a in account.assignments.values() if _grant(a) == grant and a is not same_name), None)
        if holder is not None and cosmos.duplicates == "conflict":
            return error(409, "Conflict", f"A role assignment with the same principal, role definition and scope "
                                          f"already exists with id [{holder['name']}].")
        return self._cosmos_finish(cosmos, tenant_url, lambda: account.assignments.__setitem__(name.lower(), item),
                            Reply(200, item))

    def _cosmos_finish(self, cosmos: CosmosTenant, tenant_url: str, apply: Any, done: Reply) -> Reply:
        failure, cosmos.fail_next_operation = cosmos.fail_next_operation, None
        if not cosmos.asynchronous and failure is None:
            apply()
            return done
        op = str(uuid.uuid4())
        cosmos.operations[op] = Operation(apply, cosmos.polls, failure=failure)
        base = f"{tenant_url}/subscriptions/00000000-0000-0000-0000-000000000000/providers/Microsoft.DocumentDB" \
               f"/locations/westeurope"
        query = f"?api-version={COSMOS_API_VERSION}"
        return Reply(202, None, {"Azure-AsyncOperation": f"{base}/operationsStatus/{op}{query}",
                                 "Location": f"{base}/operationResults/{op}{query}", "Retry-After": "0"})

    def _cosmos_operation(self, cosmos: CosmosTenant, kind: str, op_id: str, call: Call) -> Reply:
        operation = cosmos.operations.get(op_id)
        if operation is None:
            return error(404, "NotFound", f"Operation {op_id} was not found.")
        if not operation.done and operation.polls_left > 0:
            operation.polls_left -= 1
            running = {"status": "InProgress"} if kind == "operationsstatus" else None
            return Reply(200 if running else 202, running, {"Retry-After": "0"})
        if operation.failure is not None:
            code, message = operation.failure
            if kind == "operationsstatus":
                return Reply(200, {"status": "Failed", "error": {"code": code, "message": message}})
            return error(400, code, message)
        if not operation.done:
            operation.apply()
            operation.done = True
        return Reply(200, {"status": "Succeeded"} if kind == "operationsstatus" else {})

    @staticmethod
    def _cosmos_account_of(cosmos: CosmosTenant, scope: str) -> CosmosAccount | None:
        return next((a for key, a in cosmos.accounts.items() if scope.lower().startswith(key)), None)

    @staticmethod
    def _cosmos_assignment(account: CosmosAccount, name: str, role_guid: str, scope: str,
                           principal: str) -> dict[str, Any]:
        return {
            "id": f"{account.id}/sqlRoleAssignments/{name}", "name": name,
            "type": "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments",
            "properties": {"roleDefinitionId": f"{account.id}/sqlRoleDefinitions/{role_guid}", "scope": scope,
                           "principalId": principal},
        }


def _grant(item: dict[str, Any]) -> tuple[str, str, str]:
    p = item["properties"]
    return p["scope"].lower(), p["principalId"].lower(), p["roleDefinitionId"].rsplit("/", 1)[-1].lower()
