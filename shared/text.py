"""Text for people: durations, instants, request states and lists in the words a person reads at a glance.

Cards, Teams replies and notice titles use these; the API's JSON and the audit events keep their
machine-readable forms (ISO 8601), which this module never replaces.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from .domain.durations import counted as counted
from .domain.durations import duration_in_words as duration_in_words
from .domain.lifecycle import RequestRecord, RequestState


def instant_in_words(value: datetime) -> str:
    """`2026-12-06 05:17:16 UTC`: to the second, with its zone (always UTC: a card has many readers)."""
    if value.tzinfo is None:
        raise ValueError("an instant without a time zone cannot be shown to people")
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def when_in_words(value: datetime, now: datetime) -> str:
    """`2026-12-06 05:17:16 UTC (in 1 hour)`, `… (5 minutes ago)`, `… (just now)`: the instant, and how far it
    is from `now`."""
    delta = value - now
    distance = roughly(delta)
    if delta > timedelta(0):
        return f"{instant_in_words(value)} (in {distance})"
    return f"{instant_in_words(value)} ({'just now' if distance == 'less than a minute' else f'{distance} ago'})"


def roughly(value: timedelta) -> str:
    """A length of time as a person says it in passing: to the minute, its two largest units (`1 hour 30 minutes`,
    `2 days 4 hours`), `less than a minute` below one."""
    minutes = int(abs(value.total_seconds()) / 60 + 0.5)
    if minutes == 0:
        return "less than a minute"
    words = duration_in_words(timedelta(minutes=minutes)).split(" ")
    return " ".join(words[:4])


def listed(items: Iterable[str]) -> str:
    """`a`, `a and b`, `a, b and c`; '' for none."""
    words = [str(item) for item in items]
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} and {words[-1]}"


def clause(text: str) -> str:
    """A sentence made fit to be joined to others: surrounding space and its final full stop removed."""
    return text.strip().rstrip(".").rstrip()


def clauses(parts: Sequence[str]) -> str:
    """Reasons joined with `; `, never `.;`."""
    return "; ".join(c for c in (clause(part) for part in parts) if c)


def quoted(text: str, limit: int = 60) -> str:
    """What someone typed, quoted for a reply (shortened past `limit` characters), never a Python repr."""
    shown = text if len(text) <= limit else text[: limit - 1] + "…"
    return f"“{shown}”"


def state_in_words(record: RequestRecord) -> str:
    """Where a request stands, e.g. `waiting for 1 more approval (deadline 2026-12-06 09:17:16 UTC)`,
    `active until 2026-12-06 05:17:16 UTC`, `denied by an approver`."""
    state = record.state
    if state is RequestState.PENDING_APPROVAL:
        required = record.decision.required_approvals if record.decision is not None else 0
        missing = max(required - len(record.approvals), 0)
        text = f"waiting for {missing} more approval{'' if missing == 1 else 's'}"
        if record.approval_deadline is not None:
            text += f" (deadline {instant_in_words(record.approval_deadline)})"
        return text
    if state is RequestState.ACTIVE and record.expires_at is not None:
        return f"active until {instant_in_words(record.expires_at)}"
    if state is RequestState.REJECTED:
        return "rejected as invalid" if record.request is None else "denied by policy"
    return _STATES[state]


def reason_in_words(record: RequestRecord) -> str:
    """Why a request ended as it did (denied, rejected, failed), '' when there is nothing to say."""
    if record.state is RequestState.DENIED and record.denial:
        return clause(str(record.denial.get("reason", "")))
    if record.state is RequestState.REJECTED:
        if record.decision is not None and record.decision.reasons:
            return clauses(record.decision.reasons)
        if record.errors:
            return clauses([f"{error.get('loc', '')}: {error.get('msg', '')}" for error in record.errors])
    if record.state is RequestState.FAILED and record.failure:
        return clause(record.failure)
    return ""


_STATES = {
    RequestState.RECEIVED: "received, not evaluated yet",
    RequestState.PENDING_APPROVAL: "waiting for approvals",
    RequestState.APPROVED: "approved, being granted",
    RequestState.ACTIVE: "active",
    RequestState.REVOKED: "revoked",
    RequestState.REJECTED: "rejected",
    RequestState.DENIED: "denied by an approver",
    RequestState.EXPIRED: "expired without a decision",
    RequestState.FAILED: "failed: the grant could not be made",
}
