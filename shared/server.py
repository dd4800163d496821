"""How `jitgate serve` runs uvicorn: the ASGI app on h11, with every request read within a time bound.

uvicorn closes an idle keep-alive connection, but not one that opened and sent an incomplete request head:
it waits for the rest forever, so a few hundred such connections (slowloris) hold the server. Here the head
of each request must arrive within `Settings.request_read_timeout` of the connection opening or of the
request's first byte; the app's `ReadDeadline` then bounds the body the same way.
"""

from __future__ import annotations

import asyncio
import logging

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from .settings import Settings

log = logging.getLogger("jitgate.server")


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request head is not complete within `head_timeout`."""

    head_timeout = 10.0
    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._watch_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def _watch_head(self) -> None:
        # NB. uvicorn starts a request cycle once the head is complete: from then on the app's ReadDeadline
        # bounds the body. Between requests, the bound starts with the first byte (or the connection).
        if self.cycle is not None and not self.cycle.response_complete:
            self._cancel_head_deadline()
        elif self._head_deadline is None and not self.transport.is_closing():
            self._head_deadline = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing():
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "an unknown client"
        log.info("closed the connection from %s: no complete request within %g s", client, self.head_timeout)
        self.transport.close()


def bounded_protocol(head_timeout: float) -> type[BoundedH11Protocol]:
    """The protocol class for one server, with its head timeout."""
    return type("BoundedH11Protocol", (BoundedH11Protocol,), {"head_timeout": head_timeout})


def run(app: FastAPI, settings: Settings, host: str, port: int, log_level: str) -> None:
    """Serve `app` until interrupted."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level.lower(),
        access_log=False,
        http=bounded_protocol(settings.request_read_timeout.total_seconds()),
    )
    uvicorn.Server(config).run()
