"""Envoy's external authorization service (ARCHITECTURE "Access through Envoy"): the HTTP ext_authz endpoint,
the in-memory index of active envoy holds it decides from, and the usage it writes as `activity.summary`.

Envoy sends the client request's method and path (below `/api/envoy/authz/<service>`) and the payload its
jwt_authn filter verified (`x-jitgate-jwt-payload`). jitgate answers 200 with the upstream headers naming the
access request and the principal, or a refusal Envoy hands to the client (401: no trusted identity; 403: no
grant, with where to ask for one).

The index is rebuilt from the ledger's active envoy holds every `refresh` (each process on its own: that interval
is how stale a decision in another process may be after a revoke), and one grant key is read again at once when
this process's `envoy` plane creates or deletes its assignment. Decisions compare each hold's expiry with now,
so no refresh is needed for access to end on time.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from starlette.types import Receive, Scope, Send

from .domain.envoy import (
    PROVIDER,
    AccessIndex,
    Caller,
    Decision,
    Entry,
    Unauthenticated,
    caller_from_payload,
    entra_issuer,
    path_segments,
    usage_summary,
)
from .domain.ledger import GrantKey
from .ports import Clock, LedgerStore

log = logging.getLogger("jitgate.envoy")

PATH_PREFIX = "/api/envoy/authz"
PAYLOAD_HEADER = "x-jitgate-jwt-payload"
REQUEST_ID_HEADER = "x-jitgate-request-id"
PRINCIPAL_HEADER = "x-jitgate-principal"
# The Backstage template that asks for a service behind Envoy (backstage/templates/request-service-access); its
# `service` field is filled with the service's Component, named after the service.
TEMPLATE = "jitgate-request-service-access"
# NB. A person's token is sent with every call for its lifetime (about an hour): its checked claims are kept, by
# payload and audience, and only its expiry is compared with now again. Bounded; emptied when full.
CALLERS_KEPT = 10_000
_PAYLOAD_NAME = PAYLOAD_HEADER.encode()


@dataclass(frozen=True, slots=True)
class Answer:
    """What the ext_authz endpoint answers: 200 with upstream headers, or a refusal with a body for people."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


@dataclass
class Usage:
    """One grant's use seen by this process since its hold entered the index."""

    service: str
    first_use: datetime | None = None
    last_use: datetime | None = None
    allowed: int = 0
    denied: int = 0


@dataclass
class _State:
    index: AccessIndex = field(default_factory=AccessIndex)
    usage: dict[str, Usage] = field(default_factory=dict)


