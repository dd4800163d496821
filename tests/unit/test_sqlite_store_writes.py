"""What the SQLite store runs, and what under its write lock (issue #10, CPU per lifecycle, and the time every other
writer of the file waits): a grant key's document is read in one statement, written with one conditional statement on
its head and only the hold rows that changed, and what it writes is exactly the document, whoever wrote the version
before; a write builds its rows before it takes the lock; a record's requester, a column since schema 4, follows the
record. (The schema 4 migration is pinned with a version-3 file in tests/contract/test_store_contract.py.)"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.adapters.embedded.sqlite_file import SqliteFile
from shared.adapters.embedded.store import SqliteStore
from shared.domain.audit import EventType, event_id
from shared.domain.errors import AlreadyExists, ConcurrencyConflict
from shared.domain.ledger import RELEASED_KEPT, Grant, HoldStatus
from shared.domain.lifecycle import RequestState
from shared.ports import RequestQuery
from tests.contract.test_store_contract import BOB, JANE, KEY, T0, chain_of, full_record, hold, put


@contextmanager
def statements(file: SqliteFile) -> Iterator[list[str]]:
    """The statements this thread's connection to `file` (a store's `_db` or `_ledger`) runs meanwhile (one per row of
    an executemany)."""
    seen: list[str] = []
    conn = file.connection()
    conn.set_trace_callback(lambda sql: seen.append(re.sub(r"\s+", " ", sql)))
    try:
        yield seen
    finally:
        conn.set_trace_callback(None)


def hold_writes(seen: list[str]) -> list[str]:
    """The request id of each hold row written or deleted."""
    return [re.findall(r"'(r\d+)'", sql)[0] for sql in seen if re.match(r"(INSERT INTO|DELETE FROM) holds", sql)]


def test_a_grant_is_read_in_one_statement_without_a_transaction(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "store.db") as store:
        put(store, hold(request_id="r1"), hold(request_id="r2"))
        with statements(store._ledger) as seen:
            grant = store.get_grant(KEY)
        assert grant is not None and [h.request_id for h in grant.holds] == ["r1", "r2"]
        assert len(seen) == 1 and seen[0].startswith("SELECT")


def test_only_the_hold_rows_that_changed_are_written(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "store.db") as store:
        put(store, hold(request_id="r1"), hold(request_id="r2"), hold(request_id="r3"))
        read = store.get_grant(KEY)
        assert read is not None

        # WHEN one hold of three is released, THEN its row is the only one written, in place
        with statements(store._ledger) as seen:
            released = store.put_grant(read.released("r2", T0 + timedelta(minutes=5)))
        assert hold_writes(seen) == ["r2"]
        assert [s.split(" ")[0] for s in seen] == ["BEGIN", "UPDATE", "INSERT", "COMMIT"]

        # AND a write of the head alone writes no hold row; one that adds a hold writes that one
        with statements(store._ledger) as seen:
            typed = store.put_grant(released.model_copy(update={"principal_type": "User"}))
            store.put_grant(typed.with_hold(hold(request_id="r4")))
        assert hold_writes(seen) == ["r4"]

        stored = store.get_grant(KEY)
        assert stored is not None and stored.version == 4 and stored.principal_type == "User"
        assert [(h.request_id, h.status.value) for h in stored.holds] == [
            ("r1", "active"), ("r2", "released"), ("r3", "active"), ("r4", "active")]
        assert sorted(h.request_id for h in store.all_active_holds()) == ["r1", "r3", "r4"]


def test_a_released_hold_pruned_from_the_document_is_deleted_from_the_store(tmp_path: Path) -> None:
    # GIVEN a key whose document keeps as many released holds as it may, and one active
    grant = Grant.new(KEY).with_hold(hold(request_id="r99"))
    for n in range(RELEASED_KEPT):
        grant = grant.with_hold(
            hold(request_id=f"r{n}", status=HoldStatus.RELEASED, released_at=T0 + timedelta(minutes=n)))
    with SqliteStore(tmp_path / "store.db") as store:
        store.put_grant(grant)
        read = store.get_grant(KEY)
        assert read is not None and len(read.holds) == RELEASED_KEPT + 1

        # WHEN the active one is released, which prunes the oldest released hold
        with statements(store._ledger) as seen:
            store.put_grant(read.released("r99", T0 + timedelta(hours=1)))

        # THEN the pruned row is deleted and the released one updated, nothing else
        assert sorted(hold_writes(seen)) == ["r0", "r99"]
        assert store.holds_for_request("r0") == []
        stored = store.get_grant(KEY)
        assert stored is not None and len(stored.holds) == RELEASED_KEPT and stored.active_holds == []


def test_a_version_another_store_wrote_is_written_whole_and_exactly(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with SqliteStore(path) as mine, SqliteStore(path) as theirs:
        # GIVEN a version of the document this store never saw (another process wrote it)
        put(mine, hold(request_id="r1"), hold(request_id="r2"))
        seen_by_them = theirs.get_grant(KEY)
        assert seen_by_them is not None
        theirs.put_grant(seen_by_them.released("r1", T0).with_hold(hold(request_id="r3")))
        # WHEN this store writes on top of what it read before: a conflict, and nothing written
        stale = mine.get_grant(KEY)
        with pytest.raises(ConcurrencyConflict, match="version 2, not 1"):
            mine.put_grant(Grant.new(KEY).model_copy(update={"version": 1}))
        # AND a write on the version the other wrote, handed to a store that never read it, is exact: a hold
        # changed, one kept, one dropped from the document (as pruning drops the oldest released)
        assert stale is not None and stale.version == 2
        changed = stale.released("r2", T0 + timedelta(minutes=1))
        fresh = SqliteStore(path)
        try:
            written = fresh.put_grant(changed.model_copy(update={"holds": changed.holds[1:]}))
        finally:
            fresh.close()
        assert mine.get_grant(KEY) == theirs.get_grant(KEY) == written
        assert [(h.request_id, h.status) for h in written.holds] == [
            ("r2", HoldStatus.RELEASED), ("r3", HoldStatus.ACTIVE)]
        assert mine.holds_for_request("r1") == []


def test_a_stale_write_after_another_store_changed_the_holds_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with SqliteStore(path) as mine, SqliteStore(path) as theirs:
        put(mine, hold(request_id="r1"))
        read = mine.get_grant(KEY)
        assert read is not None
        winner = put(theirs, hold(request_id="r2"))
        with pytest.raises(ConcurrencyConflict):
            mine.put_grant(read.released("r1", T0))
        assert mine.get_grant(KEY) == winner
        assert sorted(h.request_id for h in mine.all_active_holds()) == ["r1", "r2"]


def test_a_grant_with_two_holds_of_one_request_is_refused_and_nothing_written(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "store.db") as store:
        twice = Grant.new(KEY).model_copy(update={"holds": (hold(request_id="r1"), hold(request_id="r1"))})
        with pytest.raises(ValueError, match="more than one hold of one request"):
            store.put_grant(twice)
        assert store.get_grant(KEY) is None


def test_a_write_builds_its_rows_before_it_takes_the_write_lock(tmp_path: Path) -> None:
    # GIVEN a record whose rows cannot be built (a naive instant)
    with SqliteStore(tmp_path / "store.db") as store:
        created = store.create_request(full_record())
        created.move_to(RequestState.PENDING_APPROVAL, datetime(2026, 11, 26, 10, 0))

        # WHEN it is saved THEN it is refused before any statement runs: no other writer waited for it
        with statements(store._db) as seen, pytest.raises(ValueError, match="timezone"):
            store.save_request(created)
        with statements(store._db) as seen_creating, pytest.raises(ValueError, match="timezone"):
            another = full_record("00000000-0000-4000-8000-000000000001")
            store.create_request(another.model_copy(update={"updated_at": datetime(2026, 11, 26)}))
        assert seen == seen_creating == []

        # AND a save runs the update and one statement per row of the events, nothing else, under the lock
        created.updated_at = T0 + timedelta(minutes=1)
        created.emit(EventType.APPROVAL_REQUESTED, T0 + timedelta(minutes=1), {})
        with statements(store._db) as seen:
            store.save_request(created)
        assert [" ".join(s.split(" ")[:3]) for s in seen] == [
            "BEGIN IMMEDIATE", "UPDATE requests SET", "INSERT INTO audit_events", "INSERT INTO audit_principals",
            "INSERT INTO audit_principals", "COMMIT"]


def test_a_save_that_changes_the_requester_moves_the_record_to_the_new_requester(tmp_path: Path) -> None:
    # GIVEN a record (a request does not change once created; if a caller changes it, the store still follows)
    with SqliteStore(tmp_path / "store.db") as store:
        created = store.create_request(full_record())
        assert created.request is not None
        changed = created.model_copy(update={"request": created.request.model_copy(update={
            "requester": created.request.requester.model_copy(update={"principal_id": BOB})})})

        # WHEN it is saved THEN it is Bob's, at the next version, and a stale save of it still conflicts
        saved = store.save_request(changed)
        assert [r.request_id for r in store.list_requests(RequestQuery(requester_id=BOB)).records] == [
            saved.request_id]
        assert store.list_requests(RequestQuery(requester_id=JANE)).records == []
        assert saved.version == 2
        with pytest.raises(ConcurrencyConflict):
            store.save_request(changed)


# One step on a key's document: which of two stores on one file reads it, which writes what was read (a version it
# may never have seen, its memory of the key older), the request, what happens to its hold, and which of two ends.
STEPS = st.lists(
    st.tuples(st.integers(0, 1), st.integers(0, 1), st.integers(0, 3),
              st.sampled_from(["grant", "release", "type"]), st.integers(1, 2)),
    min_size=1, max_size=25,
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(steps=STEPS)
def test_whichever_store_writes_the_stored_document_is_the_one_written(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[int, int, int, str, int]],
) -> None:
    path = tmp_path_factory.mktemp("grants") / "store.db"
    stores = [SqliteStore(path), SqliteStore(path)]
    fresh = SqliteStore(path)
    try:
        for n, (reader, writer, request, change, hours) in enumerate(steps):
            grant = stores[reader].get_grant(KEY) or Grant.new(KEY)
            request_id = f"r{request}"
            if change == "grant":  # a grant again of the same request may put back a row an older version had
                grant = grant.with_hold(hold(request_id=request_id, expires_at=T0 + timedelta(hours=hours)))
            elif change == "release":
                grant = grant.released(request_id, T0 + timedelta(minutes=n))
            else:
                grant = grant.model_copy(update={"principal_type": f"Type{hours}"})
            # WHEN it is written THEN the document read back, by a store that never wrote it, is exactly that one
            written = stores[writer].put_grant(grant)
            assert fresh.get_grant(KEY) == written == grant.model_copy(update={"version": grant.version + 1})
            assert sorted(h.request_id for h in fresh.all_active_holds()) == sorted(
                h.request_id for h in written.active_holds)
    finally:
        for each in (*stores, fresh):
            each.close()


def test_an_event_id_is_kept_unique_in_its_request_without_an_index_of_its_own(tmp_path: Path) -> None:
    # NB. A jitgate event's id is its (requestId, seq) in other words, which the table's key keeps unique; the id
    # has no index (one B-tree fewer to write per event). An id that says otherwise is looked for in its request,
    # in the same batch too, and the whole batch is refused.
    store = SqliteStore(tmp_path / "store.db")
    first, second = chain_of("r1", 2)
    store.append(first)
    impostor = second.model_copy(update={"id": first.id})  # seq 1, but the id of seq 0
    with pytest.raises(AlreadyExists):
        store.append(impostor)
    twin = first.model_copy(update={"request_id": "r2"})  # the same id, in a batch with the event it copies
    original = first.model_copy(update={"request_id": "r2", "id": event_id("r2", 0)})
    with pytest.raises(AlreadyExists):
        store.bulk_append([(original, None), (twin.model_copy(update={"seq": 3}), None)])
    assert store.chain("r1") == [first]
    assert store.chain("r2") == []
    origins = [row[0] for row in store._db.connection().execute("SELECT origin FROM pragma_index_list('audit_events')")]
    assert "u" not in origins  # no UNIQUE index (the key's is "pk")
    store.close()
