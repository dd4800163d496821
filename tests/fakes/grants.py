"""In-memory fakes of the grant provider, notifier and directory ports."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
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
from shared.ports import Members, Notice, Person


@dataclass(frozen=True)
class ProviderCall:
    """One call of a GrantProvider port method, with its arguments as they were passed."""

    method: str
    args: tuple[object, ...]


class FakeGrantProvider:
    """A GrantProvider kept in a dict, with LocalRbac's ARM semantics (a principal keeps the type its first
    assignment gave it), built-in role catalog, `seed` for pre-existing access and `inject_fault`. `name`
    is configurable so that it can stand in for any provider a request names.

    `calls` is every port call in order (a faulted call too: it was made), so tests can pin what jitgate
    asked for, not only what is left. With `deletes_take_effect` False a delete answers OK and leaves the
    assignment in place, as an eventually consistent control plane may."""

    def __init__(self, name: str = "local") -> None:
        self.name = name
        self.calls: list[ProviderCall] = []
        self.deletes_take_effect = True
        self._assignments: dict[str, Assignment] = {}  # by lower-cased name: unique in the tenant
        self._principal_types: dict[str, str] = {}  # the directory, as far as assignments have shown it
        self._lock = threading.Lock()
        self._faults = FaultInjector(GRANT_OPERATIONS)

    def resolve_role(self, scope: str, role: str) -> str:
        self._called("resolve_role", scope, role)
        self._faults.check("resolve")
        return resolve_builtin_role(role)

    def find_assignment(self, key: GrantKey) -> Assignment | None:
        self._called("find_assignment", key)
        self._faults.check("find")
        key = self._own(key)
        with self._lock:
            return next((a for a in self._assignments.values() if a.key == key), None)

    def get_assignment(self, scope: str, name: str) -> Assignment | None:
        self._called("get_assignment", scope, name)
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
        self._called("create_assignment", key, name, description, principal_type, expires_at)
        self._faults.check("create")
        return self._insert(self._own(key), key.scope, name, description, principal_type)

    def delete_assignment(self, scope: str, name: str) -> None:
        self._called("delete_assignment", scope, name)
        self._faults.check("delete")
        if not self.deletes_take_effect:
            return
        with self._lock:
            found = self._assignments.get(name.lower())
            if found is not None and found.scope.lower() == scope.lower():
                del self._assignments[name.lower()]

    def list_marked(self) -> list[Assignment]:
        self._called("list_marked")
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

    def calls_to(self, method: str) -> list[ProviderCall]:
        return [call for call in self.calls if call.method == method]

    def _called(self, method: str, *args: object) -> None:
        with self._lock:
            self.calls.append(ProviderCall(method, args))

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

    def __init__(self, groups: dict[str, set[str]], names: dict[str, str] | None = None) -> None:
        self.groups = groups
        self.names = {k.lower(): v for k, v in (names or {}).items()}
        self._fault: Exception | None = None

    def groups_of(self, principal_id: str) -> frozenset[str]:
        wanted = principal_id.lower()
        return frozenset(
            group for group, members in self.groups.items() if wanted in {m.lower() for m in members}
        )

    def members_of(self, group: str, limit: int) -> Members:
        """Members in id order, named from `names` (principal id -> display name) when given."""
        if group not in self.groups:
            raise PermanentError(f"no group {group}")
        if self._fault is not None:
            raise self._fault
        people = [Person(m.lower(), self.names.get(m.lower(), "")) for m in sorted(self.groups[group])]
        return Members(tuple(people[:limit]), len(people))

    def fail_members_of(self, error: Exception | None) -> None:
        """Make every `members_of` raise `error` (None: answer again)."""
        self._fault = error
