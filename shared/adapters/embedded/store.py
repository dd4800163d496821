"""The embedded store: request records, the grant ledger and the audit log in one SQLite file.

Safe for several threads (one connection each) and several processes (WAL, busy timeout) on one file.
A record is written with its new audit events in one transaction; a grant key's document is its `grants`
row (version, principal type, provider expiry, deletion intent) and its `holds` rows, written together in
one transaction conditional on the row's version.

Records this store wrote itself are not validated again when they are read back: the store remembers the
text it wrote for each recent request with the record it came from, and a read that finds exactly that text
returns a copy of that record. Any other text (written by another process, by an earlier jitgate, edited by
hand) is validated in full, as before.
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from shared.domain.audit import (
    AuditEvent,
    ChainAnchor,
    ChainReport,
    canonical_document,
    format_instant,
    settled,
    verify_chain_documents,
)
from shared.domain.errors import AlreadyExists, ConcurrencyConflict, NotFound
from shared.domain.ledger import Deletion, Grant, GrantKey, Hold, HoldStatus
from shared.domain.lifecycle import RequestRecord, RequestState
from shared.ports import AuditPage, AuditQuery, RequestPage, RequestQuery

from ..store_format import decode_continuation, decode_position, encode_continuation, encode_position
from ..store_format import instant as _instant
from ..store_format import parse_instant as _parse_instant
from .sqlite_file import SqliteFile

# 2: holds keep the principal type; 3: one versioned grants row per grant key; 4: a record's requester and outbox
# are columns of its row, not expressions over its document (which every write of the document evaluated again)
SCHEMA_VERSION = 4
MAX_PAGE = 1000
_BATCH = 2000
_REMEMBERED_RECORDS = 4096  # per store object: the requests in flight, and then some

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    version    INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    doc        TEXT NOT NULL,
    requester  TEXT,                       -- the request's requester.principalId (None: a rejected body)
    outbox     INTEGER NOT NULL DEFAULT 0  -- how many events are in the document's pendingEvents
);
CREATE INDEX IF NOT EXISTS requests_by_state ON requests (state, updated_at);
CREATE INDEX IF NOT EXISTS requests_by_requester_id ON requests (requester);
CREATE INDEX IF NOT EXISTS requests_with_pending_events ON requests (updated_at) WHERE outbox > 0;

CREATE TABLE IF NOT EXISTS holds (
    provider           TEXT NOT NULL,
    principal_id       TEXT NOT NULL,
    role_definition_id TEXT NOT NULL,
    scope              TEXT NOT NULL,
    request_id         TEXT NOT NULL,
    granted_at         TEXT NOT NULL,
    expires_at         TEXT NOT NULL,
    preexisting        INTEGER NOT NULL,
    status             TEXT NOT NULL,
    released_at        TEXT,
    principal_type     TEXT,
    PRIMARY KEY (provider, principal_id, role_definition_id, scope, request_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS holds_by_request ON holds (request_id);
CREATE INDEX IF NOT EXISTS holds_by_status_expiry ON holds (status, expires_at);

-- NB. The head of a grant key's document: its holds are the rows of `holds` with the same key, and every
-- write of the document checks and bumps `version` in the transaction that rewrites them.
CREATE TABLE IF NOT EXISTS grants (
    provider            TEXT NOT NULL,
    principal_id        TEXT NOT NULL,
    role_definition_id  TEXT NOT NULL,
    scope               TEXT NOT NULL,
    version             INTEGER NOT NULL,
    principal_type      TEXT,
    provider_expires_at TEXT,
    deleting_token      TEXT,
    deleting_since      TEXT,
    deleting_request_id TEXT,
    PRIMARY KEY (provider, principal_id, role_definition_id, scope)
) WITHOUT ROWID;

-- NB. Clustered by (request_id, seq) so that reading a chain, or every chain, is a sequential scan.
CREATE TABLE IF NOT EXISTS audit_events (
    request_id TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    id         TEXT NOT NULL UNIQUE,
    type       TEXT NOT NULL,
    at         TEXT NOT NULL,
    doc        TEXT NOT NULL,
    PRIMARY KEY (request_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS audit_by_time ON audit_events (at, id);
CREATE INDEX IF NOT EXISTS audit_by_type ON audit_events (type, at, id);

-- NB. One row per distinct principal of an event (requester, actor): a principal query is then one
-- ordered index range instead of an OR over two columns that must be merged and sorted.
CREATE TABLE IF NOT EXISTS audit_principals (
    principal_id TEXT NOT NULL,
    at           TEXT NOT NULL,
    id           TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    PRIMARY KEY (principal_id, at, id)
) WITHOUT ROWID;
"""

