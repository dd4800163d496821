"""Google REST plumbing shared by the Google Cloud adapters: a lazily made OAuth token source, authenticated JSON
calls that send a token only to the endpoints they were given, and Google's error body (`google.rpc.Status` as
JSON: `{"error": {"code", "message", "status", "details"}}`) turned into jitgate's errors."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Final

import httpx

from ...domain.errors import JitgateError, PermanentError, TransientError
from ..http import LazyClient, is_transient_status, retry_after, same_origin

CLOUD_PLATFORM_SCOPE: Final = "https://www.googleapis.com/auth/cloud-platform"
TOKEN_REFRESH_MARGIN: Final = 300.0

TokenProvider = Callable[[], str]
"""Returns a bearer token; raises TransientError when none can be had."""


class GoogleToken:
    """A TokenProvider from Application Default Credentials (the service's own service account on Cloud Run and
    Cloud Functions, a developer's login elsewhere). google-auth is imported on the first call, never at import
    or construction; a token is reused until five minutes before it expires."""

    def __init__(self, scopes: tuple[str, ...] = (CLOUD_PLATFORM_SCOPE,), credentials: Any = None,
                 request: Any = None) -> None:
        self.scopes = scopes
        self._credentials = credentials
        self._request = request
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            try:
                if self._credentials is None:
                    import google.auth

                    self._credentials, _ = google.auth.default(scopes=list(self.scopes))
                if self._request is None:
                    from google.auth.transport.requests import Request

                    self._request = Request()
                expiry = getattr(self._credentials, "expiry", None)
                if expiry is not None and expiry.tzinfo is None:
                    expiry = expiry.replace(tzinfo=UTC)  # NB. google-auth keeps a naive UTC datetime
                stale = expiry is not None and expiry.timestamp() - TOKEN_REFRESH_MARGIN < time.time()
                if not self._credentials.token or stale:
                    self._credentials.refresh(self._request)
            except ImportError:
                raise PermanentError("Google Cloud needs google-auth: pip install google-auth") from None
            except Exception as exc:  # DefaultCredentialsError, RefreshError, metadata server hiccups
                raise TransientError(f"no Google token: {type(exc).__name__}: {exc}") from exc
            return str(self._credentials.token)


@dataclass(frozen=True)
class GoogleFailure:
    """A Google API error answer: HTTP status, the canonical status name (`ABORTED`, `PERMISSION_DENIED`, …) and
    its message, plus what the headers say."""

    status: int
    code: str
    message: str
    retry_after: float | None

    @classmethod
    def of(cls, response: httpx.Response) -> GoogleFailure:
        code, message = "", ""
        try:
            error = response.json().get("error") or {}
            code, message = str(error.get("status") or ""), str(error.get("message") or "")
        except (ValueError, AttributeError):
            message = response.text[:300]
        return cls(response.status_code, code or response.reason_phrase, message, retry_after(response.headers))

    @property
    def concurrent_change(self) -> bool:
        """Someone else changed what was read (an etag that no longer matches): read again and redo the change.
        Resource Manager answers 409 ABORTED; some services answer 412 for a failed etag precondition."""
        return (self.status == 409 and self.code in ("ABORTED", "Conflict")) or self.status == 412

    def error(self, what: str) -> JitgateError:
        text = f"{what}: {self.status} {self.code}: {self.message}".rstrip(": ")
        # 401: an expired token, the next call gets a fresh one.
        if self.status == 401 or is_transient_status(self.status) or self.concurrent_change:
            return TransientError(text, retry_after=self.retry_after)
        return PermanentError(text)


class GoogleRest:
    """Authenticated JSON calls to a few Google API endpoints (`bases`: name → base URL). A token goes only to
    those origins; transport faults and timeouts are TransientError; the caller decides what a non-2xx means."""

    def __init__(self, token: TokenProvider, bases: Mapping[str, str], http: httpx.Client | None = None,
                 timeout: float = 30.0) -> None:
        self._token = token
        self.bases = {name: url.rstrip("/") for name, url in bases.items()}
        self._http = LazyClient(http, timeout)

    def _client(self) -> httpx.Client:
        return self._http.get()

    def close(self) -> None:
        self._http.close()

    def send(self, method: str, base: str, path: str, what: str, body: Any = None,
             params: Mapping[str, str] | None = None) -> httpx.Response:
        origin = httpx.URL(self.bases[base])
        url = httpx.URL(self.bases[base] + path)
        if not same_origin(url, origin):
            raise PermanentError(f"{what}: refusing to send a token to {url.scheme}://{url.host}")
        headers = {"Authorization": f"Bearer {self._token()}", "Accept": "application/json"}
        content = None
        if body is not None:
            content = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            return self._client().request(method, url, params=dict(params) if params else None, content=content,
                                          headers=headers)
        except httpx.TransportError as exc:
            raise TransientError(f"{what}: {type(exc).__name__}: {exc}") from exc

    def json(self, method: str, base: str, path: str, what: str, body: Any = None,
             params: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The answer's JSON object; any error answer raised as jitgate's error."""
        response = self.send(method, base, path, what, body, params)
        if not response.is_success:
            raise GoogleFailure.of(response).error(what)
        return json_object(response, what)


def json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError as exc:
        raise TransientError(f"{what}: {response.status_code} with a body that is not JSON") from exc
    if not isinstance(value, dict):
        raise PermanentError(f"{what}: unexpected response shape")
    return value
