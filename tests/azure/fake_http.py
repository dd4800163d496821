"""A small local HTTP service for the Azure REST fakes: a threading server on 127.0.0.1 that records every
request, answers queued faults first and hands the rest to the fake's `route`."""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Call:
    """One request as the server saw it."""

    method: str
    path: str  # decoded path, without the query
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Reply:
    status: int
    body: Any = None  # JSON-serialisable, or bytes as they are
    headers: dict[str, str] = field(default_factory=dict)


def error(status: int, code: str, message: str = "", headers: dict[str, str] | None = None) -> Reply:
    """The `{"error": {"code", "message"}}` body ARM and Graph answer with."""
    return Reply(status, {"error": {"code": code, "message": message or code}}, headers or {})


@dataclass
class _Fault:
    method: str
    path: re.Pattern[str]
    reply: Reply
    times: int
    delay: float


class FakeHttpService:
    """Subclasses implement `route(call) -> Reply`. `fail(method, path_regex, reply, times)` answers the next
    matching requests with `reply` (after `delay` seconds) before the fake sees them."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.calls: list[Call] = []
        self._faults: list[_Fault] = []
        self._lock = threading.RLock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes; without this, delayed ACKs cost 40 ms a call.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                parts = urlsplit(self.path)
                call = Call(
                    method=self.command,
                    path=parts.path,
                    query={k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()},
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length) if length else b"",
                )
                reply = fake._answer(call)
                payload = reply.body if isinstance(reply.body, bytes) else (
                    b"" if reply.body is None else json.dumps(reply.body).encode()
                )
                self.send_response(reply.status)
                if payload and not isinstance(reply.body, bytes):
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:  # an https endpoint, for clients that refuse plain http (Entra's token endpoint)
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        scheme = "https" if isinstance(self._server.socket, ssl.SSLSocket) else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail(self, method: str, path: str, reply: Reply, times: int = 1, delay: float = 0.0) -> None:
        with self._lock:
            self._faults.append(_Fault(method, re.compile(path, re.IGNORECASE), reply, times, delay))

    def calls_to(self, method: str, path: str = "") -> list[Call]:
        pattern = re.compile(path, re.IGNORECASE)
        with self._lock:
            return [c for c in self.calls if c.method == method and pattern.search(c.path)]

    def route(self, call: Call) -> Reply:
        raise NotImplementedError

    def _answer(self, call: Call) -> Reply:
        with self._lock:
            self.calls.append(call)
            fault = next(
                (f for f in self._faults if f.method in (call.method, "*") and f.path.search(call.path)), None
            )
            if fault is not None:
                fault.times -= 1
                if fault.times == 0:
                    self._faults.remove(fault)
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            return fault.reply
        with self._lock:
            return self.route(call)
