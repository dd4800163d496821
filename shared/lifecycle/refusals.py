"""Refused callers (ARCHITECTURE §6, §7): every 401/403 that names a request is audited on it, without
letting anyone who can provoke a refusal flood that request's audit trail or grow its record."""

from __future__ import annotations

from datetime import timedelta

from ..domain.audit import Actor, EventType
from ..domain.lifecycle import RequestRecord
from .backends import Backends
from .records import Records

REFUSAL_QUIET = timedelta(seconds=60)
REFUSALS_KEPT = 8  # distinct (action, caller) pairs remembered per request; the oldest goes first


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
        key = f"{action}|{caller.principal_id}"

        def mutate(record: RequestRecord) -> bool:
            # NB. Anyone can provoke a refusal (a forged webhook naming this request). Within the quiet
            # minute nothing at all is written, so neither the chain nor the record grows; after it, the
            # entry is replaced, and at most REFUSALS_KEPT entries are ever kept.
            last = record.refusals.get(key)
            if last is not None and now - last < REFUSAL_QUIET:
                return False
            recent = sorted((at, k) for k, at in record.refusals.items() if k != key and now - at < REFUSAL_QUIET)
            record.refusals = {k: at for at, k in recent[-(REFUSALS_KEPT - 1):]} | {key: now}
            record.emit(EventType.ACCESS_REFUSED, now, {"action": action, "reason": reason}, caller)
            return True

        return self.records.update(request_id, mutate) is not None
