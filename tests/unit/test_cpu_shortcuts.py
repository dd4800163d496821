"""Work the runtime does not do twice (issue #10, CPU per lifecycle), and that skipping it changes nothing: an
event is stored from the document `make_event` hashed, and a body intake parsed is not parsed again to evaluate it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import pytest

from shared.adapters.embedded.store import SqliteStore
from shared.domain.audit import SYSTEM, AuditEvent, EventType, canonical_json, make_event, verify_chain_documents
from shared.domain.request import AccessRequest
from tests.fakes.world import World, access_request, body


def refuse(*args: Any, **kwargs: Any) -> NoReturn:
    raise AssertionError("done twice")


def test_an_event_is_stored_as_it_was_hashed_without_dumping_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    at = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
    first = make_event("r1", 0, "", EventType.REQUEST_RECEIVED, at, SYSTEM, {"n": 1, "text": "grüße"})
    second = make_event("r1", 1, first.hash, EventType.POLICY_EVALUATED, at, SYSTEM, {"outcome": "auto"})
    expected = [canonical_json(e.document()) for e in (first, second)]
    with SqliteStore(tmp_path / "store.db") as store:
        monkeypatch.setattr(AuditEvent, "document", refuse)
        store.append(first)
        store.append(second)
        monkeypatch.undo()
        assert store.chain_documents("r1") == expected
        assert verify_chain_documents("r1", store.chain_documents("r1")).ok


def test_a_changed_copy_of_an_event_is_stored_as_it_is_not_as_the_event_it_was_copied_from(tmp_path: Path) -> None:
    at = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
    event = make_event("r1", 0, "", EventType.REQUEST_RECEIVED, at, SYSTEM, {"n": 1})
    tampered = event.model_copy(update={"data": {"n": 2}})
    with SqliteStore(tmp_path / "store.db") as store:
        store.append(tampered)
        assert store.chain_documents("r1") == [canonical_json(tampered.document())]
        report = verify_chain_documents("r1", store.chain_documents("r1"))
    assert not report.ok


def test_evaluating_the_body_intake_just_parsed_does_not_parse_it_again(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World()
    doc = access_request()
    world.lifecycle.submit(body(doc))
    monkeypatch.setattr(AccessRequest, "model_validate_json", refuse)
    world.worker.drain()
    assert world.state(doc["requestId"]) == "active"


def test_a_body_intake_did_not_see_is_parsed_in_full_and_a_reused_id_still_refused() -> None:
    world = World()
    doc = access_request()
    world.lifecycle.submit(body(doc))
    world.worker.drain()
    # The same id with another body, put on the queue by hand: parsed, compared, refused and audited.
    world.bus.send("access-requests", "by-hand", body({**doc, "justification": "Something else entirely"}))
    world.worker.drain()
    assert world.state(doc["requestId"]) == "active"
    assert world.event_types(doc["requestId"])[-1] == "request.rejected"
