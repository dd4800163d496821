"""Azure RBAC as ARM defines it, without any SDK: the built-in role catalog, the principal types a
role assignment may name, and ARM's validation of a new assignment. The simulated plane, the ARM adapter,
the infrastructure's allowed roles and the tests' fake ARM all read these."""

from __future__ import annotations

from typing import Final

from ...domain.errors import PermanentError
from ...domain.ids import is_guid
from ...domain.ledger import GrantKey

# Azure built-in role names → role definition ids, as published by Microsoft (the same id in every
# tenant). The local plane knows exactly these roles; infra and policy checks import this catalog.
AZURE_BUILTIN_ROLES: Final[dict[str, str]] = {
    "Owner": "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
    "Contributor": "b24988ac-6180-42a0-ab88-20f7382dd24c",
    "Reader": "acdd72a7-3385-48ef-bd42-f606fba81ae7",
    "User Access Administrator": "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
    "Role Based Access Control Administrator": "f58310d9-a9f6-439a-9e8d-f62e7b41a168",
    "Network Contributor": "4d97b98b-1d4f-4787-a291-c67834d212e7",
    "Key Vault Administrator": "00482a5a-887f-4fb3-b363-3b7fe8e74483",
    "Key Vault Reader": "21090545-7ca7-4776-b22c-e363652d74d2",
    "Key Vault Secrets Officer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Blob Data Contributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "Storage Blob Data Reader": "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
    "Azure Kubernetes Service Cluster Admin Role": "0ab0b1a8-8aac-4efd-b8c2-3ee1fb270be8",
    "Azure Kubernetes Service Cluster User Role": "4abbcc35-e782-43d8-92c5-2d3f1bd2253f",
    "Azure Kubernetes Service RBAC Admin": "3498e952-d568-435e-9b2c-8d77e338d7f7",
    "Azure Kubernetes Service RBAC Cluster Admin": "b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b",
    "Monitoring Contributor": "749f88d5-cbae-40b8-bcfc-e573ddc772fa",
    "Monitoring Reader": "43d0d8ad-25c7-4714-9337-8ba259a9fe05",
    "Website Contributor": "de139f84-1756-47ae-9be6-808fbbe84772",
    "SQL DB Contributor": "9b7fa17d-e63e-47b0-bb0a-15c516ac86ec",
}

_ROLE_IDS_BY_NAME: Final = {name.lower(): role_id for name, role_id in AZURE_BUILTIN_ROLES.items()}
_ROLE_IDS: Final = frozenset(AZURE_BUILTIN_ROLES.values())

PRINCIPAL_TYPES: Final = frozenset({"User", "Group", "ServicePrincipal", "ForeignGroup", "Device"})



def resolve_builtin_role(role: str) -> str:
    """A built-in role name (any case), role definition GUID or role definition resource id → the GUID,
    lower-cased. PermanentError naming the role when the catalog does not know it."""
    candidate = role.strip()
    if "/roledefinitions/" in candidate.lower():
        candidate = candidate.rstrip("/").rsplit("/", 1)[-1]
    lowered = candidate.lower()
    if lowered in _ROLE_IDS:
        return lowered
    role_id = _ROLE_IDS_BY_NAME.get(lowered)
    if role_id is None:
        raise PermanentError(
            f"RoleDefinitionDoesNotExist: unknown role {role!r} (not a built-in role name or id)"
        )
    return role_id


def check_new_assignment(key: GrantKey, name: str, principal_type: str) -> None:
    """ARM's validation of a role-assignment PUT, before any existing state is looked at."""
    if not is_guid(name.lower()):
        raise PermanentError(f"InvalidRoleAssignmentId: role assignment name {name!r} is not a GUID")
    if key.role_definition_id.lower() not in _ROLE_IDS:
        raise PermanentError(f"RoleDefinitionDoesNotExist: role definition {key.role_definition_id!r}")
    if principal_type not in PRINCIPAL_TYPES:
        raise PermanentError(
            f"InvalidPrincipalType: {principal_type!r} is not one of {sorted(PRINCIPAL_TYPES)}"
        )


def check_principal_type(principal_id: str, known: str | None, principal_type: str) -> None:
    """ARM refuses a PUT whose principal type is not the directory object's (400 UnmatchedPrincipalType).
    `known` is the type the plane knows the principal to have, None when it does not know it."""
    if known is not None and known != principal_type:
        raise PermanentError(
            f"UnmatchedPrincipalType: principal {principal_id} has type {known!r}, "
            f"which is different from the specified principal type {principal_type!r}"
        )


def normalized(key: GrantKey) -> GrantKey:
    """The key as ARM compares it: principal, role id and scope lower-cased."""
    return GrantKey.of(key.provider, key.principal_id, key.role_definition_id, key.scope)
