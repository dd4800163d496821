"""Azure Resource Manager plumbing shared by the ARM adapters (RBAC, PIM, and Graph's error shape): a
lazily created bearer-token source, authenticated JSON calls, `nextLink` paging, the translation of ARM
errors into jitgate's own (TransientError, PermanentError) and the role catalog. No Azure SDK is imported
until a token is needed.

Role definition ids are normalised to the lower-cased role definition **GUID** everywhere jitgate keeps
them (GrantKey, Assignment, the deterministic assignment name), exactly as `local` does, so that a grant
key means the same whatever the provider. The full ARM form
`/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{guid}` exists only on the wire.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import httpx

from ...domain.errors import JitgateError, PermanentError, TransientError
from ...domain.ids import is_guid
from ..http import LazyClient, is_transient_status, retry_after, same_origin

if TYPE_CHECKING:
    from azure.core.credentials import AccessToken, TokenCredential

log = logging.getLogger("jitgate.azure")

TokenProvider = Callable[[], str]
"""Returns a bearer token for one audience; raises TransientError when none can be had."""

ARM_ENDPOINT: Final = "https://management.azure.com"
ARM_TOKEN_SCOPE: Final = "https://management.azure.com/.default"
RBAC_API_VERSION: Final = "2022-04-01"
AUTHORIZATION: Final = "/providers/Microsoft.Authorization"

# NB. A principal created moments ago may not have replicated to ARM yet (PrincipalNotFound). The
# lifecycle retries TransientError honouring retry_after; a few seconds is what Microsoft suggests.
PRINCIPAL_REPLICATION_BACKOFF: Final = 5.0
TOKEN_REFRESH_MARGIN: Final = 300.0

# 409s that retrying cannot fix; every other conflict is another operation in flight.
_PERMANENT_CONFLICTS: Final = frozenset({"RoleAssignmentUpdateNotPermitted", "ScopeLocked"})
# The codes of a failed long-running operation that another try may not meet.
_TRANSIENT_OPERATION_CODES: Final = frozenset({"InternalServerError", "ServiceUnavailable", "TooManyRequests",
                                               "GatewayTimeout", "RequestTimeout", "Conflict"})
_SCOPE_RE: Final = re.compile(r"(/[^/?#%\s\\]+)+")
_SUBSCRIPTION_RE: Final = re.compile(r"^/subscriptions/([^/]+)", re.IGNORECASE)
_PATH_SAFE: Final = "/()-._~!$&'*+,;=:@"


# ---------------------------------------------------------------- tokens


class CachedToken:
    """A TokenProvider for one audience. The credential (DefaultAzureCredential unless one is given:
    managed identity in Azure) is built on the first call, never at import or construction, and a token is
    reused until five minutes before it expires."""

    def __init__(self, scope: str, credential: TokenCredential | None = None) -> None:
        self.scope = scope
        self._credential = credential
        self._token: AccessToken | None = None
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            if self._token is not None and self._token.expires_on - TOKEN_REFRESH_MARGIN > time.time():
                return self._token.token
            if self._credential is None:
                from azure.identity import DefaultAzureCredential

                self._credential = DefaultAzureCredential()
            try:
                self._token = self._credential.get_token(self.scope)
            except Exception as exc:  # ClientAuthenticationError and friends; IMDS hiccups are common
                raise TransientError(f"no token for {self.scope}: {type(exc).__name__}: {exc}") from exc
            return self._token.token


def arm_token_provider(credential: TokenCredential | None = None) -> TokenProvider:
    """Tokens for Azure Resource Manager (RBAC and PIM)."""
    return CachedToken(ARM_TOKEN_SCOPE, credential)


@dataclass(frozen=True)
class ArmFailure:
    """An ARM error response, `{"error": {"code", "message"}}` (Microsoft Graph answers in the same shape),
    plus what the headers say."""

    status: int
    code: str
    message: str
    retry_after: float | None

    @classmethod
    def of(cls, response: httpx.Response) -> ArmFailure:
        code, message = "", ""
        try:
            body = response.json()
            # NB. ARM wraps the error ({"error": {...}}); some resource providers (Cosmos DB's among them) have been
            # seen answering with code and message at the top.
            error = body.get("error") or body
            code, message = str(error.get("code") or ""), str(error.get("message") or "")
        except (ValueError, AttributeError):
            message = response.text[:300]
        return cls(response.status_code, code or response.reason_phrase, message, retry_after(response.headers))

    def error(self, what: str) -> JitgateError:
        """The jitgate error this failure means."""
        text = f"{what}: {self.status} {self.code}: {self.message}".rstrip(": ")
        if self.code == "PrincipalNotFound":
            return TransientError(text, retry_after=self.retry_after or PRINCIPAL_REPLICATION_BACKOFF)
        if self.status == 401 or is_transient_status(self.status):
            # 401: an expired or not-yet-valid token; the next call gets a fresh one.
            return TransientError(text, retry_after=self.retry_after)
        if self.status == 409 and self.code not in _PERMANENT_CONFLICTS:
            return TransientError(text, retry_after=self.retry_after)
        return PermanentError(text)


# ---------------------------------------------------------------- ARM client


def checked_scope(scope: str) -> str:
    """An ARM scope safe to put in a URL path, without a trailing slash; PermanentError otherwise."""
    candidate = scope.rstrip("/")
    segments = candidate.split("/")
    if not _SCOPE_RE.fullmatch(candidate) or "." in segments or ".." in segments:
        raise PermanentError(f"InvalidScope: {scope!r} is not an Azure resource scope")
    return candidate


def canonical_scope(scope: str) -> str:
    """A scope without a trailing slash, and without the alias PIM sometimes reports for subscriptions
    (`/providers/Microsoft.Subscription/subscriptions/{id}` is `/subscriptions/{id}`)."""
    scope = scope.rstrip("/")
    alias = "/providers/microsoft.subscription/subscriptions/"
    return scope[len(alias) - len("/subscriptions/") :] if scope.lower().startswith(alias) else scope


def scope_key(scope: str) -> str:
    """A scope as ARM compares it: case-insensitively, in its canonical form."""
    return canonical_scope(scope).lower()


def at_or_below(scope: str, ancestor: str) -> bool:
    child, parent = scope_key(scope), scope_key(ancestor)
    return child == parent or child.startswith(parent + "/")


def role_definition_resource_id(scope: str, role_guid: str) -> str:
    """The ARM id of a role definition as a PUT body wants it, for an assignment at `scope`."""
    found = _SUBSCRIPTION_RE.match(scope_key(scope))
    prefix = f"/subscriptions/{found.group(1)}" if found else ""
    return f"{prefix}{AUTHORIZATION}/roleDefinitions/{role_guid}"


def guid_of(resource_id: str) -> str:
    """The last segment of a resource id, lower-cased (the GUID of a role definition id)."""
    return resource_id.rstrip("/").rsplit("/", 1)[-1].lower()


class ArmClient:
    """Authenticated JSON calls to Azure Resource Manager that raise jitgate's errors.

    Transport faults and timeouts are TransientError; the caller decides what a non-2xx response means
    (most go through `ArmFailure.error`). The httpx client is created on first use unless one is given.
    """

    def __init__(
        self,
        token_provider: TokenProvider,
        base_url: str = ARM_ENDPOINT,
        http: httpx.Client | None = None,
        timeout: float = 30.0,
    ) -> None:
        self._token = token_provider
        self.base_url = base_url.rstrip("/")
        self._origin = httpx.URL(self.base_url)
        self._http = LazyClient(http, timeout)

    def _client(self) -> httpx.Client:
        return self._http.get()

    def close(self) -> None:
        self._http.close()

    def url(self, path: str) -> httpx.URL:
        return httpx.URL(self.base_url + quote(path, safe=_PATH_SAFE))

    def may_reach(self, url: httpx.URL) -> bool:
        """Whether a token for ARM may go to `url`: ARM itself, or over HTTPS one of its regional endpoints
        (`<region>.management.azure.com`, where resource providers point their long-running operations)."""
        origin = self._origin
        regional = (url.scheme == "https" == origin.scheme and url.port == origin.port
                    and url.host.endswith("." + origin.host))
        return same_origin(url, origin) or regional

    def send(
        self,
        method: str,
        target: str | httpx.URL,
        api_version: str | None,
        what: str,
        params: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> httpx.Response:
        """One call; `target` is a path under the base URL or an absolute URL of the same origin."""
        url = target if isinstance(target, httpx.URL) else self.url(target)
        if not self.may_reach(url):
            raise PermanentError(f"{what}: refusing to send a token to {url.scheme}://{url.host}")
        query = dict(params or {})
        if api_version is not None:
            query["api-version"] = api_version
        headers = {"Authorization": f"Bearer {self._token()}", "Accept": "application/json"}
        content = None
        if body is not None:
            content = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            return self._client().request(method, url, params=query or None, content=content, headers=headers)
        except httpx.TransportError as exc:  # timeouts, refused and reset connections
            raise TransientError(f"{what}: {type(exc).__name__}: {exc}") from exc

    def get(self, target: str | httpx.URL, api_version: str, what: str) -> dict[str, Any] | None:
        """The resource, or None when ARM says 404."""
        response = self.send("GET", target, api_version, what)
        if response.status_code == 404:
            return None
        if not response.is_success:
            raise ArmFailure.of(response).error(what)
        return json_object(response, what)

    def finish(self, response: httpx.Response, what: str, timeout: float = 120.0, poll: float = 1.0) -> None:
        """Wait for a long-running operation ARM accepted (202) to end, polling its Azure-AsyncOperation URL (a
        status document) or else its Location URL (202 while running), as ARM's async pattern has it. Returns
        when it succeeded; a failed or canceled operation raises its error; one still running after `timeout`
        seconds is a TransientError (the caller reads the resource back and retries)."""
        if response.status_code != 202:
            return
        status_url = response.headers.get("azure-asyncoperation")
        location = response.headers.get("location")
        if not status_url and not location:
            raise TransientError(f"{what}: accepted (202) without an Azure-AsyncOperation or Location to follow")
        target = httpx.URL(status_url or location or "")
        deadline = time.monotonic() + timeout
        wait = retry_after(response.headers)
        while True:
            time.sleep(min(wait if wait is not None else poll, max(0.0, deadline - time.monotonic())))
            answer = self.send("GET", target, None, what)
            if status_url:
                if not answer.is_success:
                    raise ArmFailure.of(answer).error(what)
                state = json_object(answer, what)
                status = str(state.get("status") or "")
                if status == "Succeeded":
                    return
                if status in ("Failed", "Canceled"):
                    error = state.get("error")
                    error = error if isinstance(error, dict) else {}
                    code, message = str(error.get("code") or status), str(error.get("message") or "")
                    text = f"{what}: the operation {status.lower()}: {code}: {message}".rstrip(": ")
                    if status == "Canceled" or code in _TRANSIENT_OPERATION_CODES:
                        raise TransientError(text)
                    raise PermanentError(text)
            elif answer.status_code != 202:
                if not answer.is_success:
                    raise ArmFailure.of(answer).error(what)
                return
            if time.monotonic() >= deadline:
                raise TransientError(f"{what}: still running after {timeout:.0f} s")
            wait = retry_after(answer.headers)

    def pages(
        self, path: str, api_version: str, what: str, params: Mapping[str, str] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every item of a list, following `nextLink` (which must stay on this origin)."""
        target: str | httpx.URL = path
        query: Mapping[str, str] | None = params
        version: str | None = api_version
        while True:
            response = self.send("GET", target, version, what, query)
            if not response.is_success:
                raise ArmFailure.of(response).error(what)
            page = json_object(response, what)
            items = page.get("value") or []
            if not isinstance(items, list):
                raise PermanentError(f"{what}: unexpected list response")
            yield from (item for item in items if isinstance(item, dict))
            next_link = page.get("nextLink")
            if not next_link:
                return
            # nextLink carries its own api-version and filter.
            target, query, version = httpx.URL(str(next_link)), None, None


