"""Azure Resource Manager's Microsoft.Authorization REST API, as a local HTTP server.

Speaks the documented shapes of role assignments and role definitions (api-version 2022-04-01) and of PIM
role assignment schedule requests and schedules (api-version 2020-10-01):

- Role assignment names are GUIDs, unique in the tenant. A PUT under an existing name for the same grant
  (scope, principal, role) answers 201 with the assignment, its description updated (ARM lets a PUT change
  only the description and condition of an assignment); the same name for another grant answers 409
  RoleAssignmentUpdateNotPermitted; the grant under another name 409 RoleAssignmentExists naming the
  existing assignment's id; an unknown role 400 RoleDefinitionDoesNotExist; a principal that has not
  replicated yet 400 PrincipalNotFound.
- The tenant's directory knows each principal's type (`seed_principal`, or the type a principal was first
  assigned with): a PUT naming another type answers 400 UnmatchedPrincipalType, as ARM does for a User
  type sent for a service principal.
- GET and DELETE of an assignment are scoped: another scope answers 404 / 204. DELETE of a missing
  assignment answers 204.
- Lists page with `nextLink` (absolute, carrying api-version and filter). `$filter=atScope()` lists at and
  above the scope, `principalId eq '{id}'` at, above and below for that principal, no filter at, above and
  below; role definitions filter on `roleName eq '{name}'` case-insensitively.
- PIM: an AdminAssign request with `expiration.type=AfterDuration` creates a schedule that ends by itself at
  start + duration (the fake's clock decides "now"); AdminExtend moves a live schedule's end the same way
  (400 RoleAssignmentDoesNotExist when there is none); AdminRemove ends it (400 RoleAssignmentDoesNotExist
  when there is none); a subscription-level schedule reports its scope in PIM's
  `/providers/Microsoft.Subscription/subscriptions/{id}` form.
- Cosmos DB data-plane role assignments and definitions (tests/azure/fake_arm_cosmos.py).
- Every call needs `Authorization: Bearer <token>`; a wrong api-version answers 400.

Each test gets its own tenant (`new_tenant()`): a path prefix on one server with state of its own.
"""

from __future__ import annotations

import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from shared.adapters.azure.cosmos_data import CosmosDataGrants
from shared.adapters.azure.rbac import AzureRbac
from shared.adapters.azure.roles import AZURE_BUILTIN_ROLES
from tests.azure.fake_arm_cosmos import CosmosRoutes, CosmosTenant
from tests.azure.fake_http import Call, FakeHttpService, Reply, error

TOKEN = "fake-arm-token"
RBAC_VERSION = "2022-04-01"
PIM_VERSION = "2020-10-01"
CONTRACT_SUBSCRIPTION = "/subscriptions/00000000-0000-0000-0000-00000000c0de"
PRINCIPAL_TYPES = {"User", "Group", "ServicePrincipal", "ForeignGroup", "Device"}
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ROUTE = re.compile(
    r"^(?P<scope>(?:/[^/]+)*?)/providers/Microsoft\.Authorization/"
    r"(?P<kind>roleAssignments|roleDefinitions|roleAssignmentScheduleRequests|roleAssignmentSchedules)"
    r"(?:/(?P<name>[^/]+))?/?$",
    re.IGNORECASE,
)
PIM_ALIAS = "/providers/microsoft.subscription"


def norm(scope: str) -> str:
    key = scope.rstrip("/").lower()
    return key[len(PIM_ALIAS):] if key.startswith(PIM_ALIAS + "/subscriptions/") else key


def related(item_scope: str, scope: str, above: bool, below: bool) -> bool:
    a, s = norm(item_scope), norm(scope)
    return a == s or (above and s.startswith(a + "/")) or (below and a.startswith(s + "/"))


def iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def role_id(scope: str, guid: str) -> str:
    found = re.match(r"^/subscriptions/([^/]+)", norm(scope))
    prefix = f"/subscriptions/{found.group(1)}" if found else ""
    return f"{prefix}/providers/Microsoft.Authorization/roleDefinitions/{guid}"


def parse_duration(text: str) -> timedelta:
    found = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?", text or "")
    if not found or not any(found.groups()):
        raise ValueError(text)
    d, h, m, s = (int(g or 0) for g in found.groups())
    return timedelta(days=d, hours=h, minutes=m, seconds=s)


