"""In-memory fakes of the grant provider, notifier and directory ports."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime

from shared.adapters.azure.roles import (
    check_new_assignment,
    check_principal_type,
    normalized,
    resolve_builtin_role,
)
from shared.adapters.embedded.rbac import GRANT_OPERATIONS, FaultInjector
from shared.domain.errors import AssignmentExists, PermanentError
from shared.domain.ledger import MARKER_PREFIX, Assignment, GrantKey
from shared.ports import Notice


class FakeGrantProvider:
    """A GrantProvider kept in a dict, with LocalRbac's ARM semantics (a principal keeps the type its first
    assignment gave it), built-in role catalog, `seed` for pre-existing access and `inject_fault`. `name`
    is configurable so that it can stand in for any provider a request names."""

    def __init__(self, name: str = "local") -> None:
        self.name = name
        self._assignments: dict[str, Assignment] = {}  # by lower-cased name: unique in the tenant
        self._principal_types: dict[str, str] = {}  # the directory, as far as assignments have shown it
        self._lock = threading.Lock()
        self._faults = FaultInjector(GRANT_OPERATIONS)

    def resolve_role(self, scope: str, role: str) -> str:
        self._faults.check("resolve")
        return resolve_builtin_role(role)

    def find_assignment(self, key: GrantKey) -> Assignment | None:
        self._faults.check("find")
        key = self._own(key)
        with self._lock:
            return next((a for a in self._assignments.values() if a.key == key), None)

    def get_assignment(self, scope: str, name: str) -> Assignment | None:
        self._faults.check("get")
        with self._lock:
            found = self._assignments.get(name.lower())
        return found if found is not None and found.scope.lower() == scope.lower() else None

    def create_assignment(
        self,
        key: GrantKey,
        name: str,
        description: str,
        principal_type: str = "User",
        expires_at: datetime | None = None,
    ) -> Assignment:
        self._faults.check("create")
        return self._insert(self._own(key), key.scope, name, description, principal_type)

    def delete_assignment(self, scope: str, name: str) -> None:
        self._faults.check("delete")
        with self._lock:
            found = self._assignments.get(name.lower())
            if found is not None and found.scope.lower() == scope.lower():
                del self._assignments[name.lower()]

    def list_marked(self) -> list[Assignment]:
        self._faults.check("list")
        return [a for a in self.all_assignments() if a.description.startswith(MARKER_PREFIX)]

    def seed(
        self, principal_id: str, role: str, scope: str, principal_type: str = "User", name: str | None = None
    ) -> Assignment:
        """An assignment jitgate did not make (no marker): access someone already had."""
        key = GrantKey.of(self.name, principal_id, resolve_builtin_role(role), scope)
        return self._insert(key, scope, name or str(uuid.uuid4()), "", principal_type)

    def all_assignments(self) -> list[Assignment]:
        with self._lock:
            return sorted(self._assignments.values(), key=lambda a: (a.scope.lower(), a.name))

    def inject_fault(self, operation: str, error: Exception, times: int = 1) -> None:
        self._faults.inject(operation, error, times)

    def _insert(
        self, key: GrantKey, scope: str, name: str, description: str, principal_type: str
    ) -> Assignment:
        check_new_assignment(key, name, principal_type)
        with self._lock:
            check_principal_type(key.principal_id, self._principal_types.get(key.principal_id), principal_type)
            existing = self._assignments.get(name.lower())
            if existing is not None:
                if existing.key == key:
                    self._assignments[existing.name] = existing.model_copy(update={"description": description})
                    return self._assignments[existing.name]
                raise PermanentError(
                    f"RoleAssignmentUpdateNotPermitted: assignment {name} grants something else"
                )
            holder = next((a for a in self._assignments.values() if a.key == key), None)
            if holder is not None:
                raise AssignmentExists(holder.name)
            created = Assignment(
                name=name.lower(),
                provider=self.name,
                principal_id=key.principal_id,
                principal_type=principal_type,
                role_definition_id=key.role_definition_id,
                scope=scope,
                description=description,
            )
            self._assignments[created.name] = created
            self._principal_types.setdefault(key.principal_id, principal_type)
            return created

    def _own(self, key: GrantKey) -> GrantKey:
        if key.provider != self.name:
            raise PermanentError(f"grant key of provider {key.provider!r} sent to provider {self.name!r}")
        return normalized(key)


class FakeNotifier:
    """Keeps every notice in `.notices`; `inject_fault` makes the next sends fail (e.g. TransientError)."""

    def __init__(self) -> None:
        self.notices: list[Notice] = []
        self._faults = FaultInjector(frozenset({"notify"}))

    def notify(self, notice: Notice) -> None:
        self._faults.check("notify")
        self.notices.append(notice)

    def inject_fault(self, error: Exception, times: int = 1) -> None:
        self._faults.inject("notify", error, times)

    def of_kind(self, kind: str) -> list[Notice]:
        return [n for n in self.notices if n.kind == kind]


class FakeDirectory:
    """Group membership from a dict of group name → member principal ids (as the policy file lists them).
    Principal ids compare case-insensitively, as Entra object ids do."""

    def __init__(self, groups: dict[str, set[str]]) -> None:
        self.groups = groups

    def groups_of(self, principal_id: str) -> frozenset[str]:
        wanted = principal_id.lower()
        return frozenset(
            group for group, members in self.groups.items() if wanted in {m.lower() for m in members}
        )
