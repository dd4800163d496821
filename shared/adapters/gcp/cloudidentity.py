"""Directory over Cloud Identity groups (Cloud Identity API v1, `groups.memberships.list` and `groups:lookup`):
policy groups mapped to Google groups (`JITGATE_GCP_GROUPS`: `approvers=groups/<id>`) have the members Google says;
the others keep the members the policy file gives them.

Membership is read as Google keeps it, direct memberships page by page (`pageSize`, `nextPageToken`), nested groups
followed through `groups:lookup` of their e-mail address, each group once, to a depth of 5. That works on every
Cloud Identity and Workspace edition, where `checkTransitiveMembership` and `searchTransitiveMemberships` need a
premium one. People are Google principals (`user:<email>`, `serviceAccount:<email>`), the request's own spelling.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any, Final
from urllib.parse import quote

import httpx

from ...domain.errors import PermanentError
from ...ports import Directory, Members, Person
from .rest import GoogleFailure, GoogleRest, TokenProvider

log = logging.getLogger("jitgate.gcp")

CLOUD_IDENTITY: Final = "https://cloudidentity.googleapis.com"
CLOUD_IDENTITY_SCOPE: Final = "https://www.googleapis.com/auth/cloud-identity.groups.readonly"
MAX_DEPTH: Final = 5
PAGE_SIZE: Final = 200
_KINDS: Final = {"USER": "user", "SERVICE_ACCOUNT": "serviceAccount"}


class CloudIdentityDirectory:
    """Directory port (see the module docstring). `groups`: policy group name → `groups/<id>`; `fallback` answers for
    the policy groups that are not mapped (the policy file's)."""

    def __init__(self, token: TokenProvider, groups: Mapping[str, str], fallback: Directory,
                 base_url: str = CLOUD_IDENTITY, http: httpx.Client | None = None) -> None:
        self._rest = GoogleRest(token, {"ci": base_url}, http)
        self.groups = dict(groups)
        self._fallback = fallback

    def close(self) -> None:
        self._rest.close()

    def groups_of(self, principal_id: str) -> frozenset[str]:
        wanted = principal_id.lower()
        mapped: set[str] = set()
        for name, group in self.groups.items() if ":" in wanted else ():
            try:
                if any(p.principal_id.lower() == wanted for p in self._people(group, name)):
                    mapped.add(name)
            except PermanentError as exc:
                # NB. One misnamed group must not stop every other group from answering; members_of names it.
                log.warning("%s", exc)
        return frozenset(mapped | {g for g in self._fallback.groups_of(principal_id) if g not in self.groups})

    def members_of(self, group: str, limit: int) -> Members:
        if group not in self.groups:
            return self._fallback.members_of(group, limit)
        people = sorted(self._people(self.groups[group], group), key=lambda p: p.principal_id)
        return Members(tuple(people[: max(limit, 0)]), len(people))

    # ------------------------------------------------------------ internals

    def _people(self, group: str, name: str) -> set[Person]:
        people: set[Person] = set()
        seen: set[str] = set()
        pending = [(group, 0)]
        while pending:
            current, depth = pending.pop()
            if current in seen:
                continue
            seen.add(current)
            for membership in self._memberships(current, name):
                key = membership.get("preferredMemberKey") or {}
                email = str(key.get("id") or "").lower() if isinstance(key, dict) else ""
                kind = str(membership.get("type") or "")
                if not email:
                    continue
                if kind in _KINDS:
                    people.add(Person(f"{_KINDS[kind]}:{email}"))
                elif kind == "GROUP" and depth < MAX_DEPTH:
                    nested = self._lookup(email, name)
                    if nested is not None:
                        pending.append((nested, depth + 1))
        return people

    def _memberships(self, group: str, name: str) -> Iterator[dict[str, Any]]:
        what = f"list the members of Google group {group} (policy group {name})"
        token = ""
        while True:
            params = {"pageSize": str(PAGE_SIZE), "view": "FULL", **({"pageToken": token} if token else {})}
            response = self._rest.send("GET", "ci", f"/v1/{quote(group, safe='/')}/memberships", what, params=params)
            if response.status_code == 404:
                raise PermanentError(f"{what}: Cloud Identity has no group {group}; check JITGATE_GCP_GROUPS")
            if not response.is_success:
                raise GoogleFailure.of(response).error(what)
            page = response.json()
            yield from (m for m in page.get("memberships") or [] if isinstance(m, dict))
            token = str(page.get("nextPageToken") or "")
            if not token:
                return

    def _lookup(self, email: str, name: str) -> str | None:
        what = f"look up nested Google group {email} (policy group {name})"
        response = self._rest.send("GET", "ci", "/v1/groups:lookup", what, params={"groupKey.id": email})
        if response.status_code in (403, 404):
            return None  # a group outside the customer, or one jitgate may not read: its members are not counted
        if not response.is_success:
            raise GoogleFailure.of(response).error(what)
        found = response.json().get("name")
        return str(found) if found else None
