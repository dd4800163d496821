"""A Teams Workflows webhook ("When a Teams webhook request is received"), as a local HTTP server.

The flow's URL carries its credential in the `sig` query parameter; a wrong or missing signature answers
401. A POSTed message is accepted with 202 and kept; `script` queues other answers (429 with Retry-After,
502) for the next posts.
"""

from __future__ import annotations

from typing import Any

from tests.azure.fake_http import Call, FakeHttpService, Reply, error

SIGNATURE = "s3cr3t-Signature_do-not-log"
PATH = "/powerautomate/automations/direct/workflows/0a1b2c3d/triggers/manual/paths/invoke"


class FakeTeamsWebhook(FakeHttpService):
    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.script: list[Reply] = []
        super().__init__()

    @property
    def webhook_url(self) -> str:
        return f"{self.url}{PATH}?api-version=1&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={SIGNATURE}"

    def route(self, call: Call) -> Reply:
        if call.path != PATH or call.method != "POST":
            return error(404, "TriggerNotFound")
        if call.query.get("sig") != SIGNATURE:
            return error(401, "DirectApiAuthorizationRequired", "The request must be authenticated.")
        if self.script:
            return self.script.pop(0)
        if "application/json" not in call.headers.get("content-type", ""):
            return error(400, "InvalidRequestContent")
        self.messages.append(call.json())
        return Reply(202)
