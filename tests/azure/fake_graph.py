"""Microsoft Graph's transitive-membership endpoints, as a local HTTP server.

`GET /v1.0/{users|servicePrincipals}/{id}/transitiveMemberOf` answers a page of directoryObjects
(`@odata.type`, `id`, and the `$select`ed `displayName`): groups, but also directory roles and
administrative units, as the real endpoint does. Pages follow `@odata.nextLink` (absolute, with a
`$skiptoken`); `$top` caps a page. An unknown object answers 404 `Request_ResourceNotFound`. Every call
needs `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from urllib.parse import urlencode

from tests.azure.fake_http import Call, FakeHttpService, Reply, error

TOKEN = "fake-graph-token"
ROUTE = re.compile(r"^/v1\.0/(users|servicePrincipals)/([^/]+)/transitiveMemberOf$")


@dataclass(frozen=True)
class DirectoryObject:
    id: str
    display_name: str
    odata_type: str = "#microsoft.graph.group"


def group(display_name: str, object_id: str | None = None) -> DirectoryObject:
    return DirectoryObject(object_id or str(uuid.uuid4()), display_name)


def directory_role(display_name: str) -> DirectoryObject:
    return DirectoryObject(str(uuid.uuid4()), display_name, "#microsoft.graph.directoryRole")


class FakeGraph(FakeHttpService):
    """`users` and `service_principals` map an object id to its transitive memberships."""

    def __init__(self, page_size: int = 2) -> None:
        self.users: dict[str, list[DirectoryObject]] = {}
        self.service_principals: dict[str, list[DirectoryObject]] = {}
        self.page_size = page_size
        super().__init__()

    def route(self, call: Call) -> Reply:
        if call.headers.get("authorization") != f"Bearer {TOKEN}":
            return error(401, "InvalidAuthenticationToken", "Access token is empty.")
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
