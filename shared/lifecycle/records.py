"""The request record's persistence: load, create, update with optimistic concurrency, and the audit outbox.

Audit events are born inside the record (`RequestRecord.emit`) and the store writes the record and its new
events in one transaction (ARCHITECTURE §6): a state change and its events commit together or not at all.
The outbox (`flush`) remains for what a store cannot write at once (a Cosmos batch too large) and for
records an earlier jitgate left with events not yet appended.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from ..crashpoints import crashpoint
from ..domain.audit import SYSTEM, EventType, make_event
from ..domain.errors import AlreadyExists, ConcurrencyConflict, IllegalTransition, NotFound, TransientError
from ..domain.lifecycle import RequestRecord
from ..domain.request import AccessRequest
from .backends import Backends

log = logging.getLogger("jitgate.lifecycle")

T = TypeVar("T")


class Records:
    """Every write of a request record goes through here, and with it the record's audit outbox."""

    def __init__(self, backends: Backends) -> None:
        self.b = backends

    def load(self, request_id: str) -> RequestRecord:
        record = self.b.requests.get_request(request_id)
        if record is None:
            raise NotFound(f"no request {request_id}")
        return self.flushed(record)

    def create(self, record: RequestRecord) -> RequestRecord:
        saved = self.b.requests.create_request(record)
        crashpoint(f"after_state.{saved.state.value}")
        return self.flush(saved)

    def commit(self, record: RequestRecord) -> RequestRecord:
        """Write the record and its new audit events (one transaction where the store can)."""
        saved = self.b.requests.save_request(record)
        crashpoint(f"after_state.{saved.state.value}")
        return self.flush(saved)

    def update(
        self, request_id: str, mutate: Callable[[RequestRecord], bool], known: RequestRecord | None = None
    ) -> RequestRecord | None:
        """Load, mutate, save with optimistic concurrency; on conflict reload and try again.
        `mutate` returns False when there is nothing to write. None when the record does not exist.

        `known` is the record this handling loaded (or wrote last) and hands over: the first try mutates it
        instead of reading it again. NB. The write is conditional on its version, so a record changed since is
        found out by the write, which loses and reads again. A `mutate` that finds nothing to write on it is run
        again on the record read afresh: what is not written is never decided on an old read."""
        conflicts = 0
        while True:
            handed, known = known, None
            record = handed if handed is not None else self.b.requests.get_request(request_id)
            if record is None:
                return None
            record = self.flushed(record)  # NB. a handed-over record too: a write may have left its outbox full
            if not mutate(record):
                if handed is None:
                    return record
                continue  # nothing to write on the record handed over: decide on the stored one
            try:
                return self.commit(record)
            except ConcurrencyConflict:
                conflicts += 1
                if conflicts == 8:
                    raise ConcurrencyConflict(f"request {request_id}: too many concurrent writers") from None

    def flushed(self, record: RequestRecord) -> RequestRecord:
        """The record with the outbox an earlier write left flushed first: a store commits a record's pending
        events as new ones, and some of these may already have been appended. TransientError if it cannot be."""
        if not record.pending_events:
            return record
        flushed = self.flush(record)
        if flushed.pending_events:
            raise TransientError(f"request {record.request_id}: its audit outbox cannot be flushed yet")
        return flushed

    @staticmethod
    def retrying(fn: Callable[[], T]) -> T:
        """Run a whole step again when a concurrent writer got there first."""
        for _ in range(7):
            try:
                return fn()
            except ConcurrencyConflict:
                continue
        return fn()

    def flush(self, record: RequestRecord) -> RequestRecord:
        """Write the record's outbox of audit events to the audit store, then clear it."""
        if not record.pending_events:
            return record
        principal = record.request.requester.principal_id if record.request else None
        try:
            for event in record.pending_events:
                # An earlier delivery may have appended it and crashed before clearing the outbox.
                with contextlib.suppress(AlreadyExists):
                    self.b.audit.append(event, principal)
        except TransientError as exc:
            # NB. The transition is committed and its events are safe in the record's outbox: the next
            # write of this record or reconcile's flush_pending appends them. Raising here would only make
            # the redelivered handler find the work done and skip what follows (the notification).
            log.warning("audit outbox of %s not flushed yet: %s", record.request_id, exc)
            return record
        record.pending_events = []
        try:
            return self.b.requests.save_request(record)
        except (ConcurrencyConflict, TransientError):
            return record  # whoever won, or the next flush, clears the same outbox idempotently

    def flush_pending(self) -> int:
        """Flush outboxes left by crashed handlers (reconcile and startup call this)."""
        count = 0
        for record in self.b.requests.requests_with_outbox():
            count += len(record.pending_events)
            self.flush(record)
        return count

    def append_unrecorded(
        self, request_id: str, type: EventType, at: datetime, data: dict[str, Any], principal_id: str
    ) -> None:
        """Chain an event for a request this store has no record of (an orphan's marker names it)."""
        chain = self.b.audit.chain(request_id)
        prev = chain[-1].hash if chain else ""
        self.b.audit.append(make_event(request_id, len(chain), prev, type, at, SYSTEM, data), principal_id)


def request_of(record: RequestRecord) -> AccessRequest:
    """The access request a record is about; IllegalTransition for a record rejected as invalid."""
    if record.request is None:
        raise IllegalTransition(f"request {record.request_id} was rejected as invalid; it has no body")
    return record.request
