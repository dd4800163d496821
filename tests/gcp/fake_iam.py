"""Google Cloud IAM allow policies as a local HTTP server: Resource Manager v3 `getIamPolicy` / `setIamPolicy` on
projects, folders and organizations, and IAM v1 `roles.get`, as Google's API reference describes them
(google/iam/v1/policy.proto, iam_policy.proto; cloud.google.com/iam/docs/policies, /iam/quotas,
/iam/docs/troubleshooting-withcond):

- Errors are `google.rpc.Status` as JSON: `{"error": {"code", "message", "status"}}` (Cloud Storage: its own
  shape, `{"error": {"code", "message", "errors": [{"reason"}]}}`).
- Every call needs `Authorization: Bearer <token>` (401 UNAUTHENTICATED); an unknown resource answers 403
  PERMISSION_DENIED, as Google does rather than say whether it exists.
- `requestedPolicyVersion` must be 0, 1 or 3 (400 INVALID_ARGUMENT). A policy with conditional bindings read as
  version 0 or 1 comes back as version 1 with each conditional binding's role renamed `<role>_withcond_<hash>` and
  its condition hidden.
- setIamPolicy compares the etag: another one answers 409 ABORTED ("There were concurrent policy changes…"); no
  etag is a blind overwrite, which is how a version 1 write may drop a version 3 policy's conditions. With an etag,
  a write below version 3 of a policy that has or gets conditions is 400 INVALID_ARGUMENT; so is a condition
  without a title or expression, an expression that does not parse as far as this fake checks (balanced
  parentheses and quotes, RFC 3339 `timestamp()` literals, at most 12 logical operators), a `_withcond_` role, an
  unknown role or a malformed member. The documented limits (1,500 principals, 250 groups, 20 bindings of one role
  for one principal) answer 400 FAILED_PRECONDITION. The default update mask (`bindings,etag`) leaves auditConfigs
  alone. Each accepted write gets a new etag; compare-and-set is atomic.
- Cloud Storage buckets (`projects/_/buckets/<name>`; storage.googleapis.com JSON API `GET`/`PUT
  /storage/v1/b/<bucket>/iam`, the policy itself as the body, `kind` and `resourceId` in answers): a stale etag is
  412 Precondition Failed (reason conditionNotMet); conditions need uniform bucket-level access; a read below
  version 3 of a policy with conditions fails ("the request fails", says the reference) instead of renaming roles.

Each test gets its own world (`new_world()`): a path prefix on one shared server with resources of its own.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tests.azure.fake_http import Call, FakeHttpService, Reply

TOKEN = "fake-google-token"
ROLES = frozenset({
    "roles/owner", "roles/editor", "roles/viewer", "roles/browser",
    "roles/cloudsql.client", "roles/cloudsql.instanceUser", "roles/cloudsql.viewer",
    "roles/storage.objectViewer", "roles/storage.admin", "roles/pubsub.publisher", "roles/pubsub.subscriber",
    "roles/secretmanager.secretAccessor", "roles/run.invoker", "roles/logging.viewer",
    "roles/resourcemanager.projectIamAdmin",
})
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
_POLICY = re.compile(r"^/w(?P<world>\d+)/v3/(?P<resource>(?:projects|folders|organizations)/[^/:]+)"
                     r":(?P<verb>getIamPolicy|setIamPolicy)$")
_BUCKET = re.compile(r"^/w(?P<world>\d+)/storage/v1/b/(?P<bucket>[^/]+)/iam$")
BUCKETS = "projects/_/buckets/"
_ROLE = re.compile(r"^/w(?P<world>\d+)/v1/(?P<role>(?:(?:projects|organizations)/[^/]+/)?roles/[^/]+)$")
_MEMBER = re.compile(r"^(user|group|serviceAccount|domain|principal|principalSet|deleted:user|deleted:group"
                     r"|deleted:serviceAccount):\S+$|^(allUsers|allAuthenticatedUsers)$")
_TIMESTAMP = re.compile(r"timestamp\(\s*(['\"])(.*?)\1\s*\)")
_RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def google_error(status: int, message: str, code: str | None = None) -> Reply:
    """A google.rpc.Status as Google's JSON APIs answer it."""
    status_name = code or _STATUS.get(status, "UNKNOWN")
    return Reply(status, {"error": {"code": status, "message": message, "status": status_name}})


@dataclass
class Resource:
    bindings: list[dict[str, Any]] = field(default_factory=list)
    audit_configs: list[dict[str, Any]] = field(default_factory=list)
    etag_number: int = 1
    writes: int = 0
    uniform: bool = True  # a bucket's uniform bucket-level access, without which it takes no conditions

    @property
    def etag(self) -> str:
        return base64.b64encode(self.etag_number.to_bytes(8, "big")).decode()

    @property
    def conditional(self) -> bool:
        return any(b.get("condition") for b in self.bindings)


