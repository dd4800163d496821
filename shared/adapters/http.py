"""HTTP plumbing every REST adapter shares (Azure, Microsoft Graph, Teams, and the clouds to come):
what a status means for retrying, what `Retry-After` asks for, and where a bearer token may go."""

from __future__ import annotations

import email.utils
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