_INSERT_REQUEST = (
    "INSERT INTO requests (request_id, state, version, updated_at, doc, requester) VALUES (?, ?, 1, ?, ?, ?)"
)
# NB. The requester is a condition of the update, not a column it sets: setting a column writes its index entry even
# when the value is the same, and a record's request does not change once it is created. When it does, the update
# finds no row at the version it expects, and the requester is set by the second form.
_UPDATE_REQUEST = (
    "UPDATE requests SET state = ?, version = version + 1, updated_at = ?, doc = ?, outbox = 0"
    " WHERE request_id = ? AND version = ? AND requester IS ?"
)
_UPDATE_REQUEST_AND_REQUESTER = (
    "UPDATE requests SET state = ?, version = version + 1, updated_at = ?, doc = ?, outbox = 0, requester = ?"
    " WHERE request_id = ? AND version = ?"
)
_HOLD_COLUMNS = (
    "provider, principal_id, role_definition_id, scope, request_id,"
    " granted_at, expires_at, preexisting, status, released_at, principal_type"
)
_GRANT_COLUMNS = "version, principal_type, provider_expires_at, deleting_token, deleting_since, deleting_request_id"
_KEY_COLUMNS = "provider, principal_id, role_definition_id, scope"
_KEY = "provider = ? AND principal_id = ? AND role_definition_id = ? AND scope = ?"
_READ_GRANT = (
    "SELECT " + ", ".join(f"g.{c.strip()}" for c in _GRANT_COLUMNS.split(","))
    + ", " + ", ".join(f"h.{c.strip()}" for c in _HOLD_COLUMNS.split(","))
    + " FROM grants g LEFT JOIN holds h ON h.provider = g.provider AND h.principal_id = g.principal_id"
    " AND h.role_definition_id = g.role_definition_id AND h.scope = g.scope"
    " WHERE g.provider = ? AND g.principal_id = ? AND g.role_definition_id = ? AND g.scope = ?"
    " ORDER BY h.expires_at, h.request_id"
)
_INSERT_GRANT = f"INSERT INTO grants ({_KEY_COLUMNS}, {_GRANT_COLUMNS}) VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?, ?)"
_UPDATE_GRANT = (
    "UPDATE grants SET version = version + 1, principal_type = ?, provider_expires_at = ?, deleting_token = ?,"
    f" deleting_since = ?, deleting_request_id = ? WHERE {_KEY} AND version = ?"
)
# NB. An upsert, not INSERT OR REPLACE: a changed hold is updated in place, so the index on request_id (unchanged)
# is not written.
_UPSERT_HOLD = (
    f"INSERT INTO holds ({_HOLD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    f" ON CONFLICT ({_KEY_COLUMNS}, request_id) DO UPDATE SET granted_at = excluded.granted_at,"
    " expires_at = excluded.expires_at, preexisting = excluded.preexisting, status = excluded.status,"
    " released_at = excluded.released_at, principal_type = excluded.principal_type"
)