@dataclass
class Tenant:
    """One directory's authorization state."""

    assignments: dict[str, dict[str, Any]] = field(default_factory=dict)  # by lower-cased name
    requests: dict[str, dict[str, Any]] = field(default_factory=dict)  # PIM requests by lower-cased name
    schedules: dict[str, dict[str, Any]] = field(default_factory=dict)  # PIM schedules by name
    unreplicated: dict[str, int] = field(default_factory=dict)  # principal -> PrincipalNotFound answers left
    principals: dict[str, str] = field(default_factory=dict)  # the directory: principal -> its type
    ghost_deletes: int = 0  # DELETEs that answer 200 but leave the assignment in place
    max_pim_duration: timedelta | None = None  # the role management policy's ExpirationRule
    cosmos: CosmosTenant = field(default_factory=CosmosTenant)  # Cosmos DB accounts' data-plane RBAC


class FakeArm(FakeHttpService, CosmosRoutes):
    """ARM on 127.0.0.1. `now` is the clock PIM expiry is judged by; `page_size` makes lists page."""

    def __init__(self, page_size: int = 2) -> None:
        self.tenants: dict[str, Tenant] = {}
        self.page_size = page_size
        self.skew = timedelta()
        super().__init__()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.skew

    def new_tenant(self) -> tuple[Tenant, str]:
        """A fresh tenant and the base URL that reaches it."""
        name = uuid.uuid4().hex[:12]
        tenant = self.tenants[name] = Tenant()
        return tenant, f"{self.url}/t/{name}"

    # ------------------------------------------------------------ seeding (access made outside jitgate)

    def seed_principal(self, tenant: Tenant, principal: str, principal_type: str) -> None:
        """A directory object of that type (a group, a service principal...)."""
        tenant.principals[principal.lower()] = principal_type

    def seed_assignment(self, tenant: Tenant, scope: str, principal: str, role_guid: str,
                        name: str | None = None, description: str = "") -> dict[str, Any]:
        name = name or str(uuid.uuid4())
        principal_type = tenant.principals.setdefault(principal.lower(), "User")
        item = self._assignment(scope, name, principal, principal_type, role_id(scope, role_guid), description)
        tenant.assignments[name.lower()] = item
        return item

    def seed_schedule(self, tenant: Tenant, scope: str, principal: str, role_guid: str,
                      justification: str = "permanent assignment made in the portal") -> dict[str, Any]:
        request_name = str(uuid.uuid4())
        tenant.requests[request_name] = self._request(scope, request_name, {
            "principalId": principal, "roleDefinitionId": role_id(scope, role_guid), "requestType": "AdminAssign",
            "justification": justification, "scheduleInfo": {"expiration": {"type": "NoExpiration"}},
        }, "Provisioned")
        return self._schedule(tenant, scope, request_name, principal, role_guid, None)

    # ------------------------------------------------------------ routing

    def route(self, call: Call) -> Reply:
        found = re.match(r"^/t/([0-9a-f]{12})(/.*)$", call.path)
        if found is None or found.group(1) not in self.tenants:
            return error(404, "NotFound", f"no tenant in {call.path}")
        tenant, path = self.tenants[found.group(1)], found.group(2)
        if call.headers.get("authorization") != f"Bearer {TOKEN}":
            return error(401, "InvalidAuthenticationToken", "The access token is invalid.")
        cosmos = self.cosmos_route(tenant.cosmos, f"{self.url}/t/{found.group(1)}", path, call)
        if cosmos is not None:
            return cosmos
        match = ROUTE.match(path)
        if match is None:
            return error(404, "NotFound", path)
        scope, kind, name = match.group("scope"), match.group("kind").lower(), match.group("name")
        wanted = PIM_VERSION if kind.startswith("roleassignmentschedule") else RBAC_VERSION
        if call.query.get("api-version") != wanted:
            return error(400, "InvalidApiVersionParameter",
                         f"The api-version '{call.query.get('api-version')}' is invalid for {kind}.")
        handler = getattr(self, f"_{kind}_{call.method.lower()}", None)
        if handler is None:
            return error(405, "MethodNotAllowed")
        reply: Reply = handler(tenant, scope, name, call)
        return reply

    # ------------------------------------------------------------ role definitions

    def _roledefinitions_get(self, tenant: Tenant, scope: str, name: str | None, call: Call) -> Reply:
        definitions = [self._definition(scope, role, guid) for role, guid in AZURE_BUILTIN_ROLES.items()]
        if name is not None:
            match = next((d for d in definitions if d["name"] == name.lower()), None)
            return Reply(200, match) if match else error(
                404, "RoleDefinitionDoesNotExist", f"The specified role definition with ID '{name}' does not exist.")
        wanted = call.query.get("$filter", "")
        by_name = re.fullmatch(r"roleName eq '((?:[^']|'')*)'", wanted)
        if wanted and by_name is None:
            return error(400, "InvalidFilter", wanted)
        if by_name:
            role = by_name.group(1).replace("''", "'").lower()
            definitions = [d for d in definitions if d["properties"]["roleName"].lower() == role]
        return self._page(definitions, call, "roleDefinitions", scope)

    @staticmethod
    def _definition(scope: str, role: str, guid: str) -> dict[str, Any]:
        return {
            "id": role_id(scope, guid), "name": guid, "type": "Microsoft.Authorization/roleDefinitions",
            "properties": {"roleName": role, "type": "BuiltInRole", "description": role, "assignableScopes": ["/"],
                           "permissions": []},
        }

    # ------------------------------------------------------------ role assignments

    def _roleassignments_get(self, tenant: Tenant, scope: str, name: str | None, call: Call) -> Reply:
        if name is not None:
            item = tenant.assignments.get(name.lower())
            if item is None or norm(item["properties"]["scope"]) != norm(scope):
                return error(404, "RoleAssignmentNotFound", f"The role assignment '{name}' is not found.")
            return Reply(200, item)
        items = self._filtered(list(tenant.assignments.values()), scope, call.query.get("$filter", ""))
        if isinstance(items, Reply):
            return items
        return self._page(items, call, "roleAssignments", scope)

    def _roleassignments_put(self, tenant: Tenant, scope: str, name: str | None, call: Call) -> Reply:
        assert name is not None
        if not GUID.match(name):
            return error(400, "InvalidRoleAssignmentId", f"The role assignment ID '{name}' is not valid.")
        properties = (call.json() or {}).get("properties") or {}
        definition = str(properties.get("roleDefinitionId", ""))
        guid = definition.rsplit("/", 1)[-1].lower()
        if guid not in {g.lower() for g in AZURE_BUILTIN_ROLES.values()}:
            return error(400, "RoleDefinitionDoesNotExist",
                         f"The specified role definition with ID '{guid}' does not exist.")
        principal = str(properties.get("principalId", "")).lower()
        if tenant.unreplicated.get(principal, 0) > 0:
            tenant.unreplicated[principal] -= 1
            return error(400, "PrincipalNotFound",
                         f"Principal {principal.replace('-', '')} does not exist in the directory. If you are "
                         "creating this principal and then immediately assigning a role, this error might be "
                         "related to a replication delay.")
        principal_type = properties.get("principalType", "User")
        if principal_type not in PRINCIPAL_TYPES:
            return error(400, "InvalidPrincipalType", str(principal_type))
        known = tenant.principals.get(principal)
        if known is not None and known != principal_type:
            return error(400, "UnmatchedPrincipalType",
                         f"The PrincipalId '{principal.replace('-', '')}' has type '{known}' , which is different "
                         f"from specified PrincipalType '{principal_type}'.")
        grant = (norm(scope), principal, guid)
        description = str(properties.get("description") or "")
        same_name = tenant.assignments.get(name.lower())
        if same_name is not None:
            if self._grant(same_name) != grant:
                return error(409, "RoleAssignmentUpdateNotPermitted",
                             "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.")
            same_name["properties"].update(description=description, updatedOn=iso(self.now()))
            return Reply(201, same_name)
        holder = next((a for a in tenant.assignments.values() if self._grant(a) == grant), None)
        if holder is not None:
            return error(409, "RoleAssignmentExists", "The role assignment already exists. The ID of the existing "
                         f"role assignment is {holder['name'].replace('-', '')}.")
        item = self._assignment(scope, name.lower(), principal, principal_type, definition, description)
        tenant.assignments[name.lower()] = item
        tenant.principals.setdefault(principal, principal_type)
        return Reply(201, item)

    def _roleassignments_delete(self, tenant: Tenant, scope: str, name: str | None,
                                call: Call) -> Reply:
        assert name is not None
        item = tenant.assignments.get(name.lower())
        if item is None or norm(item["properties"]["scope"]) != norm(scope):
            return Reply(204)
        if tenant.ghost_deletes > 0:
            tenant.ghost_deletes -= 1
            return Reply(200, item)
        del tenant.assignments[name.lower()]
        return Reply(200, item)

    @staticmethod
    def _grant(item: dict[str, Any]) -> tuple[str, str, str]:
        p = item["properties"]
        return norm(p["scope"]), p["principalId"].lower(), p["roleDefinitionId"].rsplit("/", 1)[-1].lower()

    def _assignment(self, scope: str, name: str, principal: str, principal_type: str, definition: str,
                    description: str) -> dict[str, Any]:
        now = iso(self.now())
        return {
            "id": f"{scope}/providers/Microsoft.Authorization/roleAssignments/{name}",
            "name": name,
            "type": "Microsoft.Authorization/roleAssignments",
            "properties": {
                "roleDefinitionId": definition, "principalId": principal, "principalType": principal_type,
                "scope": scope, "description": description, "condition": None, "conditionVersion": None,
                "createdOn": now, "updatedOn": now, "createdBy": None, "updatedBy": None,
                "delegatedManagedIdentityResourceId": None,
            },
        }

    # ------------------------------------------------------------ PIM

    def _roleassignmentschedulerequests_get(self, tenant: Tenant, scope: str, name: str | None,
                                            call: Call) -> Reply:
        item = tenant.requests.get((name or "").lower())
        if item is None:
            return error(404, "RoleAssignmentScheduleRequestNotFound", f"{name} not found")
        return Reply(200, item)

    def _roleassignmentschedulerequests_put(self, tenant: Tenant, scope: str, name: str | None,
                                            call: Call) -> Reply:
        assert name is not None
        if name.lower() in tenant.requests:
            # Requests are immutable; the adapter reads a request back rather than sending it twice.
            return error(409, "Conflict", "A role assignment schedule request with this name already exists.")
        properties = (call.json() or {}).get("properties") or {}
        principal = str(properties.get("principalId", "")).lower()
        guid = str(properties.get("roleDefinitionId", "")).rsplit("/", 1)[-1].lower()
        if guid not in {g.lower() for g in AZURE_BUILTIN_ROLES.values()}:
            return error(400, "RoleDefinitionDoesNotExist", f"The role definition {guid} does not exist.")
        live = self._live_schedule(tenant, scope, principal, guid)
        kind = properties.get("requestType")
        if kind == "AdminRemove":
            if live is None:
                return error(400, "RoleAssignmentDoesNotExist", "The Role assignment does not exist.")
            del tenant.schedules[live["name"]]
            item = tenant.requests[name.lower()] = self._request(scope, name.lower(), properties, "Revoked")
            return Reply(201, item)
        if kind not in ("AdminAssign", "AdminExtend"):
            return error(400, "InvalidRequestType", str(kind))
        expiration = (properties.get("scheduleInfo") or {}).get("expiration") or {}
        end: datetime | None = None
        if expiration.get("type") == "AfterDuration":
            try:
                length = parse_duration(str(expiration.get("duration")))
            except ValueError:
                return error(400, "InvalidScheduleInfo", f"bad duration {expiration.get('duration')!r}")
            if tenant.max_pim_duration is not None and length > tenant.max_pim_duration:
                return error(400, "RoleAssignmentRequestPolicyValidationFailed",
                             'The following policy rules failed: ["ExpirationRule"]')
            end = self.now() + length
        if kind == "AdminExtend":
            # The live schedule keeps its name and the request that made it; only its end moves.
            if live is None:
                return error(400, "RoleAssignmentDoesNotExist", "The Role assignment does not exist.")
            live["_end"] = end
            live["properties"]["endDateTime"] = iso(end) if end else None
            item = tenant.requests[name.lower()] = self._request(scope, name.lower(), properties, "Provisioned")
            item["properties"]["targetRoleAssignmentScheduleId"] = live["name"]
            return Reply(201, item)
        if live is not None:
            return error(400, "RoleAssignmentExists", "The Role assignment already exists.")
        item = tenant.requests[name.lower()] = self._request(scope, name.lower(), properties, "Provisioned")
        schedule = self._schedule(tenant, scope, name.lower(), principal, guid, end)
        item["properties"]["targetRoleAssignmentScheduleId"] = schedule["name"]
        return Reply(201, item)

    def _roleassignmentschedules_get(self, tenant: Tenant, scope: str, name: str | None,
                                     call: Call) -> Reply:
        now = self.now()
        for key in [k for k, s in tenant.schedules.items() if s["_end"] is not None and s["_end"] <= now]:
            del tenant.schedules[key]  # Azure ended it
        items = [{k: v for k, v in s.items() if k != "_end"} for s in tenant.schedules.values()]
        found = self._filtered(items, scope, call.query.get("$filter", ""))
        if isinstance(found, Reply):
            return found
        return self._page(found, call, "roleAssignmentSchedules", scope)

    def _live_schedule(self, tenant: Tenant, scope: str, principal: str, guid: str) -> dict[str, Any] | None:
        now = self.now()
        return next((s for s in tenant.schedules.values()
                     if (s["_end"] is None or s["_end"] > now) and self._grant(s) == (norm(scope), principal, guid)),
                    None)

    def _request(self, scope: str, name: str, properties: dict[str, Any], status: str) -> dict[str, Any]:
        return {
            "id": f"{scope}/providers/Microsoft.Authorization/RoleAssignmentScheduleRequests/{name}",
            "name": name,
            "type": "Microsoft.Authorization/RoleAssignmentScheduleRequests",
            "properties": {**properties, "scope": scope, "status": status, "principalType": "User",
                           "createdOn": iso(self.now()), "targetRoleAssignmentScheduleId": None},
        }

    def _schedule(self, tenant: Tenant, scope: str, request_name: str, principal: str, guid: str,
                  end: datetime | None) -> dict[str, Any]:
        name = str(uuid.uuid4())
        shown = PIM_ALIAS.replace("microsoft.subscription", "Microsoft.Subscription") + scope if re.fullmatch(
            r"/subscriptions/[^/]+", scope, re.IGNORECASE) else scope
        schedule = {
            "id": f"{shown}/providers/Microsoft.Authorization/RoleAssignmentSchedules/{name}",
            "name": name,
            "type": "Microsoft.Authorization/RoleAssignmentSchedules",
            "properties": {
                "scope": shown, "roleDefinitionId": role_id(scope, guid), "principalId": principal,
                "principalType": "User", "status": "Provisioned", "assignmentType": "Assigned",
                "memberType": "Direct",
                "roleAssignmentScheduleRequestId":
                    f"{scope}/providers/Microsoft.Authorization/RoleAssignmentScheduleRequests/{request_name}",
                "startDateTime": iso(self.now()), "endDateTime": iso(end) if end else None,
                "createdOn": iso(self.now()),
            },
            "_end": end,
        }
        tenant.schedules[name] = schedule
        return schedule

    # ------------------------------------------------------------ lists

    def _filtered(self, items: list[dict[str, Any]], scope: str, wanted: str) -> list[dict[str, Any]] | Reply:
        if not wanted:
            return [i for i in items if related(i["properties"]["scope"], scope, above=True, below=True)]
        if wanted == "atScope()":
            return [i for i in items if related(i["properties"]["scope"], scope, above=True, below=False)]
        by_principal = re.fullmatch(r"principalId eq '([0-9a-fA-F-]+)'", wanted)
        if by_principal:
            principal = by_principal.group(1).lower()
            return [i for i in items if i["properties"]["principalId"].lower() == principal
                    and related(i["properties"]["scope"], scope, above=True, below=True)]
        return error(400, "InvalidFilter", f"unsupported filter {wanted!r}")

    def _page(self, items: list[dict[str, Any]], call: Call, kind: str, scope: str) -> Reply:
        items = sorted(items, key=lambda i: i["name"])
        start = int(call.query.get("$skiptoken", "0"))
        body: dict[str, Any] = {"value": items[start:start + self.page_size]}
        if start + self.page_size < len(items):
            query = {k: v for k, v in call.query.items() if k != "$skiptoken"}
            query["$skiptoken"] = str(start + self.page_size)
            body["nextLink"] = f"{self.url}{call.path}?{urlencode(query)}"
        return Reply(200, body)


