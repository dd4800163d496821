"""The SQLite store returns the records it wrote itself without validating their text again (issue #10, CPU per
lifecycle); whatever else is in the file is validated in full. These pin what makes that safe: the record it
remembers is the one a full parse of its text gives, nobody shares a list or dict with it, and any text it did
not write itself (another process, an earlier jitgate, an edit by hand) is parsed."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.adapters.embedded.store import SqliteStore
from shared.domain.audit import Actor, EventType
from shared.domain.lifecycle import Approval, RequestRecord, RequestState
from tests.contract.test_store_contract import APPROVER, BOB, T0, full_record


def parsed(path: Path, request_id: str) -> RequestRecord:
    """The record as a store that never wrote it reads it: its text validated in full."""
    with SqliteStore(path) as fresh:
        got = fresh.get_request(request_id)
    assert got is not None
    return got


def test_what_the_store_remembers_is_what_parsing_its_text_gives(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with SqliteStore(path) as store:
        created = store.create_request(full_record())
        assert store.get_request(created.request_id) == created == parsed(path, created.request_id)

        record = store.get_request(created.request_id)
        assert record is not None
        record.move_to(RequestState.PENDING_APPROVAL, T0 + timedelta(minutes=1))
        record.approvals = [*record.approvals, Approval(approver_id=BOB, at=T0 + timedelta(minutes=2))]
        record.provoked("revoke|" + BOB, T0 + timedelta(minutes=3))
        record.emit(EventType.APPROVAL_RECORDED, T0 + timedelta(minutes=2), {"counted": True, "n": [1, 2.5, None]},
                    Actor(principal_id=BOB, kind="user"))
        saved = store.save_request(record)

        assert store.get_request(saved.request_id) == saved == parsed(path, saved.request_id)
        assert saved.document() == parsed(path, saved.request_id).document()


def test_a_record_handed_out_shares_nothing_a_caller_can_change_in_place(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "store.db") as store:
        created = store.create_request(full_record())
        first = store.get_request(created.request_id)
        assert first is not None

        first.approvals.append(Approval(approver_id=BOB, at=T0))
        first.refusals["revoke|someone"] = T0
        first.errors[0]["msg"] = "changed"
        assert first.denial is not None
        first.denial["nested"]["n"] = 99
        created.approvals.append(Approval(approver_id=BOB, at=T0))

        again = store.get_request(created.request_id)
        assert again is not None
        assert [a.approver_id for a in again.approvals] == [APPROVER]
        assert again.refusals == {}
        assert again.errors == [{"loc": "ticket", "msg": "an old complaint"}]
        assert again.denial == {"by": BOB, "reason": "changed mind", "nested": {"n": 1.5}}


def test_a_record_another_process_wrote_is_read_as_it_now_is(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with SqliteStore(path) as mine, SqliteStore(path) as theirs:
        created = mine.create_request(full_record())
        assert mine.get_request(created.request_id) == created

        record = theirs.get_request(created.request_id)
        assert record is not None
        record.move_to(RequestState.PENDING_APPROVAL, T0 + timedelta(minutes=1))
        written = theirs.save_request(record)

        got = mine.get_request(created.request_id)
        assert got == written
        assert got is not None and got.version == 2 and got.state is RequestState.PENDING_APPROVAL


def test_a_record_edited_by_hand_is_validated_not_served_from_memory(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with SqliteStore(path) as store:
        created = store.create_request(full_record())
        assert store.get_request(created.request_id) == created
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE requests SET doc = json_set(doc, '$.state', 'granted-forever')")

        with pytest.raises(ValidationError):
            store.get_request(created.request_id)
