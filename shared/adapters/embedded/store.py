"""The embedded store: request records and the audit log in one SQLite file, the grant ledger in another beside it.

Safe for several threads (one connection each) and several processes (WAL, busy timeout) on one file.
A record is written with its new audit events in one transaction; a grant key's document is its `grants`
row (version, principal type, provider expiry, deletion intent) and its `holds` rows, read in one statement
and written together in one transaction conditional on the row's version. Every row a write needs is built
before it takes the file's write lock, which every other writer of the file waits for.

The ledger has its own file (`ledger_path`) because a SQLite file has one writer at a time, and a write of a grant
key's document never shares a transaction with a record's (as in Cosmos DB, where they are different documents):
in one file, each waited for the other for nothing.

Records this store wrote itself are not validated again when they are read back, and a write of a grant key's
document writes only the hold rows that differ from the version it read (`store_memory`). The audit tables and
chain verification are `audit_log`'s.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from shared.domain.audit import AuditEvent
from shared.domain.errors import AlreadyExists, ConcurrencyConflict, NotFound
from shared.domain.ledger import Deletion, Grant, GrantKey, Hold, HoldStatus
from shared.domain.lifecycle import RequestRecord, RequestState
from shared.ports import RequestPage, RequestQuery

from ..store_format import decode_position, encode_position
from ..store_format import instant as _instant
from ..store_format import parse_instant as _parse_instant
from .audit_log import MAX_PAGE, SqliteAuditLog, event_rows, insert_events
from .sqlite_file import SqliteFile
from .store_memory import StoredHolds, WrittenRecords, parse_record

# 2: holds keep the principal type; 3: one versioned grants row per grant key; 4: a record's requester and outbox
# are columns of its row, not expressions over its document (which every write of the document evaluated again);
# 5: the ledger (`grants`, `holds`) is in its own file, whose own schema version is LEDGER_SCHEMA_VERSION
SCHEMA_VERSION = 5
LEDGER_SCHEMA_VERSION = 1
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

-- NB. Clustered by (request_id, seq) so that reading a chain, or every chain, is a sequential scan. The id is not
-- an index of its own: a jitgate event's id is its (request_id, seq) in other words (`event_id`), so the key
-- already keeps it unique, and any other id is checked in its request by `insert_events`, the scope of Cosmos DB's
-- (a file made before keeps its UNIQUE index, which refuses the same events).
CREATE TABLE IF NOT EXISTS audit_events (
    request_id TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    id         TEXT NOT NULL,
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

_LEDGER_SCHEMA = """
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


