"""An in-memory store with the semantics of the real ones, for fast unit tests."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from shared.adapters.store_format import decode_continuation, decode_position, encode_continuation, encode_position
from shared.domain.audit import AuditEvent, format_instant
from shared.domain.errors import AlreadyExists, ConcurrencyConflict, NotFound
from shared.domain.ledger import Grant, GrantKey, Hold, HoldStatus
from shared.domain.lifecycle import RequestRecord, RequestState
from shared.ports import AuditPage, AuditQuery, RequestPage, RequestQuery

MAX_PAGE = 1000


class CountingStore:
    """A store whose calls of the named methods are counted in `calls`; everything passes through."""

    def __init__(self, store: Any, methods: Iterable[str]) -> None:
        self._store = store
        self._methods = frozenset(methods)
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if name not in self._methods:
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attribute(*args, **kwargs)

        return counted


class FakeStore:
    """`RequestStore`, `LedgerStore` and `AuditStore` in dictionaries.

    Records are kept as JSON documents, grants as frozen models and events as copies, so that a caller
    mutating what it got back changes nothing stored, exactly as with a database. A record is written with
    its pending events under one lock: all of it or nothing, as the real stores do in one transaction.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[str, str] = {}
        self._grants: dict[GrantKey, Grant] = {}
        self._events: dict[str, tuple[AuditEvent, str | None]] = {}
        self._chains: dict[str, dict[int, AuditEvent]] = {}

    # ------------------------------------------------------------ requests

    def create_request(self, record: RequestRecord) -> RequestRecord:
        text = _document(record, version=1)
        events = self._batch(record)
        with self._lock:
            if record.request_id in self._requests:
                raise AlreadyExists(f"request {record.request_id} already exists")
            self._check_new(events)
            self._requests[record.request_id] = text
            self._add(events)
        return RequestRecord.model_validate_json(text)

    def put_legacy_record(self, record: RequestRecord) -> None:
        """Store `record` as an earlier jitgate left it: its outbox kept in the document, its events not
        appended (tests of the outbox that `flush_pending` drains)."""
        doc = record.document()
        doc["version"] = record.version or 1
        with self._lock:
            self._requests[record.request_id] = json.dumps(doc)

    def get_request(self, request_id: str) -> RequestRecord | None:
        text = self._requests.get(request_id)
        return None if text is None else RequestRecord.model_validate_json(text)

    def save_request(self, record: RequestRecord) -> RequestRecord:
        text = _document(record, version=record.version + 1)
        events = self._batch(record)
        with self._lock:
            stored = self._requests.get(record.request_id)
            if stored is None:
                raise NotFound(f"request {record.request_id} does not exist")
            version = json.loads(stored)["version"]
            if version != record.version:
                raise ConcurrencyConflict(f"request {record.request_id} is at version {version}, not {record.version}")
            self._check_new(events)
            self._requests[record.request_id] = text
            self._add(events)
        return RequestRecord.model_validate_json(text)

    def requests_in(self, states: set[RequestState], limit: int = 1000) -> list[RequestRecord]:
        records = [RequestRecord.model_validate_json(text) for text in self._requests.values()]
        chosen = sorted((r for r in records if r.state in states), key=lambda r: (r.updated_at, r.request_id))
        return chosen[: max(limit, 0)]

    def list_requests(self, query: RequestQuery) -> RequestPage:
        with self._lock:
            texts = list(enumerate(self._requests.values()))  # NB. dicts keep insertion (creation) order
        start = len(texts) if query.continuation is None else int(decode_position(query.continuation))
        limit = min(max(query.limit, 1), MAX_PAGE)
        chosen: list[tuple[int, RequestRecord]] = []
        for index, text in reversed(texts[:start]):
            record = RequestRecord.model_validate_json(text)
            if query.states is not None and record.state not in query.states:
                continue
            if query.requester_id is not None and (
                record.request is None or record.request.requester.principal_id != query.requester_id
            ):
                continue
            chosen.append((index, record))
            if len(chosen) > limit:
                break
        more = len(chosen) > limit
        chosen = chosen[:limit]
        return RequestPage([r for _, r in chosen], encode_position(str(chosen[-1][0])) if more else None)

    def requests_with_outbox(self, limit: int = 1000) -> list[RequestRecord]:
        records = [RequestRecord.model_validate_json(text) for text in self._requests.values()]
        chosen = sorted((r for r in records if r.pending_events), key=lambda r: (r.updated_at, r.request_id))
        return chosen[: max(limit, 0)]

    # ------------------------------------------------------------ ledger

    def get_grant(self, key: GrantKey) -> Grant | None:
        return self._grants.get(key)

    def put_grant(self, grant: Grant) -> Grant:
        for hold in grant.holds:
            for instant in (hold.granted_at, hold.expires_at, hold.released_at):
                if instant is not None:
                    _utc(instant)
        stored = grant.model_copy(update={"version": grant.version + 1})
        with self._lock:
            current = self._grants.get(grant.key)
            version = 0 if current is None else current.version
            if version != grant.version:
                raise ConcurrencyConflict(f"grant {grant.key} is at version {version}, not {grant.version}")
            self._grants[grant.key] = stored
        return stored

    def holds_for_request(self, request_id: str) -> list[Hold]:
        return _ordered(h for h in self._holds() if h.request_id == request_id)

    def overdue_holds(self, now: datetime) -> list[Hold]:
        _utc(now)
        return _ordered(h for h in self._holds() if h.status is HoldStatus.ACTIVE and h.expires_at <= now)

    def all_active_holds(self, provider: str | None = None) -> list[Hold]:
        return _ordered(h for h in self._holds() if h.status is HoldStatus.ACTIVE and provider in (None, h.provider))

    def _holds(self) -> list[Hold]:
        with self._lock:
            return [hold for grant in self._grants.values() for hold in grant.holds]

    # ------------------------------------------------------------ audit

    def append(self, event: AuditEvent, principal_id: str | None = None) -> None:
        self.bulk_append([(event, principal_id)])

    def bulk_append(self, events_with_principal: Iterable[tuple[AuditEvent, str | None]]) -> int:
        """Append many events, all or none; returns how many."""
        batch = [(event.model_copy(deep=True), principal) for event, principal in events_with_principal]
        with self._lock:
            self._check_new(batch)
            self._add(batch)
        return len(batch)

    @staticmethod
    def _batch(record: RequestRecord) -> list[tuple[AuditEvent, str | None]]:
        principal = record.request.requester.principal_id if record.request is not None else None
        return [(event.model_copy(deep=True), principal) for event in record.pending_events]

    def _check_new(self, batch: list[tuple[AuditEvent, str | None]]) -> None:
        ids: set[str] = set()
        links: set[tuple[str, int]] = set()
        for event, _ in batch:
            link = (event.request_id, event.seq)
            if (
                event.id in self._events
                or event.id in ids
                or link in links
                or event.seq in self._chains.get(event.request_id, {})
            ):
                raise AlreadyExists(f"an audit event with id {event.id} or its (requestId, seq) already exists")
            ids.add(event.id)
            links.add(link)

    def _add(self, batch: list[tuple[AuditEvent, str | None]]) -> None:
        for event, principal in batch:
            self._events[event.id] = (event, principal)
            self._chains.setdefault(event.request_id, {})[event.seq] = event

    def rewrite(self, event: AuditEvent) -> None:
        """Put `event` in place of the stored event with its request id and seq, unchecked: what someone
        with write access to the database can do (tests of tamper detection)."""
        with self._lock:
            stored = self._chains[event.request_id][event.seq]
            _, principal = self._events.pop(stored.id)
            self._events[event.id] = (event.model_copy(deep=True), principal)
            self._chains[event.request_id][event.seq] = event.model_copy(deep=True)

    def truncate(self, request_id: str, keep: int) -> None:
        """Delete every event of the request's chain from seq `keep` on, unchecked (tests of tamper detection)."""
        with self._lock:
            links = self._chains[request_id]
            for seq in [seq for seq in links if seq >= keep]:
                del self._events[links.pop(seq).id]
            if not links:
                del self._chains[request_id]

    def chain(self, request_id: str) -> list[AuditEvent]:
        links = self._chains.get(request_id, {})
        return [links[seq].model_copy(deep=True) for seq in sorted(links)]

    def query(self, query: AuditQuery) -> AuditPage:
        limit = min(max(query.limit, 1), MAX_PAGE)
        since = None if query.since is None else format_instant(_utc(query.since))
        until = None if query.until is None else format_instant(_utc(query.until))
        after = None if query.continuation is None else decode_continuation(query.continuation)
        matching: list[tuple[tuple[str, str], AuditEvent]] = []
        for event, requester in list(self._events.values()):
            position = (format_instant(event.at), event.id)
            if (
                (query.request_id is None or event.request_id == query.request_id)
                and (query.principal_id is None or query.principal_id in (requester, event.actor.principal_id))
                and (query.type is None or event.type == query.type)
                and (since is None or position[0] >= since)
                and (until is None or position[0] < until)
                and (after is None or position > after)
            ):
                matching.append((position, event))
        matching.sort(key=lambda pair: pair[0])
        page = matching[:limit]
        continuation = encode_continuation(*page[-1][0]) if len(matching) > limit else None
        return AuditPage(events=[event.model_copy(deep=True) for _, event in page], continuation=continuation)

    def request_ids(self) -> Iterator[str]:
        yield from sorted(self._chains)

    def iter_chains(self) -> Iterator[tuple[str, list[AuditEvent]]]:
        """Every chain, in request id order."""
        for request_id in sorted(self._chains):
            yield request_id, self.chain(request_id)


def _document(record: RequestRecord, version: int) -> str:
    _utc(record.updated_at)
    doc = record.document()
    doc["version"] = version
    doc["pendingEvents"] = []  # committed with the record
    return json.dumps(doc)


def _ordered(holds: Iterable[Hold]) -> list[Hold]:
    return sorted(holds, key=lambda h: (h.expires_at, h.request_id, h.provider, h.principal_id,
                                        h.role_definition_id, h.scope))


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"timestamp {value.isoformat()} has no timezone; the store keeps UTC instants")
    return value
