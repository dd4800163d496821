"""Verifying chains from their stored documents gives the same reports as verifying the events."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.adapters.embedded.store import SqliteStore
from shared.domain import audit
from shared.domain.audit import (
    SYSTEM,
    Actor,
    AuditEvent,
    EventType,
    canonical_json,
    make_event,
    verify_chain,
    verify_chain_documents,
)

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
JANE = "dddddddd-0000-4000-8000-00000000000d"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def chain(request_id: str, datas: list[dict[str, Any]]) -> list[AuditEvent]:
    events: list[AuditEvent] = []
    for seq, data in enumerate(datas):
        prev = events[-1].hash if events else ""
        actor = Actor(principal_id=JANE, kind="user") if seq == 0 else SYSTEM
        at = T0 + timedelta(seconds=seq)
        events.append(make_event(request_id, seq, prev, EventType.REQUEST_RECEIVED, at, actor, data))
    return events


def stored(events: list[AuditEvent]) -> list[str]:
    """The documents as SqliteStore writes them."""
    return [canonical_json(e.document()) for e in events]


def by_models(request_id: str, docs: list[str]) -> audit.ChainReport:
    return verify_chain(request_id, [AuditEvent.model_validate_json(d) for d in docs])


def test_an_intact_chain_verifies_from_its_text_without_building_models(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN an intact chain as stored
    docs = stored(chain("r1", [{"i": i, "name": "ünïcode \"quoted\" \\ text"} for i in range(5)]))

    # WHEN it is verified from its documents, with model building and full re-serialisation disabled
    def refuse(*args: object, **kwargs: object) -> object:
        raise AssertionError("the fast path should not need this")

    monkeypatch.setattr(AuditEvent, "model_validate_json", refuse)
    monkeypatch.setattr(audit, "hash_of", refuse)
    report = verify_chain_documents("r1", docs)

    # THEN it is intact
    assert report.ok and report.events == 5


Tamper = Callable[[dict[str, Any]], None]

TAMPERINGS: dict[str, Tamper] = {
    "data changed": lambda d: d["data"].update(i=99),
    "data member added": lambda d: d["data"].update(extra=True),
    "hash moved into data": lambda d: d["data"].update(hash=d.pop("hash")),
    "hash replaced": lambda d: d.update(hash="0" * 64),
    "hash removed": lambda d: d.pop("hash"),
    "prevHash changed": lambda d: d.update(prevHash="f" * 64),
    "seq changed": lambda d: d.update(seq=7),
    "seq as text": lambda d: d.update(seq=str(d["seq"])),
    "id changed": lambda d: d.update(id="r1:000009"),
    "requestId changed": lambda d: d.update(requestId="r2"),
    "actor changed": lambda d: d["actor"].update(kind="user"),
    "type changed": lambda d: d.update(type="grant.revoked"),
    "type unknown": lambda d: d.update(type="no.such.type"),
    "at changed": lambda d: d.update(at="2026-11-26T09:00:09.000000Z"),
    "at written differently": lambda d: d.update(at="2026-11-26T09:00:02+00:00"),
    "extra top-level member": lambda d: d.update(_ts=1764147600),
}


@pytest.mark.parametrize("name", sorted(TAMPERINGS))
@pytest.mark.parametrize("form", ["canonical", "json.dumps"])
def test_a_tampered_document_gets_the_report_the_models_give(name: str, form: str) -> None:
    # GIVEN a chain whose third document was edited in the database
    events = chain("r1", [{"i": i} for i in range(5)])
    docs = stored(events) if form == "canonical" else [json.dumps(e.document()) for e in events]
    doc = json.loads(docs[2])
    TAMPERINGS[name](doc)
    docs[2] = canonical_json(doc) if form == "canonical" else json.dumps(doc)

    # WHEN it is verified from the documents
    report = verify_chain_documents("r1", docs)

    # THEN the report is the one verify_chain gives on the parsed events (or, where the document is no
    # longer an audit event at all, a broken link at that seq instead of an exception)
    try:
        expected = by_models("r1", docs)
    except ValueError:
        assert (report.ok, report.broken_seq, report.events) == (False, 2, 3)
        assert report.reason.startswith("not an audit event")
    else:
        assert report == expected


def test_documents_that_are_not_json_objects_are_broken_links() -> None:
    docs = stored(chain("r1", [{"i": i} for i in range(3)]))
    for bad in ("{not json", "[1, 2]", '"text"', "{}"):
        report = verify_chain_documents("r1", [docs[0], bad, docs[2]])
        assert (report.ok, report.broken_seq) == (False, 1), bad
        assert report.reason.startswith("not an audit event"), report.reason


def test_documents_written_before_canonical_storage_still_verify() -> None:
    events = chain("r1", [{"i": i, "z": [1, 2.5, None], "a": "ü"} for i in range(4)])
    docs = [json.dumps(e.document()) for e in events]
    assert verify_chain_documents("r1", docs) == verify_chain("r1", events)
    assert verify_chain_documents("r1", docs).ok


@settings(max_examples=150, deadline=None)
@given(
    datas=st.lists(st.dictionaries(st.text(max_size=6), json_values, max_size=4), min_size=1, max_size=4),
    request_id=st.text(min_size=1, max_size=12),
    target=st.integers(min_value=0, max_value=3),
    replacement=json_values,
)
def test_any_edit_of_data_gets_the_same_report(
    datas: list[dict[str, Any]], request_id: str, target: int, replacement: Any
) -> None:
    # GIVEN any chain, intact and with one document's data replaced
    docs = stored(chain(request_id, datas))
    assert verify_chain_documents(request_id, docs) == by_models(request_id, docs)
    position = target % len(docs)
    doc = json.loads(docs[position])
    doc["data"] = {"replaced": replacement}
    docs[position] = canonical_json(doc)

    # THEN both verifications agree
    assert verify_chain_documents(request_id, docs) == by_models(request_id, docs)


# ---------------------------------------------------------------- the SQLite store


def fill(store: SqliteStore, request_ids: list[str], length: int = 3) -> None:
    store.bulk_append(
        (event, JANE) for rid in request_ids for event in chain(rid, [{"n": n} for n in range(length)])
    )


def test_the_store_keeps_events_as_canonical_json(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "s.db") as store:
        fill(store, ["r1"])
        for _, docs in store.iter_chain_documents():
            assert all(canonical_json(json.loads(d)) == d for d in docs)
        written = chain("r1", [{"n": n} for n in range(3)])
        assert [e.document() for e in store.chain("r1")] == [e.document() for e in written]


def test_chain_documents_cover_every_chain_once_in_ranges(tmp_path: Path) -> None:
    # GIVEN chains, including one whose request id is empty (a rejected body without an id)
    ids = ["", "a", "b", "b0", "c", "d"]
    with SqliteStore(tmp_path / "s.db") as store:
        fill(store, ids)

        # WHEN the log is read whole and in ranges
        whole = list(store.iter_chain_documents())
        cuts = store.chain_boundaries(3)
        parts = [
            chunk
            for start, stop in zip([None, *cuts], [*cuts, None], strict=True)
            for chunk in store.iter_chain_documents(start, stop)
        ]

        # THEN both give every chain once, in order, with its documents in seq order
        assert [rid for rid, _ in whole] == ids
        assert parts == whole
        assert cuts == sorted(set(cuts)) and len(cuts) == 2
        assert all(len(docs) == 3 for _, docs in whole)


@pytest.mark.parametrize(("processes", "threaded"), [(1, False), (2, False), (2, True)])
def test_verify_chains_matches_verify_chain_and_names_the_broken_link(
    tmp_path: Path, processes: int, threaded: bool
) -> None:
    # GIVEN a store with one chain tampered in the database
    path = tmp_path / "s.db"
    ids = [f"req-{i:03d}" for i in range(40)]
    with SqliteStore(path) as store:
        fill(store, ids, length=4)
        conn = store._db.connection()
        (doc,) = conn.execute("SELECT doc FROM audit_events WHERE request_id = 'req-017' AND seq = 2").fetchone()
        tampered = json.loads(doc)
        tampered["data"]["n"] = 42
        conn.execute(
            "UPDATE audit_events SET doc = ? WHERE request_id = 'req-017' AND seq = 2", (canonical_json(tampered),)
        )

        # WHEN every chain is verified (from a threaded caller too, which makes the workers spawn, not fork)
        release = threading.Event()
        other = threading.Thread(target=release.wait, daemon=True)
        if threaded:
            other.start()
        try:
            reports = list(store.verify_chains(processes=processes))
        finally:
            release.set()

        # THEN the reports are verify_chain's, in request id order, whole or one chain at a time
        assert reports == [verify_chain(rid, events) for rid, events in store.iter_chains()]
        assert verify_chain_documents("req-017", store.chain_documents("req-017")) == verify_chain(
            "req-017", store.chain("req-017")
        )
        assert [r.request_id for r in reports if not r.ok] == ["req-017"]
        assert next(r for r in reports if not r.ok).broken_seq == 2
