"""The HTTP API as both entries serve it: an ASGI app that builds the real one on its first call."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ._runtime import runtime

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