@dataclass
class World:
    """One test's Google Cloud: the resources with their policies, the custom roles, and meddlers (another writer
    that changes a policy just before a setIamPolicy is handled)."""

    resources: dict[str, Resource] = field(default_factory=dict)
    roles: set[str] = field(default_factory=lambda: set(ROLES))
    meddlers: list[Callable[[str, Resource], bool]] = field(default_factory=list)
    refused_writes: int = 0
    # The caller's binding condition `api.getAttribute('iam.googleapis.com/modifiedGrantsByRole', []).hasOnly([...])`,
    # as the roles it lists; None: the caller may change any binding.
    may_modify: frozenset[str] | None = None
    # Seconds each policy read takes (outside the server's lock): readers then overlap, as busy writers do.
    read_delay: float = 0.0


class FakeIam(FakeHttpService):
    """See the module docstring."""

    def __init__(self) -> None:
        self.worlds: dict[int, World] = {}
        self._ids = itertools.count(1)
        super().__init__()

    def new_world(self, *resources: str) -> tuple[World, str]:
        """A world holding these resources (empty policies), and the base URL that reaches it."""
        number = next(self._ids)
        world = World({name: Resource() for name in resources})
        with self._lock:
            self.worlds[number] = world
        return world, f"{self.url}/w{number}"

    # ------------------------------------------------------------ what tests look at and do

    def seed(self, world: World, resource: str, role: str, member: str,
             condition: dict[str, Any] | None = None) -> None:
        """A binding made outside jitgate (as an admin or Terraform would)."""
        with self._lock:
            binding: dict[str, Any] = {"role": role, "members": [member]}
            if condition:
                binding["condition"] = condition
            self._commit(world.resources[resource], [*world.resources[resource].bindings, binding])

    def bindings(self, world: World, resource: str) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(world.resources[resource].bindings)

    def has_access(self, world: World, resource: str, role: str, member: str, at: datetime) -> bool:
        """Whether IAM would grant `role` to `member` at `at` through this policy: an unconditional binding, or a
        condition of the form jitgate writes (`request.time < timestamp(...)`) that still holds."""
        for binding in self.bindings(world, resource):
            if binding["role"] != role or member.lower() not in (m.lower() for m in binding["members"]):
                continue
            condition = binding.get("condition")
            if not condition:
                return True
            found = re.fullmatch(r'request\.time < timestamp\("([^"]+)"\)', condition["expression"])
            if found and at < datetime.fromisoformat(found.group(1).replace("Z", "+00:00")):
                return True
        return False

    def meddle(self, world: World, meddler: Callable[[str, Resource], bool]) -> None:
        """`meddler(resource name, resource)` runs before each setIamPolicy is handled and may write to the
        policy (use `commit`); it stays until it returns False."""
        with self._lock:
            world.meddlers.append(meddler)

    def commit(self, resource: Resource, bindings: list[dict[str, Any]]) -> None:
        self._commit(resource, bindings)

    # ------------------------------------------------------------ the API

    def _answer(self, call: Call) -> Reply:
        reply = super()._answer(call)
        found = _POLICY.fullmatch(call.path)
        world = self.worlds.get(int(found["world"])) if found and found["verb"] == "getIamPolicy" else None
        if world is not None and world.read_delay:
            time.sleep(world.read_delay)
        return reply

    def route(self, call: Call) -> Reply:
        if call.headers.get("authorization") != f"Bearer {TOKEN}":
            return google_error(401, "Request had invalid authentication credentials.")
        found = _POLICY.fullmatch(call.path)
        if found and call.method == "POST":
            world = self.worlds.get(int(found["world"]))
            resource = world.resources.get(found["resource"]) if world else None
            if world is None or resource is None:
                return google_error(403, f"The caller does not have permission (or {found['resource']} does not "
                                         "exist).")
            try:
                body = call.json() or {}
            except ValueError:
                return google_error(400, "Invalid JSON payload received.")
            if not isinstance(body, dict):
                return google_error(400, "Invalid JSON payload received.")
            if found["verb"] == "getIamPolicy":
                return self._get(resource, body)
            return self._set(world, found["resource"], resource, body)
        found = _BUCKET.fullmatch(call.path)
        if found and call.method in ("GET", "PUT"):
            world = self.worlds.get(int(found["world"]))
            name = BUCKETS + found["bucket"]
            resource = world.resources.get(name) if world else None
            if world is None or resource is None:
                return google_error(404, "The specified bucket does not exist.", "NOT_FOUND")
            if call.method == "GET":
                version = int(call.query.get("optionsRequestedPolicyVersion") or 1)
                if version < 3 and resource.conditional:
                    # NB. Storage refuses, where Resource Manager shows `_withcond_` roles.
                    return google_error(400, "The requested policy version does not support the bucket's IAM "
                                             "Conditions: request version 3.")
                return Reply(200, self._render(resource, version, name))
            try:
                body = call.json()
            except ValueError:
                return google_error(400, "Invalid JSON payload received.")
            return self._set(world, name, resource, body if isinstance(body, dict) else {})
        found = _ROLE.fullmatch(call.path)
        if found and call.method == "GET":
            world = self.worlds.get(int(found["world"]))
            role = found["role"]
            if world is None or role not in world.roles:
                return google_error(404, f"The role named {role} was not found.", "NOT_FOUND")
            return Reply(200, {"name": role, "title": role.rsplit("/", 1)[-1], "stage": "GA", "etag": "AA=="})
        return google_error(404, f"Method not found: {call.method} {call.path}", "NOT_FOUND")

    def _get(self, resource: Resource, body: dict[str, Any]) -> Reply:
        options = body.get("options") or {}
        version = options.get("requestedPolicyVersion", 0) if isinstance(options, dict) else None
        if version not in (0, 1, 3):
            return google_error(400, f"Invalid requested policy version {version}: valid values are 0, 1 and 3.")
        return Reply(200, self._render(resource, version))

    def _render(self, resource: Resource, version: int, name: str = "") -> dict[str, Any]:
        policy: dict[str, Any] = {"version": 3 if resource.conditional else 1, "etag": resource.etag}
        if name.startswith(BUCKETS):
            policy.update(kind="storage#policy", resourceId=name)
        bindings = copy.deepcopy(resource.bindings)
        if resource.conditional and version < 3:
            # NB. What Google answers a version-1 reader: the conditional bindings, conditions hidden, roles renamed.
            policy["version"] = 1
            for binding in bindings:
                condition = binding.pop("condition", None)
                if condition:
                    digest = hashlib.sha256(repr(sorted(condition.items())).encode()).hexdigest()[:20]
                    binding["role"] = f"{binding['role']}_withcond_{digest}"
        if bindings:
            policy["bindings"] = bindings
        if resource.audit_configs:
            policy["auditConfigs"] = copy.deepcopy(resource.audit_configs)
        return policy

    def _set(self, world: World, name: str, resource: Resource, body: dict[str, Any]) -> Reply:
        for meddler in list(world.meddlers):
            if not meddler(name, resource):
                world.meddlers.remove(meddler)
        policy = body if name.startswith(BUCKETS) else body.get("policy")
        if not isinstance(policy, dict):
            return google_error(400, "Request contains an invalid argument: policy is required.")
        etag = policy.get("etag")
        if etag and etag != resource.etag:
            world.refused_writes += 1
            if name.startswith(BUCKETS):
                # NB. The Cloud Storage JSON API's own error shape: no canonical status, a reason per error.
                return Reply(412, {"error": {"code": 412, "message": "Precondition Failed", "errors": [
                    {"message": "Precondition Failed", "domain": "global", "reason": "conditionNotMet"}]}})
            return google_error(409, "There were concurrent policy changes. Please retry the whole read-modify-write "
                                     f"with exponential backoff. The request's ETag '{etag}' did not match the "
                                     f"current policy's ETag '{resource.etag}'.", "ABORTED")
        version = policy.get("version", 0)
        if version not in (0, 1, 3):
            return google_error(400, f"Invalid policy version {version}: valid values are 0, 1 and 3.")
        bindings = policy.get("bindings") or []
        if not isinstance(bindings, list) or not all(isinstance(b, dict) for b in bindings):
            return google_error(400, "Invalid value at 'policy.bindings'.")
        conditional = any(b.get("condition") for b in bindings)
        if conditional and not resource.uniform:
            return google_error(400, "IAM conditions can only be used on buckets with uniform bucket-level access.")
        if version < 3 and conditional:
            return google_error(400, "Conditions are only supported in policy version 3; set policy.version to 3.")
        if version < 3 and etag and resource.conditional:
            return google_error(400, "The policy has conditional role bindings: a write must be of version 3 to "
                                     "change it.")
        for binding in bindings:
            problem = _binding_problem(binding, world.roles)
            if problem:
                return google_error(400, problem)
        limit = _limit_problem(bindings)
        if limit:
            return google_error(400, limit, "FAILED_PRECONDITION")
        if world.may_modify is not None:
            modified = _modified_roles(resource.bindings, bindings) - world.may_modify
            if modified:
                return google_error(403, f"Policy update access denied: the caller may not change bindings of "
                                         f"{', '.join(sorted(modified))}.")
        mask = {p.strip() for p in str(body.get("updateMask") or "bindings,etag").split(",")}
        if "auditConfigs" in mask:
            resource.audit_configs = copy.deepcopy(policy.get("auditConfigs") or [])
        self._commit(resource, copy.deepcopy(bindings))
        return Reply(200, self._render(resource, 3, name))

    def _commit(self, resource: Resource, bindings: list[dict[str, Any]]) -> None:
        resource.bindings = bindings
        resource.etag_number += 1
        resource.writes += 1


