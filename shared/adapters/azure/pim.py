"""GrantProvider `azure-pim`: time-bound Azure role assignments through Privileged Identity Management
(ARM `roleAssignmentScheduleRequests`, api-version 2020-10-01).

A grant is an `AdminAssign` request whose schedule expires `AfterDuration` (the time left until the hold's
`expires_at`), so Azure itself ends the grant even if jitgate is down; jitgate's own revoke is an
`AdminRemove` request. PIM names its schedules itself, so a grant jitgate made is known by the marker in
the justification of the request that created it, and is named by its grant key's deterministic
`assignment_name()` like every other provider's. Role resolution and the ARM plumbing are `arm`'s.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import httpx

from ...clock import SystemClock
from ...domain.audit import format_instant
from ...domain.errors import AssignmentExists, PermanentError, TransientError
from ...domain.ids import JITGATE_NAMESPACE, is_guid
from ...domain.ledger import MARKER_PREFIX, Assignment, GrantKey
from ...ports import Clock
from .arm import (
    ARM_ENDPOINT,
    AUTHORIZATION,
    ArmClient,
    ArmFailure,
    RoleCatalog,
    TokenProvider,
    at_or_below,
    canonical_scope,
    checked_scope,
    guid_of,
    role_definition_resource_id,
    scope_key,
)

PIM_API_VERSION: Final = "2020-10-01"

# Request and schedule states after which nothing is (or will be) granted.
_ENDED: Final = frozenset({
    "Denied", "AdminDenied", "Canceled", "Failed", "FailedAsResourceIsLocked", "Invalid", "Revoked",
    "TimedOut", "Expired",
})
# NB. PIM refuses assignments shorter than five minutes; the hold's own expiry still ends the grant on time
# through jitgate's revoke, PIM's expiry is the second line of defence.
MIN_DURATION: Final = timedelta(minutes=5)


class AzurePim:
    """GrantProvider `azure-pim`: active PIM role assignments that expire by themselves.

    Every call is idempotent: request names are UUIDv5 of what they ask for, and an existing request is
    read back instead of being sent again. `create_assignment` needs `expires_at` and the grant key's own
    `assignment_name()` as `name`. Reads use `roleAssignmentSchedules` (direct assignments at exactly the
    scope, not expired); `list_marked` looks at and below `target_scopes`.
    """

    name: str = "azure-pim"

    def __init__(
        self,
        token_provider: TokenProvider,
        base_url: str = ARM_ENDPOINT,
        http: httpx.Client | None = None,
        *,
        target_scopes: Sequence[str],
        clock: Clock | None = None,
    ) -> None:
        self._arm = ArmClient(token_provider, base_url, http)
        self._roles = RoleCatalog(self._arm)
        self._clock = clock or SystemClock()
        self.target_scopes = tuple(checked_scope(scope) for scope in target_scopes)
        self._justifications: dict[str, str] = {}  # request id -> justification; requests never change
        self._ends: dict[str, datetime | None] = {}  # assignment name -> its schedule's end, as last listed

    def close(self) -> None:
        self._arm.close()

    # ------------------------------------------------------------ GrantProvider

    def resolve_role(self, scope: str, role: str) -> str:
        return self._roles.resolve(scope, role)

    def find_assignment(self, key: GrantKey) -> Assignment | None:
        key = self._own(key)
        found = [a for a in self._schedules(key.scope, key.principal_id) if a.key == key]
        found.sort(key=lambda a: a.marked_request_id is None)  # jitgate's own first, should there be two
        return found[0] if found else None

    def get_assignment(self, scope: str, name: str) -> Assignment | None:
        return next((a for a in self._schedules(scope) if a.name == name.lower()), None)

    def create_assignment(
        self,
        key: GrantKey,
        name: str,
        description: str,
        principal_type: str = "User",
        expires_at: datetime | None = None,
    ) -> Assignment:
        key = self._own(key)
        if name.lower() != key.assignment_name():
            raise PermanentError(
                f"InvalidRoleAssignmentId: azure-pim names a grant by its key ({key.assignment_name()}), not {name!r}"
            )
        if expires_at is None:
            raise PermanentError("azure-pim grants must expire: no expires_at given")
        existing = self.find_assignment(key)
        if existing is not None:
            if existing.name == key.assignment_name():
                return self._extend(key, existing, expires_at)
            raise AssignmentExists(existing.name)
        scope = checked_scope(key.scope)
        request_name = _request_name("assign", key.assignment_name(), format_instant(expires_at), description)
        path = _request_path(scope, request_name)
        what = f"PIM AdminAssign {request_name} at {scope}"
        request = self._arm.get(path, PIM_API_VERSION, what)  # a retry finds its first attempt
        if request is None:
            now = self._clock.now()
            body = _schedule_request(key, scope, "AdminAssign", description, now, expires_at)
            request = self._put(path, body, what, key)
        status = str((request.get("properties") or {}).get("status") or "")
        if status in _ENDED:
            raise PermanentError(f"{what}: request {status}")
        return Assignment(
            name=key.assignment_name(),
            provider=self.name,
            principal_id=key.principal_id,
            principal_type=principal_type,
            role_definition_id=key.role_definition_id,
            scope=key.scope,
            description=description,
        )

    def delete_assignment(self, scope: str, name: str) -> None:
        scope = checked_scope(scope)
        found = self._schedule_named(scope, name)
        if found is None:
            return
        assignment, schedule_name = found
        request_name = _request_name("remove", schedule_name)
        path = _request_path(scope, request_name)
        what = f"PIM AdminRemove {request_name} at {scope}"
        if self._arm.get(path, PIM_API_VERSION, what) is None:
            body = {
                "properties": {
                    "principalId": assignment.principal_id,
                    "roleDefinitionId": role_definition_resource_id(scope, assignment.role_definition_id),
                    "requestType": "AdminRemove",
                    "justification": "time-boxed grant revoked by jitgate",
                }
            }
            response = self._arm.send("PUT", path, PIM_API_VERSION, what, body=body)
            if not response.is_success:
                failure = ArmFailure.of(response)
                if failure.code != "RoleAssignmentDoesNotExist":  # gone already (expired, or removed)
                    raise failure.error(what)
        if self._schedule_named(scope, name) is not None:
            raise TransientError(f"{what}: the assignment is still active after the remove request")

    def list_marked(self) -> list[Assignment]:
        marked: dict[str, Assignment] = {}
        for target in self.target_scopes:
            for assignment in self._schedules(target, below=True):
                if assignment.marked_request_id is not None and at_or_below(assignment.scope, target):
                    marked[assignment.name] = assignment
        return sorted(marked.values(), key=lambda a: (scope_key(a.scope), a.name))

    # ------------------------------------------------------------ internals

    def _extend(self, key: GrantKey, existing: Assignment, expires_at: datetime) -> Assignment:
        """Make jitgate's own schedule for `key` last until `expires_at` if it would end sooner.

        Azure ends a PIM assignment at the expiry it was given, so a later hold joining the grant asks PIM
        for an `AdminExtend` of it; a shorter or equal hold asks nothing. The request keeps the original
        justification (the grant's marker), and its name is deterministic so a retry reads it back.
        """
        end = self._ends.get(existing.name)
        if end is None or expires_at <= end:  # no expiry at all, or long enough already
            return existing
        scope = checked_scope(key.scope)
        request_name = _request_name("extend", key.assignment_name(), format_instant(expires_at))
        path = _request_path(scope, request_name)
        what = f"PIM AdminExtend {request_name} at {scope}"
        request = self._arm.get(path, PIM_API_VERSION, what)  # a retry finds its first attempt
        if request is None:
            now = self._clock.now()
            body = _schedule_request(key, scope, "AdminExtend", existing.description, now, expires_at)
            request = self._put(path, body, what, key)
        status = str((request.get("properties") or {}).get("status") or "")
        if status in _ENDED:
            raise PermanentError(f"{what}: request {status}")
        return existing

    def _put(self, path: str, body: dict[str, Any], what: str, key: GrantKey) -> dict[str, Any]:
        response = self._arm.send("PUT", path, PIM_API_VERSION, what, body=body)
        if response.is_success:
            value = response.json()
            return value if isinstance(value, dict) else {}
        failure = ArmFailure.of(response)
        if failure.code == "RoleAssignmentExists":
            # Someone assigned the same role meanwhile (or our earlier attempt is still provisioning).
            existing = self.find_assignment(key)
            if existing is not None and existing.name != key.assignment_name():
                raise AssignmentExists(existing.name)
            raise TransientError(f"{what}: RoleAssignmentExists, not visible yet", retry_after=failure.retry_after)
        raise failure.error(what)

    def _schedules(self, scope: str, principal_id: str | None = None, below: bool = False) -> list[Assignment]:
        """Live direct assignments at exactly `scope` (or at and below it, with `below`)."""
        return [assignment for assignment, _ in self._schedule_pairs(scope, principal_id, below)]

    def _schedule_named(self, scope: str, name: str) -> tuple[Assignment, str] | None:
        return next(((a, s) for a, s in self._schedule_pairs(scope) if a.name == name.lower()), None)

    def _schedule_pairs(
        self, scope: str, principal_id: str | None = None, below: bool = False
    ) -> list[tuple[Assignment, str]]:
        scope = checked_scope(scope)
        if principal_id is not None:
            params = {"$filter": f"principalId eq '{principal_id}'"}
        else:
            params = {} if below else {"$filter": "atScope()"}
        items = self._arm.pages(
            f"{scope}{AUTHORIZATION}/roleAssignmentSchedules", PIM_API_VERSION, f"list PIM schedules at {scope}", params
        )
        now = self._clock.now()
        pairs = []
        for item in items:
            properties = item.get("properties") or {}
            if not self._live(properties, now):
                continue
            if not (at_or_below(str(properties.get("scope", "")), scope) if below
                    else scope_key(str(properties.get("scope", ""))) == scope_key(scope)):
                continue
            assignment = self._assignment(item)
            self._ends[assignment.name] = _end_of(properties)
            pairs.append((assignment, str(item.get("name", ""))))
        return pairs

    @staticmethod
    def _live(properties: dict[str, Any], now: datetime) -> bool:
        if properties.get("memberType", "Direct") != "Direct" or properties.get("status") in _ENDED:
            return False
        try:
            end = _end_of(properties, strict=True)
        except ValueError:
            return True  # an end we cannot read: assume the assignment is still there
        return end is None or end > now

    def _assignment(self, item: dict[str, Any]) -> Assignment:
        try:
            properties = item["properties"]
            principal = str(properties["principalId"]).lower()
            role = guid_of(str(properties["roleDefinitionId"]))
            scope = canonical_scope(str(properties["scope"]))
            justification = self._justification(str(properties.get("roleAssignmentScheduleRequestId") or ""))
        except (KeyError, TypeError) as exc:
            raise PermanentError(f"unexpected PIM schedule shape: missing {exc}") from exc
        ours = justification.startswith(MARKER_PREFIX)
        key = GrantKey.of(self.name, principal, role, scope)
        return Assignment(
            name=key.assignment_name() if ours else str(item.get("name", "")).lower(),
            provider=self.name,
            principal_id=principal,
            principal_type=str(properties.get("principalType") or "User"),
            role_definition_id=role,
            scope=scope,
            description=justification if ours else "",
        )

    def _justification(self, request_id: str) -> str:
        """The justification of the request that made a schedule ('' for assignments made outside PIM)."""
        if not request_id:
            return ""
        cached = self._justifications.get(request_id.lower())
        if cached is None:
            request = self._arm.get(request_id, PIM_API_VERSION, f"read PIM request {guid_of(request_id)}")
            cached = str(((request or {}).get("properties") or {}).get("justification") or "")
            self._justifications[request_id.lower()] = cached
        return cached

    def _own(self, key: GrantKey) -> GrantKey:
        if key.provider != self.name:
            raise PermanentError(f"grant key of provider {key.provider!r} sent to provider {self.name!r}")
        normal = GrantKey.of(key.provider, key.principal_id, key.role_definition_id, key.scope)
        if not is_guid(normal.principal_id):
            raise PermanentError(f"PrincipalNotFound: principal id {key.principal_id!r} is not an object id")
        return normal


def _request_name(*parts: str) -> str:
    """Deterministic, so that a retry reads back its first attempt instead of asking twice."""
    return str(uuid.uuid5(JITGATE_NAMESPACE, "|".join(("azure-pim", *parts))))


def _end_of(properties: dict[str, Any], strict: bool = False) -> datetime | None:
    """A schedule's end (None: it has none, or, unless `strict`, one that cannot be read)."""
    end = properties.get("endDateTime")
    if not end:
        return None
    try:
        return datetime.fromisoformat(str(end).replace("Z", "+00:00"))
    except ValueError:
        if strict:
            raise
        return None


def _request_path(scope: str, request_name: str) -> str:
    return f"{scope}{AUTHORIZATION}/roleAssignmentScheduleRequests/{request_name}"


def _duration(remaining: timedelta) -> str:
    """ISO 8601 whole minutes, rounded up, at least MIN_DURATION."""
    minutes = max(math.ceil(remaining.total_seconds() / 60), int(MIN_DURATION.total_seconds() // 60))
    return f"PT{minutes}M"


def _schedule_request(
    key: GrantKey, scope: str, request_type: str, justification: str, now: datetime, expires_at: datetime
) -> dict[str, Any]:
    """A roleAssignmentScheduleRequests body that lasts from now until `expires_at` (PIM ends it itself)."""
    return {
        "properties": {
            "principalId": key.principal_id,
            "roleDefinitionId": role_definition_resource_id(scope, key.role_definition_id),
            "requestType": request_type,
            "justification": justification,
            "scheduleInfo": {
                "startDateTime": format_instant(now),
                "expiration": {"type": "AfterDuration", "duration": _duration(expires_at - now), "endDateTime": None},
            },
        }
    }