_shared: FakeArm | None = None
_shared_lock = threading.Lock()


def shared_arm() -> FakeArm:
    """One server for the whole test session (tenants keep tests apart); a daemon thread ends with it."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = FakeArm()
        return _shared


def fake_rbac(tmp: Path | None = None, target_scopes: tuple[str, ...] = (CONTRACT_SUBSCRIPTION,)) -> AzureRbac:
    """An AzureRbac against a fresh tenant of the shared fake ARM (the grant-provider contract's factory)."""
    _, base_url = shared_arm().new_tenant()
    return AzureRbac(lambda: TOKEN, base_url, target_scopes=target_scopes)


CONTRACT_COSMOS = f"{CONTRACT_SUBSCRIPTION}/resourceGroups/rg-payments-prod/providers/Microsoft.DocumentDB" \
                  "/databaseAccounts/cosmos-payments"


def fake_cosmos_data(accounts: tuple[str, ...] = (CONTRACT_COSMOS,)) -> tuple[CosmosDataGrants, Tenant]:
    """A CosmosDataGrants against a fresh tenant of the shared fake ARM that has these accounts."""
    arm = shared_arm()
    tenant, base_url = arm.new_tenant()
    for account in accounts:
        arm.seed_cosmos_account(tenant.cosmos, account)
        arm.seed_cosmos_database(tenant.cosmos, account, "payments", ("ledger",))
    return CosmosDataGrants(lambda: TOKEN, base_url, accounts=accounts, poll_interval=0.0), tenant