def json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError as exc:
        raise TransientError(f"{what}: {response.status_code} with a body that is not JSON") from exc
    if not isinstance(value, dict):
        raise PermanentError(f"{what}: unexpected response shape")
    return value


# ---------------------------------------------------------------- role catalog


class RoleCatalog:
    """Role names and ids → role definition GUIDs, as ARM knows them at a scope (built-in and custom
    roles). Found roles are cached for the life of the process: a role definition GUID never changes meaning.
    Unknown roles are not cached, so a custom role created later resolves on the next request."""

    def __init__(self, arm: ArmClient) -> None:
        self._arm = arm
        self._found: dict[tuple[str, str], str] = {}

    def resolve(self, scope: str, role: str) -> str:
        candidate = role.strip()
        if "/roledefinitions/" in candidate.lower():
            candidate = guid_of(candidate)
        if not candidate:
            raise PermanentError(f"RoleDefinitionDoesNotExist: unknown role {role!r}")
        scope = checked_scope(scope)
        cache_key = (scope_key(scope), candidate.lower())
        found = self._found.get(cache_key)
        if found is None:
            found = self._lookup(scope, candidate)
            if found is None:
                raise PermanentError(f"RoleDefinitionDoesNotExist: unknown role {role!r} at {scope}")
            self._found[cache_key] = found
        return found

    def _lookup(self, scope: str, candidate: str) -> str | None:
        what = f"resolve role {candidate!r}"
        path = f"{scope}{AUTHORIZATION}/roleDefinitions"
        if is_guid(candidate.lower()):
            definition = self._arm.get(f"{path}/{candidate.lower()}", RBAC_API_VERSION, what)
            return guid_of(str(definition.get("name") or candidate)) if definition is not None else None
        # NB. ARM compares roleName case-insensitively (as `az role assignment create --role reader` relies on);
        # among what it returns, an exact match wins over one that differs only in case.
        literal = candidate.replace("'", "''")
        matches = [
            definition
            for definition in self._arm.pages(path, RBAC_API_VERSION, what, {"$filter": f"roleName eq '{literal}'"})
            if str((definition.get("properties") or {}).get("roleName", "")).lower() == candidate.lower()
        ]
        matches.sort(key=lambda d: (d.get("properties") or {}).get("roleName") != candidate)
        return guid_of(str(matches[0].get("name") or matches[0].get("id", ""))) if matches else None


