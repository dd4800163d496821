"""Refused callers (ARCHITECTURE §6, §7): every 401/403 that names a request is audited on it, without
letting anyone who can provoke a refusal flood that request's audit trail or grow its record."""

from __future__ import annotations

from ..domain.audit import Actor, EventType
from ..domain.lifecycle import RequestRecord
from .backends import Backends
from .records import Records


class Refusals:
    """Writes `access.refused` events, one a minute per request, action and verified caller."""

    def __init__(self, backends: Backends, records: Records) -> None:
        self.b = backends
        self.records = records

    def refuse_access(self, request_id: str, caller: Actor, action: str, reason: str) -> bool:
        """Audit a refused API or webhook call against an existing request; False if there is none.

        `caller` is what was verified about the caller: its authenticated principal, or one fixed actor
        standing for every unauthenticated caller, never an identity the caller merely claims. Refusals
        are collapsed by those verified facts only: the request, the action and the caller. The reason is
        not part of it, because its text can carry what an unauthenticated caller sent."""
        now = self.b.clock.now()

        def mutate(record: RequestRecord) -> bool:
            if not record.provoked(f"{action}|{caller.principal_id}", now):
                return False  # written within the minute: nothing is written at all
            record.emit(EventType.ACCESS_REFUSED, now, {"action": action, "reason": reason}, caller)
            return True

        return self.records.update(request_id, mutate) is not None
