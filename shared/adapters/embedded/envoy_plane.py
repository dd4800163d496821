"""The `envoy` grant provider: jitgate's own grant plane for services behind Envoy.

What opens a route is an active hold in the ledger (domain/envoy.py decides from those). The plane keeps the
assignments the lifecycle creates and deletes for each grant key, with the same semantics as the local plane
(deterministic names, a marker, read-back after delete, orphans), so that grant, revoke and reconcile run
unchanged; and it tells whoever decides in this process (`on_change`) the moment one is created or deleted, so
that an early revoke takes effect at once here rather than at the next refresh.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from ...domain.errors import PermanentError
from ...domain.ids import is_guid
from ...domain.ledger import Assignment, GrantKey
from ...domain.request import ENVOY_ROLES
from .rbac import LocalRbac

# NB. Envoy's check names a person (the token's oid); a group's members are not looked up, so a grant to a group
# would open nothing. It is refused instead, and the request fails saying so.
PRINCIPAL_TYPES = frozenset({"User"})


class EnvoyGrants(LocalRbac):
    """GrantProvider `envoy`: roles `read` and `write` at `<service>[/<route prefix>]`, kept in one SQLite file.
    `on_change` is called with the grant key after every create and delete."""

    name: str = "envoy"

    def __init__(self, path: str | Path, on_change: Callable[[GrantKey], None] | None = None) -> None:
        super().__init__(path)
        self.on_change = on_change

    def create_assignment(
        self,
        key: GrantKey,
        name: str,
        description: str,
        principal_type: str = "User",
        expires_at: datetime | None = None,
    ) -> Assignment:
        created = super().create_assignment(key, name, description, principal_type, expires_at)
        self._changed(created.key)
        return created

    def delete_assignment(self, scope: str, name: str) -> None:
        existing = self.get_assignment(scope, name) if self.on_change is not None else None
        super().delete_assignment(scope, name)
        if existing is not None:
            self._changed(existing.key)

    def _changed(self, key: GrantKey) -> None:
        if self.on_change is not None:
            self.on_change(key)

    def _role_id(self, role: str) -> str:
        wanted = role.strip().lower()
        if wanted not in ENVOY_ROLES:
            raise PermanentError(f"unknown role {role!r}: the envoy roles are {' and '.join(ENVOY_ROLES)}")
        return wanted

    def _check_new(self, key: GrantKey, name: str, principal_type: str) -> None:
        if not is_guid(name.lower()):
            raise PermanentError(f"assignment name {name!r} is not a GUID")
        if key.role_definition_id not in ENVOY_ROLES:
            raise PermanentError(f"RoleDefinitionDoesNotExist: no envoy role {key.role_definition_id!r}")
        if principal_type not in PRINCIPAL_TYPES:
            raise PermanentError(f"a {principal_type} cannot be granted an envoy route: Envoy's check names one person "
                                 "(the token's oid), so ask for each user")
