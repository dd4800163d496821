"""GrantProvider `gcp-iam`: Google Cloud IAM role bindings that end by themselves.

A grant is a **conditional role binding** in the allow policy of a project, folder or organization (Resource
Manager v3 `getIamPolicy` / `setIamPolicy`) or of a Cloud Storage bucket with uniform bucket-level access (the
JSON API's `GET`/`PUT /storage/v1/b/<bucket>/iam`), one binding per grant key, with one member and the condition

    title:       jitgate:<assignment name>          (jitgate's marker and the grant key's deterministic name)
    description: jitgate:<request id> (time-boxed grant; removed automatically at expiry)
    expression:  request.time < timestamp("2026-12-06T12:00:00Z")

so that IAM itself stops granting at expiry even while jitgate is down; jitgate's revoke and reconcile then
remove the binding, so expired bindings do not pile up in the policy. A later hold on the same key moves the
expiry out (never in) and the marker to its request.

Every change is a read-modify-write of the whole policy: read with `options.requestedPolicyVersion: 3` (a
policy with conditions read as version 1 hides them), written as version 3 with the etag read, so a write
based on a stale read is refused (409 ABORTED) instead of dropping someone else's bindings; then read again and
redone with backoff (Cloud Storage answers a stale etag with 412 Precondition Failed). Every change is read
back. An **unconditional** binding that already gives the member the role is access granted outside jitgate: it
is reported under the name `unconditional:<role>` (AssignmentExists on create, so the hold is preexisting) and
never touched. Conditional bindings that are not jitgate's grant the
role only under their own condition, so they are left alone and do not count as the member having the role.

Google's limits on an allow policy (1,500 principals, 250 of them groups, counted per appearance in a binding;
20 bindings of one role for one principal with different conditions) are checked before a write, with an error
that says which limit and what to do.

Roles are case-sensitive (`roles/cloudsql.instanceUser`) and grant keys are lower-cased, so a role is kept in a
key with each capital letter percent-encoded (`roles/cloudsql.instance%55ser`; `ledger.role_name` reads it back).
Principals are IAM members: `user:`, `group:` or `serviceAccount:` and an email, compared without regard to case.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import httpx

from ...domain.errors import AssignmentExists, PermanentError, TransientError
from ...domain.ids import GOOGLE_PREFIXES, is_guid
from ...domain.ledger import Assignment, GrantKey, role_name
from .rest import GoogleFailure, GoogleRest, TokenProvider

log = logging.getLogger("jitgate.gcp")

RESOURCE_MANAGER: Final = "https://cloudresourcemanager.googleapis.com"
IAM: Final = "https://iam.googleapis.com"
STORAGE: Final = "https://storage.googleapis.com"
POLICY_VERSION: Final = 3
GRANT_TITLE: Final = "jitgate:"
# NB. The IAM half of a Cloud SQL grant (adapters/gcp/cloudsql.py) is held by a `postgres` hold: its bindings
# carry another title so that gcp-iam's reconcile never takes them for orphans of its own.
LAYER_TITLE: Final = "jitgate-sql:"
UNCONDITIONAL: Final = "unconditional:"
# What signing in to a Cloud SQL instance with IAM takes (adapters/gcp/cloudsql.py grants it beside a database role).
CLOUD_SQL_ROLES: Final = ("roles/cloudsql.instanceUser", "roles/cloudsql.client")

# Google's documented limits on one allow policy (cloud.google.com/iam/quotas, "Policies and bindings").
MAX_PRINCIPALS: Final = 1500
MAX_GROUPS: Final = 250
MAX_SAME_ROLE_AND_PRINCIPAL: Final = 20

_SCOPE: Final = re.compile(r"^(projects/[a-z][a-z0-9-]{4,28}[a-z0-9]|folders/[0-9]{1,20}|organizations/[0-9]{1,20}"
                           r"|projects/_/buckets/[a-z0-9][a-z0-9._-]{1,220}[a-z0-9])$")
BUCKET_PREFIX: Final = "projects/_/buckets/"
_ROLE: Final = re.compile(
    r"^(roles/[A-Za-z][A-Za-z0-9_.]{2,99}"
    r"|(projects/[a-z][a-z0-9-]{4,28}[a-z0-9]|organizations/[0-9]{1,20})/roles/[A-Za-z0-9_.]{3,64})$"
)
# NB. Case-insensitive: grant keys keep principals lower-cased (`serviceaccount:`); IAM wants its own spelling back.
_MEMBER: Final = re.compile(r"^(user|group|serviceaccount):([^@\s:/]+@[^@\s:/]+\.[^@\s:/]+)$", re.IGNORECASE)
_PREFIXES: Final = {prefix.lower(): prefix for prefix in GOOGLE_PREFIXES.values()}
_EXPIRY: Final = re.compile(r'^request\.time < timestamp\("(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)"\)$')
_STAMP: Final = "%Y-%m-%dT%H:%M:%SZ"


def iam_role_id(role: str) -> str:
    """A role as a grant key keeps it: each capital letter (and `%`) percent-encoded, the rest as it is."""
    return "".join(f"%{ord(ch):02x}" if ch.isupper() or ch == "%" else ch for ch in role)


def member_of(principal_id: str) -> str:
    """An IAM member from a principal id (`user:`, `group:`, `serviceAccount:` + email), in canonical form:
    the prefix as IAM spells it, the email lower-cased. PermanentError for anything else."""
    found = _MEMBER.fullmatch(principal_id.strip())
    if found is None:
        raise PermanentError(
            f"PrincipalNotSupported: {principal_id!r} is not a Google principal; gcp-iam grants to "
            "user:<email>, group:<email> or serviceAccount:<email>"
        )
    return f"{_PREFIXES[found.group(1).lower()]}:{found.group(2).lower()}"


def expiry_expression(until: datetime) -> str:
    return f'request.time < timestamp("{until.astimezone(UTC).strftime(_STAMP)}")'


def expiry_of(condition: dict[str, Any] | None) -> datetime | None:
    """When a jitgate condition stops granting, or None for an expression jitgate did not write."""
    found = _EXPIRY.fullmatch(str((condition or {}).get("expression", "")).strip())
    return datetime.strptime(found.group(1), _STAMP).replace(tzinfo=UTC) if found else None


def checked_scope(scope: str) -> str:
    """A project, folder, organization or bucket as IAM names it (lower-cased: project ids and bucket names are
    lower case)."""
    candidate = scope.strip().lower()
    if not _SCOPE.fullmatch(candidate):
        raise PermanentError(f"InvalidScope: {scope!r} is not projects/<id>, folders/<number>, organizations/<number> "
                             "or projects/_/buckets/<bucket>")
    return candidate


def _members(binding: dict[str, Any]) -> list[str]:
    members = binding.get("members") or []
    return [str(m) for m in members] if isinstance(members, list) else []


def _title(binding: dict[str, Any]) -> str:
    condition = binding.get("condition")
    return str(condition.get("title") or "") if isinstance(condition, dict) else ""


def _holds_member(binding: dict[str, Any], member: str) -> bool:
    return any(m.lower() == member.lower() for m in _members(binding))


class GcpIam:
    """GrantProvider `gcp-iam` (see the module docstring). `target_scopes` are the projects, folders and
    organizations reconcile looks in for jitgate's bindings; `attempts` bounds the read-modify-write retries
    when other writers keep changing a policy."""

    name: str = "gcp-iam"

    def __init__(
        self,
        token_provider: TokenProvider,
        *,
        target_scopes: Sequence[str] = (),
        resource_manager_url: str = RESOURCE_MANAGER,
        iam_url: str = IAM,
        storage_url: str = STORAGE,
        http: httpx.Client | None = None,
        attempts: int = 10,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        bases = {"crm": resource_manager_url, "iam": iam_url, "storage": storage_url}
        self._rest = GoogleRest(token_provider, bases, http)
        self.target_scopes = tuple(checked_scope(s) for s in target_scopes)
        self.attempts = attempts
        self._sleep = sleep
        self._roles: dict[str, str] = {}
        self._roles_lock = threading.Lock()

    def close(self) -> None:
        self._rest.close()

    # ------------------------------------------------------------ GrantProvider

    def resolve_role(self, scope: str, role: str) -> str:
        return iam_role_id(self._role(role))

    def find_assignment(self, key: GrantKey) -> Assignment | None:
        scope, member, role = self._parts(key)
        return self._find(self.policy(scope), scope, member, role)

    def get_assignment(self, scope: str, name: str) -> Assignment | None:
        if not is_guid(name.lower()):
            return None
        scope = checked_scope(scope)
        binding = self._titled(self.policy(scope), GRANT_TITLE + name.lower())
        return self._assignment(scope, binding) if binding is not None else None

    def create_assignment(
        self,
        key: GrantKey,
        name: str,
        description: str,
        principal_type: str = "User",
        expires_at: datetime | None = None,
    ) -> Assignment:
        scope, member, role = self._parts(key)
        name = name.lower()
        if not is_guid(name):
            raise PermanentError(f"InvalidAssignmentName: {name!r} is not a GUID")
        wanted_prefix = GOOGLE_PREFIXES.get(principal_type)
        if wanted_prefix is not None and not member.startswith(wanted_prefix + ":"):
            raise PermanentError(f"UnmatchedPrincipalType: {member} is not a {principal_type}")
        if expires_at is None:
            raise PermanentError("gcp-iam grants only with an expiry: the binding's condition ends it")
        self._role(role)  # RoleDefinitionDoesNotExist before anything is written
        title = GRANT_TITLE + name

        def add(policy: dict[str, Any]) -> bool:
            bindings = policy.setdefault("bindings", [])
            mine = self._titled(policy, title)
            if mine is not None and (mine.get("role") != role or not _holds_member(mine, member)):
                raise PermanentError(f"AssignmentUpdateNotPermitted: {name} at {scope} is jitgate's binding of "
                                     f"{mine.get('role')} for {', '.join(_members(mine))}, another grant")
            found = self._find(policy, scope, member, role)
            if found is not None and found.name != name:
                raise AssignmentExists(found.name)
            binding = _binding(role, member, title, description, expires_at, mine)
            if mine == binding:
                return False
            if mine is not None:
                bindings.remove(mine)
            bindings.append(binding)
            return True

        policy = self._modify(scope, add, f"grant {role} to {member} on {scope}")
        created = self._titled(policy, title)
        if created is None:
            raise TransientError(f"granted {role} to {member} on {scope} but cannot read the binding back")
        log.info("granted %s to %s on %s (%s)", role, member, scope, created["condition"]["expression"])
        return self._assignment(scope, created)

    def delete_assignment(self, scope: str, name: str) -> None:
        if not is_guid(name.lower()):
            return
        scope = checked_scope(scope)
        self.remove_titled(scope, GRANT_TITLE + name.lower())

    def list_marked(self) -> list[Assignment]:
        marked = [
            self._assignment(scope, binding)
            for scope in self.target_scopes
            for binding in self.policy(scope).get("bindings") or []
            if _title(binding).startswith(GRANT_TITLE)
        ]
        return sorted(marked, key=lambda a: (a.scope, a.name))

    # ------------------------------------------------------------ bindings by title (Cloud SQL's layer too)

    def put_titled(self, scope: str, title: str, member: str, roles: Iterable[str], description: str,
                   expires_at: datetime) -> bool:
        """Make sure `member` holds each role at `scope` under jitgate's bindings titled `title`, until at least
        `expires_at`. Returns whether any binding was new (so that a caller rolling back knows what it made)."""
        scope, member, wanted = checked_scope(scope), member_of(member), list(roles)
        for role in wanted:
            self._role(role)
        new: list[bool] = []

        def put(policy: dict[str, Any]) -> bool:
            new.clear()
            bindings = policy.setdefault("bindings", [])
            changed = False
            for role in wanted:
                mine = next((b for b in bindings if _title(b) == title and b.get("role") == role), None)
                binding = _binding(role, member, title, description, expires_at, mine)
                if mine == binding:
                    continue
                new.append(mine is None)
                if mine is not None:
                    bindings.remove(mine)
                bindings.append(binding)
                changed = True
            return changed

        policy = self._modify(scope, put, f"grant {', '.join(wanted)} to {member} on {scope}")
        held = {b.get("role") for b in policy.get("bindings") or [] if _title(b) == title and _holds_member(b, member)}
        if not set(wanted) <= held:
            raise TransientError(f"granted {', '.join(wanted)} to {member} on {scope} but cannot read it back")
        return any(new)

    def titled(self, scope: str, title: str) -> list[dict[str, Any]]:
        """jitgate's bindings titled `title` at `scope`."""
        return [b for b in self.policy(checked_scope(scope)).get("bindings") or [] if _title(b) == title]

    def remove_titled(self, scope: str, title: str) -> None:
        """Remove every binding titled `title` and read the policy back until none is left. Missing: a no-op."""

        def remove(policy: dict[str, Any]) -> bool:
            bindings = policy.get("bindings") or []
            kept = [b for b in bindings if _title(b) != title]
            policy["bindings"] = kept
            return len(kept) != len(bindings)

        after = self._modify(scope, remove, f"remove jitgate's binding {title} from {scope}")
        if any(_title(b) == title for b in after.get("bindings") or []):
            raise TransientError(f"removed {title} from {scope} but it is still in the policy")
        log.info("removed %s from %s", title, scope)

    def sweep_expired(self, scope: str, now: datetime, prefix: str = LAYER_TITLE) -> int:
        """Remove jitgate's bindings titled with `prefix` whose condition has expired (they grant nothing any more;
        left in place they pile up towards the policy's limits). Returns how many went."""
        scope = checked_scope(scope)
        gone: list[int] = []

        def sweep(policy: dict[str, Any]) -> bool:
            bindings = policy.get("bindings") or []
            kept = [b for b in bindings if not (_title(b).startswith(prefix)
                                                and (expiry_of(b.get("condition")) or now) < now)]
            gone[:] = [len(bindings) - len(kept)]
            policy["bindings"] = kept
            return gone[0] > 0

        self._modify(scope, sweep, f"remove expired jitgate bindings from {scope}")
        return gone[0] if gone else 0

    # ------------------------------------------------------------ the policy

    def policy(self, scope: str) -> dict[str, Any]:
        """The allow policy of a project, folder, organization or bucket, as version 3 (conditions visible)."""
        scope = checked_scope(scope)
        what = f"read the IAM policy of {scope}"
        if scope.startswith(BUCKET_PREFIX):
            return self._rest.json("GET", "storage", _bucket_path(scope), what,
                                   params={"optionsRequestedPolicyVersion": str(POLICY_VERSION)})
        return self._rest.json("POST", "crm", f"/v3/{scope}:getIamPolicy", what,
                               {"options": {"requestedPolicyVersion": POLICY_VERSION}})

    def _write(self, scope: str, policy: dict[str, Any], what: str) -> httpx.Response:
        if scope.startswith(BUCKET_PREFIX):
            return self._rest.send("PUT", "storage", _bucket_path(scope), what, policy)
        return self._rest.send("POST", "crm", f"/v3/{scope}:setIamPolicy", what, {"policy": policy})

    def _modify(self, scope: str, change: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """Read, change, write under the etag read; on a concurrent change read again and redo, with backoff.
        Returns the policy read back after the write (or as read, when `change` found nothing to do)."""
        scope = checked_scope(scope)
        for attempt in range(self.attempts):
            policy = self.policy(scope)
            if not change(policy):
                return policy
            policy["version"] = POLICY_VERSION
            if not policy.get("etag"):
                # NB. Without an etag IAM would overwrite whatever was written since the read.
                raise TransientError(f"{what}: the policy was read without an etag; refusing a blind write")
            check_limits(policy, scope)
            response = self._write(scope, policy, what)
            if response.is_success:
                return self.policy(scope)
            failure = GoogleFailure.of(response)
            if not failure.concurrent_change:
                raise failure.error(what)
            delay = min(2.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.5)
            log.info("%s: the policy changed meanwhile (%s); reading it again in %.2f s", what, failure.code, delay)
            self._sleep(delay)
        raise TransientError(f"{what}: the policy kept changing under {self.attempts} attempts; trying later")

    # ------------------------------------------------------------ internals

    def _parts(self, key: GrantKey) -> tuple[str, str, str]:
        if key.provider != self.name:
            raise PermanentError(f"grant key of provider {key.provider!r} sent to provider {self.name!r}")
        return checked_scope(key.scope), member_of(key.principal_id), role_name(key.role_definition_id)

    def _role(self, role: str) -> str:
        """A role that exists: `roles/…`, or a custom role of a project or organization, as IAM names it."""
        candidate = role.strip()
        with self._roles_lock:
            if candidate in self._roles:
                return self._roles[candidate]
        if not _ROLE.fullmatch(candidate):
            raise PermanentError(f"RoleDefinitionDoesNotExist: unknown role {role!r} (IAM roles are roles/<name> "
                                 "or projects/<id>/roles/<name>, organizations/<number>/roles/<name>)")
        response = self._rest.send("GET", "iam", f"/v1/{candidate}", f"look up role {candidate}")
        if response.status_code in (400, 404):
            raise PermanentError(f"RoleDefinitionDoesNotExist: unknown role {role!r}")
        if not response.is_success:
            raise GoogleFailure.of(response).error(f"look up role {candidate}")
        found = str(response.json().get("name") or candidate)
        with self._roles_lock:
            self._roles[candidate] = found
        return found

    def _titled(self, policy: dict[str, Any], title: str) -> dict[str, Any] | None:
        return next((b for b in policy.get("bindings") or [] if _title(b) == title), None)

    def _find(self, policy: dict[str, Any], scope: str, member: str, role: str) -> Assignment | None:
        """jitgate's binding of this grant, else an unconditional binding giving it (access from outside)."""
        candidates = [b for b in policy.get("bindings") or [] if b.get("role") == role and _holds_member(b, member)]
        ours = next((b for b in candidates if _title(b).startswith(GRANT_TITLE)), None)
        if ours is not None:
            return self._assignment(scope, ours)
        if any(not b.get("condition") for b in candidates):
            return Assignment(name=f"{UNCONDITIONAL}{role}", provider=self.name, principal_id=member.lower(),
                              principal_type=_principal_type(member), role_definition_id=iam_role_id(role),
                              scope=scope, description="an unconditional binding made outside jitgate")
        return None

    def _assignment(self, scope: str, binding: dict[str, Any]) -> Assignment:
        condition = binding.get("condition") or {}
        members = _members(binding)
        if not members:
            raise PermanentError(f"jitgate's binding {_title(binding)} at {scope} has no member")
        return Assignment(
            name=_title(binding).split(":", 1)[1],
            provider=self.name,
            principal_id=members[0].lower(),
            principal_type=_principal_type(members[0]),
            role_definition_id=iam_role_id(str(binding.get("role") or "")),
            scope=scope,
            description=str(condition.get("description") or ""),
        )


def _binding(role: str, member: str, title: str, description: str, expires_at: datetime,
             existing: dict[str, Any] | None) -> dict[str, Any]:
    """jitgate's binding of `role` for `member`, ending at `expires_at` or at the end of the one it replaces,
    whichever is later: a later hold on a grant moves its expiry out, never in."""
    until = max(expires_at, expiry_of((existing or {}).get("condition")) or expires_at)
    return {"role": role, "members": [member],
            "condition": {"title": title, "description": description, "expression": expiry_expression(until)}}


def _bucket_path(scope: str) -> str:
    return f"/storage/v1/b/{scope[len(BUCKET_PREFIX):]}/iam"


def _principal_type(member: str) -> str:
    prefix = member.split(":", 1)[0].lower()
    return next((t for t, p in GOOGLE_PREFIXES.items() if p.lower() == prefix), "GoogleUser")


def check_limits(policy: dict[str, Any], scope: str) -> None:
    """Google's documented limits on one allow policy, checked before a write so the error says what to do."""
    bindings = policy.get("bindings") or []
    appearances = [m for b in bindings for m in _members(b)]
    if len(appearances) > MAX_PRINCIPALS:
        raise PermanentError(
            f"PolicyTooLarge: the allow policy of {scope} would name {len(appearances):,} principals; Google allows "
            f"{MAX_PRINCIPALS:,} per policy (each appearance in a binding counts). Grant through a group, or remove "
            "bindings nobody uses")
    groups = [m for m in appearances if m.lower().startswith("group:")]
    if len(groups) > MAX_GROUPS:
        raise PermanentError(f"PolicyTooLarge: the allow policy of {scope} would name {len(groups)} groups; Google "
                             f"allows {MAX_GROUPS} per policy")
    per: dict[tuple[str, str], int] = {}
    for binding in bindings:
        for member in _members(binding):
            pair = (str(binding.get("role")), member.lower())
            per[pair] = per.get(pair, 0) + 1
    crowded = [(role, member, n) for (role, member), n in per.items() if n > MAX_SAME_ROLE_AND_PRINCIPAL]
    if crowded:
        role, member, n = crowded[0]
        raise PermanentError(
            f"TooManyConditionalBindings: {member} would have {n} bindings of {role} at {scope}; Google allows "
            f"{MAX_SAME_ROLE_AND_PRINCIPAL} bindings of one role for one principal with different conditions")


