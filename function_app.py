"""Azure Functions entry point (Python v2 programming model): the app and its triggers, nothing else.

The HTTP API is the same ASGI app `jitgate serve` runs, behind AsgiFunctionApp. Neither it nor the runtime
is built here, and no Azure SDK is imported: the host imports this module to index the functions, and
everything it needs beyond that is built on the first invocation (functions/_runtime.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import azure.functions as func

from functions import access_lifecycle, access_requests, access_revocations, archive, reconcile
from functions._runtime import runtime

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

log = logging.getLogger("jitgate.http")


class LazyApi:
    """An ASGI app that builds the real one (`shared.api.create_app` on the shared runtime) on first call."""

    def __init__(self) -> None:
        self._app: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None
        self._runtime: object = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            current = runtime()
            if self._app is None or self._runtime is not current:
                from shared.api import create_app

                self._app, self._runtime = create_app(current), current
        except Exception as exc:
            if scope["type"] != "lifespan":
                raise
            # NB. Said here: the middleware runs the lifespan in a task whose exception nobody reads.
            log.exception("jitgate could not start")
            await receive()
            await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
            return
        await self._app(scope, receive, send)


# NB. Anonymous at the Functions level: callers are authenticated by App Service authentication (Entra ID)
# and the Teams webhook by its HMAC, both checked inside the app; a function key would add nothing.
api = LazyApi()
app = func.AsgiFunctionApp(app=api, http_auth_level=func.AuthLevel.ANONYMOUS, function_name="api")
app.register_blueprint(access_requests.blueprint)
app.register_blueprint(access_lifecycle.blueprint)
app.register_blueprint(access_revocations.blueprint)
app.register_blueprint(reconcile.blueprint)
app.register_blueprint(archive.blueprint)
