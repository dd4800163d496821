"""GrantProvider `azure-rbac`: Azure role assignments through the Azure Resource Manager REST API
(Microsoft.Authorization, api-version 2022-04-01), with httpx over `arm.ArmClient`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import httpx

from ...domain.errors import AssignmentExists, PermanentError, TransientError
from ...domain.ids import is_guid
from ...domain.ledger import MARKER_PREFIX, Assignment, GrantKey
from .arm import (
    ARM_ENDPOINT,
    AUTHORIZATION,
    RBAC_API_VERSION,
    ArmClient,
    ArmFailure,
    RoleCatalog,
    TokenProvider,
    at_or_below,
    checked_scope,
    guid_of,
    json_object,
    role_definition_resource_id,
    scope_key,
)
from .roles import PRINCIPAL_TYPES

log = logging.getLogger("jitgate.azure")


class AzureRbac:
    """GrantProvider `azure-rbac` over ARM role assignments.

    Creates under the deterministic name jitgate chooses (a retried create is a no-op); the same grant
    under another name raises AssignmentExists with that name; a not-yet-replicated principal, throttling,
    5xx and timeouts are TransientError (with the server's Retry-After); 403 and other refusals are
    PermanentError. A delete is read back before it returns. `list_marked` looks at and below
    `target_scopes` (the subscriptions or resource groups jitgate grants in) for assignments whose
    description carries jitgate's marker. Azure RBAC cannot expire an assignment, so `expires_at` is
    ignored: jitgate's scheduled revoke and reconcile end the grant.
    """

    name: str = "azure-rbac"

    def __init__(
        self,
        token_provider: TokenProvider,
        base_url: str = ARM_ENDPOINT,
        http: httpx.Client | None = None,
        *,
        target_scopes: Sequence[str],
    ) -> None:
        self._arm = ArmClient(token_provider, base_url, http)
        self._roles = RoleCatalog(self._arm)
        self.target_scopes = tuple(checked_scope(scope) for scope in target_scopes)

    def close(self) -> None:
        self._arm.close()

    # ------------------------------------------------------------ GrantProvider

    def resolve_role(self, scope: str, role: str) -> str:
        return self._roles.resolve(scope, role)

    def find_assignment(self, key: GrantKey) -> Assignment | None:
        key = self._own(key)
        scope = checked_scope(key.scope)
        items = self._arm.pages(
            f"{scope}{AUTHORIZATION}/roleAssignments",
            RBAC_API_VERSION,
            f"find role assignment at {scope}",
            {"$filter": f"principalId eq '{key.principal_id}'"},
        )
        # The filter returns assignments at, above and below the scope: keep the exact grant.
        return next((a for a in map(self._assignment, items) if a.key == key), None)

    def get_assignment(self, scope: str, name: str) -> Assignment | None:
        if not is_guid(name.lower()):
            return None  # ARM names are GUIDs; nothing else can exist
        scope = checked_scope(scope)
        item = self._arm.get(_assignment_path(scope, name), RBAC_API_VERSION, f"get role assignment {name}")
        if item is None:
            return None
        found = self._assignment(item)
        return found if scope_key(found.scope) == scope_key(scope) else None

    def create_assignment(
        self,
        key: GrantKey,
        name: str,
        description: str,
        principal_type: str = "User",
        expires_at: datetime | None = None,
    ) -> Assignment:
        wanted = self._own(key)
        scope = checked_scope(key.scope)
        if not is_guid(name.lower()):
            raise PermanentError(f"InvalidRoleAssignmentId: role assignment name {name!r} is not a GUID")
        if principal_type not in PRINCIPAL_TYPES:
            raise PermanentError(f"InvalidPrincipalType: {principal_type!r} is not one of {sorted(PRINCIPAL_TYPES)}")
        what = f"create role assignment {name} at {scope}"
        body = {
            "properties": {
                "roleDefinitionId": role_definition_resource_id(scope, wanted.role_definition_id),
                "principalId": wanted.principal_id,
                # NB. Naming the principal type lets ARM go ahead before the principal has replicated (the
                # usual cause of PrincipalNotFound right after it is created); a type that is not the
                # directory object's is refused (UnmatchedPrincipalType), so it must be the holder's own.
                "principalType": principal_type,
                "description": description,
            }
        }
        response = self._arm.send("PUT", _assignment_path(scope, name), RBAC_API_VERSION, what, body=body)
        if response.is_success:
            return self._assignment(json_object(response, what))
        failure = ArmFailure.of(response)
        if failure.code != "RoleAssignmentExists":
            raise failure.error(what)
        # The grant exists under another name: someone else's. (ARM answers a retried PUT under our own
        # name 201 with the assignment; should it ever name our own assignment here, the create was a retry.)
        existing = self.find_assignment(wanted)
        if existing is None:
            raise TransientError(f"{what}: RoleAssignmentExists but the assignment is not visible yet",
                                 retry_after=failure.retry_after)
        if existing.name == name.lower():
            return existing
        raise AssignmentExists(existing.name)

    def delete_assignment(self, scope: str, name: str) -> None:
        if not is_guid(name.lower()):
            return
        scope = checked_scope(scope)
        what = f"delete role assignment {name} at {scope}"
        response = self._arm.send("DELETE", _assignment_path(scope, name), RBAC_API_VERSION, what)
        if not (response.is_success or response.status_code == 404):
            raise ArmFailure.of(response).error(what)
        if self.get_assignment(scope, name) is not None:
            raise TransientError(f"{what}: still present after the delete")

    def list_marked(self) -> list[Assignment]:
        marked: dict[str, Assignment] = {}
        for target in self.target_scopes:
            # No filter: ARM lists assignments at, above and below the scope; keep those at or below.
            items = self._arm.pages(
                f"{target}{AUTHORIZATION}/roleAssignments", RBAC_API_VERSION, f"list role assignments at {target}"
            )
            for assignment in map(self._assignment, items):
                if assignment.description.startswith(MARKER_PREFIX) and at_or_below(assignment.scope, target):
                    marked[assignment.name] = assignment
        return sorted(marked.values(), key=lambda a: (scope_key(a.scope), a.name))

    # ------------------------------------------------------------ internals

    def _own(self, key: GrantKey) -> GrantKey:
        if key.provider != self.name:
            raise PermanentError(f"grant key of provider {key.provider!r} sent to provider {self.name!r}")
        normal = GrantKey.of(key.provider, key.principal_id, key.role_definition_id, key.scope)
        if not is_guid(normal.principal_id):
            raise PermanentError(f"PrincipalNotFound: principal id {key.principal_id!r} is not an object id")
        return normal

    def _assignment(self, item: dict[str, Any]) -> Assignment:
        try:
            properties = item["properties"]
            return Assignment(
                name=str(item["name"]).lower(),
                provider=self.name,
                principal_id=str(properties["principalId"]).lower(),
                principal_type=str(properties.get("principalType") or "User"),
                role_definition_id=guid_of(str(properties["roleDefinitionId"])),
                scope=str(properties["scope"]),
                description=str(properties.get("description") or ""),
            )
        except (KeyError, TypeError) as exc:
            raise PermanentError(f"unexpected role assignment shape from ARM: missing {exc}") from exc


def _assignment_path(scope: str, name: str) -> str:
    return f"{scope}{AUTHORIZATION}/roleAssignments/{name.lower()}"
