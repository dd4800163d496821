"""Reads a handling does not make twice (issue #10, CPU and point reads per lifecycle): a handler that loaded a
record, or wrote a grant key's document, hands it on to its own write instead of reading it again; the write stays
conditional, so a record or document another writer changed meanwhile is found out by the write and read again."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest

from shared.domain.audit import EventType
from shared.domain.errors import TransientError
from shared.domain.ledger import Grant, GrantKey, HoldStatus
from shared.domain.lifecycle import LifecycleCommand, RequestRecord, RequestState
from tests.fakes.store import CountingStore
from tests.fakes.world import ALICE, JANE, PROD_RG, World, access_request, body

READS = ("get_request", "get_grant")


@pytest.fixture
def world() -> World:
    return World()


def counted(world: World) -> CountingStore:
    reads = CountingStore(world.store, READS)
    world.backends.requests = world.backends.ledger = world.backends.audit = reads  # type: ignore[assignment]
    return reads


def test_an_auto_approved_lifecycle_reads_its_record_once_per_handling_and_its_grant_key_three_times(
    world: World,
) -> None:
    # GIVEN an auto-approved request of ten seconds, its store's reads counted
    reads = counted(world)
    doc = access_request(duration="PT10S")
    # WHEN it goes through intake, evaluation, grant and its revoke at expiry
    world.lifecycle.submit(body(doc))
    world.worker.drain()
    world.advance(11)
    # THEN it ended as it always did
    rid = doc["requestId"]
    assert world.state(rid) == "revoked" and world.verify(rid).ok
    assert world.event_types(rid) == ["request.received", "policy.evaluated", "request.approved", "grant.applied",
                                      "revoke.scheduled", "grant.revoked"]
    # AND its record was read once by each of the four handlings (9 before), and the key's document only by the
    # hold, the grant's check for a revoke that ran meanwhile and the release (4 before)
    assert reads.calls == Counter(get_request=4, get_grant=3)


def test_an_early_revoke_hands_the_record_it_wrote_on_to_the_revoke(world: World) -> None:
    rid = world.submit(access_request(duration="PT1H"))
    reads = counted(world)
    world.lifecycle.request_revoke(rid, JANE, is_admin=False)
    assert world.state(rid) == "revoked"
    assert world.store.get_request(rid).revoke_requested_by.principal_id == JANE  # type: ignore[union-attr]
    assert reads.calls["get_request"] == 1


# ---------------------------------------------------------------- a record handed on, changed meanwhile


def test_a_record_changed_since_it_was_handed_over_loses_its_write_and_is_decided_on_again(world: World) -> None:
    # GIVEN a record a handling loaded, and another writer that wrote it since
    rid = world.submit(access_request())
    records = world.lifecycle.records
    handed = records.load(rid)
    records.update(rid, lambda r: setattr(r, "failure", "written meanwhile") or True)
    seen: list[int] = []

    def mutate(record: RequestRecord) -> bool:
        seen.append(record.version)
        record.revoke_reason = "mine"
        return True

    # WHEN the handling writes the record it holds
    saved = records.update(rid, mutate, handed)
    # THEN its write lost, the record was read again and the change made on what the other writer left
    assert saved is not None and seen == [handed.version, handed.version + 1]
    stored = world.store.get_request(rid)
    assert stored is not None and (stored.failure, stored.revoke_reason) == ("written meanwhile", "mine")


def test_nothing_to_write_on_a_handed_over_record_is_decided_again_on_the_stored_one(world: World) -> None:
    # GIVEN a record a handling loaded, and another writer that changed it so that it now calls for a write
    rid = world.submit(access_request())
    records = world.lifecycle.records
    handed = records.load(rid)
    records.update(rid, lambda r: setattr(r, "failure", "written meanwhile") or True)
    # WHEN the handling's change finds nothing to write on what it holds
    saved = records.update(rid, lambda r: r.failure is not None and setattr(r, "revoke_reason", "seen") is None,
                           handed)
    # THEN that was not the answer: it was asked again of the stored record, and written
    assert saved is not None and saved.revoke_reason == "seen"
    stored = world.store.get_request(rid)
    assert stored is not None and stored.revoke_reason == "seen"


def test_an_event_chained_while_the_revoke_deleted_the_assignment_is_kept_and_the_revoke_chained_after_it(
    world: World,
) -> None:
    # GIVEN an active grant whose revoke at expiry is delivered, and another writer that chains an event on the
    # request while the revoke deletes the assignment (after the revoke loaded the record)
    rid = world.submit(access_request(duration="PT10S"))
    real_delete = world.grants.delete_assignment

    def usage_recorded_meanwhile(scope: str, name: str) -> None:
        real_delete(scope, name)
        world.lifecycle.record_usage(rid, {"calls": 3})

    world.grants.delete_assignment = usage_recorded_meanwhile  # type: ignore[method-assign]
    world.clock.advance(11)
    # WHEN the revoke ends the request
    result = world.lifecycle.handle_command(LifecycleCommand(command="revoke", request_id=rid).body())
    # THEN its write on the record it had loaded lost, and it chained its event after the other writer's
    assert result is not None and result.state is RequestState.REVOKED
    assert world.event_types(rid)[-2:] == [EventType.ACTIVITY_SUMMARY.value, EventType.GRANT_REVOKED.value]
    assert world.verify(rid).ok


# ---------------------------------------------------------------- a grant key's document handed on


def test_a_document_changed_since_this_writer_wrote_it_is_read_again_before_it_is_written(world: World) -> None:
    # GIVEN a key's document as one writer wrote it, and another writer that wrote it since
    rid = world.submit(access_request())
    record = world.store.get_request(rid)
    assert record is not None and record.grant_key is not None
    grants = world.lifecycle.access.grants
    key: GrantKey = record.grant_key
    mine = grants.grant_of(key)
    theirs = world.store.put_grant(mine.model_copy(update={"principal_type": "Group"}))
    seen: list[int] = []

    def later(grant: Grant, now: datetime) -> Grant | None:
        seen.append(grant.version)
        hold = grant.hold_of(rid)
        assert hold is not None
        return grant.with_hold(hold.model_copy(update={"expires_at": hold.expires_at + timedelta(hours=1)}))

    # WHEN the first writer changes the document it holds
    written = grants._change(key, later, mine)
    # THEN its write lost, and the change was made on the stored document, keeping the other writer's
    assert seen == [mine.version, theirs.version]
    assert written.version == theirs.version + 1 and written.principal_type == "Group"


def test_nothing_to_write_on_a_document_this_writer_holds_is_decided_again_on_the_stored_one(world: World) -> None:
    rid = world.submit(access_request())
    record = world.store.get_request(rid)
    assert record is not None and record.grant_key is not None
    grants = world.lifecycle.access.grants
    mine = grants.grant_of(record.grant_key)
    world.store.put_grant(mine.released(rid, world.clock.now()))

    # The stored hold is released: "nothing to do while it is active" must be answered from the stored document.
    def reactivate(grant: Grant, now: datetime) -> Grant | None:
        hold = grant.hold_of(rid)
        if hold is None or hold.status is HoldStatus.ACTIVE:
            return None
        return grant.with_hold(hold.model_copy(update={"status": HoldStatus.ACTIVE, "released_at": None}))

    written = grants._change(record.grant_key, reactivate, mine)
    hold = written.hold_of(rid)
    assert hold is not None and hold.status is HoldStatus.ACTIVE and written.version == mine.version + 2


def test_a_handed_over_record_whose_outbox_cannot_be_flushed_is_not_written(world: World) -> None:
    # GIVEN a record an earlier jitgate left with its events in the outbox, handed over as read, and an audit
    # store that refuses appends for now
    rid = world.submit(access_request())
    stored = world.store.get_request(rid)
    assert stored is not None
    event = stored.emit(EventType.ACTIVITY_SUMMARY, world.clock.now(), {"calls": 1})
    world.store.put_legacy_record(stored)
    handed = world.store.get_request(rid)
    assert handed is not None and handed.pending_events == [event]

    def refuse(*args: Any) -> None:
        raise TransientError("audit store: 503")

    world.store.append = refuse  # type: ignore[method-assign]
    # WHEN a handling writes it
    # THEN it is refused as the record read afresh would be: its outbox first, or nothing is written
    with pytest.raises(TransientError, match="outbox cannot be flushed"):
        world.lifecycle.records.update(rid, lambda r: setattr(r, "revoke_reason", "x") is None, handed)
    after = world.store.get_request(rid)
    assert after is not None and after.revoke_reason is None and after.version == handed.version


def test_an_approval_reads_the_record_once(world: World) -> None:
    # GIVEN a request waiting for two approvals
    rid = world.submit(access_request(role="Contributor", scope=PROD_RG))
    assert world.state(rid) == "pending_approval"
    reads = counted(world)
    # WHEN one approver says yes, THEN the record is read by that write alone (2 before: it was loaded again after)
    world.lifecycle.approve(rid, ALICE)
    assert reads.calls["get_request"] == 1
    assert world.state(rid) == "pending_approval"
