"""Refused callers (ARCHITECTURE §6, §7): every 401/403 that names a request is audited on it, without
letting anyone who can provoke a refusal flood that request's audit trail."""

from __future__ import annotations

from datetime import timedelta

from ..domain.audit import Actor, EventType
from ..domain.lifecycle import RequestRecord
from .backends import Backends
from .records import Records

REFUSAL_QUIET = timedelta(seconds=60)


class Refusals:
    """Writes `access.refused` events; the same refusal within a minute is written once."""

    def __init__(self, backends: Backends, records: Records) -> None:
        self.b = backends
        self.records = records

    def refuse_access(self, request_id: str, caller: Actor, action: str, reason: str) -> bool:
        """Audit a refused API or webhook call against an existing request; False if there is none."""
        now = self.b.clock.now()
        key = f"{caller.principal_id}|{action}|{reason}"

        def mutate(record: RequestRecord) -> bool:
            # NB. Anyone can provoke a refusal (a forged webhook naming this request): the same refusal
            # within a minute is not written again, so nobody can flood a request's chain.
            last = record.refusals.get(key)
            if last is not None and now - last < REFUSAL_QUIET:
                return False
            recent = {k: at for k, at in record.refusals.items() if now - at < REFUSAL_QUIET}
            record.refusals = {**recent, key: now}
            record.emit(EventType.ACCESS_REFUSED, now, {"action": action, "reason": reason}, caller)
            return True

        return self.records.update(request_id, mutate) is not None
