"""The embedded ledger in its own SQLite file (issue #10: a SQLite file has one writer at a time, and the ledger's
writes never share a transaction with a record's, so they need not wait for each other): which file each port's
statements run in, how a store file of version 4 or before moves its ledger tables there, an interrupted move, and
several stores opening one such file at once. (A version 1 file upgraded all the way is pinned in
tests/contract/test_store_contract.py.)"""

from __future__ import annotations

import shutil
import sqlite3
import threading
from contextlib import closing
from pathlib import Path

import pytest

from shared.adapters.embedded.store import SqliteStore, ledger_path
from shared.domain.errors import ConcurrencyConflict
from shared.domain.ledger import Deletion, Grant, HoldStatus
from tests.contract.test_store_contract import (
    JANE,
    KEY,
    OTHER_KEY,
    T0,
    _key_columns,
    assert_ledger_moved,
    full_record,
    hold,
    put,
)
from tests.unit.test_sqlite_store_writes import statements

# The tables of a version 4 store file that this change touches, as version 4 created them.
V4_STORE = """
    CREATE TABLE requests (request_id TEXT PRIMARY KEY, state TEXT NOT NULL, version INTEGER NOT NULL,
        updated_at TEXT NOT NULL, doc TEXT NOT NULL, requester TEXT, outbox INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE holds (provider TEXT NOT NULL, principal_id TEXT NOT NULL, role_definition_id TEXT NOT NULL,
        scope TEXT NOT NULL, request_id TEXT NOT NULL, granted_at TEXT NOT NULL, expires_at TEXT NOT NULL,
        preexisting INTEGER NOT NULL, status TEXT NOT NULL, released_at TEXT, principal_type TEXT,
        PRIMARY KEY (provider, principal_id, role_definition_id, scope, request_id)) WITHOUT ROWID;
    CREATE INDEX holds_by_request ON holds (request_id);
    CREATE INDEX holds_by_status_expiry ON holds (status, expires_at);
    CREATE TABLE grants (provider TEXT NOT NULL, principal_id TEXT NOT NULL, role_definition_id TEXT NOT NULL,
        scope TEXT NOT NULL, version INTEGER NOT NULL, principal_type TEXT, provider_expires_at TEXT,
        deleting_token TEXT, deleting_since TEXT, deleting_request_id TEXT,
        PRIMARY KEY (provider, principal_id, role_definition_id, scope)) WITHOUT ROWID;
    PRAGMA user_version = 4;
"""

# KEY's document at version 3: typed, with a provider expiry, two holds (one released); OTHER_KEY's at version 1,
# being deleted, its one hold preexisting and stored before holds kept a type.
R1 = hold(request_id="r1")
R0 = hold(request_id="r0", expires_at=T0.replace(minute=30), status=HoldStatus.RELEASED,
          released_at=T0.replace(minute=30), principal_type="User")
R2 = hold(key=OTHER_KEY, request_id="r2", preexisting=True, principal_type=None)
GRANT = Grant(key=KEY, holds=(R0, R1), principal_type="Group", provider_expires_at=T0.replace(hour=11), version=3)
OTHER = Grant(key=OTHER_KEY, holds=(R2,), deleting=Deletion(token="t-1", since=T0, request_id="r2"), version=1)
V4_GRANTS = [
    (*_key_columns(KEY), 3, "Group", "2026-11-26T11:00:00.123456Z", None, None, None),
    (*_key_columns(OTHER_KEY), 1, None, None, "t-1", "2026-11-26T09:00:00.123456Z", "r2"),
]
V4_HOLDS = [
    (*_key_columns(KEY), "r1", "2026-11-26T09:00:00.123456Z", "2026-11-26T11:00:00.123456Z", 0, "active",
     None, "Group"),
    (*_key_columns(KEY), "r0", "2026-11-26T09:00:00.123456Z", "2026-11-26T09:30:00.123456Z", 0, "released",
     "2026-11-26T09:30:00.123456Z", "User"),
    (*_key_columns(OTHER_KEY), "r2", "2026-11-26T09:00:00.123456Z", "2026-11-26T11:00:00.123456Z", 1,
     "active", None, None),
]


def version_4_store(path: Path) -> Path:
    """A store file of version 4 at `path`, with a record and the ledger above."""
    record = full_record()
    with closing(sqlite3.connect(path)) as db, db:
        db.executescript(V4_STORE)
        db.execute("INSERT INTO requests (request_id, state, version, updated_at, doc, requester)"
                   " VALUES (?, ?, 1, ?, ?, ?)", (record.request_id, record.state.value, "2026-11-26T09:00:00.123456Z",
                                                 record.model_dump_json(by_alias=True), JANE))
        db.executemany("INSERT INTO grants VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", V4_GRANTS)
        db.executemany("INSERT INTO holds VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", V4_HOLDS)
    return path


def ledger_rows(path: Path) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """Every grants row and every holds row of the ledger file of the store file at `path`."""
    with closing(sqlite3.connect(ledger_path(path))) as db:
        return (db.execute("SELECT * FROM grants ORDER BY principal_id").fetchall(),
                db.execute("SELECT * FROM holds ORDER BY principal_id, request_id").fetchall())


def assert_documents_unchanged(store: SqliteStore) -> None:
    assert store.get_grant(KEY) == GRANT
    assert store.get_grant(OTHER_KEY) == OTHER
    assert [(h.request_id, h.key) for h in store.all_active_holds()] == [("r1", KEY), ("r2", OTHER_KEY)]
    assert store.holds_for_request("r0") == [R0]
    assert store.overdue_holds(T0.replace(hour=12)) == [R1, R2]


