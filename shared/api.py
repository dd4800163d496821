"""The HTTP API (ARCHITECTURE §7): one ASGI app, served locally by uvicorn and in Azure through
`AsgiFunctionApp`. Each endpoint identifies the caller, checks what it may do, calls one lifecycle
handler and shapes the answer; domain errors become HTTP statuses in one place (`_error_response`).

Endpoints that read a body are `async` so that they can stop reading at the size limit; everything
that touches a backend runs in a worker thread, never on the event loop. Every body is JSON: it is read only
when sent as `application/json` (415 otherwise), within a time bound (408), and parsed by the one guarded
parser (`domain.json_body`), so no body can make an endpoint answer 5xx.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic.alias_generators import to_camel
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from .domain.audit import Actor, ChainReport, EventType, settled, verification, verify_chain
from .domain.errors import (
    AlreadyExists,
    AuthError,
    ConcurrencyConflict,
    FieldError,
    IdempotencyMismatch,
    IllegalTransition,
    InvalidRequest,
    JitgateError,
    NotFound,
    PermanentError,
    TransientError,
)
from .domain.ids import is_guid, is_principal_id, principal_id_problem
from .domain.json_body import BodyTooLarge, MalformedBody
from .domain.lifecycle import RequestRecord, RequestState
from .domain.request import MAX_BODY_BYTES, AccessRequest, parse_access_request
from .http_bodies import (
    MAX_REVOKE_BODY,
    MAX_TEXT,
    ReadDeadline,
    RequestTimedOut,
    UnsupportedMediaType,
    body_text,
    client_of,
    extension_body,
    json_body,
    note_body,
    object_body,
    query_instant,
    read_at_most,
    read_body,
    require_json,
    revoke_reason,
)
from .identity import SUBMITTER, Caller, caller_from
from .lifecycle import RequestFilter, Result, Viewer
from .ports import AuditQuery
from .runtime import Runtime
from .settings import SettingsError

if TYPE_CHECKING:
    from .google_identity import GoogleIdTokens
from .teams import (
    MAX_ACTIVITY_BYTES,
    InvalidActivity,
    InvalidCommand,
    ReplayGuard,
    TeamsCommand,
    UnknownCommand,
    help_text,
    parse_activity,
    parse_command,
    reply,
    request_id_named_in,
    status_reply,
    verify_signature,
)
from .text import state_in_words

log = logging.getLogger("jitgate.api")

API_VERSION = "1.1"
MAX_LIST_PAGE = 100
TEAMS_DEADLINE = 4.5  # seconds; Teams gives up on an outgoing webhook after 5
ANONYMOUS = Actor(principal_id="anonymous", kind="user")

_ERROR_BODY = {"application/json": {"schema": {"type": "object", "required": ["error", "detail"], "properties": {
    "error": {"type": "string"}, "detail": {"type": "string"}}}}}
_BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    408: {"description": "the body was not received within the read bound", "content": _ERROR_BODY},
    413: {"description": "the body is over the endpoint's size limit", "content": _ERROR_BODY},
    415: {"description": "the body is not sent as application/json (UTF-8)", "content": _ERROR_BODY},
}

_INTERNAL_FIELDS = ("version", "fingerprint", "auditSeq", "auditHead", "pendingEvents", "revokeSequence",
                    "revokeQueue", "revokeN")


class NotConfigured(JitgateError):
    """A feature this deployment has not been given the settings for."""


def create_app(runtime: Runtime) -> FastAPI:
    """The ASGI app for one runtime. Nothing is built at import time."""
    api = _Api(runtime)
    app = _App(
        title="jitgate",
        version=API_VERSION,
        description="Just-in-time, time-boxed, approval-gated access to cloud resources.",
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
    )
    app.state.api = api
    app.state.teams_deadline = TEAMS_DEADLINE
    app.add_middleware(ReadDeadline, seconds=runtime.settings.request_read_timeout.total_seconds())
    app.add_exception_handler(JitgateError, _error_response)
    app.add_exception_handler(RequestValidationError, _validation_response)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _internal_error_response)
    if runtime.envoy is not None:
        from .envoy_authz import PATH_PREFIX

        app.mount(PATH_PREFIX, runtime.envoy)

    request_body = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/AccessRequestV1"}}}}}
    revoke_body = {"requestBody": {"required": False, "content": {"application/json": {"schema": {
        "type": "object", "additionalProperties": False,
        "properties": {"reason": {"type": "string", "maxLength": 500}}}}}}}
    activity_body = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "description": "a Teams outgoing-webhook message activity"}}}}}
    app.add_api_route("/api/access-requests", api.submit, methods=["POST"], status_code=202,
                      openapi_extra=request_body, responses=_BODY_ERRORS, tags=["requests"])
    app.add_api_route("/api/access-requests", api.list_requests, methods=["GET"], tags=["requests"])
    app.add_api_route("/api/access-requests/{request_id}", api.get_request, methods=["GET"], tags=["requests"])
    app.add_api_route("/api/access-requests/{request_id}/revoke", api.revoke, methods=["POST"],
                      openapi_extra=revoke_body, responses=_BODY_ERRORS, tags=["requests"])
    extend_body = object_body({"duration": {"type": "string", "format": "duration",
                                             "description": "ISO 8601, added to the grant's end"},
                                "reason": {"type": "string", "maxLength": MAX_TEXT}}, ["duration"])
    for verb, handler, body in (("approve", api.approve, note_body("comment", False)),
                                ("deny", api.deny, note_body("reason", True)), ("extend", api.extend, extend_body)):
        app.add_api_route(f"/api/access-requests/{{request_id}}/{verb}", handler, methods=["POST"],
                          openapi_extra=body, responses=_BODY_ERRORS, tags=["requests"])
    app.add_api_route("/api/teams/webhook", api.teams_webhook, methods=["POST"], openapi_extra=activity_body,
                      responses=_BODY_ERRORS, tags=["teams"])
    app.add_api_route("/api/audit/events", api.audit_events, methods=["GET"], tags=["audit"])
    app.add_api_route("/api/audit/verify", api.audit_verify, methods=["GET"], tags=["audit"])
    app.add_api_route("/api/health", api.health, methods=["GET"], tags=["health"])
    return app


class _App(FastAPI):
    """FastAPI whose OpenAPI document also carries the access request schema (the intake body is read
    raw, so FastAPI cannot derive it)."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema:
            return self.openapi_schema
        schema = get_openapi(title=self.title, version=self.version, description=self.description,
                             routes=self.routes)
        request = AccessRequest.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(request.pop("$defs", {}))
        request.pop("$id", None)  # it would re-base the component refs inside
        components["AccessRequestV1"] = request
        self.openapi_schema = schema
        return schema