class EnvoyAuthorizer:
    """Decides Envoy's checks for the services in `services` (name -> token audience), issued by `tenant`.

    `summarize(request_id, data)` appends an `activity.summary` to the request's chain; `write_usage` calls it
    (from `run`, never on a request) once a grant has left the index, with what this process saw of its use."""

    def __init__(self, ledger: LedgerStore, clock: Clock, services: dict[str, str], tenant: str,
                 summarize: Callable[[str, dict[str, Any]], None], portal_url: str = "",
                 refresh_every: timedelta = timedelta(seconds=1)) -> None:
        self.ledger = ledger
        self.clock = clock
        self.services = dict(services)
        self.issuer = entra_issuer(tenant)
        self.summarize = summarize
        self.portal_url = portal_url
        self.refresh_every = refresh_every
        self._state = _State()
        self._callers: dict[tuple[str, str], Caller] = {}
        self._ended: dict[str, Usage] = {}
        self._usage_lock = threading.Lock()
        self._refresh_lock = threading.Lock()

    # ------------------------------------------------------------ the index

    def refresh(self) -> None:
        """Read the ledger's active envoy holds again."""
        with self._refresh_lock:
            self._swap(AccessIndex(self.ledger.all_active_holds(PROVIDER)))

    def changed(self, key: GrantKey) -> None:
        """Read one grant key's document again: this process's plane has just created or deleted its assignment
        (a grant, a revoke), so its decisions follow at once, at the cost of one read."""
        with self._refresh_lock:
            grant = self.ledger.get_grant(key)
            self._swap(self._state.index.with_key(key, grant.active_holds if grant else ()))

    def _swap(self, index: AccessIndex) -> None:
        """Decide from `index` from now on. The usage of every grant that left the index waits for
        `write_usage`, so that a change made in a revoke's path writes nothing to the revoked request's chain."""
        self._state.index = index
        with self._usage_lock:
            # NB. Every grant not in the new index, not only those that were in the old one: a check that read
            # the old index just before the swap may have counted a grant that has left since.
            held = index.request_ids
            for request_id in [rid for rid in self._state.usage if rid not in held]:
                self._ended[request_id] = self._state.usage.pop(request_id)

    def write_usage(self, final: bool = True) -> None:
        """Append an `activity.summary` for each grant that has left the index; with `final` False (the process
        is stopping) for each grant still in it too, marked partial."""
        with self._usage_lock:
            ended, self._ended = self._ended, {}
            if not final:
                left, self._state.usage = self._state.usage, {}
        for request_id, usage in ended.items():
            self._write(request_id, usage)
        if not final:
            for request_id, usage in left.items():
                self._write(request_id, usage, final=False)

    def run(self, stop: threading.Event) -> None:
        """Refresh and write usage every `refresh_every` until `stop` is set; then write what is left."""
        while not stop.wait(self.refresh_every.total_seconds()):
            try:
                self.refresh()
            except Exception:  # the last index keeps serving; expiries are still enforced from it
                log.exception("envoy: could not read the ledger's holds; deciding from the last index")
            self.write_usage()
        self.write_usage(final=False)

    def _write(self, request_id: str, usage: Usage, final: bool = True) -> None:
        data = usage_summary(usage.first_use, usage.allowed, usage.denied, usage.last_use, usage.service)
        if not final:
            data["partial"] = True
        try:
            self.summarize(request_id, data)
        except Exception:
            log.exception("envoy: could not write the usage of %s: %s", request_id, data)

    # ------------------------------------------------------------ a check

    def check(self, service: str, method: str, path: str, payload: str | None) -> Answer:
        """Envoy's question: may the bearer of `payload` make this request to `service`?"""
        now = self.clock.now()
        audience = self.services.get(service)
        if audience is None:
            return _refusal(403, "unknown_service", f"jitgate protects no service named {service!r}")
        try:
            caller = self._caller(payload, audience, now)
        except Unauthenticated as exc:
            return _refusal(401, "unauthenticated", str(exc))
        decision = self._state.index.decide(
            caller.principal_id, service, method, path_segments(path.split("?", 1)[0]), now)
        if decision.entry is not None:
            self._count(decision.entry, decision.allowed, now)
        if decision.allowed:
            assert decision.entry is not None
            return Answer(200, ((REQUEST_ID_HEADER, decision.entry.request_id),
                                (PRINCIPAL_HEADER, caller.principal_id)))
        return self._denied(service, decision)

    def _caller(self, payload: str | None, audience: str, now: datetime) -> Caller:
        known = self._callers.get((payload or "", audience))
        if known is None:
            known = caller_from_payload(payload, self.issuer, audience, now)
            if len(self._callers) >= CALLERS_KEPT:
                self._callers.clear()
            self._callers[(payload or "", audience)] = known
        elif known.expired(now):
            raise Unauthenticated("the token has expired")
        return known

    def _count(self, entry: Entry, allowed: bool, now: datetime) -> None:
        with self._usage_lock:
            usage = self._state.usage.get(entry.request_id)
            if usage is None:
                usage = self._state.usage[entry.request_id] = Usage(entry.route.service)
            if allowed:
                usage.allowed += 1
                usage.first_use = usage.first_use or now
                usage.last_use = now
            else:
                usage.denied += 1

    def request_link(self, service: str) -> str:
        """Where a person asks for access to `service`: the Backstage template, the service filled in."""
        if not self.portal_url:
            return ""
        form = quote(json.dumps({"service": f"component:default/{service}"}, separators=(",", ":")), safe="")
        return f"{self.portal_url}/create/templates/default/{TEMPLATE}?formData={form}"

    def _denied(self, service: str, decision: Decision) -> Answer:
        link = self.request_link(service)
        how = (f"Ask for access in Backstage: {link}" if link
               else f"Ask for access with jitgate (provider envoy, scope {service}[/<route>], role read or write).")
        return _refusal(403, "no_active_grant", f"{decision.reason}. {how}", link)

    # ------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The endpoint, mounted at PATH_PREFIX: `/<service>/<the client's path>`, any method."""
        if scope["type"] != "http":
            return
        # NB. The path as Envoy sent it: decoding it here would let `%2F` reach a route it must not.
        raw: bytes = scope.get("raw_path") or scope["path"].encode()
        tail = raw.decode("latin-1")[len(PATH_PREFIX):] if raw.startswith(PATH_PREFIX.encode()) else ""
        service, _, rest = tail.removeprefix("/").partition("/")
        payload = None
        for name, value in scope["headers"]:
            if name == _PAYLOAD_NAME:
                if payload is not None:  # NB. two copies: someone else added one; trust neither
                    payload = ""
                    break
                payload = value.decode("latin-1")
        answer = self.check(service, scope["method"], "/" + rest, payload)
        headers = [(k.encode(), v.encode()) for k, v in answer.headers]
        if answer.body:
            headers.append((b"content-type", b"application/json"))
        headers.append((b"content-length", str(len(answer.body)).encode()))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body if scope["method"] != "HEAD" else b""})


def _refusal(status: int, error: str, detail: str, link: str = "") -> Answer:
    body: dict[str, str] = {"error": error, "detail": detail}
    if link:
        body["requestAccess"] = link
    return Answer(status, (), json.dumps(body).encode())
