"""Work the runtime does not do twice (issue #10, CPU per lifecycle), and that skipping it changes nothing: an
event is stored from the document `make_event` hashed, a body intake parsed is not parsed nor fingerprinted again to
evaluate it, and the guarded JSON parser skips the scans a body cannot need."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import pytest

from shared.adapters.embedded.store import SqliteStore
from shared.domain import json_body
from shared.domain.audit import SYSTEM, AuditEvent, EventType, canonical_json, make_event, verify_chain_documents
from shared.domain.ids import JITGATE_NAMESPACE
from shared.domain.ledger import GrantKey
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


def test_evaluating_the_body_intake_just_parsed_does_not_parse_nor_fingerprint_it_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World()
    doc = access_request()
    world.lifecycle.submit(body(doc))
    monkeypatch.setattr(AccessRequest, "model_validate_json", refuse)
    monkeypatch.setattr(AccessRequest, "fingerprint", refuse)
    world.worker.drain()
    assert world.state(doc["requestId"]) == "active"


def test_intake_fingerprints_a_body_once(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World()
    real = AccessRequest.fingerprint
    calls: list[str] = []

    def counted(request: AccessRequest) -> str:
        calls.append(request.request_id)
        return real(request)

    monkeypatch.setattr(AccessRequest, "fingerprint", counted)
    doc = access_request()
    world.lifecycle.submit(body(doc))
    assert len(calls) == 1
    record = world.store.get_request(doc["requestId"])
    assert record is not None and record.fingerprint == real(AccessRequest.model_validate_json(body(doc)))


def test_a_body_with_few_brackets_and_no_escapes_is_neither_scanned_for_depth_nor_walked_for_surrogates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # NB. It cannot nest deeper than it has brackets, and UTF-8 text carries no surrogate without a \u escape.
    monkeypatch.setattr(json_body, "_deeper_than", refuse)
    monkeypatch.setattr(json_body, "_check_strings", refuse)
    doc = access_request(justification="Grüße, 1.5e3 \"quoted\"")
    assert json_body.parse_json(json.dumps(doc, ensure_ascii=False).encode(), 65536) == doc


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


def test_a_grant_keys_assignment_name_is_made_once_and_is_the_same_name(monkeypatch: pytest.MonkeyPatch) -> None:
    key = GrantKey.of("local", "DDDDDDDD-0000-4000-8000-00000000000D", "Reader-Id", f"/subscriptions/{uuid.uuid4()}")
    expected = str(uuid.uuid5(JITGATE_NAMESPACE, "|".join((key.provider, key.principal_id, key.role_definition_id,
                                                             key.scope))))
    made: list[str] = []
    real = uuid.uuid5

    def counted(namespace: uuid.UUID, name: str) -> uuid.UUID:
        made.append(name)
        return real(namespace, name)

    monkeypatch.setattr(uuid, "uuid5", counted)
    assert [key.assignment_name() for _ in range(3)] == [expected] * 3
    assert GrantKey.of(key.provider, key.principal_id, key.role_definition_id, key.scope).assignment_name() == expected
    assert len(made) == 1
    assert GrantKey.of("postgres", "jane@example.com", "%50ayments", "srv/db").assignment_name() == (
        "jane@example.com/%50ayments")
