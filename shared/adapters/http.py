"""HTTP plumbing every REST adapter shares (Azure, Microsoft Graph, Teams, and the clouds to come):
what a status means for retrying, what `Retry-After` asks for, and where a bearer token may go."""

from __future__ import annotations

import email.utils
import threading
from datetime import UTC, datetime

import httpx


def retry_after(headers: httpx.Headers) -> float | None:
    """`Retry-After` in seconds (delta-seconds or an HTTP date), or None."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def is_transient_status(status: int) -> bool:
    return status in (408, 429) or status >= 500


def same_origin(url: httpx.URL, origin: httpx.URL) -> bool:
    """Whether `url` is served by the same scheme, host and port as `origin`: bearer tokens never leave it."""
    return (url.scheme, url.host, url.port) == (origin.scheme, origin.host, origin.port)


class LazyClient:
    """An httpx client made on first use (nothing connects at import or construction: cold start) and shared by
    the adapter's threads. `close` closes only a client made here; one handed in is its owner's to close."""

    def __init__(self, given: httpx.Client | None, timeout: float) -> None:
        self._given = given
        self._http = given
        self._timeout = timeout
        self._lock = threading.Lock()

    def get(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                self._http = httpx.Client(timeout=httpx.Timeout(self._timeout, connect=10.0))
            return self._http

    def close(self) -> None:
        with self._lock:
            if self._http is not None and self._http is not self._given:
                self._http.close()
                self._http = None
