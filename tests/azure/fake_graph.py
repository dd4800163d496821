"""Microsoft Graph's transitive-membership endpoints, as a local HTTP server.

`GET /v1.0/{users|servicePrincipals}/{id}/transitiveMemberOf` answers a page of directoryObjects
(`@odata.type`, `id`, and the `$select`ed `displayName`): groups, but also directory roles and
administrative units, as the real endpoint does.

`GET /v1.0/groups/{id}/transitiveMembers/microsoft.graph.user` answers the group's users (nested groups
flattened, devices and other members left out by the cast), each `{id, displayName}` as `$select`ed. Graph
serves this cast as an advanced query, which needs `$count=true` and the header `ConsistencyLevel: eventual`
and carries `@odata.count` on every page; without them this fake answers 400 `Request_UnsupportedQuery` (the
code Graph gives a cast it does not serve). A user the app may not read fully comes back with
`displayName: null`.

Pages follow `@odata.nextLink` (absolute, with a `$skiptoken`); `$top` caps a page. An unknown object
answers 404 `Request_ResourceNotFound`. Every call needs `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from urllib.parse import urlencode

from tests.azure.fake_http import Call, FakeHttpService, Reply, error

TOKEN = "fake-graph-token"
ROUTE = re.compile(r"^/v1\.0/(users|servicePrincipals)/([^/]+)/transitiveMemberOf$")
MEMBERS_ROUTE = re.compile(r"^/v1\.0/groups/([^/]+)/transitiveMembers/microsoft\.graph\.user$")


@dataclass(frozen=True)
class DirectoryObject:
    id: str
    display_name: str | None
    odata_type: str = "#microsoft.graph.group"


def group(display_name: str, object_id: str | None = None) -> DirectoryObject:
    return DirectoryObject(object_id or str(uuid.uuid4()), display_name)


def directory_role(display_name: str) -> DirectoryObject:
    return DirectoryObject(str(uuid.uuid4()), display_name, "#microsoft.graph.directoryRole")


def user(display_name: str | None, object_id: str | None = None) -> DirectoryObject:
    return DirectoryObject(object_id or str(uuid.uuid4()), display_name, "#microsoft.graph.user")


def device(display_name: str) -> DirectoryObject:
    return DirectoryObject(str(uuid.uuid4()), display_name, "#microsoft.graph.device")


class FakeGraph(FakeHttpService):
    """`users` and `service_principals` map an object id to its transitive memberships; `groups` maps a group's
    object id to its transitive members (users, devices, nested groups)."""

    def __init__(self, page_size: int = 2) -> None:
        self.users: dict[str, list[DirectoryObject]] = {}
        self.service_principals: dict[str, list[DirectoryObject]] = {}
        self.groups: dict[str, list[DirectoryObject]] = {}
        self.page_size = page_size
        super().__init__()

    def route(self, call: Call) -> Reply:
        if call.headers.get("authorization") != f"Bearer {TOKEN}":
            return error(401, "InvalidAuthenticationToken", "Access token is empty.")
        members = MEMBERS_ROUTE.match(call.path)
        if members is not None and call.method == "GET":
            return self._users_in(call, members.group(1).lower())
        found = ROUTE.match(call.path)
        if found is None or call.method != "GET":
            return error(400, "BadRequest", f"Unsupported request {call.method} {call.path}")
        directory = self.users if found.group(1) == "users" else self.service_principals
        memberships = directory.get(found.group(2).lower())
        if memberships is None:
            return error(404, "Request_ResourceNotFound",
                         f"Resource '{found.group(2)}' does not exist or one of its queried reference-property "
                         "objects are not present.")
        selected = set(call.query.get("$select", "id,displayName").split(","))
        size = min(self.page_size, int(call.query.get("$top", "100")))
        start = int(call.query.get("$skiptoken", "0"))
        items = [
            {"@odata.type": o.odata_type, "id": o.id, **({"displayName": o.display_name} if "displayName" in selected
                                                        else {})}
            for o in memberships[start:start + size]
        ]
        body: dict[str, object] = {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#directoryObjects",
                                   "value": items}
        if start + size < len(memberships):
            query = {k: v for k, v in call.query.items() if k != "$skiptoken"}
            query["$skiptoken"] = str(start + size)
            body["@odata.nextLink"] = f"{self.url}{call.path}?{urlencode(query)}"
        return Reply(200, body)

    def _users_in(self, call: Call, group_id: str) -> Reply:
        if call.query.get("$count") != "true" or call.headers.get("consistencylevel") != "eventual":
            return error(400, "Request_UnsupportedQuery",
                         "The specified filter to the reference property query is currently not supported.")
        members = self.groups.get(group_id)
        if members is None:
            return error(404, "Request_ResourceNotFound",
                         f"Resource '{group_id}' does not exist or one of its queried reference-property objects "
                         "are not present.")
        users = [m for m in members if m.odata_type == "#microsoft.graph.user"]
        selected = set(call.query.get("$select", "id,displayName").split(","))
        size = min(self.page_size, int(call.query.get("$top", "100")))
        start = int(call.query.get("$skiptoken", "0"))
        items = [
            {"id": u.id, **({"displayName": u.display_name} if "displayName" in selected else {})}
            for u in users[start:start + size]
        ]
        body: dict[str, object] = {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users(id,displayName)",
                                   "@odata.count": len(users), "value": items}
        if start + size < len(users):
            query = {k: v for k, v in call.query.items() if k != "$skiptoken"}
            query["$skiptoken"] = str(start + size)
            body["@odata.nextLink"] = f"{self.url}{call.path}?{urlencode(query)}"
        return Reply(200, body)
