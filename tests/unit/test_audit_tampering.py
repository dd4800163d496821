"""One audit event rewritten in the database, by someone who can recompute hashes, is named by every way of
verifying the trail: the models, the stored-document fast path, the store's verify of every chain and
`jitgate audit verify --data-dir`. The same over HTTP is in tests/functional/test_api.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.adapters.embedded.store import SqliteStore
from shared.cli import main
from shared.domain.audit import AuditEvent, EventType, canonical_json, verify_chain, verify_chain_documents
from tests.fakes.world import ALICE, BOB, PROD_RG, World, access_request
from tests.tampering import TAMPERINGS

ALICES_APPROVAL, LAST = 3, -1
POSITIONS = {"first": 0, "Alice's approval": ALICES_APPROVAL, "last": LAST}
CASES = [
    pytest.param(name, position, id=f"{name} at {where}")
    for name, tampering in sorted(TAMPERINGS.items())
    for where, position in POSITIONS.items()
    if not (position == LAST and tampering.shows_at > 0)  # see TAMPERINGS
]


def approved_granted_and_revoked(world: World) -> str:
    rid = world.submit(access_request(role="Contributor", scope=PROD_RG, duration="PT1H"))
    world.lifecycle.approve(rid, ALICE, "looks right")
    world.lifecycle.approve(rid, BOB)
    world.worker.drain()
    world.advance(3601)
    return rid


@pytest.mark.parametrize(("name", "position"), CASES)
def test_a_rewritten_event_is_named_by_every_verifier(
    name: str, position: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN the trail of a request approved by Alice and Bob, granted and revoked, and of another request,
    # in the fake store and in the SQLite store
    world = World()
    rid = approved_granted_and_revoked(world)
    world.submit(access_request())
    events = world.store.chain(rid)
    assert events[ALICES_APPROVAL].type is EventType.APPROVAL_RECORDED
    assert events[ALICES_APPROVAL].actor.principal_id == ALICE
    sqlite = SqliteStore(tmp_path / "store.db")
    sqlite.bulk_append((e, None) for r in world.store.request_ids() for e in world.store.chain(r))
    assert all(report.ok for report in sqlite.verify_chains())

    # WHEN one event is rewritten in both, in the canonical form the SQLite store writes
    seq = position % len(events)
    doc = events[seq].document()
    TAMPERINGS[name].edit(doc)
    world.store.rewrite(AuditEvent.model_validate(doc))
    with sqlite._db.transaction() as conn:
        conn.execute(
            "UPDATE audit_events SET doc = ? WHERE request_id = ? AND seq = ?", (canonical_json(doc), rid, seq)
        )

    # THEN every verifier names that request, the seq of the first broken link and why
    expected = TAMPERINGS[name].expected(rid, seq)
    assert verify_chain(rid, world.store.chain(rid)) == expected
    assert verify_chain(rid, sqlite.chain(rid)) == expected
    assert verify_chain_documents(rid, sqlite.chain_documents(rid)) == expected
    assert [report for report in sqlite.verify_chains() if not report.ok] == [expected]
    sqlite.close()
    # ...and so does the command line on the store, for every chain (in parallel) and for this one
    line = f"audit verify: BROKEN — request {rid} at seq {expected.broken_seq}: {expected.reason}\n"
    assert main(["audit", "verify", "--data-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().out == line
    assert main(["audit", "verify", "--data-dir", str(tmp_path), "--request-id", rid]) == 1
    assert capsys.readouterr().out == line
