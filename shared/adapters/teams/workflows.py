"""Notifier over a Microsoft Teams Workflows webhook ("Post to a channel when a webhook request is
received"): each notice is POSTed as the Adaptive Card message `cards.teams_message` builds.

The webhook URL is a secret (its `sig` query parameter is the credential): it comes from a provider
(the Key Vault-referenced app setting JITGATE_TEAMS_WEBHOOK_URL), is read only when a notice is sent, and
never appears in a log line or an error message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final

import httpx

from ...cards import teams_message
from ...domain.errors import PermanentError, TransientError
from ...ports import Notice
from ..http import LazyClient, is_transient_status, retry_after

log = logging.getLogger("jitgate.teams")

WebhookUrlProvider = Callable[[], str]

_REDACTED: Final = "<redacted>"


class TeamsNotifier:
    """Notifier port over a Teams Workflows webhook.

    A Workflows webhook answers 202 (or 200) when it accepts a message. 429, 5xx and timeouts are retried
    `attempts` times in all with exponential backoff (honouring Retry-After, capped at `max_backoff`), then
    raise TransientError; any other refusal (400 bad card, 401/403/404 for a disabled or deleted flow)
    raises PermanentError at once.
    """

    def __init__(
        self,
        webhook_url_provider: WebhookUrlProvider,
        http: httpx.Client | None = None,
        *,
        attempts: int = 4,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._url = webhook_url_provider
        self._http = LazyClient(http, 15.0)
        self._attempts = attempts
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._sleep = sleep

    def notify(self, notice: Notice) -> None:
        url = self._url()
        if not url:
            raise PermanentError("the Teams webhook URL is not configured (JITGATE_TEAMS_WEBHOOK_URL)")
        body = teams_message(notice)
        what = f"Teams notice {notice.kind} for {notice.request_id}"
        delay = self._backoff
        for attempt in range(1, self._attempts + 1):
            error = self._post(url, body, what)
            if error is None:
                return
            if attempt == self._attempts:
                raise error
            wait = min(error.retry_after if error.retry_after is not None else delay, self._max_backoff)
            log.info("%s: %s; attempt %d of %d, retrying in %.1fs", what, error, attempt, self._attempts, wait)
            self._sleep(wait)
            delay = min(delay * 2, self._max_backoff)

    def close(self) -> None:
        self._http.close()

    def _post(self, url: str, body: dict[str, Any], what: str) -> TransientError | None:
        """None when the webhook took the message; the TransientError to retry on; raises PermanentError."""
        try:
            response = self._client().post(url, json=body)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise PermanentError(f"{what}: the webhook URL is not a valid https URL") from exc
        except httpx.TransportError as exc:
            # NB. Never str(exc): some transport errors quote the URL, and the URL is the secret.
            return TransientError(f"{what}: {type(exc).__name__}")
        if response.is_success:
            return None
        text = f"{what}: webhook answered {response.status_code} {response.reason_phrase}"
        if is_transient_status(response.status_code):
            return TransientError(text, retry_after=retry_after(response.headers))
        raise PermanentError(text)

    def _client(self) -> httpx.Client:
        _keep_signatures_out_of_httpx_logs()
        return self._http.get()


class _RedactQuery(logging.Filter):
    """httpx logs every request URL at INFO; a webhook URL carries its signature (`sig`) in the query string,
    so such a URL is logged without its query."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_without_query(arg) for arg in record.args)
        return True


def _without_query(arg: object) -> object:
    if isinstance(arg, httpx.URL) and "sig" in arg.params:
        return f"{arg.copy_with(query=None)}?{_REDACTED}"
    return arg


def _keep_signatures_out_of_httpx_logs() -> None:
    httpx_log = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactQuery) for f in httpx_log.filters):
        httpx_log.addFilter(_RedactQuery())
