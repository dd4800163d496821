"""Cloud Identity API v1 groups, as a local HTTP server: `GET /v1/groups/{id}/memberships` (direct memberships;
`pageSize` must not exceed 1000 for the BASIC view or 500 for FULL, as the reference says, else 400
INVALID_ARGUMENT; pages are at most the fake's `page_size`, and `nextPageToken` is opaque) and
`GET /v1/groups:lookup?groupKey.id=<email>` → `{"name": "groups/<id>"}`; errors as google.rpc.Status (404 NOT_FOUND
for an unknown group, 401 without the token). Memberships carry `name`, `preferredMemberKey.id`, `roles` and `type`
(USER, SERVICE_ACCOUNT, GROUP) as the API reference's Membership does."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from tests.azure.fake_http import Call, FakeHttpService, Reply
from tests.gcp.fake_iam import TOKEN, google_error


@dataclass
class Group:
    email: str
    members: list[tuple[str, str]] = field(default_factory=list)  # (type, email)


class FakeCloudIdentity(FakeHttpService):
    def __init__(self, page_size: int = 2) -> None:
        self.groups: dict[str, Group] = {}
        self.page_size = page_size
        super().__init__()

    def group(self, group_id: str, email: str, *members: tuple[str, str]) -> str:
        self.groups[group_id] = Group(email, list(members))
        return f"groups/{group_id}"

    def route(self, call: Call) -> Reply:
        if call.headers.get("authorization") != f"Bearer {TOKEN}":
            return google_error(401, "Request had invalid authentication credentials.")
        if call.method == "GET" and call.path == "/v1/groups:lookup":
            email = call.query.get("groupKey.id", "").lower()
            found = next((gid for gid, g in self.groups.items() if g.email == email), None)
            return Reply(200, {"name": f"groups/{found}"}) if found else google_error(404, "Not found", "NOT_FOUND")
        parts = call.path.split("/")
        if call.method == "GET" and len(parts) == 5 and parts[1:3] == ["v1", "groups"] and parts[4] == "memberships":
            group = self.groups.get(parts[3])
            if group is None:
                return google_error(404, f"Group groups/{parts[3]} not found.", "NOT_FOUND")
            start = int(base64.b64decode(call.query["pageToken"]).decode()) if call.query.get("pageToken") else 0
            asked = int(call.query.get("pageSize") or 0)
            if asked > (500 if call.query.get("view") == "FULL" else 1000):
                return google_error(400, f"Request contains an invalid argument: pageSize {asked} is too large.")
            size = min(asked or self.page_size, self.page_size)
            page = group.members[start:start + size]
            body: dict[str, object] = {"memberships": [
                {"name": f"groups/{parts[3]}/memberships/{start + i}", "preferredMemberKey": {"id": email},
                 "roles": [{"name": "MEMBER"}], "type": kind} for i, (kind, email) in enumerate(page)]}
            if start + size < len(group.members):
                body["nextPageToken"] = base64.b64encode(str(start + size).encode()).decode()
            return Reply(200, body)
        return google_error(404, f"Method not found: {call.path}", "NOT_FOUND")