class SqliteStore:
    """`RequestStore`, `LedgerStore` and `AuditStore` in one SQLite file (the local, embedded backend)."""

    def __init__(self, path: str | Path, busy_timeout: float = 30.0) -> None:
        self.path = str(path)
        # NB. synchronous=NORMAL under WAL: a killed process loses nothing; only a power cut can roll back
        # the last few commits, and the file stays consistent. FULL cost 3 ms a commit on a busy disk.
        self._db = SqliteFile(path, busy_timeout, synchronous="NORMAL")
        self._written = _WrittenRecords(_REMEMBERED_RECORDS)
        self._stored_holds = _StoredHolds(_REMEMBERED_RECORDS)
        self._create_schema()

    # ------------------------------------------------------------ connections

    def _create_schema(self) -> None:
        with self._db.transaction() as conn:
            (found,) = conn.execute("PRAGMA user_version").fetchone()
            if found > SCHEMA_VERSION:
                raise RuntimeError(f"{self.path} has store schema {found}; this jitgate knows {SCHEMA_VERSION}")
            requests = {row[1] for row in conn.execute("PRAGMA table_info(requests)")}
            if requests and "requester" not in requests:
                # A file of version 3 or before: the requester and the outbox size become columns, read from each
                # document once, and the indexes on expressions over the document go.
                conn.execute("ALTER TABLE requests ADD COLUMN requester TEXT")
                conn.execute("ALTER TABLE requests ADD COLUMN outbox INTEGER NOT NULL DEFAULT 0")
                conn.execute(
                    "UPDATE requests SET requester = json_extract(doc, '$.request.requester.principalId'),"
                    " outbox = coalesce(json_array_length(doc, '$.pendingEvents'), 0)"
                )
                conn.execute("DROP INDEX IF EXISTS requests_by_requester")
                conn.execute("DROP INDEX IF EXISTS requests_with_outbox")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(holds)")}
            if "principal_type" not in columns:  # a version 1 file: its holds load with no type
                conn.execute("ALTER TABLE holds ADD COLUMN principal_type TEXT")
            if found < 3:
                # A version 1 or 2 file: every key with holds gets its grants row, at version 1, typed as its
                # latest hold is.
                conn.execute(
                    "INSERT OR IGNORE INTO grants (provider, principal_id, role_definition_id, scope, version,"
                    " principal_type) SELECT provider, principal_id, role_definition_id, scope, 1,"
                    " (SELECT h.principal_type FROM holds h WHERE h.provider = k.provider"
                    " AND h.principal_id = k.principal_id AND h.role_definition_id = k.role_definition_id"
                    " AND h.scope = k.scope ORDER BY h.granted_at DESC LIMIT 1)"
                    " FROM (SELECT DISTINCT provider, principal_id, role_definition_id, scope FROM holds) k"
                )
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        """Close every connection this store opened, in any thread; the store reopens lazily if used again."""
        self._db.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ requests

    def create_request(self, record: RequestRecord) -> RequestRecord:
        created = _committed(record, version=1)
        text = created.model_dump_json(by_alias=True)
        row = (record.request_id, record.state.value, _instant(record.updated_at), text, _requester(record))
        events = _event_rows(_events_of(record))
        with self._db.transaction() as conn:
            try:
                conn.execute(_INSERT_REQUEST, row)
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"request {record.request_id} already exists") from None
            _insert_events(conn, events)
        return self._written.remember(text, created)

    def get_request(self, request_id: str) -> RequestRecord | None:
        row = self._db.connection().execute("SELECT doc FROM requests WHERE request_id = ?", (request_id,)).fetchone()
        return None if row is None else self._written.read(request_id, row[0])

    def save_request(self, record: RequestRecord) -> RequestRecord:
        saved = _committed(record, version=record.version + 1)
        text = saved.model_dump_json(by_alias=True)
        state, updated_at, requester = record.state.value, _instant(record.updated_at), _requester(record)
        events = _event_rows(_events_of(record))
        # NB. Everything is built before the write lock is taken: other writers of the file wait while it is held.
        with self._db.transaction() as conn:
            key = (record.request_id, record.version)
            if conn.execute(_UPDATE_REQUEST, (state, updated_at, text, *key, requester)).rowcount == 0:
                found = conn.execute("SELECT version FROM requests WHERE request_id = ?", key[:1]).fetchone()
                if found is None:
                    raise NotFound(f"request {record.request_id} does not exist")
                if found[0] != record.version:
                    raise ConcurrencyConflict(
                        f"request {record.request_id} is at version {found[0]}, not {record.version}")
                conn.execute(_UPDATE_REQUEST_AND_REQUESTER, (state, updated_at, text, requester, *key))
            _insert_events(conn, events)
        return self._written.remember(text, saved)

    def requests_in(self, states: set[RequestState], limit: int = 1000) -> list[RequestRecord]:
        if not states or limit < 1:
            return []
        marks = ", ".join("?" * len(states))
        rows = (
            self._db.connection()
            .execute(
                f"SELECT doc FROM requests WHERE state IN ({marks}) ORDER BY updated_at, request_id LIMIT ?",
                (*sorted(s.value for s in states), limit),
            )
            .fetchall()
        )
        return [_record(doc) for (doc,) in rows]

    def list_requests(self, query: RequestQuery) -> RequestPage:
        limit = min(max(query.limit, 1), MAX_PAGE)
        where: list[str] = []
        params: list[Any] = []
        if query.states is not None:
            where.append(f"state IN ({', '.join('?' * len(query.states))})")
            params.extend(sorted(s.value for s in query.states))
        if query.requester_id is not None:
            where.append("requester = ?")
            params.append(query.requester_id)
        if query.continuation is not None:
            position = decode_position(query.continuation)
            if not position.isdigit():
                raise ValueError("malformed continuation token: pass back the previous page's continuation unchanged")
            where.append("rowid < ?")
            params.append(int(position))
        # NB. rowid is the order of creation: a record's place in the list never moves when it is written again.
        rows = self._db.connection().execute(
            "SELECT rowid, doc FROM requests" + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY rowid DESC LIMIT ?", (*params, limit + 1)).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        return RequestPage([_record(doc) for _, doc in rows], encode_position(str(rows[-1][0])) if more else None)

    def requests_with_outbox(self, limit: int = 1000) -> list[RequestRecord]:
        # NB. The WHERE clause repeats the partial index's, so the planner reads only the index.
        rows = self._db.connection().execute(
            "SELECT doc FROM requests WHERE outbox > 0"
            " ORDER BY updated_at, request_id LIMIT ?",
            (max(limit, 0),),
        ).fetchall()
        return [_record(doc) for (doc,) in rows]

    # ------------------------------------------------------------ ledger

    def get_grant(self, key: GrantKey) -> Grant | None:
        # NB. One statement, so one snapshot of the head and its holds without a transaction of its own.
        rows = self._db.connection().execute(_READ_GRANT, _key(key)).fetchall()
        if not rows:
            return None
        version, principal_type, provider_expires, token, since, deleting_request = rows[0][:6]
        holds = [] if rows[0][6] is None else [row[6:] for row in rows]
        self._stored_holds.remember(key, version, {row[4]: row for row in holds})
        return Grant(
            key=key,
            holds=tuple(_hold(row) for row in holds),
            principal_type=principal_type,
            provider_expires_at=None if provider_expires is None else _parse_instant(provider_expires),
            deleting=None if token is None else Deletion(
                token=token, since=_parse_instant(since), request_id=deleting_request
            ),
            version=version,
        )

    def put_grant(self, grant: Grant) -> Grant:
        key = _key(grant.key)
        deleting = grant.deleting
        head = (
            grant.principal_type,
            None if grant.provider_expires_at is None else _instant(grant.provider_expires_at),
            None if deleting is None else deleting.token,
            None if deleting is None else _instant(deleting.since),
            None if deleting is None else deleting.request_id,
        )
        holds = {hold.request_id: _hold_row(hold) for hold in grant.holds}
        if len(holds) != len(grant.holds):
            raise ValueError(f"grant {grant.key} has more than one hold of one request")
        # NB. The rows stored at the version this write is conditional on, when this store read or wrote that
        # version (a version's rows never change: every write of them bumps it); then only changed rows are written.
        stored = {} if grant.version == 0 else self._stored_holds.at(grant.key, grant.version)
        changed = [row for request_id, row in holds.items() if stored is None or stored.get(request_id) != row]
        gone = [] if stored is None else [(*key, request_id) for request_id in stored.keys() - holds.keys()]
        with self._db.transaction() as conn:
            if grant.version == 0:
                try:
                    conn.execute(_INSERT_GRANT, (*key, *head))
                except sqlite3.IntegrityError:
                    raise self._grant_conflict(conn, grant) from None
            elif conn.execute(_UPDATE_GRANT, (*head, *key, grant.version)).rowcount == 0:
                raise self._grant_conflict(conn, grant)
            if stored is None:
                conn.execute(f"DELETE FROM holds WHERE {_KEY}", key)
            if gone:
                conn.executemany(f"DELETE FROM holds WHERE {_KEY} AND request_id = ?", gone)
            if changed:
                conn.executemany(_UPSERT_HOLD, changed)
        self._stored_holds.remember(grant.key, grant.version + 1, holds)
        return grant.model_copy(update={"version": grant.version + 1})

    @staticmethod
    def _grant_conflict(conn: sqlite3.Connection, grant: Grant) -> ConcurrencyConflict:
        row = conn.execute(f"SELECT version FROM grants WHERE {_KEY}", _key(grant.key)).fetchone()
        found = 0 if row is None else row[0]
        return ConcurrencyConflict(f"grant {grant.key} is at version {found}, not {grant.version}")

    def holds_for_request(self, request_id: str) -> list[Hold]:
        return self._holds("request_id = ?", (request_id,))

    def overdue_holds(self, now: datetime) -> list[Hold]:
        return self._holds("status = ? AND expires_at <= ?", (HoldStatus.ACTIVE.value, _instant(now)))

    def all_active_holds(self, provider: str | None = None) -> list[Hold]:
        if provider is not None:
            return self._holds("status = ? AND provider = ?", (HoldStatus.ACTIVE.value, provider))
        return self._holds("status = ?", (HoldStatus.ACTIVE.value,))

    def _holds(self, where: str, params: Sequence[Any]) -> list[Hold]:
        rows = (
            self._db.connection()
            .execute(
                f"SELECT {_HOLD_COLUMNS} FROM holds WHERE {where}"
                " ORDER BY expires_at, request_id, provider, principal_id, role_definition_id, scope",
                params,
            )
            .fetchall()
        )
        return [_hold(row) for row in rows]

    # ------------------------------------------------------------ audit

    def append(self, event: AuditEvent, principal_id: str | None = None) -> None:
        self.bulk_append([(event, principal_id)])

    def bulk_append(self, events_with_principal: Iterable[tuple[AuditEvent, str | None]]) -> int:
        """Append many events in one transaction (all or none); returns how many. Used to load benchmarks."""
        rows = _event_rows(list(events_with_principal))
        with self._db.transaction() as conn:
            _insert_events(conn, rows)
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
        after: tuple[str, int] = ("", -1)
        current: str | None = None
        events: list[AuditEvent] = []
        while True:
            rows = (
                self._db.connection()
                .execute(
                    "SELECT request_id, seq, doc FROM audit_events WHERE (request_id, seq) > (?, ?)"
                    " ORDER BY request_id, seq LIMIT ?",
                    (*after, _BATCH),
                )
                .fetchall()
            )
            for request_id, _, doc in rows:
                if request_id != current:
                    if current is not None:
                        yield current, events
                    current, events = request_id, []
                events.append(AuditEvent.model_validate_json(doc))
            if len(rows) < _BATCH:
                break
            after = (rows[-1][0], rows[-1][1])
        if current is not None:
            yield current, events

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
    with SqliteStore(path) as store:
        return list(store._verify_range(start, stop))


# ---------------------------------------------------------------- helpers


def _committed(record: RequestRecord, version: int) -> RequestRecord:
    """The record as it is stored: at `version`, its outbox empty (its events are committed with it, in the same
    transaction). Stored as `model_dump_json` writes it, the same document as `document()` in a third the time."""
    return record.model_copy(update={"version": version, "pending_events": []})


def _requester(record: RequestRecord) -> str | None:
    return record.request.requester.principal_id if record.request is not None else None


def _events_of(record: RequestRecord) -> list[tuple[AuditEvent, str | None]]:
    principal = _requester(record)
    return [(event, principal) for event in record.pending_events]


class _EventRows(NamedTuple):
    """The rows of events to append: `audit_events`, and `audit_principals` (each event's distinct principals)."""

    events: list[tuple[str, int, str, str, str, str]]
    principals: list[tuple[str, str, str, str, int]]


def _event_rows(events_with_principal: Sequence[tuple[AuditEvent, str | None]]) -> _EventRows:
    rows = _EventRows([], [])
    for event, principal_id in events_with_principal:
        at = format_instant(event.at)
        # NB. Stored as canonical JSON, the form the hash is taken over, so that verifying a chain
        # can hash the stored text instead of rebuilding and re-serialising every event.
        rows.events.append((event.request_id, event.seq, event.id, event.type.value, at, canonical_document(event)))
        rows.principals.append((event.actor.principal_id, at, event.id, event.request_id, event.seq))
        if principal_id is not None and principal_id != event.actor.principal_id:
            rows.principals.append((principal_id, at, event.id, event.request_id, event.seq))
    return rows


def _insert_events(conn: sqlite3.Connection, rows: _EventRows) -> None:
    """Insert events in the caller's transaction; AlreadyExists when an id or (requestId, seq) is taken."""
    if not rows.events:
        return
    try:
        conn.executemany("INSERT INTO audit_events (request_id, seq, id, type, at, doc) VALUES (?, ?, ?, ?, ?, ?)",
                         rows.events)
        conn.executemany("INSERT INTO audit_principals (principal_id, at, id, request_id, seq) VALUES (?, ?, ?, ?, ?)",
                         rows.principals)
    except sqlite3.IntegrityError:
        ids = ", ".join(e[2] for e in rows.events[:3]) + (" ..." if len(rows.events) > 3 else "")
        raise AlreadyExists(f"an audit event with this id or (requestId, seq) already exists: {ids}") from None


def _hold_row(hold: Hold) -> tuple[Any, ...]:
    return (
        hold.provider,
        hold.principal_id,
        hold.role_definition_id,
        hold.scope,
        hold.request_id,
        _instant(hold.granted_at),
        _instant(hold.expires_at),
        int(hold.preexisting),
        hold.status.value,
        None if hold.released_at is None else _instant(hold.released_at),
        hold.principal_type,
    )
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


class _WrittenRecords:
    """The text this store last wrote for each of the most recent requests, with the record it wrote it from.

    NB. The text is the record's own document (`_committed`, as `model_dump_json` writes it), and parsing a
    record's document gives back an equal record (pinned by tests/unit/test_store_written_records.py), so a read
    that finds exactly the text written may return the record instead of validating the text again. Callers
    mutate the records they get, so each side keeps a copy of its own: what is remembered and what is handed out
    share no list or dict.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._texts: dict[str, tuple[str, RequestRecord]] = {}
        self._lock = threading.Lock()

    def remember(self, text: str, record: RequestRecord) -> RequestRecord:
        kept = _detached(record)
        with self._lock:
            self._texts.pop(record.request_id, None)
            self._texts[record.request_id] = (text, kept)
            if len(self._texts) > self._size:
                del self._texts[next(iter(self._texts))]  # the least recently written
        return record

    def read(self, request_id: str, text: str) -> RequestRecord:
        found = self._texts.get(request_id)
        if found is not None and found[0] == text:
            return _detached(found[1])
        return _record(text)


class _StoredHolds:
    """The hold rows of each of the most recent grant keys this store read or wrote, at the version it saw.

    NB. A grant key's rows at a given version are the same for every reader: every write of them is conditional
    on the version and bumps it in the same transaction. So a write conditional on a version remembered here knows
    what is stored, and writes only the rows that differ.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._rows: dict[GrantKey, tuple[int, dict[str, tuple[Any, ...]]]] = {}
        self._lock = threading.Lock()

    def remember(self, key: GrantKey, version: int, rows: dict[str, tuple[Any, ...]]) -> None:
        with self._lock:
            self._rows.pop(key, None)
            self._rows[key] = (version, rows)
            if len(self._rows) > self._size:
                del self._rows[next(iter(self._rows))]  # the least recently seen

    def at(self, key: GrantKey, version: int) -> dict[str, tuple[Any, ...]] | None:
        """The rows of `key` at `version`; None when this store did not see that version."""
        found = self._rows.get(key)
        return found[1] if found is not None and found[0] == version else None


def _detached(record: RequestRecord) -> RequestRecord:
    """A copy of a record sharing nothing a caller could change in place (its nested models are frozen)."""
    return record.model_copy(update={
        "errors": copy.deepcopy(record.errors) if record.errors else [],
        "approvals": list(record.approvals),
        "denial": None if record.denial is None else copy.deepcopy(record.denial),
        "refusals": dict(record.refusals),
        "pending_events": list(record.pending_events),
    })


def _record(text: str) -> RequestRecord:
    # NB. Validate from JSON text, not from a dict: AccessRequest is strict, and strict python-mode
    # validation refuses the plain strings that stand for its enums in a stored document.
    return RequestRecord.model_validate_json(text)


def _hold(row: Sequence[Any]) -> Hold:
    (
        provider,
        principal_id,
        role_definition_id,
        scope,
        request_id,
        granted,
        expires,
        preexisting,
        status,
        released,
        principal_type,
    ) = row
    return Hold(
        provider=provider,
        principal_id=principal_id,
        role_definition_id=role_definition_id,
        scope=scope,
        request_id=request_id,
        granted_at=_parse_instant(granted),
        expires_at=_parse_instant(expires),
        preexisting=bool(preexisting),
        status=HoldStatus(status),
        released_at=None if released is None else _parse_instant(released),
        principal_type=principal_type,
    )


def _key(key: GrantKey) -> tuple[str, str, str, str]:
    return key.provider, key.principal_id, key.role_definition_id, key.scope


