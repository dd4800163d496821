"""`jitgate teams check`: are the Teams settings right? Each check says ok, failed (with the exact reason) or
skipped (with why), so that an admin setting up Teams (docs/teams.md) knows which step to revisit.

1. secret: JITGATE_TEAMS_SECRET (locally the data dir's `teams-secret`) is the base64 security token.
2. webhook (with a server URL): a test message signed with that secret, as Teams would send it, reaches the
   running jitgate, which verifies the signature and answers.
3. card: a test card goes to the Workflows webhook (JITGATE_TEAMS_WEBHOOK_URL) and is accepted.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import httpx

from ...domain.errors import JitgateError
from ...notices import request_page
from ...ports import Notice, Person
from ...settings import Settings
from ...teams import decode_secret, outgoing_payload, sign
from ...text import instant_in_words
from .workflows import TeamsNotifier

Status = Literal["ok", "failed", "skipped"]

# NB. `help` needs no sender and changes nothing: the answer proves the signature was verified and parsed.
_PROBE = "help"
_PROBE_SENDER = "00000000-0000-4000-8000-000000000000"


@dataclass(frozen=True)
class Check:
    """One step's outcome, for a person."""

    name: str
    status: Status
    detail: str


def check_teams(
    settings: Settings,
    server_url: str | None = None,
    mention: list[str] | None = None,
    http: httpx.Client | None = None,
) -> list[Check]:
    """Every check, in order; the webhook check only with `server_url`, the card check only with a webhook URL."""
    secret, secret_check = _secret(settings)
    checks = [secret_check]
    if server_url is None:
        checks.append(Check("webhook", "skipped", "no server to send a signed test message to (--url)"))
    elif secret is None:
        checks.append(Check("webhook", "skipped", "no valid secret to sign a test message with"))
    else:
        checks.append(_webhook(server_url, secret, http))
    checks.append(_card(settings, mention or [], http))
    return checks


def _secret(settings: Settings) -> tuple[bytes | None, Check]:
    source, text = "JITGATE_TEAMS_SECRET", settings.teams_secret
    if not text and settings.local:
        path = settings.data_dir / "teams-secret"
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            return None, Check("secret", "failed", f"JITGATE_TEAMS_SECRET is not set and {path} cannot be read: "
                                                   f"{exc.strerror or exc}")
    if not text:
        return None, Check("secret", "failed", "JITGATE_TEAMS_SECRET is not set: it is the security token Teams "
                                               "shows when the outgoing webhook is created")
    try:
        key = decode_secret(text)
    except ValueError as exc:
        return None, Check("secret", "failed", f"{source}: {exc}")
    return key, Check("secret", "ok", f"{source} is valid base64 of {len(key)} bytes")


def _webhook(server_url: str, secret: bytes, http: httpx.Client | None) -> Check:
    endpoint = f"{server_url.rstrip('/')}/api/teams/webhook"
    body = outgoing_payload(_PROBE, _PROBE_SENDER, "jitgate teams check")
    post: Callable[..., httpx.Response] = http.post if http is not None else httpx.post
    try:
        response = post(endpoint, content=body, timeout=10,
                        headers={"Authorization": sign(secret, body), "Content-Type": "application/json"})
    except httpx.HTTPError as exc:
        return Check("webhook", "failed", f"cannot reach {endpoint}: {type(exc).__name__}: {exc}")
    answer = _json(response)
    if response.status_code == 401:
        return Check("webhook", "failed", f"{endpoint} refused the signature (401: {answer.get('detail', '')}): "
                                          "the server's JITGATE_TEAMS_SECRET is not this one")
    if response.status_code != 200 or answer.get("type") != "message":
        what = answer.get("detail") or response.text[:200]
        return Check("webhook", "failed", f"{endpoint} answered {response.status_code}: {what}")
    return Check("webhook", "ok", f"{endpoint} verified a signed test message and answered “{answer.get('text')}”")


def _card(settings: Settings, mention: list[str], http: httpx.Client | None) -> Check:
    if not settings.teams_webhook_url:
        if settings.local:
            return Check("card", "skipped", "JITGATE_TEAMS_WEBHOOK_URL is not set (local mode writes cards to the "
                                            "outbox instead)")
        return Check("card", "failed", "JITGATE_TEAMS_WEBHOOK_URL is not set: approvers would hear of nothing")
    request_id = str(uuid.uuid4())
    name = settings.teams_webhook_name
    notice = Notice(
        kind="test",
        request_id=request_id,
        title="jitgate teams check: this channel receives jitgate's cards",
        facts={"Sent": instant_in_words(datetime.now(UTC)), "Answer to": f"@{name}"},
        reply_hints=[_PROBE],
        audience=["jitgate teams check"] if mention else [],
        mentions=[Person(principal_id.lower()) for principal_id in mention],
        answer_to=name,
        link=request_page(settings.portal_url, request_id),
    )
    notifier = TeamsNotifier(lambda: settings.teams_webhook_url, http, attempts=1)
    try:
        notifier.notify(notice)
    except JitgateError as exc:
        return Check("card", "failed", str(exc))
    finally:
        notifier.close()
    return Check("card", "ok", f"the Workflows webhook accepted a test card: find it in the channel and reply "
                               f"“@{name} {_PROBE}” there (pick {name} from the list) to try the whole loop")


def _json(response: httpx.Response) -> dict[str, object]:
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
