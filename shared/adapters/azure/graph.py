"""Directory over Microsoft Graph: which policy groups a principal is in, through its transitive
(nested) Entra group memberships, and who is in a policy group, both cached for a short while."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import httpx

from ...clock import SystemClock
from ...domain.errors import PermanentError, TransientError
from ...domain.ids import is_guid
from ...ports import Clock, Members, Person
from ..http import LazyClient, same_origin
from .arm import ArmFailure, CachedToken, TokenProvider

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

GRAPH_ENDPOINT: Final = "https://graph.microsoft.com"
GRAPH_TOKEN_SCOPE: Final = "https://graph.microsoft.com/.default"
_GROUP_TYPE: Final = "#microsoft.graph.group"
# A principal id may be a user or a service principal (a pipeline requesting access); Graph needs to know.
_PRINCIPAL_COLLECTIONS: Final = ("users", "servicePrincipals")
_MAX_CACHED: Final = 10_000
_PAGE: Final = 999  # the largest page Graph serves


def graph_token_provider(credential: TokenCredential | None = None) -> TokenProvider:
    """Tokens for Microsoft Graph (the app needs GroupMember.Read.All, or Directory.Read.All)."""
    return CachedToken(GRAPH_TOKEN_SCOPE, credential)


class GraphDirectory:
    """Directory port over Microsoft Graph `/{users|servicePrincipals}/{id}/transitiveMemberOf` (the groups of
    a principal) and `/groups/{id}/transitiveMembers/microsoft.graph.user` (the people in a policy group).

    With `group_names` (policy group name → Entra group object id) a principal is in a policy group when
    that exact group is among its transitive memberships; nothing else counts. Without it, the display
    names of its groups are the policy group names. NB. Display names are not unique and, by default,
    any user may create a group with any name: use the map in production.

    Answers are cached per principal (and per group) for `ttl` seconds (unknown principals too), so a removal
    from a group takes effect within `ttl`. Throttling, 5xx and timeouts raise TransientError; 403 (missing
    Graph permission) raises PermanentError. Both need only GroupMember.Read.All.
    """

    def __init__(
        self,
        token_provider: TokenProvider,
        group_names: Mapping[str, str] | None = None,
        ttl: float = 300.0,
        clock: Clock | None = None,
        *,
        base_url: str = GRAPH_ENDPOINT,
        http: httpx.Client | None = None,
    ) -> None:
        self._token = token_provider
        self._by_object_id: dict[str, set[str]] | None = None
        self._object_ids = {name: object_id.lower() for name, object_id in (group_names or {}).items()}
        if group_names is not None:
            self._by_object_id = {}
            for policy_name, object_id in group_names.items():
                if not is_guid(object_id.lower()):
                    raise ValueError(f"group {policy_name!r}: {object_id!r} is not an Entra object id")
                self._by_object_id.setdefault(object_id.lower(), set()).add(policy_name)
        self._ttl = timedelta(seconds=ttl)
        self._clock = clock or SystemClock()
        self.base_url = base_url.rstrip("/")
        self._origin = httpx.URL(self.base_url)
        self._http = LazyClient(http, 15.0)
        self._cache: dict[str, tuple[datetime, frozenset[str]]] = {}
        self._members: dict[tuple[str, int], tuple[datetime, Members]] = {}
        self._lock = threading.Lock()

    def groups_of(self, principal_id: str) -> frozenset[str]:
        principal = principal_id.strip().lower()
        if not is_guid(principal):
            return frozenset()  # not an Entra object id: in no group
        now = self._clock.now()
        with self._lock:
            cached = self._cache.get(principal)
        if cached is not None and cached[0] > now:
            return cached[1]
        groups = self._policy_groups(self._memberships(principal))
        with self._lock:
            if len(self._cache) >= _MAX_CACHED:
                self._cache = {p: entry for p, entry in self._cache.items() if entry[0] > now}
            self._cache[principal] = (now + self._ttl, groups)
        return groups

    def members_of(self, group: str, limit: int) -> Members:
        """The users in a policy group, nested groups included, in Graph's order. Only the map
        (`group_names`) says which Entra group a policy group is: without it, PermanentError."""
        object_id = self._object_ids.get(group)
        if object_id is None:
            raise PermanentError(f"policy group {group} has no Entra object id (JITGATE_GROUP_OBJECT_IDS)")
        now = self._clock.now()
        with self._lock:
            cached = self._members.get((object_id, limit))
        if cached is not None and cached[0] > now:
            return cached[1]
        members = self._users_in(group, object_id, limit)
        with self._lock:
            if len(self._members) >= _MAX_CACHED:
                self._members = {k: entry for k, entry in self._members.items() if entry[0] > now}
            self._members[(object_id, limit)] = (now + self._ttl, members)
        return members

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------ internals

    def _policy_groups(self, memberships: list[dict[str, Any]]) -> frozenset[str]:
        if self._by_object_id is not None:
            ids = {str(group.get("id", "")).lower() for group in memberships}
            return frozenset(name for object_id in ids for name in self._by_object_id.get(object_id, ()))
        return frozenset(str(group["displayName"]) for group in memberships if group.get("displayName"))

    def _memberships(self, principal: str) -> list[dict[str, Any]]:
        """Every group the principal is in, directly or through nested groups; [] if Graph knows no such
        user or service principal."""
        for collection in _PRINCIPAL_COLLECTIONS:
            groups = self._groups_in(collection, principal)
            if groups is not None:
                return groups
        return []

    def _groups_in(self, collection: str, principal: str) -> list[dict[str, Any]] | None:
        """The principal's groups, following `@odata.nextLink`; None if it is not in `collection`."""
        what = f"transitive groups of {collection}/{principal}"
        url = httpx.URL(f"{self.base_url}/v1.0/{collection}/{principal}/transitiveMemberOf")
        params: dict[str, str] | None = {"$select": "id,displayName", "$top": "999"}
        groups: list[dict[str, Any]] = []
        while True:
            page = self._get(url, params, what)
            if page is None:
                if groups:
                    raise TransientError(f"Graph {what}: a later page vanished")
                return None
            # Directory roles and administrative units come back too; only groups are groups.
            groups.extend(item for item in page.get("value") or [] if item.get("@odata.type") == _GROUP_TYPE)
            next_link = page.get("@odata.nextLink")
            if not next_link:
                return groups
            url, params = httpx.URL(str(next_link)), None

    def _users_in(self, group: str, object_id: str, limit: int) -> Members:
        """The first `limit` users of the group and its user count (`@odata.count`), following
        `@odata.nextLink` only as far as needed. NB. Graph serves an OData cast such as
        `/microsoft.graph.user` only as an advanced query: `$count=true` and `ConsistencyLevel: eventual`."""
        what = f"users in group {group} ({object_id})"
        url = httpx.URL(f"{self.base_url}/v1.0/groups/{object_id}/transitiveMembers/microsoft.graph.user")
        params: dict[str, str] | None = {
            "$select": "id,displayName", "$top": str(min(max(limit, 1), _PAGE)), "$count": "true",
        }
        people: list[Person] = []
        seen = 0
        total: int | None = None
        while True:
            page = self._get(url, params, what, consistency="eventual")
            if page is None:
                raise PermanentError(f"Graph {what}: no such group in Entra (JITGATE_GROUP_OBJECT_IDS)")
            if total is None and isinstance(page.get("@odata.count"), int):
                total = page["@odata.count"]
            for user in page.get("value") or []:
                seen += 1
                if len(people) < limit and user.get("id"):
                    people.append(Person(str(user["id"]).lower(), str(user.get("displayName") or "")))
            next_link = page.get("@odata.nextLink")
            if not next_link or (total is not None and len(people) >= limit):
                return Members(tuple(people), total if total is not None else seen)
            url, params = httpx.URL(str(next_link)), None

    def _get(
        self, url: httpx.URL, params: dict[str, str] | None, what: str, consistency: str | None = None
    ) -> dict[str, Any] | None:
        if not same_origin(url, self._origin):
            raise PermanentError(f"{what}: refusing to send a token to {url.scheme}://{url.host}")
        headers = {"Authorization": f"Bearer {self._token()}"}
        if consistency is not None:
            headers["ConsistencyLevel"] = consistency
        try:
            response = self._client().get(url, params=params, headers=headers)
        except httpx.TransportError as exc:
            raise TransientError(f"Graph {what}: {type(exc).__name__}: {exc}") from exc
        if response.status_code == 404:
            return None
        if response.is_success:
            value = response.json()
            if not isinstance(value, dict):
                raise PermanentError(f"Graph {what}: unexpected response shape")
            return value
        raise ArmFailure.of(response).error(f"Graph {what}")

    def _client(self) -> httpx.Client:
        return self._http.get()
