"""The `local` grant provider: a simulated Azure RBAC plane with ARM semantics in one SQLite file.

Role assignments live in a WAL-mode SQLite file that several threads and processes may share; every
create runs in `BEGIN IMMEDIATE`, so the name and grant-key checks and the insert are one atomic step.
Because the plane is simulated, tests can make it fail on demand (`inject_fault`); those faults live in
the process that injected them and never in the file.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from ..domain.errors import AssignmentExists, PermanentError, TransientError
from ..domain.ids import is_guid
from ..domain.ledger import MARKER_PREFIX, Assignment, GrantKey
from .sqlite_file import SqliteFile

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

# The calls a simulated plane can be told to fail; "*" in `inject_fault` matches any of them.
GRANT_OPERATIONS: Final = frozenset({"resolve", "create", "delete", "get", "find", "list"})


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


def normalized(key: GrantKey) -> GrantKey:
    """The key as ARM compares it: principal, role id and scope lower-cased."""
    return GrantKey.of(key.provider, key.principal_id, key.role_definition_id, key.scope)


@dataclass
class _Fault:
    operation: str
    error: Exception
    remaining: int


class FaultInjector:
    """Errors queued for the next calls of named operations, so reliability tests can make a simulated
    backend fail on demand. Faults are consumed first-injected first; they live only in this process."""

    def __init__(self, operations: frozenset[str]) -> None:
        self._operations = operations
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()

    def inject(self, operation: str, error: Exception, times: int = 1) -> None:
        if operation != "*" and operation not in self._operations:
            expected = ", ".join(sorted(self._operations))
            raise ValueError(f"unknown operation {operation!r}; expected '*' or one of {expected}")
        if times < 1:
            raise ValueError(f"times must be at least 1, got {times}")
        with self._lock:
            self._faults.append(_Fault(operation, error, times))

    def check(self, operation: str) -> None:
        """Raise the next fault queued for `operation` (or for "*"), if any."""
        with self._lock:
            fault = next((f for f in self._faults if f.operation in (operation, "*")), None)
            if fault is None:
                return
            fault.remaining -= 1
            if fault.remaining == 0:
                self._faults.remove(fault)
        raise fault.error


_SCHEMA = (
    # `name` alone is the primary key: ARM requires role assignment names to be unique in the whole
    # tenant, not only at their scope. Scopes compare case-insensitively, hence `scope_key`.
    """CREATE TABLE IF NOT EXISTS role_assignments (
        name TEXT PRIMARY KEY,
        scope TEXT NOT NULL,
        scope_key TEXT NOT NULL,
        principal_id TEXT NOT NULL,
        principal_type TEXT NOT NULL,
        role_definition_id TEXT NOT NULL,
        description TEXT NOT NULL
    )""",
    """CREATE UNIQUE INDEX IF NOT EXISTS role_assignments_by_grant
        ON role_assignments (scope_key, principal_id, role_definition_id)""",
)

_COLUMNS = "name, scope, principal_id, principal_type, role_definition_id, description"
_BUSY_TIMEOUT_SECONDS = 30.0


class LocalRbac:
    """GrantProvider `local`: Azure RBAC role assignments (built-in roles only) simulated in SQLite.

    Follows ARM: creating the same name again is a no-op; the same name for another grant is refused
    (RoleAssignmentUpdateNotPermitted); the same grant under another name raises AssignmentExists
    (RoleAssignmentExists); deleting a missing assignment succeeds. `expires_at` is ignored, as Azure
    RBAC cannot expire an assignment by itself.
    """

    name: str = "local"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = SqliteFile(path, _BUSY_TIMEOUT_SECONDS, rows=sqlite3.Row)
        self._faults = FaultInjector(GRANT_OPERATIONS)
        with self._transaction() as conn:
            for statement in _SCHEMA:
                conn.execute(statement)

    # ------------------------------------------------------------ GrantProvider

    def resolve_role(self, scope: str, role: str) -> str:
        self._faults.check("resolve")
        return resolve_builtin_role(role)

    def find_assignment(self, key: GrantKey) -> Assignment | None:
        self._faults.check("find")
        key = self._own(key)
        with self._reading() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM role_assignments"
                " WHERE scope_key = ? AND principal_id = ? AND role_definition_id = ?",
                (key.scope, key.principal_id, key.role_definition_id),
            ).fetchone()
        return self._assignment(row) if row else None

    def get_assignment(self, scope: str, name: str) -> Assignment | None:
        self._faults.check("get")
        with self._reading() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM role_assignments WHERE name = ? AND scope_key = ?",
                (name.lower(), scope.lower()),
            ).fetchone()
        return self._assignment(row) if row else None

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
        with self._transaction() as conn:
            conn.execute(
                "DELETE FROM role_assignments WHERE name = ? AND scope_key = ?", (name.lower(), scope.lower())
            )

    def list_marked(self) -> list[Assignment]:
        self._faults.check("list")
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM role_assignments WHERE substr(description, 1, ?) = ?"
                " ORDER BY scope_key, name",
                (len(MARKER_PREFIX), MARKER_PREFIX),
            ).fetchall()
        return [self._assignment(row) for row in rows]

    # ------------------------------------------------------------ simulation controls

    def seed(
        self, principal_id: str, role: str, scope: str, principal_type: str = "User", name: str | None = None
    ) -> Assignment:
        """Create an assignment that jitgate did not make (no marker): access someone already had."""
        key = GrantKey.of(self.name, principal_id, resolve_builtin_role(role), scope)
        return self._insert(key, scope, name or str(uuid.uuid4()), "", principal_type)

    def all_assignments(self) -> list[Assignment]:
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM role_assignments ORDER BY scope_key, name"
            ).fetchall()
        return [self._assignment(row) for row in rows]

    def inject_fault(self, operation: str, error: Exception, times: int = 1) -> None:
        """Make the next `times` calls of `operation` (create, delete, get, find, list, resolve or "*")
        raise `error` before doing anything. Only this instance sees the fault."""
        self._faults.inject(operation, error, times)

    def close(self) -> None:
        """Close every thread's connection; the file stays usable by new instances."""
        self._db.close()

    # ------------------------------------------------------------ internals

    def _insert(
        self, key: GrantKey, scope: str, name: str, description: str, principal_type: str
    ) -> Assignment:
        check_new_assignment(key, name, principal_type)
        with self._transaction() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM role_assignments WHERE name = ?", (name.lower(),)
            ).fetchone()
            if row is not None:
                existing = self._assignment(row)
                if existing.key == key:
                    return existing
                raise PermanentError(
                    f"RoleAssignmentUpdateNotPermitted: assignment {name} already grants another "
                    "principal, role or scope; its properties cannot be changed"
                )
            row = conn.execute(
                "SELECT name FROM role_assignments"
                " WHERE scope_key = ? AND principal_id = ? AND role_definition_id = ?",
                (key.scope, key.principal_id, key.role_definition_id),
            ).fetchone()
            if row is not None:
                raise AssignmentExists(row["name"])
            conn.execute(
                f"INSERT INTO role_assignments ({_COLUMNS}, scope_key) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name.lower(), scope, key.principal_id, principal_type, key.role_definition_id, description,
                 key.scope),
            )
        return Assignment(
            name=name.lower(),
            provider=self.name,
            principal_id=key.principal_id,
            principal_type=principal_type,
            role_definition_id=key.role_definition_id,
            scope=scope,
            description=description,
        )

    def _own(self, key: GrantKey) -> GrantKey:
        if key.provider != self.name:
            raise PermanentError(f"grant key of provider {key.provider!r} sent to provider {self.name!r}")
        return normalized(key)

    def _assignment(self, row: sqlite3.Row) -> Assignment:
        return Assignment(
            name=row["name"],
            provider=self.name,
            principal_id=row["principal_id"],
            principal_type=row["principal_type"],
            role_definition_id=row["role_definition_id"],
            scope=row["scope"],
            description=row["description"],
        )

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        try:
            yield self._db.connection()
        except sqlite3.OperationalError as exc:
            raise TransientError(f"local RBAC store {self.path}: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            with self._db.transaction() as conn:
                yield conn
        except sqlite3.OperationalError as exc:
            raise TransientError(f"local RBAC store {self.path}: {exc}") from exc
