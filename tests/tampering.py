"""Edits of one stored audit document, as someone with write access to the database could make them, and
the report `verify_chain` must give for each: the request, the seq of the first broken link and why."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.domain.audit import ChainReport, hash_of

SOMEONE_ELSE = "99999999-0000-4000-8000-000000000009"
FORGED_HASH = hashlib.sha256(b"a link to an event that was never written").hexdigest()

HASH_MISMATCH = "hash does not match the event's content"
PREV_MISMATCH = "prevHash does not match the previous event"


def rehash(doc: dict[str, Any]) -> None:
    """Give `doc` the hash it would have been written with: a forger who knows how hashes are made."""
    doc["hash"] = hash_of({name: value for name, value in doc.items() if name != "hash"})


def _forge_prev_hash(doc: dict[str, Any]) -> None:
    doc["prevHash"] = FORGED_HASH
    rehash(doc)


def _change_actor(doc: dict[str, Any]) -> None:
    doc["actor"]["principalId"] = SOMEONE_ELSE


def _change_actor_and_rehash(doc: dict[str, Any]) -> None:
    _change_actor(doc)
    rehash(doc)


@dataclass(frozen=True)
class Tampering:
    """An edit of one event document, and where (relative to the edited seq) the chain shows it."""

    edit: Callable[[dict[str, Any]], None]
    shows_at: int  # 0: at the edited event itself; 1: at the next one, whose prevHash no longer matches
    reason: str

    def expected(self, request_id: str, seq: int) -> ChainReport:
        """The report on the chain of `request_id` whose event `seq` was edited."""
        broken = seq + self.shows_at
        return ChainReport(request_id, events=broken + 1, ok=False, broken_seq=broken, reason=self.reason)


TAMPERINGS: dict[str, Tampering] = {
    "prevHash forged, hash recomputed": Tampering(_forge_prev_hash, 0, PREV_MISMATCH),
    "actor changed": Tampering(_change_actor, 0, HASH_MISMATCH),
    # NB. An event rewritten with a correct hash is whole in itself; what breaks is the next event's link
    # to it. So the last event of a chain rewritten this way cannot be told from the original by any
    # hash chain: those cases are left out, not expected to pass.
    "actor changed, hash recomputed": Tampering(_change_actor_and_rehash, 1, PREV_MISMATCH),
}
