"""Telling people what happened to a request (a Teams card in Azure; the outbox file locally)."""

from __future__ import annotations

import logging

from ..domain.audit import format_instant
from ..domain.durations import format_duration
from ..domain.errors import TransientError
from ..domain.lifecycle import RequestRecord
from ..ports import Notice
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
                )
            )
        except TransientError as exc:
            # NB. A lost notification must not undo a committed transition; the audit trail has it.
            log.warning("notification %s for %s failed: %s", kind, record.request_id, exc)
        except Exception:
            # Nor may a notifier that breaks its port contract (403 from a disabled webhook, a bug).
            log.exception("notification %s for %s failed", kind, record.request_id)


def _facts(record: RequestRecord) -> dict[str, str]:
    facts = {"Request": record.request_id, "State": record.state.value}
    if record.request is not None:
        r = record.request
        facts |= {
            "Requester": f"{r.requester.display_name} ({r.requester.principal_id})",
            "Target": f"{r.target.role} at {r.target.scope} ({r.target.provider.value})",
            "Duration": format_duration(r.duration),
            "Justification": r.justification,
        }
        if r.ticket:
            facts["Ticket"] = r.ticket
    if record.decision is not None and record.decision.rule:
        facts["Rule"] = record.decision.rule
    if record.decision is not None and record.decision.required_approvals:
        facts["Approvals"] = f"{len(record.approvals)} of {record.decision.required_approvals}"
    if record.expires_at is not None:
        facts["Expires"] = format_instant(record.expires_at)
    return facts
