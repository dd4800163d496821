"""One audit event rewritten in the database by someone who can recompute hashes, or a chain's tail cut off, is
named by every way of verifying the trail: the models, the stored-document fast path, the store's verify of one
chain and of every chain, and `jitgate audit verify --data-dir`, each comparing the chain's end with its request
record. The same over HTTP is in tests/functional/test_api.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.adapters.embedded.store import SqliteStore
from shared.cli import main
from shared.domain.audit import (
    AuditEvent,
    ChainReport,
    EventType,
    canonical_json,
    event_id,
    verify_chain,
    verify_chain_documents,
)
from tests.fakes.world import ALICE, BOB, PROD_RG, World, access_request
from tests.tampering import TAMPERINGS, truncated

ALICES_APPROVAL, LAST = 3, -1
POSITIONS = {"first": 0, "Alice's approval": ALICES_APPROVAL, "last": LAST}
CASES = [
    pytest.param(name, position, id=f"{name} at {where}")
    for name in sorted(TAMPERINGS)
    for where, position in POSITIONS.items()
]


def approved_granted_and_revoked(world: World) -> str:
    rid = world.submit(access_request(role="Contributor", scope=PROD_RG, duration="PT1H"))
    world.lifecycle.approve(rid, ALICE, "looks right")
    world.lifecycle.approve(rid, BOB)
    world.worker.drain()
    world.advance(3601)
    return rid


def two_requests_in_both_stores(tmp_path: Path) -> tuple[World, SqliteStore, str]:
    """The trail and records of a request approved by Alice and Bob, granted and revoked, and of another
    request, in the fake store and in a SQLite store."""
    world = World()
    rid = approved_granted_and_revoked(world)
    world.submit(access_request())
    sqlite = SqliteStore(tmp_path / "store.db")
    for request_id in world.store.request_ids():
        record = world.store.get_request(request_id)
        assert record is not None
        sqlite.create_request(record)
    sqlite.bulk_append((e, None) for r in world.store.request_ids() for e in world.store.chain(r))
    assert all(report.ok and report.anchored for report in sqlite.verify_chains())
    return world, sqlite, rid


def assert_every_verifier_reports(
    expected: ChainReport, world: World, sqlite: SqliteStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rid = expected.request_id
    record = world.store.get_request(rid)
    assert record is not None
    assert world.verify(rid) == expected
    assert verify_chain(rid, sqlite.chain(rid), record.anchor()) == expected
    assert verify_chain_documents(rid, sqlite.chain_documents(rid), record.anchor()) == expected
    assert sqlite.verify_chain(rid) == expected
    assert [report for report in sqlite.verify_chains() if not report.ok] == [expected]
    sqlite.close()
    # ...and so does the command line on the store, for every chain (in parallel) and for this one
    assert expected.broken_seq is not None
    line = (f"audit verify: BROKEN — request {rid} at seq {expected.broken_seq} "
            f"(event {event_id(rid, expected.broken_seq)}): {expected.reason}\n")
    assert main(["audit", "verify", "--data-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().out == line
    assert main(["audit", "verify", "--data-dir", str(tmp_path), "--request-id", rid]) == 1
    assert capsys.readouterr().out == line


@pytest.mark.parametrize(("name", "position"), CASES)
def test_a_rewritten_event_is_named_by_every_verifier(
    name: str, position: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN two requests' trails and records in the fake store and in the SQLite store
    world, sqlite, rid = two_requests_in_both_stores(tmp_path)
    events = world.store.chain(rid)
    assert events[ALICES_APPROVAL].type is EventType.APPROVAL_RECORDED
    assert events[ALICES_APPROVAL].actor.principal_id == ALICE

    # WHEN one event is rewritten in both, in the canonical form the SQLite store writes
    seq = position % len(events)
    doc = events[seq].document()
    TAMPERINGS[name].edit(doc)
    world.store.rewrite(AuditEvent.model_validate(doc))
    with sqlite._db.transaction() as conn:
        conn.execute(
            "UPDATE audit_events SET doc = ? WHERE request_id = ? AND seq = ?", (canonical_json(doc), rid, seq)
        )

    # THEN every verifier names that request, the seq of the first broken link and why: the last event
    # rewritten with a recomputed hash by the head its request record remembers
    expected = TAMPERINGS[name].expected(rid, seq, doc, head=events[-1].hash, last=len(events) - 1)
    assert_every_verifier_reports(expected, world, sqlite, tmp_path, capsys)


@pytest.mark.parametrize("cut", [1, 2, "all"])
def test_a_truncated_tail_is_named_by_every_verifier(
    cut: int | str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN two requests' trails and records in the fake store and in the SQLite store
    world, sqlite, rid = two_requests_in_both_stores(tmp_path)
    events = world.store.chain(rid)
    kept = 0 if cut == "all" else len(events) - int(cut)

    # WHEN the chain's last events are deleted from both: what is left is a chain whose every link holds
    world.store.truncate(rid, kept)
    with sqlite._db.transaction() as conn:
        conn.execute("DELETE FROM audit_events WHERE request_id = ? AND seq >= ?", (rid, kept))
    assert verify_chain(rid, world.store.chain(rid)).ok

    # THEN every verifier names the request, the first missing seq, and where its record says the chain ends
    expected = truncated(rid, kept, head=events[-1].hash, last=len(events) - 1)
    assert_every_verifier_reports(expected, world, sqlite, tmp_path, capsys)


def test_events_still_in_the_outbox_are_not_a_truncated_chain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a request whose handler died after its state write, before its audit append (an earlier jitgate
    # appended a record's events after writing it): the record has emitted two events the audit store does not
    # have yet (they wait in the record's outbox)
    world, sqlite, rid = two_requests_in_both_stores(tmp_path)
    record = world.store.get_request(rid)
    assert record is not None
    before = len(world.store.chain(rid))
    for operations in (3, 4):
        record.emit(EventType.ACTIVITY_SUMMARY, world.clock.now(), {"operations": operations})
    world.store.put_legacy_record(record)
    stored = sqlite.get_request(rid)
    assert stored is not None
    with sqlite._db.transaction() as conn:
        doc = json.dumps({**record.document(), "version": stored.version})
        conn.execute("UPDATE requests SET doc = ? WHERE request_id = ?", (doc, rid))
    # AND the first of them was appended before the handler died
    sqlite.append(record.pending_events[0])

    # THEN the chain is sound in every verifier: its end is where the record says, or before its outbox
    assert world.verify(rid).ok and world.verify(rid).events == before
    assert sqlite.verify_chain(rid).ok and sqlite.verify_chain(rid).events == before + 1
    assert all(report.ok for report in sqlite.verify_chains())
    sqlite.close()
    assert main(["audit", "verify", "--data-dir", str(tmp_path)]) == 0
    assert "OK — 2 chains" in capsys.readouterr().out

    # WHEN one more event of the chain, one the record does not hold in its outbox, is deleted
    with SqliteStore(tmp_path / "store.db") as again:
        with again._db.transaction() as conn:
            conn.execute("DELETE FROM audit_events WHERE request_id = ? AND seq >= ?", (rid, before - 1))
        # THEN that is a truncated chain
        report = again.verify_chain(rid)
    assert (report.ok, report.broken_seq) == (False, before - 1)
    assert report.reason.startswith(f"the chain ends at seq {before - 2} but its request record expects seq "
                                    f"{before + 1} with head {record.audit_head[:12]}… (seq {before} to "
                                    f"{before + 1} may not be written yet: they are in its outbox)")


def test_a_chain_without_a_request_record_is_verified_without_an_anchor_and_said_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a store with a request's trail but not its record (an orphan's chain), and another with its record
    world = World()
    orphan = world.submit(access_request())
    other = world.submit(access_request())
    with SqliteStore(tmp_path / "store.db") as sqlite:
        record = world.store.get_request(other)
        assert record is not None
        sqlite.create_request(record)
        sqlite.bulk_append((e, None) for r in (orphan, other) for e in world.store.chain(r))
        # WHEN every chain is verified
        reports = {report.request_id: report for report in sqlite.verify_chains()}
    # THEN both are intact, and only the one with a record had its end checked
    assert (reports[orphan].ok, reports[orphan].anchored) == (True, False)
    assert (reports[other].ok, reports[other].anchored) == (True, True)
    # AND the command line says which chain could not be anchored
    assert main(["audit", "verify", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"audit verify: OK — 2 chains, {reports[orphan].events + reports[other].events} events, every link intact",
        f"audit verify: 1 chain without a request record, so its end is not checked: {orphan}",
    ]


class WrittenBetweenReads(SqliteStore):
    """A SQLite store in which a handler appends one more event to a request's chain (and its record) once,
    just after a verifier has read the record and before it reads the chain."""

    def __init__(self, path: Path, request_id: str) -> None:
        super().__init__(path)
        self.pending_write: str | None = request_id

    def _write_once(self) -> None:
        request_id, self.pending_write = self.pending_write, None
        if request_id is None:
            return
        record = self.get_request(request_id)
        assert record is not None
        record.emit(EventType.ACTIVITY_SUMMARY, record.updated_at, {"operations": 1})
        self.save_request(record)  # the record and its event, in one transaction

    def chain_documents(self, request_id: str) -> list[str]:
        self._write_once()
        return super().chain_documents(request_id)

    def iter_chain_documents(
        self, start: str | None = None, stop: str | None = None
    ) -> Iterator[tuple[str, list[str]]]:
        self._write_once()
        yield from super().iter_chain_documents(start, stop)


@pytest.mark.parametrize("path", ["one chain", "every chain"])
def test_a_request_written_between_reading_its_record_and_its_chain_is_not_a_broken_chain(
    path: str, tmp_path: Path
) -> None:
    # GIVEN two requests in a SQLite store where a handler writes one of them while it is being verified
    world, sqlite, rid = two_requests_in_both_stores(tmp_path)
    sqlite.close()
    with WrittenBetweenReads(tmp_path / "store.db", rid) as store:
        # WHEN its chain is verified, alone or with every other
        reports = [store.verify_chain(rid)] if path == "one chain" else list(store.verify_chains())
        # THEN the verifier read it again and found it whole, one event longer
        assert store.pending_write is None
    assert all(report.ok and report.anchored for report in reports), reports
    assert [r.events for r in reports if r.request_id == rid] == [len(world.store.chain(rid)) + 1]
