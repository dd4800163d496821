"""Google Cloud entry point (functions-framework): the functions and nothing else.

One source, one function per deployment (`--target`), as Cloud Run functions deploy it:

- `access_requests`, `access_lifecycle`, `access_revocations`: CloudEvent functions behind Eventarc Pub/Sub
  triggers on the three topics (functions/pubsub_events.py says what each does with a message).
- `reconcile`: an HTTP function Cloud Scheduler calls (POST, with an OIDC token the platform checks).
- `api`: the HTTP API, the same ASGI app `jitgate serve` and the Azure entry serve, mounted whole under
  functions-framework's ASGI mode (`functions_framework.aio`): no WSGI bridge between Starlette and the app.

As in function_app.py, nothing is built and no Google SDK client is imported here: the runtime is built on the
first invocation (functions/_runtime.py), so a cold start pays only for functions-framework itself.
"""

from __future__ import annotations

import json
from contextlib import suppress
from typing import Any

import flask
import functions_framework
from cloudevents.http.event import CloudEvent
from functions_framework import aio
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from functions._api import LazyApi
from functions._runtime import runtime


@functions_framework.cloud_event
def access_requests(event: CloudEvent) -> None:
    _on_event(runtime().settings.requests_queue, event)


@functions_framework.cloud_event
def access_lifecycle(event: CloudEvent) -> None:
    _on_event(runtime().settings.lifecycle_queue, event)


@functions_framework.cloud_event
def access_revocations(event: CloudEvent) -> None:
    # NB. A function of its own, as in Azure: a backlog of grants never holds the instances that serve revokes.
    _on_event(runtime().settings.revocations_queue, event)


@functions_framework.http
def reconcile(request: flask.Request) -> flask.typing.ResponseReturnValue:
    if request.method != "POST":
        return {"error": "method_not_allowed", "detail": "Cloud Scheduler POSTs here"}, 405
    from shared.worker import on_reconcile

    return on_reconcile(runtime().lifecycle).as_dict()


class _Mounted(Response):
    """A response that is an ASGI app: Starlette calls it with the request's own scope, receive and send."""

    def __init__(self, app: LazyApi) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


_api = LazyApi()


@aio.http
async def api(request: Request) -> Response:
    return _Mounted(_api)


def _on_event(queue: str, event: CloudEvent) -> None:
    from functions.pubsub_events import on_event

    data: Any = event.get_data()
    if isinstance(data, bytes | str):
        with suppress(ValueError):  # NB. Left as it is: on_event names what is wrong with it.
            data = json.loads(data)
    on_event(runtime(), queue, str(event["type"]), data)
