"""The Log Analytics query API (`POST /v1/workspaces/{id}/query`), as a local HTTP server.

It cannot run KQL: it keeps each query and timespan it receives and answers with the tables a test puts in
`results` (or the canned `script` of errors), in the service's shape: `{"tables": [{"name", "columns":
[{"name", "type"}], "rows"}]}`, plus `"error"` for a partial result. Every call needs a bearer token.
"""

from __future__ import annotations

import re
from typing import Any

from tests.azure.fake_http import Call, FakeHttpService, Reply, error

TOKEN = "fake-logs-token"
ROUTE = re.compile(r"^/v1/workspaces/([^/]+)/query$")
COLUMNS = [
    {"name": "OperationNameValue", "type": "string"},
    {"name": "Count", "type": "long"},
    {"name": "Failures", "type": "long"},
]


def table(rows: list[list[Any]]) -> dict[str, Any]:
    return {"name": "PrimaryResult", "columns": COLUMNS, "rows": rows}


class FakeLogAnalytics(FakeHttpService):
    def __init__(self, workspace_id: str) -> None:
        self.workspace_id = workspace_id
        self.result: dict[str, Any] = {"tables": [table([])]}
        super().__init__()

    def route(self, call: Call) -> Reply:
        if call.headers.get("authorization") != f"Bearer {TOKEN}":
            return error(401, "InvalidAuthenticationToken", "Valid authentication was not provided")
        found = ROUTE.match(call.path)
        if found is None or call.method != "POST":
            return error(404, "PathNotFoundError", call.path)
        if found.group(1) != self.workspace_id:
            return error(404, "WorkspaceNotFoundError", f"Workspace {found.group(1)} not found")
        body = call.json() or {}
        if not body.get("query"):
            return error(400, "BadArgumentError", "The request had some invalid properties")
        return Reply(200, self.result)