def _modified_roles(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> set[str]:
    """The roles whose grants a write adds or removes (`iam.googleapis.com/modifiedGrantsByRole`)."""
    def grants(bindings: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
        return {(b["role"], member, repr(sorted((b.get("condition") or {}).items())))
                for b in bindings for member in b["members"]}

    return {role for role, _, _ in grants(before) ^ grants(after)}


def _binding_problem(binding: dict[str, Any], roles: set[str]) -> str | None:
    role = binding.get("role")
    if not isinstance(role, str) or not role:
        return "Role is required in every binding."
    if "_withcond_" in role:
        return f"Role {role} is not a valid role: it is how a version 1 policy shows a conditional binding."
    if role not in roles:
        return f"Role {role} is not supported for this resource."
    members = binding.get("members")
    if not isinstance(members, list) or not members:
        return f"A binding of {role} has no members."
    bad = [m for m in members if not isinstance(m, str) or not _MEMBER.fullmatch(m)]
    if bad:
        return f"Invalid principal {bad[0]!r} in a binding of {role}."
    condition = binding.get("condition")
    if condition is None:
        return None
    if not isinstance(condition, dict) or not condition.get("expression"):
        return f"A condition of {role} has no expression."
    if not condition.get("title"):
        return f"A condition of {role} has no title."
    return _expression_problem(str(condition["expression"]))


def _expression_problem(expression: str) -> str | None:
    depth, quote = 0, ""
    for ch in expression:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                return f"Condition expression {expression!r} does not parse: unbalanced parentheses."
    if depth or quote:
        return f"Condition expression {expression!r} does not parse: unbalanced parentheses or quotes."
    for _, stamp in _TIMESTAMP.findall(expression):
        if not _RFC3339.fullmatch(stamp):
            return f"Condition expression {expression!r}: timestamp {stamp!r} is not RFC 3339."
    operators = len(re.findall(r"&&|\|\||!(?!=)", expression))
    if operators > 12:
        return f"Condition expression has {operators} logical operators; at most 12 are allowed."
    return None


def _limit_problem(bindings: list[dict[str, Any]]) -> str | None:
    members = [m for b in bindings for m in b["members"]]
    if len(members) > 1500:
        return f"The number of members in the policy ({len(members):,}) is larger than the maximum allowed size 1,500."
    groups = [m for m in members if m.startswith("group:")]
    if len(groups) > 250:
        return f"The number of groups in the policy ({len(groups)}) is larger than the maximum allowed size 250."
    per: dict[tuple[str, str], int] = {}
    for binding in bindings:
        for member in binding["members"]:
            per[(binding["role"], member)] = per.get((binding["role"], member), 0) + 1
    crowded = [pair for pair, n in per.items() if n > 20]
    if crowded:
        return (f"Principal {crowded[0][1]} has more than 20 role bindings of {crowded[0][0]} with different "
                "conditions.")
    return None


_shared: FakeIam | None = None
_shared_lock = threading.Lock()


def shared_iam() -> FakeIam:
    """One server for the whole test session (each test takes a world of its own)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = FakeIam()
        return _shared


CONTRACT_PROJECT = "projects/jitgate-payments"
CONTRACT_OTHER_PROJECT = "projects/jitgate-payments-dr"


CONTRACT_BUCKET = "projects/_/buckets/jitgate-payments-exports"
CONTRACT_OTHER_BUCKET = "projects/_/buckets/jitgate-payments-archive"


def fake_gcp_iam(*resources: str, **options: Any) -> tuple[Any, World]:
    """A GcpIam against a fresh world of the shared fake holding these resources (the contract's two projects by
    default), reconciling them all."""
    from shared.adapters.gcp.iam import GcpIam

    held = resources or (CONTRACT_PROJECT, CONTRACT_OTHER_PROJECT)
    world, base = shared_iam().new_world(*held)
    provider = GcpIam(lambda: TOKEN, target_scopes=held, resource_manager_url=base, iam_url=base, storage_url=base,
                      sleep=options.pop("sleep", lambda s: None), **options)
    return provider, world
