"""The audit log of the embedded store: the `AuditStore` port over the audit tables of the store's SQLite file, and
the verification of its chains against the anchors their records keep.

`SqliteStore` is one, and appends a record's events in the transaction that writes the record (`event_rows` built
before it, `insert_events` inside it).
"""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

from shared.domain.audit import (
    AuditEvent,
    ChainAnchor,
    ChainReport,
    canonical_document,
    event_id,
    format_instant,
    settled,
    verify_chain_documents,
)
from shared.domain.errors import AlreadyExists
from shared.ports import AuditPage, AuditQuery

from ..store_format import decode_continuation, encode_continuation
from ..store_format import instant as _instant
from .sqlite_file import SqliteFile

MAX_PAGE = 1000
_BATCH = 2000


class SqliteAuditLog:
    """`AuditStore` over the audit tables of an embedded store file (`SqliteStore` creates them), and chain
    verification. Safe for several threads and processes, as the store is."""

    def __init__(self, path: str | Path, busy_timeout: float = 30.0) -> None:
        self.path = str(path)
        # NB. synchronous=NORMAL under WAL: a killed process loses nothing; only a power cut can roll back
        # the last few commits, and the file stays consistent. FULL cost 3 ms a commit on a busy disk.
        self._db = SqliteFile(path, busy_timeout, synchronous="NORMAL")

    def close(self) -> None:
        """Close every connection this store opened, in any thread; the store reopens lazily if used again."""
        self._db.close()

    def append(self, event: AuditEvent, principal_id: str | None = None) -> None:
        self.bulk_append([(event, principal_id)])

    def bulk_append(self, events_with_principal: Iterable[tuple[AuditEvent, str | None]]) -> int:
        """Append many events in one transaction (all or none); returns how many. Used to load benchmarks."""
        rows = event_rows(list(events_with_principal))
        with self._db.transaction() as conn:
            insert_events(conn, rows)
        return len(rows.events)

    def chain(self, request_id: str) -> list[AuditEvent]:
        rows = (
            self._db.connection()
            .execute("SELECT doc FROM audit_events WHERE request_id = ? ORDER BY seq", (request_id,))
            .fetchall()
        )
        return [AuditEvent.model_validate_json(doc) for (doc,) in rows]

    def query(self, query: AuditQuery) -> AuditPage:
        limit = min(max(query.limit, 1), MAX_PAGE)
        where: list[str] = []
        params: list[Any] = []
        if query.request_id is not None:
            # A request's events are few: read them by key and sort, filtering the principal per event.
            table = "audit_events e"
            where.append("e.request_id = ?")
            params.append(query.request_id)
            if query.principal_id is not None:
                where.append(
                    "EXISTS (SELECT 1 FROM audit_principals p WHERE p.principal_id = ? AND p.at = e.at AND p.id = e.id)"
                )
                params.append(query.principal_id)
            order = "e"
        elif query.principal_id is not None:
            table = "audit_principals p JOIN audit_events e ON e.request_id = p.request_id AND e.seq = p.seq"
            where.append("p.principal_id = ?")
            params.append(query.principal_id)
            order = "p"
        else:
            table = "audit_events e"
            order = "e"
        if query.type is not None:
            where.append("e.type = ?")
            params.append(str(query.type))
        if query.since is not None:
            where.append(f"{order}.at >= ?")
            params.append(_instant(query.since))
        if query.until is not None:
            where.append(f"{order}.at < ?")
            params.append(_instant(query.until))
        if query.continuation is not None:
            where.append(f"({order}.at, {order}.id) > (?, ?)")
            params.extend(decode_continuation(query.continuation))
        sql = (
            f"SELECT e.at, e.id, e.doc FROM {table}"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + f" ORDER BY {order}.at, {order}.id LIMIT ?"
        )
        rows = self._db.connection().execute(sql, (*params, limit + 1)).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        events = [AuditEvent.model_validate_json(doc) for (_, _, doc) in rows]
        continuation = encode_continuation(rows[-1][0], rows[-1][1]) if more else None
        return AuditPage(events=events, continuation=continuation)

    def request_ids(self) -> Iterator[str]:
        after = ""
        while True:
            # NB. Keyset batches, not one long cursor: no read snapshot is held open while the caller works.
            rows = (
                self._db.connection()
                .execute(
                    "SELECT DISTINCT request_id FROM audit_events WHERE request_id > ? ORDER BY request_id LIMIT ?",
                    (after, _BATCH),
                )
                .fetchall()
            )
            for (request_id,) in rows:
                yield request_id
            if len(rows) < _BATCH:
                return
            after = rows[-1][0]

    def iter_chains(self) -> Iterator[tuple[str, list[AuditEvent]]]:
        """Every chain, in request id order, in one sequential pass over the audit table."""
        for request_id, docs in self.iter_chain_documents():
            yield request_id, [AuditEvent.model_validate_json(doc) for doc in docs]

    def chain_documents(self, request_id: str) -> list[str]:
        """One request's stored JSON documents in seq order (for `verify_chain_documents`)."""
        rows = self._db.connection().execute(
            "SELECT doc FROM audit_events WHERE request_id = ? ORDER BY seq", (request_id,)
        ).fetchall()
        return [doc for (doc,) in rows]

    def iter_chain_documents(
        self, start: str | None = None, stop: str | None = None
    ) -> Iterator[tuple[str, list[str]]]:
        """Every chain whose request id is in [`start`, `stop`), in request id order, as its stored JSON
        documents in seq order: what `verify_chain_documents` reads, without building models."""
        position: tuple[str, int] = (start or "", -1)
        bound, stop_params = ("", ()) if stop is None else (" AND request_id < ?", (stop,))
        current: str | None = None
        docs: list[str] = []
        while True:
            rows = (
                self._db.connection()
                .execute(
                    f"SELECT request_id, seq, doc FROM audit_events WHERE (request_id, seq) > (?, ?){bound}"
                    " ORDER BY request_id, seq LIMIT ?",
                    (*position, *stop_params, _BATCH),
                )
                .fetchall()
            )
            for request_id, _, doc in rows:
                if request_id != current:
                    if current is not None:
                        yield current, docs
                    current, docs = request_id, []
                docs.append(doc)
            if len(rows) < _BATCH:
                break
            position = (rows[-1][0], rows[-1][1])
        if current is not None:
            yield current, docs

    def chain_boundaries(self, parts: int) -> list[str]:
        """Up to `parts - 1` increasing request ids that cut the audit log into runs of about equally many
        events, for verifying the runs in parallel. Read from the index on event ids, not the documents."""
        conn = self._db.connection()
        (total,) = conn.execute("SELECT COUNT(*) FROM audit_events").fetchone()
        cuts: list[str] = []
        for part in range(1, parts):
            row = conn.execute(
                "SELECT request_id FROM audit_events ORDER BY id LIMIT 1 OFFSET ?", (total * part // parts,)
            ).fetchone()
            if row is not None and row[0] > (cuts[-1] if cuts else ""):
                cuts.append(row[0])
        return cuts

    def chain_anchor(self, request_id: str) -> ChainAnchor | None:
        """Where the request's record says its chain ends; None when there is no record."""
        row = self._db.connection().execute(
            f"SELECT {_ANCHOR_COLUMNS} FROM requests WHERE request_id = ?", (request_id,)
        ).fetchone()
        return None if row is None else _anchor(row)

    def verify_chain(self, request_id: str) -> ChainReport:
        """`verify_chain_documents` of one chain against its record's anchor (read first: see `settled`)."""

        def once() -> ChainReport:
            anchor = self.chain_anchor(request_id)
            return verify_chain_documents(request_id, self.chain_documents(request_id), anchor)

        return settled(once)

    def iter_anchored_chain_documents(
        self, start: str | None = None, stop: str | None = None
    ) -> Iterator[tuple[str, list[str], ChainAnchor | None]]:
        """`iter_chain_documents` with each chain's anchor (None: no record), and every record in the range
        that emitted events none of which is stored (a chain cut off entirely), in request id order."""
        anchors = self._anchors(start, stop)
        chains = self.iter_chain_documents(start, stop)
        anchor, chain = next(anchors, None), next(chains, None)  # NB. records first: see `settled`
        while chain is not None or anchor is not None:
            if anchor is None or (chain is not None and chain[0] < anchor[0]):
                assert chain is not None
                yield chain[0], chain[1], None
                chain = next(chains, None)
            elif chain is None or anchor[0] < chain[0]:
                if anchor[1].last_seq >= 0:
                    yield anchor[0], [], anchor[1]
                anchor = next(anchors, None)
            else:
                yield chain[0], chain[1], anchor[1]
                chain, anchor = next(chains, None), next(anchors, None)

    def _anchors(self, start: str | None, stop: str | None) -> Iterator[tuple[str, ChainAnchor]]:
        after = "" if start is None else start
        bound, stop_params = ("", ()) if stop is None else (" AND request_id < ?", (stop,))
        first = start is not None
        while True:
            rows = (
                self._db.connection()
                .execute(
                    f"SELECT {_ANCHOR_COLUMNS} FROM requests WHERE request_id {'>=' if first else '>'} ?{bound}"
                    " ORDER BY request_id LIMIT ?",
                    (after, *stop_params, _BATCH),
                )
                .fetchall()
            )
            for row in rows:
                anchor = _anchor(row)
                if anchor is not None:
                    yield row[0], anchor
            if len(rows) < _BATCH:
                return
            after, first = rows[-1][0], False

    def verify_chains(self, processes: int = 1) -> Iterator[ChainReport]:
        """`verify_chain_documents` of every chain against its record's anchor, in request id order, over
        `processes` processes. A chain that fails is read again before it is reported (see `settled`)."""
        if processes <= 1:
            yield from self._verify_range(None, None)
            return
        cuts = self.chain_boundaries(processes)
        ranges: list[tuple[str | None, str | None]] = list(zip([None, *cuts], [*cuts, None], strict=True))
        # NB. fork only from a single-threaded process (the CLI): a forked child of a threaded server could
        # inherit a lock held by another thread. spawn costs an interpreter start and imports per process.
        context = multiprocessing.get_context("fork" if threading.active_count() == 1 else "spawn")
        with ProcessPoolExecutor(max_workers=len(ranges), mp_context=context) as pool:
            for reports in pool.map(_verify_range, [self.path] * len(ranges), *zip(*ranges, strict=True)):
                yield from reports

    def _verify_range(self, start: str | None, stop: str | None) -> Iterator[ChainReport]:
        for request_id, docs, anchor in self.iter_anchored_chain_documents(start, stop):
            report = verify_chain_documents(request_id, docs, anchor)
            yield report if report.ok else self.verify_chain(request_id)


def _verify_range(path: str, start: str | None, stop: str | None) -> list[ChainReport]:
    log = SqliteAuditLog(path)
    try:
        return list(log._verify_range(start, stop))
    finally:
        log.close()


class EventRows(NamedTuple):
    """The rows of events to append: `audit_events`, and `audit_principals` (each event's distinct principals)."""

    events: list[tuple[str, int, str, str, str, str]]
    principals: list[tuple[str, str, str, str, int]]


def event_rows(events_with_principal: Sequence[tuple[AuditEvent, str | None]]) -> EventRows:
    rows = EventRows([], [])
    for event, principal_id in events_with_principal:
        at = format_instant(event.at)
        # NB. Stored as canonical JSON, the form the hash is taken over, so that verifying a chain
        # can hash the stored text instead of rebuilding and re-serialising every event.
        rows.events.append((event.request_id, event.seq, event.id, event.type.value, at, canonical_document(event)))
        rows.principals.append((event.actor.principal_id, at, event.id, event.request_id, event.seq))
        if principal_id is not None and principal_id != event.actor.principal_id:
            rows.principals.append((principal_id, at, event.id, event.request_id, event.seq))
    return rows


def insert_events(conn: sqlite3.Connection, rows: EventRows) -> None:
    """Insert events in the caller's transaction; AlreadyExists when an id or (requestId, seq) is taken."""
    if not rows.events:
        return
    try:
        conn.executemany("INSERT INTO audit_events (request_id, seq, id, type, at, doc) VALUES (?, ?, ?, ?, ?, ?)",
                         rows.events)
        conn.executemany("INSERT INTO audit_principals (principal_id, at, id, request_id, seq) VALUES (?, ?, ?, ?, ?)",
                         rows.principals)
    except sqlite3.IntegrityError:
        raise _taken(rows) from None
    # NB. An id that is not its (requestId, seq) in other words (only a document made elsewhere, or tampered with)
    # is not kept unique by the key: it is looked for among its request's events, this batch's included. The
    # caller's transaction rolls back what was inserted.
    for request_id, seq, event_id_, *_ in rows.events:
        if event_id_ != event_id(request_id, seq) and conn.execute(
            "SELECT count(*) FROM audit_events WHERE request_id = ? AND id = ?", (request_id, event_id_)
        ).fetchone()[0] > 1:
            raise _taken(rows)


def _taken(rows: EventRows) -> AlreadyExists:
    ids = ", ".join(e[2] for e in rows.events[:3]) + (" ..." if len(rows.events) > 3 else "")
    return AlreadyExists(f"an audit event with this id or (requestId, seq) already exists: {ids}")


# The anchor of a record's chain (`RequestRecord.anchor`) read from its document without building the model.
_ANCHOR_COLUMNS = (
    "request_id, json_extract(doc, '$.auditSeq'), json_extract(doc, '$.auditHead'),"
    " (SELECT json_group_array(json_array(json_extract(p.value, '$.seq'), json_extract(p.value, '$.prevHash')))"
    " FROM json_each(doc, '$.pendingEvents') p)"
)


def _anchor(row: Sequence[Any]) -> ChainAnchor | None:
    _, seq, head, pending = row
    if seq is None:  # not a record this jitgate wrote
        return None
    return ChainAnchor(int(seq) - 1, head or "", tuple((int(s), str(h)) for s, h in json.loads(pending)))