def google_id_tokens(runtime: Runtime) -> GoogleIdTokens:
    """The verifier of the API's callers in gcp mode; SettingsError when it has no audience to check."""
    # NB. Imported here: PyJWT and cryptography serve gcp mode only, and every import costs the Azure cold start.
    from .google_identity import GoogleIdTokens, GoogleKeys

    settings = runtime.settings
    if not settings.gcp_api_audiences:
        raise SettingsError(["JITGATE_GCP_API_AUDIENCE is required for the API in gcp mode: the audiences callers' "
                             "Google ID tokens carry (the Cloud Run service URL or a custom audience, and the OAuth "
                             "client id people sign in with), comma-separated"])
    known = {*runtime.policy.groups, *settings.gcp_groups}
    unknown = sorted({m for _, m in settings.gcp_roles if m.startswith("group:") and m.partition(":")[2] not in known})
    if unknown:
        raise SettingsError([f"JITGATE_GCP_ROLES: {', '.join(unknown)} is not a group of the policy file or of "
                             "JITGATE_GCP_GROUPS"])
    return GoogleIdTokens(settings.gcp_api_audiences, settings.gcp_roles, runtime.backends.directory,
                          GoogleKeys(settings.gcp_certs_url))


def _api_of(request: Request) -> _Api:
    api: _Api = request.app.state.api
    return api


def _authenticated(action: str) -> Callable[[Request], Caller]:
    """A dependency: any authenticated caller (401 otherwise)."""

    def dependency(request: Request) -> Caller:
        return _api_of(request).identify(request, action, request.path_params.get("request_id"))

    return dependency