class SqliteStore(SqliteAuditLog):
    """`RequestStore`, `LedgerStore` and `AuditStore` over two SQLite files: the records and the audit log in the one
    at `path`, the ledger in the one at `ledger_path(path)` beside it (the local, embedded backend)."""

    def __init__(self, path: str | Path, busy_timeout: float = 30.0) -> None:
        super().__init__(path, busy_timeout)
        self.ledger_path = str(ledger_path(path))
        self._ledger = SqliteFile(self.ledger_path, busy_timeout, synchronous="NORMAL")
        self._written = WrittenRecords(_REMEMBERED_RECORDS)
        self._stored_holds = StoredHolds(_REMEMBERED_RECORDS)
        self._create_schema()

    def close(self) -> None:
        """Close every connection this store opened to either file, in any thread; both reopen lazily if used
        again."""
        super().close()
        self._ledger.close()

    # ------------------------------------------------------------ schema

    def _create_schema(self) -> None:
        # NB. A store file of version 4 or before has the ledger's tables, with their rows. They are moved in three
        # steps, each one transaction: brought to version 4's shape in the store file, which becomes version 5 (so
        # that nothing writes them again), copied into the ledger file, then dropped from the store file. An
        # interrupted move is finished by the next open: the copy is done again (its rows are there already, and
        # are ignored), or finds the tables gone.
        moving = self._upgrade_store()
        self._create_ledger()
        if moving:
            self._drop_moved_ledger()

    def _upgrade_store(self) -> bool:
        """Create or upgrade the store file's tables; whether it still has the ledger's, to be moved."""
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
            _execute_script(conn, _SCHEMA)
            moving = _has_ledger_tables(conn)
            if moving:
                _execute_script(conn, _LEDGER_SCHEMA)  # a version 2 file has no grants table
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
            # NB. Already while the ledger's tables are still here: a jitgate that knows only 4 refuses the file, and so
            # never writes them again.
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return moving

    def _create_ledger(self) -> None:
        """Create the ledger file's tables, and copy the store file's ledger tables into them while it has them."""
        with self._ledger.transaction() as conn:
            (found,) = conn.execute("PRAGMA user_version").fetchone()
            if found > LEDGER_SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.ledger_path} has ledger schema {found}; this jitgate knows {LEDGER_SCHEMA_VERSION}")
            _execute_script(conn, _LEDGER_SCHEMA)
            # NB. Read in one snapshot of the store file taken after this transaction took the ledger's write lock.
            # If the tables are in it, no open has dropped them yet, so no store has written the ledger yet (a store
            # writes only once its open is done), and none can until this commits: the ledger holds nothing but an
            # earlier copy of the same rows, which nothing has written since the store file became version 5.
            source = self._db.connection()
            grants: list[Any] = []
            holds: list[Any] = []
            source.execute("BEGIN")
            try:
                if _has_ledger_tables(source):
                    grants = source.execute(f"SELECT {_KEY_COLUMNS}, {_GRANT_COLUMNS} FROM grants").fetchall()
                    holds = source.execute(f"SELECT {_HOLD_COLUMNS} FROM holds").fetchall()
            finally:
                source.execute("COMMIT")
            conn.executemany(_insert_or_ignore("grants", f"{_KEY_COLUMNS}, {_GRANT_COLUMNS}"), grants)
            conn.executemany(_insert_or_ignore("holds", _HOLD_COLUMNS), holds)
            conn.execute(f"PRAGMA user_version = {LEDGER_SCHEMA_VERSION}")

    def _drop_moved_ledger(self) -> None:
        with self._db.transaction() as conn:
            conn.execute("DROP TABLE IF EXISTS holds")
            conn.execute("DROP TABLE IF EXISTS grants")

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ requests

    def create_request(self, record: RequestRecord) -> RequestRecord:
        created = _committed(record, version=1)
        text = created.model_dump_json(by_alias=True)
        row = (record.request_id, record.state.value, _instant(record.updated_at), text, _requester(record))
        events = event_rows(_events_of(record))
        with self._db.transaction() as conn:
            try:
                conn.execute(_INSERT_REQUEST, row)
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"request {record.request_id} already exists") from None
            insert_events(conn, events)
        return self._written.remember(text, created)

    def get_request(self, request_id: str) -> RequestRecord | None:
        row = self._db.connection().execute("SELECT doc FROM requests WHERE request_id = ?", (request_id,)).fetchone()
        return None if row is None else self._written.read(request_id, row[0])

    def save_request(self, record: RequestRecord) -> RequestRecord:
        saved = _committed(record, version=record.version + 1)
        text = saved.model_dump_json(by_alias=True)
        state, updated_at, requester = record.state.value, _instant(record.updated_at), _requester(record)
        events = event_rows(_events_of(record))
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
            insert_events(conn, events)
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
        return [parse_record(doc) for (doc,) in rows]

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
        return RequestPage([parse_record(doc) for _, doc in rows], encode_position(str(rows[-1][0])) if more else None)

    def requests_with_outbox(self, limit: int = 1000) -> list[RequestRecord]:
        # NB. The WHERE clause repeats the partial index's, so the planner reads only the index.
        rows = self._db.connection().execute(
            "SELECT doc FROM requests WHERE outbox > 0"
            " ORDER BY updated_at, request_id LIMIT ?",
            (max(limit, 0),),
        ).fetchall()
        return [parse_record(doc) for (doc,) in rows]

    # ------------------------------------------------------------ ledger

    def get_grant(self, key: GrantKey) -> Grant | None:
        # NB. One statement, so one snapshot of the head and its holds without a transaction of its own.
        rows = self._ledger.connection().execute(_READ_GRANT, _key(key)).fetchall()
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
        with self._ledger.transaction() as conn:
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
            self._ledger.connection()
            .execute(
                f"SELECT {_HOLD_COLUMNS} FROM holds WHERE {where}"
                " ORDER BY expires_at, request_id, provider, principal_id, role_definition_id, scope",
                params,
            )
            .fetchall()
        )
        return [_hold(row) for row in rows]


# ---------------------------------------------------------------- helpers


def ledger_path(path: str | Path) -> Path:
    """The ledger file of the store file at `path`, beside it: `store.db` → `store-ledger.db`."""
    # NB. Named after the store file's whole name, stem and suffix, so that two stores of one directory never share a
    # ledger (a fixed `ledger.db` would make every store file of the directory write one ledger).
    where = Path(path)
    return where.with_name(f"{where.stem}-ledger{where.suffix}")


def _execute_script(conn: sqlite3.Connection, script: str) -> None:
    # NB. Not executescript, which commits the transaction it is called in.
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _insert_or_ignore(table: str, columns: str) -> str:
    """An INSERT OR IGNORE of one row of `columns` (a comma-separated list) into `table`."""
    return f"INSERT OR IGNORE INTO {table} ({columns}) VALUES ({', '.join('?' for _ in columns.split(','))})"


def _has_ledger_tables(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'holds'").fetchone() is not None


def _committed(record: RequestRecord, version: int) -> RequestRecord:
    """The record as it is stored: at `version`, its outbox empty (its events are committed with it, in the same
    transaction). Stored as `model_dump_json` writes it, the same document as `document()` in a third the time."""
    return record.model_copy(update={"version": version, "pending_events": []})


def _requester(record: RequestRecord) -> str | None:
    return record.request.requester.principal_id if record.request is not None else None


def _events_of(record: RequestRecord) -> list[tuple[AuditEvent, str | None]]:
    principal = _requester(record)
    return [(event, principal) for event in record.pending_events]


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


