"""What the embedded store remembers of what it wrote and read, so as not to do it again: the records it wrote
(not validated again when read back) and the hold rows of grant keys (a write of a key's document writes only the
rows that changed). Each is bounded, and kept per store object."""

from __future__ import annotations

import copy
from typing import Any

from shared.domain.ledger import GrantKey
from shared.domain.lifecycle import RequestRecord
from shared.domain.recent import Recent


class WrittenRecords:
    """The text this store last wrote for each of the most recent requests, with the record it wrote it from.

    NB. The text is the record's own document (`store._committed`, as `model_dump_json` writes it), and parsing a
    record's document gives back an equal record (pinned by tests/unit/test_store_written_records.py), so a read
    that finds exactly the text written may return the record instead of validating the text again. Callers
    mutate the records they get, so each side keeps a copy of its own: what is remembered and what is handed out
    share no list or dict.
    """

    def __init__(self, size: int) -> None:
        self._texts: Recent[str, tuple[str, RequestRecord]] = Recent(size)

    def remember(self, text: str, record: RequestRecord) -> RequestRecord:
        self._texts.put(record.request_id, (text, _detached(record)))
        return record

    def read(self, request_id: str, text: str) -> RequestRecord:
        found = self._texts.get(request_id)
        if found is not None and found[0] == text:
            return _detached(found[1])
        return parse_record(text)


class StoredHolds:
    """The hold rows of each of the most recent grant keys this store read or wrote, at the version it saw.

    NB. A grant key's rows at a given version are the same for every reader: every write of them is conditional
    on the version and bumps it in the same transaction. So a write conditional on a version remembered here knows
    what is stored, and writes only the rows that differ.
    """

    def __init__(self, size: int) -> None:
        self._rows: Recent[GrantKey, tuple[int, dict[str, tuple[Any, ...]]]] = Recent(size)

    def remember(self, key: GrantKey, version: int, rows: dict[str, tuple[Any, ...]]) -> None:
        self._rows.put(key, (version, rows))

    def at(self, key: GrantKey, version: int) -> dict[str, tuple[Any, ...]] | None:
        """The rows of `key` at `version`; None when this store did not see that version."""
        found = self._rows.get(key)
        return found[1] if found is not None and found[0] == version else None


def _detached(record: RequestRecord) -> RequestRecord:
    """A copy of a record sharing nothing a caller could change in place (its nested models are frozen)."""
    # NB. A shallow copy whose containers are replaced in its own field dict: what model_copy(update=...) does, in
    # half the time (13 copies a lifecycle), without marking the fields set, which nothing here reads.
    copied = copy.copy(record)
    fields = copied.__dict__
    fields["errors"] = copy.deepcopy(record.errors) if record.errors else []
    fields["approvals"] = list(record.approvals)
    fields["denial"] = None if record.denial is None else copy.deepcopy(record.denial)
    fields["refusals"] = dict(record.refusals)
    fields["pending_events"] = list(record.pending_events)
    return copied


def parse_record(text: str) -> RequestRecord:
    # NB. Validate from JSON text, not from a dict: AccessRequest is strict, and strict python-mode
    # validation refuses the plain strings that stand for its enums in a stored document.
    return RequestRecord.model_validate_json(text)