def test_the_ledger_is_written_in_its_own_file_beside_the_store_file(tmp_path: Path) -> None:
    assert ledger_path(tmp_path / "store.db") == tmp_path / "store-ledger.db"
    with SqliteStore(tmp_path / "store.db") as store:
        # WHEN a grant key's document and a record are written
        with statements(store._db) as in_store, statements(store._ledger) as in_ledger:
            put(store, hold(request_id="r1"))
        with statements(store._db) as record_in_store, statements(store._ledger) as record_in_ledger:
            store.create_request(full_record())
        # THEN each runs its statements in its own file alone, so neither waits for the other's writer
        assert in_store == [] and [s.split(" ")[0] for s in in_ledger] == ["SELECT", "BEGIN", "INSERT", "INSERT",
                                                                           "COMMIT"]
        assert record_in_ledger == [] and record_in_store[0] == "BEGIN IMMEDIATE"
        assert store.get_request(full_record().request_id) is not None and store.get_grant(KEY) is not None
    # AND closing the store closed both files (the last connection to a file checkpoints it and removes its WAL)
    assert not (tmp_path / "store.db-wal").exists() and not (tmp_path / "store-ledger.db-wal").exists()
    # AND the store file has no ledger table, the ledger file nothing but the ledger's
    assert_ledger_moved(tmp_path / "store.db")
    assert ledger_rows(tmp_path / "store.db")[1][0][4] == "r1"


def test_two_stores_of_one_directory_have_two_ledgers(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "a.db") as a, SqliteStore(tmp_path / "b.db") as b:
        put(a, hold(request_id="r1"))
        assert b.get_grant(KEY) is None and b.all_active_holds() == []
        assert a.ledger_path != b.ledger_path


def test_a_version_4_store_moves_its_ledger_and_its_documents_load_unchanged(tmp_path: Path) -> None:
    # GIVEN a store file of version 4, its ledger tables inside it
    path = version_4_store(tmp_path / "store.db")

    # WHEN this jitgate opens it
    with SqliteStore(path) as store:
        # THEN every document loads as it was, at its version, and the record too
        assert_documents_unchanged(store)
        assert store.get_request(full_record().request_id) is not None
        # AND a write at a document's version succeeds, a write at a stale one is refused
        released = store.put_grant(GRANT.released("r1", T0.replace(hour=10)))
        assert released.version == 4
        with pytest.raises(ConcurrencyConflict, match="version 4, not 3"):
            store.put_grant(GRANT)
        with pytest.raises(ConcurrencyConflict, match="version 1, not 0"):
            store.put_grant(Grant.new(OTHER_KEY))
        assert store.put_grant(OTHER).version == 2
    # AND the tables have moved, their rows with them
    assert_ledger_moved(path)
    grants, holds = ledger_rows(path)
    assert (len(grants), len(holds)) == (2, 3)

    # AND opening it again changes nothing
    with SqliteStore(path) as again:
        assert again.get_grant(KEY) == released
    assert ledger_rows(path) == (grants, holds)


def test_a_move_interrupted_after_the_copy_is_finished_by_the_next_open_without_duplicates(tmp_path: Path) -> None:
    # GIVEN a version 4 store file whose ledger rows were copied into its ledger file, by an open that stopped
    # before it dropped them from the store file (the copy made as an open makes it, of the same file elsewhere)
    path = version_4_store(tmp_path / "store.db")
    (tmp_path / "elsewhere").mkdir()
    elsewhere = Path(shutil.copy(path, tmp_path / "elsewhere" / "store.db"))
    SqliteStore(elsewhere).close()
    shutil.copy(ledger_path(elsewhere), ledger_path(path))
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT count(*) FROM holds").fetchone() == (3,)
    copied = ledger_rows(path)

    # WHEN the store is opened again THEN the move is finished: each row once, the documents unchanged
    with SqliteStore(path) as store:
        assert_documents_unchanged(store)
    assert_ledger_moved(path)
    assert ledger_rows(path) == copied and len(copied[1]) == 3


def open_and_add_a_hold(path: Path, start: threading.Barrier, request_id: str, failures: list[BaseException]) -> None:
    """Open a store on `path` when every other thread does, and add a hold to OTHER_KEY's document (again while
    another thread wrote it first)."""
    try:
        start.wait()
        with SqliteStore(path) as store:
            while True:
                try:
                    put(store, hold(key=OTHER_KEY, request_id=request_id))
                    return
                except ConcurrencyConflict:
                    continue
    except BaseException as error:
        failures.append(error)


def test_stores_opening_a_version_4_file_at_once_move_its_ledger_once(tmp_path: Path) -> None:
    for attempt in range(5):
        # GIVEN a version 4 store file
        path = version_4_store(tmp_path / f"store{attempt}.db")
        start = threading.Barrier(4)
        failures: list[BaseException] = []

        # WHEN four stores open it at once, and each then adds a hold
        threads = [threading.Thread(target=open_and_add_a_hold, args=(path, start, f"new{n}", failures))
                   for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        # THEN every open succeeded, and the ledger has every hold it had and every new one, none twice or lost
        assert failures == []
        with SqliteStore(path) as store:
            assert store.get_grant(KEY) == GRANT
            other = store.get_grant(OTHER_KEY)
            assert other is not None and other.version == 5
            assert sorted(h.request_id for h in other.holds) == ["new0", "new1", "new2", "new3", "r2"]
        assert_ledger_moved(path)


def test_a_ledger_file_of_a_newer_schema_is_refused_with_its_name(tmp_path: Path) -> None:
    with closing(sqlite3.connect(ledger_path(tmp_path / "store.db"))) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(RuntimeError, match=r"store-ledger\.db has ledger schema 99; this jitgate knows 1"):
        SqliteStore(tmp_path / "store.db")
