"""Telling people what happened to a request (a Teams card in Azure; the outbox file locally)."""

from __future__ import annotations

import logging

from ..domain.errors import TransientError
from ..domain.lifecycle import RequestRecord
from ..ports import Notice
from ..text import duration_in_words, reason_in_words, state_in_words
from .backends import Backends

log = logging.getLogger("jitgate.lifecycle")


class Notices:
    """Sends a notice about a request. A notice that cannot be delivered never undoes the committed
    transition it announces: the audit trail has the event either way."""

    def __init__(self, backends: Backends) -> None:
        self.b = backends

    def notify(
        self,
        record: RequestRecord,
        kind: str,
        title: str,
        audience: list[str] | None = None,
        hints: list[str] | None = None,
    ) -> None:
        try:
            self.b.notifier.notify(
                Notice(
                    kind=kind,
                    request_id=record.request_id,
                    title=title,
                    facts=_facts(record),
                    reply_hints=hints or [],
                    audience=audience or [],
                    requester=record.request.requester.principal_id if record.request is not None else "",
                )
            )
        except TransientError as exc:
            # NB. A lost notification must not undo a committed transition; the audit trail has it.
            log.warning("notification %s for %s failed: %s", kind, record.request_id, exc)
        except Exception:
            # Nor may a notifier that breaks its port contract (403 from a disabled webhook, a bug).
            log.exception("notification %s for %s failed", kind, record.request_id)


def _facts(record: RequestRecord) -> dict[str, str]:
    # NB. Words for people (the card shows the request id once, above the facts); the audit events keep ISO 8601.
    facts = {"State": state_in_words(record)}
    if record.request is not None:
        r = record.request
        facts |= {
            "Requester": f"{r.requester.display_name} ({r.requester.principal_id})",
            "Target": f"{r.target.role} at {r.target.scope} ({r.target.provider.value})",
            "Duration": duration_in_words(r.duration),
            "Justification": r.justification,
        }
        if r.ticket:
            facts["Ticket"] = r.ticket
    if record.decision is not None and record.decision.rule:
        facts["Rule"] = record.decision.rule
    if record.decision is not None and record.decision.required_approvals:
        facts["Approvals"] = f"{len(record.approvals)} of {record.decision.required_approvals}"
    reason = reason_in_words(record)
    if reason:
        facts["Reason"] = reason
    return facts
