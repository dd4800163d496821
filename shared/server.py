"""`jitgate serve`: the API, the consumers (threads, or processes of their own) and the reconcile timer; and how it
runs uvicorn: the ASGI app on h11, with every request read within a time bound.

uvicorn closes an idle keep-alive connection, but not one that opened and sent an incomplete request head:
it waits for the rest forever, so a few hundred such connections (slowloris) hold the server. Here the head
of each request must arrive within `Settings.request_read_timeout` of the connection opening or of the
request's first byte; the app's `ReadDeadline` then bounds the body the same way.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from .settings import Settings

if TYPE_CHECKING:
    from .runtime import Runtime

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


def serve(runtime: Runtime, settings: Settings, host: str, port: int, log_level: str) -> None:
    """Serve `runtime` until interrupted: the API here, the consumers beside it, reconcile on its interval."""
    from .api import create_app
    from .consumer_processes import ConsumerProcesses
    from .worker import Worker, consumer_process

    app = create_app(runtime)  # before any thread starts: a bad setting stops the process here
    worker = Worker(runtime.lifecycle, runtime.bus, settings.requests_queue, settings.lifecycle_queue,
                    settings.max_delivery_count, settings.reconcile_interval.total_seconds(), settings.poll_interval)
    worker.reconcile()  # a restart after a crash converges before serving
    consumers = None
    if settings.worker_processes:
        consumers = ConsumerProcesses(lambda: consumer_process(settings, log_level), settings.worker_processes)
        threading.Thread(target=consumers.watch, args=(worker.stop,), name="jitgate-consumers", daemon=True).start()
        worker.start(0, revocations=True)  # the timer and the revocations consumer; the others are the children's
    else:
        worker.start(settings.workers)
    envoy = None
    if runtime.envoy is not None:
        envoy = threading.Thread(target=runtime.envoy.run, args=(worker.stop,), name="jitgate-envoy", daemon=True)
        envoy.start()
    print(f"jitgate serving on http://{host}:{port} (data in {settings.data_dir})", flush=True)
    try:
        run(app, settings, host, port, log_level)
    finally:
        worker.stop.set()
        if consumers is not None:
            consumers.stop()
        if envoy is not None:
            envoy.join(10)  # it writes the usage it has counted so far
