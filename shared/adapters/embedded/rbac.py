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

from ...domain.errors import AssignmentExists, PermanentError, TransientError
from ...domain.ledger import MARKER_PREFIX, Assignment, GrantKey
from ..azure.roles import check_new_assignment, check_principal_type, normalized, resolve_builtin_role
from .sqlite_file import SqliteFile

# The calls a simulated plane can be told to fail; "*" in `inject_fault` matches any of them.
GRANT_OPERATIONS: Final = frozenset({"resolve", "create", "delete", "get", "find", "list"})


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
    # The simulated directory: a principal's type is what its first assignment said, as ARM checks every
    # PUT against the directory object's type. Files from before it learn from the assignments they hold.
    """CREATE TABLE IF NOT EXISTS principals (
        principal_id TEXT PRIMARY KEY,
        principal_type TEXT NOT NULL
    )""",
    "INSERT OR IGNORE INTO principals SELECT principal_id, principal_type FROM role_assignments",
)

_COLUMNS = "name, scope, principal_id, principal_type, role_definition_id, description"
_BUSY_TIMEOUT_SECONDS = 30.0


class LocalRbac:
    """GrantProvider `local`: Azure RBAC role assignments (built-in roles only) simulated in SQLite.

    Follows ARM: creating the same name again for the same grant only updates its description; the same
    name for another grant is refused (RoleAssignmentUpdateNotPermitted); the same grant under another
    name raises AssignmentExists (RoleAssignmentExists); a principal type other than the one the principal
    was first assigned with is refused (UnmatchedPrincipalType); deleting a missing assignment succeeds.
    `expires_at` is ignored, as Azure RBAC cannot expire an assignment by itself.
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
            known = conn.execute(
                "SELECT principal_type FROM principals WHERE principal_id = ?", (key.principal_id,)
            ).fetchone()
            check_principal_type(key.principal_id, known["principal_type"] if known else None, principal_type)
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM role_assignments WHERE name = ?", (name.lower(),)
            ).fetchone()
            if row is not None:
                existing = self._assignment(row)
                if existing.key == key:
                    conn.execute("UPDATE role_assignments SET description = ? WHERE name = ?",
                                 (description, existing.name))
                    return existing.model_copy(update={"description": description})
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
            conn.execute("INSERT OR IGNORE INTO principals VALUES (?, ?)", (key.principal_id, principal_type))
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