def _auditor(action: str) -> Callable[[Request], Caller]:
    """A dependency: a caller with Jit.Auditor or Jit.Admin (401/403 otherwise)."""

    def dependency(request: Request) -> Caller:
        return _api_of(request).identify_auditor(request, action, request.query_params.get("requestId"))

    return dependency


class _Api:
    """The endpoints, bound to one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.lifecycle = runtime.lifecycle
        # NB. A secret that is set but unreadable raises SettingsError here: the app refuses to start rather
        # than answer every Teams call "not configured".
        self.teams_secret: bytes | None = None
        if runtime.settings.has_teams_secret:
            self.teams_secret = runtime.settings.resolved_teams_secret()
        else:
            log.warning("the Teams webhook is disabled: JITGATE_TEAMS_SECRET is not set")
        self.replay_guard = ReplayGuard(runtime.backends.clock)
        self.google = google_id_tokens(runtime) if runtime.settings.mode == "gcp" else None

    # ------------------------------------------------------------ identity and refusals

    def _refuse(self, request_id: str | None, actor: Actor, action: str, reason: str,
                status: int = 403) -> NoReturn:
        """Audit the refusal against the request when there is one, then refuse."""
        if request_id and is_guid(request_id.lower()):
            self.lifecycle.refuse_access(request_id.lower(), actor, action, reason)
        raise AuthError(reason, status=status)

    def identify(self, request: Request, action: str, request_id: str | None) -> Caller:
        """The authenticated caller; a 401 about a request is audited against it."""
        try:
            return caller_from(request.headers, self.settings, self.google)
        except AuthError as exc:
            self._refuse(request_id, ANONYMOUS, action, str(exc), exc.status)

    def identify_auditor(self, request: Request, action: str, request_id: str | None) -> Caller:
        """An authenticated caller with Jit.Auditor or Jit.Admin."""
        caller = self.identify(request, action, request_id)
        if not caller.is_auditor:
            self._refuse(request_id, caller.actor(), action,
                         "the audit trail is only for callers with the Jit.Auditor or Jit.Admin role")
        return caller

    # ------------------------------------------------------------ access requests

    async def submit(self, request: Request,
                     caller: Annotated[Caller, Depends(_authenticated("submit"))]) -> JSONResponse:
        """Validate an access request (schema v1) and queue it for evaluation: 202 with its status,
        422 with every field error, 409 when the requestId was used for another body."""
        require_json(request)
        # NB. An oversize body is an invalid message like any other (ARCHITECTURE §2): its first bytes
        # are enough for submit to reject and audit it, so the rest is never read.
        raw = await read_at_most(request, MAX_BODY_BYTES + 1)
        result = await run_in_threadpool(self._submit, caller, raw)
        log.info("request %s submitted by %s %s: %s", result.request_id, caller.kind, caller.principal_id,
                 result.message)
        return JSONResponse({"requestId": result.request_id, "status": result.state.value,
                             "message": result.message}, status_code=202)

    def _submit(self, caller: Caller, raw: bytes) -> Result:
        try:
            request = parse_access_request(raw)
        except InvalidRequest:
            return self.lifecycle.submit(raw, caller.actor())  # records, audits and raises the rejection
        if not caller.may_submit_for(request.requester.principal_id):
            self._refuse(request.request_id, caller.actor(), "submit",
                         f"you may only request access for yourself (the {SUBMITTER} role submits for others)")
        return self.lifecycle.submit(raw, caller.actor())

    def get_request(self, request_id: str,
                    caller: Annotated[Caller, Depends(_authenticated("read"))]) -> dict[str, Any]:
        """State, decision, approvals, holds and the audit timeline of one request. For the requester,
        its approvers, auditors and admins."""
        record = self._record(request_id)
        viewer = self._viewer(caller)
        if not viewer.may_read(record):
            self._refuse(record.request_id, caller.actor(), "read",
                         "only the requester, its approvers, auditors and admins may read this request")
        view = self._view(record, viewer, full=True)
        view["approval"]["stillMay"] = [{"principalId": p.principal_id, "displayName": p.display_name}
                                        for p in self.lifecycle.lists.who_may_approve(record)]
        return view

    def list_requests(
        self,
        caller: Annotated[Caller, Depends(_authenticated("list"))],
        mine: Annotated[bool, Query(description="only requests the caller made")] = False,
        waiting_for_me: Annotated[bool, Query(alias="waitingForMe", description=(
            "only requests the caller may approve or deny now (and has not approved yet)"))] = False,
        state: Annotated[str | None, Query(max_length=256, description=(
            "request states, comma-separated (active: the grants in force)"))] = None,
        provider: Annotated[str | None, Query(max_length=64)] = None,
        scope: Annotated[str | None, Query(max_length=1024, description="the target's scope, any case")] = None,
        role: Annotated[str | None, Query(max_length=256)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIST_PAGE)] = 25,
        continuation: Annotated[str | None, Query(max_length=1024)] = None,
    ) -> dict[str, Any]:
        """Requests the caller may read (their own, those of their approver groups; every request for auditors
        and admins), newest first, matching every given filter. A page may be shorter than `limit` and still
        have a `continuation`: pass it back for the next; none means the end."""
        states: frozenset[RequestState] | None = None
        if state is not None:
            names = [name.strip() for name in state.split(",") if name.strip()]
            unknown = [name for name in names if name not in {s.value for s in RequestState}]
            if unknown or not names:
                raise InvalidRequest([FieldError("query.state", f"unknown state {(unknown or [''])[0][:64]!r}; "
                                                 "one or more of: " + ", ".join(s.value for s in RequestState))])
            states = frozenset(RequestState(name) for name in names)
        wanted = RequestFilter(mine=mine, waiting_for_me=waiting_for_me, states=states, provider=provider,
                               scope=scope, role=role)
        viewer = self._viewer(caller)
        try:
            page = self.lifecycle.lists.list_requests(wanted, viewer, limit, continuation)
        except ValueError as exc:
            raise InvalidRequest([FieldError("query.continuation", str(exc))]) from None
        return {"requests": [self._view(record, viewer) for record in page.records],
                "continuation": page.continuation}

    async def approve(self, request_id: str, request: Request,
                      caller: Annotated[Caller, Depends(_authenticated("approve"))]) -> dict[str, Any]:
        """An approver's yes, with an optional `{"comment": ...}`: the rules of the Teams command (in an approver
        group, never the requester, one person counts once). Refusals are audited."""
        raw = await json_body(request, MAX_REVOKE_BODY)
        return await run_in_threadpool(self._decide, caller, request_id, raw, "approve")

    async def deny(self, request_id: str, request: Request,
                   caller: Annotated[Caller, Depends(_authenticated("deny"))]) -> dict[str, Any]:
        """An approver's no, with its `{"reason": ...}` (required): terminal for the request."""
        raw = await json_body(request, MAX_REVOKE_BODY)
        return await run_in_threadpool(self._decide, caller, request_id, raw, "deny")

    def _decide(self, caller: Caller, request_id: str, raw: bytes, verb: str) -> dict[str, Any]:
        record = self._record(request_id)
        if caller.kind != "user":
            self._refuse(record.request_id, caller.actor(), verb,
                         f"a service cannot {verb}: approvals are a person's, made with their own sign-in")
        decide = self.lifecycle.approve if verb == "approve" else self.lifecycle.deny
        try:
            text = body_text(raw, "comment" if verb == "approve" else "reason", required=verb == "deny")
        except InvalidRequest:
            if self._viewer(caller).may_decide(record):
                decide(record.request_id, caller.principal_id, "")  # NB. audits the refusal, whatever the body holds
            raise
        result = decide(record.request_id, caller.principal_id, text)
        return {"requestId": result.request_id, "state": result.state.value, "message": result.message}

    async def extend(self, request_id: str, request: Request,
                     caller: Annotated[Caller, Depends(_authenticated("extend"))]) -> dict[str, Any]:
        """More time for an active grant, by its requester: `{"duration": "PT1H", "reason": ...}` is added to its
        end. The policy decides again for the whole time; what needs approval is refused with its reasons."""
        raw = await json_body(request, MAX_REVOKE_BODY)
        return await run_in_threadpool(self._extend, caller, request_id, raw)

    def _extend(self, caller: Caller, request_id: str, raw: bytes) -> dict[str, Any]:
        record = self._record(request_id)
        requester = record.request.requester.principal_id if record.request is not None else None
        if caller.principal_id != requester:
            self._refuse(record.request_id, caller.actor(), "extend", "only the requester may extend this request")
        more, reason = extension_body(raw)
        result = self.lifecycle.extend(record.request_id, caller.principal_id, more, reason)
        return {"requestId": result.request_id, "state": result.state.value, "message": result.message}

    async def revoke(self, request_id: str, request: Request,
                     caller: Annotated[Caller, Depends(_authenticated("revoke"))]) -> dict[str, Any]:
        """Early revoke ("I'm done") by the requester, or by an admin. Optional body `{"reason": ...}`, sent
        as application/json even when empty."""
        require_json(request)
        raw = await read_body(request, MAX_REVOKE_BODY)
        return await run_in_threadpool(self._revoke, caller, request_id, raw)

    def _revoke(self, caller: Caller, request_id: str, raw: bytes) -> dict[str, Any]:
        # NB. Who may revoke is settled before the body is looked at, so that a refusal is audited whatever
        # the body holds.
        record = self._record(request_id)
        requester = record.request.requester.principal_id if record.request is not None else None
        if not caller.is_admin and caller.principal_id != requester:
            self._refuse(record.request_id, caller.actor(), "revoke",
                         "only the requester or an admin may revoke this request")
        reason = revoke_reason(raw)
        result = self.lifecycle.request_revoke(record.request_id, caller.principal_id, caller.is_admin, reason)
        return {"requestId": result.request_id, "state": result.state.value, "message": result.message}

    def _record(self, request_id: str) -> RequestRecord:
        record = self.runtime.requests.get_request(request_id.lower()) if is_guid(request_id.lower()) else None
        if record is None:
            raise NotFound(f"no request {request_id[:64]}")
        return record

    def _viewer(self, caller: Caller) -> Viewer:
        return Viewer(caller.principal_id, self.runtime.backends.directory.groups_of(caller.principal_id),
                      caller.is_auditor)

    def _view(self, record: RequestRecord, viewer: Viewer, full: bool = False) -> dict[str, Any]:
        """A request as the pages show it; `full` adds its holds and its audit timeline."""
        doc = record.document()
        for key in _INTERNAL_FIELDS:
            doc.pop(key, None)
        doc["request"] = record.request.to_json_dict() if record.request is not None else None
        doc["decision"] = _camel(record.decision.model_dump(mode="json")) if record.decision else None
        doc["grantKey"] = record.grant_key.as_dict() if record.grant_key is not None else None
        doc["stateInWords"] = state_in_words(record)
        why_not = viewer.may_decide(record)
        doc["approval"] = {
            "required": record.decision.required_approvals if record.decision else 0,
            "approverGroups": list(record.decision.approver_groups) if record.decision else [],
            "given": [_camel(a.model_dump(mode="json")) for a in record.approvals],
            "youMay": not why_not,
            "whyNot": why_not,
        }
        if full:
            doc["holds"] = [_camel(h.model_dump(mode="json"))
                            for h in self.runtime.backends.ledger.holds_for_request(record.request_id)]
            doc["timeline"] = [e.document() for e in self.runtime.audit.chain(record.request_id)]
        return doc

    # ------------------------------------------------------------ Teams

    async def teams_webhook(self, request: Request) -> JSONResponse:
        """The Teams outgoing webhook: HMAC-verified, replay-guarded; `approve <id> [comment]`,
        `deny <id> <reason>`, `status <id>`, `help`. Answers within Teams' 5 seconds."""
        require_json(request)
        body = await read_body(request, MAX_ACTIVITY_BYTES)
        authorization = request.headers.get("authorization")
        work = asyncio.get_running_loop().run_in_executor(None, self._teams, body, authorization)
        try:
            answer = await asyncio.wait_for(asyncio.shield(work), request.app.state.teams_deadline)
        except TimeoutError:
            work.add_done_callback(_log_late_outcome)
            return JSONResponse(reply("Still working on it: send `status <request id>` in a moment for the outcome."))
        return JSONResponse(answer)

    def _teams(self, body: bytes, authorization: str | None) -> dict[str, str]:
        if self.teams_secret is None:
            raise NotConfigured("the Teams webhook is not configured: set JITGATE_TEAMS_SECRET")
        try:
            verify_signature(self.teams_secret, body, authorization)
        except AuthError as exc:
            self._refuse(request_id_named_in(body), Actor(principal_id="unauthenticated", kind="user"),
                         "teams.webhook", f"{exc}{_claimed_sender(body)}", exc.status)
        activity = parse_activity(body)
        try:
            self.replay_guard.check(activity.id, activity.timestamp)
        except AuthError as exc:
            sender = activity.aad_object_id if is_principal_id(activity.aad_object_id) else "unknown"
            self._refuse(request_id_named_in(body), Actor(principal_id=sender, kind="user"), "teams.webhook",
                         str(exc), exc.status)
        try:
            command = parse_command(activity.text)
        except UnknownCommand as exc:
            return reply(f"{exc} {help_text(self.settings.teams_webhook_name)}")
        except InvalidCommand as exc:
            return reply(str(exc))
        if command.verb == "help":
            return reply(help_text(self.settings.teams_webhook_name))
        problem = principal_id_problem(activity.aad_object_id)
        if problem:
            return reply("jitgate cannot tell who you are: your Teams message carries no Entra object id "
                         f"(from.aadObjectId {problem}).")
        try:
            return reply(self._command(command, activity.aad_object_id))
        except NotFound:
            return reply(f"There is no request {command.request_id}.")
        except (AuthError, IllegalTransition) as exc:
            return reply(f"Refused: {exc}.")

    def _command(self, command: TeamsCommand, sender: str) -> str:
        if command.verb == "approve":
            result = self.lifecycle.approve(command.request_id, sender, command.text)
            return f"Request {result.request_id}: {result.message}."
        if command.verb == "deny":
            result = self.lifecycle.deny(command.request_id, sender, command.text)
            return f"Request {result.request_id}: {result.message} ({command.text})."
        record = self._record(command.request_id)
        requester = record.request.requester.principal_id if record.request is not None else None
        viewer = Viewer(sender, self.runtime.backends.directory.groups_of(sender))
        if sender != requester and not viewer.may_read(record):
            self._refuse(record.request_id, Actor(principal_id=sender, kind="user"), "teams.status",
                         "only the requester and its approvers may see this request's status")
        return status_reply(record)

    # ------------------------------------------------------------ audit

    def audit_events(
        self,
        caller: Annotated[Caller, Depends(_auditor("audit.events"))],
        request_id: Annotated[str | None, Query(alias="requestId", max_length=128)] = None,
        principal_id: Annotated[str | None, Query(alias="principalId", max_length=128)] = None,
        type: Annotated[str | None, Query(max_length=64, description="an audit event type")] = None,
        since: Annotated[str | None, Query(max_length=64, description="ISO 8601, inclusive")] = None,
        until: Annotated[str | None, Query(max_length=64, description="ISO 8601, exclusive")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        continuation: Annotated[str | None, Query(max_length=1024)] = None,
    ) -> dict[str, Any]:
        """Audit events matching every given filter, ordered by time; pass `continuation` back for the next
        page. Auditors and admins only."""
        errors: list[FieldError] = []
        if type is not None and type not in {t.value for t in EventType}:
            errors.append(FieldError("query.type", f"unknown event type {type[:64]!r}; one of: "
                                     + ", ".join(t.value for t in EventType)))
        start = query_instant("since", since, errors)
        end = query_instant("until", until, errors)
        if errors:
            raise InvalidRequest(errors)
        query = AuditQuery(request_id=request_id.lower() if request_id else None,
                           principal_id=principal_id.lower() if principal_id else None,
                           type=type, since=start, until=end, limit=limit, continuation=continuation)
        try:
            page = self.runtime.audit.query(query)
        except ValueError as exc:
            raise InvalidRequest([FieldError("query.continuation", str(exc))]) from None
        return {"events": [e.document() for e in page.events], "continuation": page.continuation}

    def audit_verify(
        self,
        caller: Annotated[Caller, Depends(_auditor("audit.verify"))],
        request_id: Annotated[str | None, Query(alias="requestId", max_length=128)] = None,
    ) -> dict[str, Any]:
        """Recompute the hash chain of one request, or of every request, compare each chain's end with its
        request record, and name each first broken link. Auditors and admins only."""
        audit, requests = self.runtime.audit, self.runtime.requests

        def verified(rid: str) -> ChainReport:
            record = requests.get_request(rid)  # NB. before the chain: see `settled`
            return verify_chain(rid, audit.chain(rid), None if record is None else record.anchor())

        ids: Iterable[str] = [request_id.lower()] if request_id else audit.request_ids()
        reports = [settled(partial(verified, rid)) for rid in ids]
        if request_id and reports[0].events == 0 and not reports[0].anchored:
            raise NotFound(f"no audit events for request {request_id[:64]}")
        return verification(reports)

    def health(self) -> dict[str, Any]:
        """Liveness, the mode and which backend serves each port. Anyone may ask."""
        return {"status": "ok", "mode": self.settings.mode, "backends": self.runtime.backend_names}


def _camel(values: dict[str, Any]) -> dict[str, Any]:
    return {to_camel(key): value for key, value in values.items()}


def _claimed_sender(body: bytes) -> str:
    try:
        sender = parse_activity(body).aad_object_id
    except JitgateError:
        return ""
    return f" (the unverified body claims sender {sender})" if is_principal_id(sender) else ""


def _log_late_outcome(work: asyncio.Future[dict[str, str]]) -> None:
    if work.cancelled():
        return
    error = work.exception()
    if error is not None:
        log.warning("a Teams command finished after its reply was sent and failed: %s", error)
    else:
        log.info("a Teams command finished after its reply was sent: %s", work.result().get("text"))


_STATUS: tuple[tuple[type[JitgateError], int, str], ...] = (
    (AuthError, 403, "forbidden"),
    (NotFound, 404, "not_found"),
    (IllegalTransition, 409, "conflict"),
    (ConcurrencyConflict, 409, "conflict"),
    (IdempotencyMismatch, 409, "conflict"),
    (AlreadyExists, 409, "conflict"),
    (InvalidRequest, 422, "invalid"),
    (InvalidActivity, 400, "bad_request"),
    (BodyTooLarge, 413, "too_large"),
    (MalformedBody, 400, "bad_request"),
    (UnsupportedMediaType, 415, "unsupported_media_type"),
    (RequestTimedOut, 408, "request_timeout"),
    (TransientError, 503, "unavailable"),
    (NotConfigured, 503, "not_configured"),
    (PermanentError, 502, "backend_refused"),
)


async def _error_response(request: Request, exc: Exception) -> JSONResponse:
    """The one place a domain error becomes an HTTP status."""
    status, code = next(((s, c) for kind, s, c in _STATUS if isinstance(exc, kind)), (500, "internal"))
    body: dict[str, Any] = {"error": code, "detail": str(exc)}
    headers: dict[str, str] = {}
    if isinstance(exc, AuthError):
        status = exc.status
        body["error"] = "unauthenticated" if status == 401 else "forbidden"
    elif isinstance(exc, InvalidRequest):
        if exc.request_id is not None:
            body["requestId"] = exc.request_id
        body["errors"] = [e.as_dict() for e in exc.errors]
    elif isinstance(exc, TransientError):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after or 5)))
    elif isinstance(exc, RequestTimedOut):
        headers["Connection"] = "close"  # the rest of a stalled body is never read
    if status >= 500:
        log.warning("%s %s → %d: %s", request.method, request.url.path, status, exc)
    return JSONResponse(body, status_code=status, headers=headers)


async def _client_gone(request: Request, exc: Exception) -> Response:
    # NB. One line, no traceback: a client that hangs up mid-body is an everyday event, not a fault.
    log.info("%s %s from %s: the client disconnected before its body was complete", request.method,
             request.url.path, client_of(request.scope))
    return Response(status_code=400)  # nobody is left to read it


async def _validation_response(request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    fields = [FieldError(".".join(str(p) for p in e.get("loc", ())), str(e.get("msg", ""))) for e in errors]
    return JSONResponse({"error": "invalid", "detail": "; ".join(f"{f.loc}: {f.msg}" for f in fields),
                         "errors": [f.as_dict() for f in fields]}, status_code=422)


async def _internal_error_response(request: Request, exc: Exception) -> JSONResponse:
    # NB. No traceback here: Starlette re-raises after this response, and the server logs it once.
    log.error("%s %s failed: %r", request.method, request.url.path, exc)
    return JSONResponse({"error": "internal", "detail": "internal error; the server log has the details"},
                        status_code=500)
