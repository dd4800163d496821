"""Reading HTTP request bodies: the bound on how long a body may take, the size limits, the one media type JSON
endpoints take, and the small bodies of the pages' and revoke endpoints (each field checked, 4xx with its reason)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .domain.durations import parse_duration
from .domain.errors import FieldError, InvalidRequest, JitgateError
from .domain.json_body import BodyTooLarge, MalformedBody, parse_json
from .domain.request import note_problem

log = logging.getLogger("jitgate.api")

MAX_REVOKE_BODY = 4 * 1024  # every small body: revoke, approve, deny, extend
MAX_TEXT = 500  # a reason or an approver's comment


class UnsupportedMediaType(JitgateError):
    """A body sent as anything but UTF-8 `application/json`."""


class RequestTimedOut(JitgateError):
    """A request body not received within the read bound; the connection is closed after the answer."""


class ReadDeadline:
    """ASGI middleware: a request body must arrive within `seconds` of the request head, or the request is
    answered 408 and its connection closed. uvicorn waits for a stalled body forever; `jitgate serve` bounds
    the head itself (shared/server.py)."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        body_done = False

        async def bounded() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                log.info("%s %s from %s: the body did not arrive within %g s; answered 408 and closed",
                         scope["method"], scope["path"], client_of(scope), self.seconds)
                raise RequestTimedOut(f"the body did not arrive within {self.seconds:g} s") from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, bounded, send)


def client_of(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "an unknown client"


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the body is {int(declared)} bytes; the limit is {limit}")
    body = await read_at_most(request, limit + 1)
    if len(body) > limit:
        raise BodyTooLarge(f"the body is over the limit of {limit} bytes")
    return body


async def read_at_most(request: Request, size: int) -> bytes:
    """The first `size` bytes of the body (all of it when shorter); the rest is left unread."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) >= size:
            break
    return bytes(body[:size])


def require_json(request: Request) -> None:
    """Refuse (415) a body not declared as UTF-8 JSON: `application/json`, with no charset or charset=utf-8.

    NB. A browser sends text/plain, form encodings or no Content-Type at all cross-site without a CORS preflight;
    behind cookie-based App Service authentication such a POST would act with the victim's session. Only
    application/json needs the preflight that a cross-site page cannot pass."""
    declared = request.headers.get("content-type")
    if declared is None:
        raise UnsupportedMediaType("send the body as application/json; this request has no Content-Type")
    media_type, *parameters = (part.strip() for part in declared.split(";"))
    if media_type.lower() != "application/json":
        raise UnsupportedMediaType(f"send the body as application/json, not {media_type[:64]!r}")
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        charset = value.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset != "utf-8":
            raise UnsupportedMediaType(f"JSON is read as UTF-8 only (charset=utf-8 or none), not {charset[:32]!r}")


async def json_body(request: Request, limit: int) -> bytes:
    """A small JSON body: 415 unless sent as application/json, 413 over `limit` bytes."""
    require_json(request)
    return await read_body(request, limit)


def body_object(raw: bytes, fields: dict[str, bool]) -> dict[str, Any]:
    """The body's object (an empty body is `{}`), read by the guarded parser, with only the `fields` given (name →
    required); 422 for anything else."""
    expected = ", ".join(f'"{name}"' + ("" if required else " (optional)") for name, required in fields.items())
    if not raw.strip():
        doc: Any = {}
    else:
        try:
            doc = parse_json(raw, MAX_REVOKE_BODY)
        except MalformedBody as exc:
            raise InvalidRequest([FieldError("body", f"not valid JSON: {exc}")]) from None
    if not isinstance(doc, dict) or set(doc) - set(fields):
        raise InvalidRequest([FieldError("body", f"expected an object with only {expected}")])
    missing = [name for name, required in fields.items() if required and not doc.get(name)]
    if missing:
        raise InvalidRequest([FieldError(f"body.{name}", "is required") for name in missing])
    return doc


def text_of(doc: dict[str, Any], field: str) -> str:
    value = doc.get(field, "")
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise InvalidRequest([FieldError(f"body.{field}", f"must be a string of at most {MAX_TEXT} characters")])
    problem = note_problem(value)
    if problem:
        raise InvalidRequest([FieldError(f"body.{field}", problem)])
    return value.strip()


def body_text(raw: bytes, field: str, required: bool = False) -> str:
    """The one text field of a body such as `{"reason": ...}`."""
    text = text_of(body_object(raw, {field: required}), field)
    if required and not text:
        raise InvalidRequest([FieldError(f"body.{field}", "is required")])
    return text


def revoke_reason(raw: bytes) -> str:
    return body_text(raw, "reason")


def extension_body(raw: bytes) -> tuple[timedelta, str]:
    doc = body_object(raw, {"duration": True, "reason": False})
    duration = doc["duration"]
    try:
        if not isinstance(duration, str):
            raise ValueError("must be an ISO 8601 duration such as PT1H")
        more = parse_duration(duration)
    except ValueError as exc:
        raise InvalidRequest([FieldError("body.duration", str(exc))]) from None
    return more, text_of(doc, "reason")


def note_body(field: str, required: bool) -> dict[str, Any]:
    """The OpenAPI request body of an endpoint that takes `{field: text}`."""
    return object_body({field: {"type": "string", "maxLength": MAX_TEXT}}, [field] if required else [])


def object_body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"requestBody": {"required": bool(required), "content": {"application/json": {"schema": {
        "type": "object", "additionalProperties": False, "properties": properties, "required": required}}}}}


def query_instant(name: str, text: str | None, errors: list[FieldError]) -> datetime | None:
    if text is None:
        return None
    # NB. An unencoded '+' in a query string arrives as a space: "09:00:00 02:00" meant "09:00:00+02:00".
    candidate = text.strip()
    if " " in candidate and "T" in candidate:
        candidate = candidate.replace(" ", "+")
    try:
        value = datetime.fromisoformat(candidate)
    except ValueError:
        errors.append(FieldError(f"query.{name}", f"{text[:64]!r} is not an ISO 8601 timestamp"))
        return None
    if value.tzinfo is None:
        errors.append(FieldError(f"query.{name}", "must include a time zone, e.g. 2026-11-26T09:00:00Z"))
        return None
    return value
