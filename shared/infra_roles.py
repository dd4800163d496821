"""The Azure roles jitgate's function identity may hand out, read from the policy and written for the infra.

The function identity holds *Role Based Access Control Administrator* on each target scope, constrained
by an ABAC condition to the role definitions some policy rule can grant, for users and groups only.
`render` writes those role definition ids and the condition to `infra/allowed-roles.json`, which both
`infra/bicep` and `infra/terraform` load, so the policy stays the one source of truth: a role the
policy does not allow is one Azure refuses to let jitgate assign.

The same file lists, under `cosmosData`, the Cosmos DB data-plane role definitions the `cosmos-data` provider
may assign (built-in names resolved, ids as given), for the permission on the accounts' sqlRoleAssignments.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from .adapters.azure.cosmos_data import COSMOS_BUILTIN_ROLES
from .adapters.azure.roles import AZURE_BUILTIN_ROLES, resolve_builtin_role
from .domain.decision import Outcome
from .domain.errors import PermanentError, PolicyError
from .domain.ids import is_guid
from .domain.policy import ANY, Policy, Rule

PROJECT_ROOT: Final = Path(__file__).resolve().parent.parent
ALLOWED_ROLES_FILE: Final = PROJECT_ROOT / "infra" / "allowed-roles.json"

# The providers whose grants are Azure role assignments made by the function identity.
AZURE_PROVIDERS: Final = ("azure-rbac", "azure-pim", "local")
PRINCIPAL_TYPES: Final = ("User", "Group")

# Roles that can themselves assign roles: handed out by jitgate, they would let the holder escape every
# rule. The example policy denies them first; this keeps a later rule from ever reaching the condition.
NEVER_DELEGATED: Final = frozenset(
    AZURE_BUILTIN_ROLES[name]
    for name in ("Owner", "User Access Administrator", "Role Based Access Control Administrator")
)


def allowed_role_ids(policy: Policy) -> list[str]:
    """The role definition GUIDs (lower-case, sorted, unique) that some non-deny rule of an Azure provider
    can grant. Role names are resolved through the built-in role catalog; GUIDs pass through.

    PolicyError names every rule that allows any role ("*"), names a role the catalog does not know, or
    allows a role that can assign roles.
    """
    return sorted(set(_resolve(policy).values()))


def grant_condition(role_ids: Iterable[str], principal_types: Iterable[str] = PRINCIPAL_TYPES) -> str:
    """The ABAC condition (version 2.0) on the function identity's Role Based Access Control Administrator
    assignments: write and delete only assignments of these role definitions, to these principal types."""
    roles = ", ".join(role_ids)
    types = ", ".join(f"'{t}'" for t in principal_types)
    clauses = []
    for action, source in (("write", "Request"), ("delete", "Resource")):
        clauses.append(
            f"((!(ActionMatches{{'Microsoft.Authorization/roleAssignments/{action}'}}))"
            f" OR (@{source}[Microsoft.Authorization/roleAssignments:RoleDefinitionId]"
            f" ForAnyOfAnyValues:GuidEquals {{{roles}}}"
            f" AND @{source}[Microsoft.Authorization/roleAssignments:PrincipalType]"
            f" ForAnyOfAnyValues:StringEqualsIgnoreCase {{{types}}}))"
        )
    return " AND ".join(clauses)


def render(policy: Policy) -> str:
    """The content of infra/allowed-roles.json for this policy (deterministic, so a stale file shows)."""
    resolved = _resolve(policy)
    role_ids = sorted(set(resolved.values()))
    source = project_path(policy.source)
    document = {
        "$comment": f"Generated from {source} by `jitgate infra roles --write`; do not edit by hand.",
        "policy": source,
        "roles": dict(sorted(resolved.items(), key=lambda item: item[0].lower())),
        "roleDefinitionIds": role_ids,
        "principalTypes": list(PRINCIPAL_TYPES),
        "condition": grant_condition(role_ids),
        "conditionVersion": "2.0",
        "cosmosData": cosmos_data_roles(policy),
    }
    return json.dumps(document, indent=2) + "\n"


def cosmos_data_roles(policy: Policy) -> dict[str, object]:
    """The Cosmos DB data-plane role definitions some non-deny rule lets `cosmos-data` assign: role as written →
    role definition GUID, and the GUIDs. PolicyError names a rule that allows any role, or names a role of its own
    for cosmos-data that is no built-in's name (give its id). A rule for every provider contributes the roles
    that can be Cosmos DB ones."""
    builtin = {name.lower(): guid for name, guid in COSMOS_BUILTIN_ROLES.items()}
    resolved: dict[str, str] = {}
    errors: list[str] = []
    for rule in policy.rules:
        if rule.outcome is Outcome.DENY or (rule.providers is not None and "cosmos-data" not in rule.providers):
            continue
        for role in rule.roles if rule.roles is not None else (ANY,):
            if role == ANY:
                errors.append(f"{_where(policy, rule)} allows any role ('*') for cosmos-data; name the role "
                              "definitions in the rule")
                continue
            guid = role.lower() if is_guid(role.lower()) else builtin.get(role.lower())
            if guid is None:
                if rule.providers is not None:
                    errors.append(f"{_where(policy, rule)} names role {role!r}, which is not a Cosmos DB built-in "
                                  "role name; give its role definition id (GUID) instead")
                continue
            resolved.setdefault(role, guid)
    if errors:
        raise PolicyError(errors)
    return {
        "$comment": "Cosmos DB data-plane role definitions the cosmos-data provider may assign (sqlRoleAssignments).",
        "roles": dict(sorted(resolved.items(), key=lambda item: item[0].lower())),
        "roleDefinitionIds": sorted(set(resolved.values())),
    }


def write_allowed_roles(policy: Policy, path: Path = ALLOWED_ROLES_FILE) -> bool:
    """Write `render(policy)` to `path`; True when the file changed."""
    text = render(policy)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.write_text(text, encoding="utf-8")
    return True


def _resolve(policy: Policy) -> dict[str, str]:
    """Role as written → role definition GUID, for every role an Azure provider's non-deny rule allows."""
    resolved: dict[str, str] = {}
    seen: set[str] = set()
    errors: list[str] = []
    for rule in policy.rules:
        if rule.outcome is Outcome.DENY:
            continue
        providers = [p for p in AZURE_PROVIDERS if rule.providers is None or p in rule.providers]
        if not providers:
            continue
        where = _where(policy, rule)
        for role in rule.roles if rule.roles is not None else (ANY,):
            if role == ANY:
                errors.append(
                    f"{where} allows any role ('*') for {', '.join(providers)}; the grant identity's condition "
                    "needs explicit roles: list them in the rule"
                )
                continue
            try:
                role_id = role.lower() if is_guid(role.lower()) else resolve_builtin_role(role)
            except PermanentError:
                errors.append(
                    f"{where} names role {role!r}, which is not an Azure built-in role name; "
                    "give its role definition id (GUID) instead"
                )
                continue
            if role_id in NEVER_DELEGATED:
                errors.append(f"{where} allows {role!r}, a role that can assign roles; jitgate never grants it")
                continue
            if role.lower() not in seen:
                seen.add(role.lower())
                resolved[role] = role_id
    if errors:
        raise PolicyError(errors)
    return resolved


def _where(policy: Policy, rule: Rule) -> str:
    return f"{policy.source}:{rule.line}: rule '{rule.name}'"


def project_path(source: str) -> str:
    """The policy's path as the function app sees it (relative to the project root), else as given."""
    path = Path(source)
    try:
        return path.resolve().relative_to(PROJECT_ROOT).as_posix()
    except (ValueError, OSError):
        return source
