"""Edits of one stored audit document, and cuts of a chain's tail, as someone with write access to the database
could make them, and the report every verifier must give for each: the request, the seq of the first broken link
and why."""

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


def anchor_reason(chain_last: int, record_last: int, head: str, chain_hash: str | None = None) -> str:
    """What a verifier says of a chain whose links hold but whose end is not where its request record says."""
    ends = f"ends at seq {chain_last}" + (f" with hash {chain_hash[:12]}…" if chain_hash is not None else "")
    return f"the chain {ends} but its request record expects seq {record_last} with head {head[:12]}…"


@dataclass(frozen=True)
class Tampering:
    """An edit of one event document, and where (relative to the edited seq) the chain shows it."""

    edit: Callable[[dict[str, Any]], None]
    shows_at: int  # 0: at the edited event itself; 1: at the next one, whose prevHash no longer matches
    reason: str

    def expected(self, request_id: str, seq: int, edited: dict[str, Any], head: str, last: int) -> ChainReport:
        """The report on the chain of `request_id` (whose record says it ends at seq `last` with `head`) whose
        event `seq` was edited into `edited`."""
        if self.shows_at and seq == last:
            # NB. The last event rewritten with a correct hash is whole, and nothing links to it: only its record,
            # which remembers the chain's head, tells it from the original.
            reason = anchor_reason(last, last, head, edited["hash"])
            return ChainReport(request_id, events=last + 1, ok=False, broken_seq=last, reason=reason, anchored=True)
        broken = seq + self.shows_at
        return ChainReport(request_id, events=broken + 1, ok=False, broken_seq=broken, reason=self.reason,
                           anchored=True)


TAMPERINGS: dict[str, Tampering] = {
    "prevHash forged, hash recomputed": Tampering(_forge_prev_hash, 0, PREV_MISMATCH),
    "actor changed": Tampering(_change_actor, 0, HASH_MISMATCH),
    "actor changed, hash recomputed": Tampering(_change_actor_and_rehash, 1, PREV_MISMATCH),
}


def truncated(request_id: str, kept: int, head: str, last: int) -> ChainReport:
    """The report on the chain of `request_id` (whose record says it ends at seq `last` with `head`) of which
    only the first `kept` events are left."""
    reason = (anchor_reason(kept - 1, last, head) if kept else
              f"the chain has no events but its request record expects seq {last} with head {head[:12]}…")
    return ChainReport(request_id, events=kept, ok=False, broken_seq=kept, reason=reason, anchored=True)
