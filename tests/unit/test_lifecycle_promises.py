"""Promises of the lifecycle that end states alone cannot show, pinned on the calls the fakes saw: what
jitgate asked the provider to do (and not to do), and when it asked the bus to deliver a revoke."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.domain.audit import EventType, format_instant
from shared.domain.ledger import HoldStatus, marker_for
from shared.domain.lifecycle import LifecycleCommand, RequestRecord
from tests.fakes.grants import ProviderCall
from tests.fakes.world import ALICE, BOB, CAROL, DEV_RG, JANE, PROD_RG, World, access_request

HOUR = timedelta(hours=1)


@pytest.fixture
def world() -> World:
    return World()


def record_of(world: World, request_id: str) -> RequestRecord:
    record = world.store.get_request(request_id)
    assert record is not None
    return record


def grant_again(world: World, request_id: str) -> None:
    world.lifecycle.handle_command(LifecycleCommand(command="grant", request_id=request_id).body())


# ---------------------------------------------------------------- a revoke is done only when read back gone


def test_a_revoke_is_done_only_when_the_assignment_is_read_back_as_gone(world: World) -> None:
    # GIVEN an active grant on a provider that accepts deletes but does not carry them out
    rid = world.submit(access_request(duration="PT10S"))
    [assignment] = world.marked()
    key = record_of(world, rid).grant_key
    assert key is not None
    world.grants.deletes_take_effect = False
    world.grants.calls.clear()

    # WHEN its revoke comes due
    world.advance(11)

    # THEN the revoke is not done: the request and its hold stay active and no grant.revoked is written
    assert world.state(rid) == "active"
    assert [h.status for h in world.store.holds_for_request(rid)] == [HoldStatus.ACTIVE]
    assert EventType.GRANT_REVOKED.value not in world.event_types(rid)
    assert world.grants.all_assignments() == [assignment]
    # ...because every delete was read back, and each read found the assignment still there
    target = (key.scope, key.assignment_name())
    assert world.grants.calls == [
        ProviderCall("delete_assignment", target),
        ProviderCall("get_assignment", target),
    ] * world.backends.verify_attempts

    # WHEN the bus gives up on the revoke message and reconcile runs while deletes still do nothing
    for _ in range(world.max_deliveries):
        world.advance(31)
    assert [d.message_id for d in world.bus.dead_letters("access-revocations")] == [f"revoke:{rid}:1"]
    report = world.lifecycle.reconcile()

    # THEN reconcile does not call it revoked either, and says why
    assert report.revoked == [] and len(report.errors) == 1
    assert report.errors[0].startswith(f"{rid}: ") and "still present after delete" in report.errors[0]
    assert world.state(rid) == "active"
    assert [h.status for h in world.store.holds_for_request(rid)] == [HoldStatus.ACTIVE]

    # WHEN deletes take effect again, THEN the next reconcile pass revokes it, once, read back gone
    world.grants.deletes_take_effect = True
    world.grants.calls.clear()
    assert world.lifecycle.reconcile().revoked == [rid]
    assert world.state(rid) == "revoked" and world.marked() == []
    assert world.event_types(rid).count(EventType.GRANT_REVOKED.value) == 1
    assert world.store.chain(rid)[-1].data["assignmentDeleted"] is True
    revoke_calls = [c for c in world.grants.calls if c.method != "list_marked"]
    assert revoke_calls == [ProviderCall("delete_assignment", target), ProviderCall("get_assignment", target)]


def test_an_orphan_is_reported_removed_only_when_read_back_as_gone(world: World) -> None:
    # GIVEN a revoked request whose marked assignment was re-created behind jitgate's back, on a provider
    # whose deletes do not take effect
    rid = world.submit(access_request(duration="PT10S"))
    world.advance(11)
    key = world.store.holds_for_request(rid)[0].key
    world.grants.create_assignment(key, key.assignment_name(), marker_for(rid))
    world.grants.deletes_take_effect = False

    # WHEN reconcile runs, THEN the orphan is not reported or audited as removed
    report = world.lifecycle.reconcile()
    assert report.orphans_removed == [] and len(report.errors) == 1
    assert "still present after delete" in report.errors[0]
    assert EventType.RECONCILE_ORPHAN_REMOVED.value not in world.event_types(rid)

    # WHEN deletes take effect again, THEN the next pass removes it and audits that once
    world.grants.deletes_take_effect = True
    assert world.lifecycle.reconcile().orphans_removed == [key.assignment_name()]
    assert world.marked() == []
    assert world.event_types(rid).count(EventType.RECONCILE_ORPHAN_REMOVED.value) == 1


# ---------------------------------------------------------------- holds that must not delete


@pytest.mark.parametrize("ending", ["expiry", "early revoke"])
def test_releasing_a_preexisting_hold_calls_no_create_and_no_delete(world: World, ending: str) -> None:
    # GIVEN Jane already held the role before jitgate (under a name jitgate would never use)
    seeded = world.grants.seed(JANE, "Reader", DEV_RG)
    rid = world.submit(access_request(duration="PT10S"))
    assert [h.preexisting for h in world.store.holds_for_request(rid)] == [True]

    # WHEN the hold ends
    if ending == "expiry":
        world.advance(11)
    else:
        world.lifecycle.request_revoke(rid, JANE, is_admin=False, reason="done")

    # THEN the request is revoked without jitgate ever asking to create or delete the assignment
    assert world.state(rid) == "revoked"
    assert world.grants.calls_to("create_assignment") == []
    assert world.grants.calls_to("delete_assignment") == []
    revoked = world.store.chain(rid)[-1]
    assert revoked.type is EventType.GRANT_REVOKED
    assert (revoked.data["preexisting"], revoked.data["assignmentDeleted"]) == (True, False)
    assert world.grants.all_assignments() == [seeded]


def test_a_hold_released_while_another_remains_deletes_nothing(world: World) -> None:
    # GIVEN two overlapping holds on the same grant
    long_id = world.submit(access_request(duration="PT60S"))
    short_id = world.submit(access_request(duration="PT10S"))
    world.grants.calls.clear()

    # WHEN the shorter one ends
    world.advance(11)

    # THEN its hold is released without a single delete (a delete and re-create would cut access short)
    assert world.state(short_id) == "revoked" and world.state(long_id) == "active"
    assert world.grants.calls_to("delete_assignment") == []
    assert world.grants.calls_to("create_assignment") == []
    revoked = world.store.chain(short_id)[-1].data
    assert (revoked["remainingHolds"], revoked["assignmentDeleted"]) == (1, False)

    # WHEN the longer one ends, THEN the assignment is deleted once
    world.advance(50)
    assert world.state(long_id) == "revoked" and world.marked() == []
    assert len(world.grants.calls_to("delete_assignment")) == 1


# ---------------------------------------------------------------- expiry counts from the grant


def test_expiry_counts_from_the_grant_not_from_the_submission(world: World) -> None:
    # GIVEN a one-hour request that needs two approvals, submitted at T
    submitted = world.clock.now()
    rid = world.submit(access_request(role="Contributor", scope=PROD_RG, duration="PT1H"))

    # WHEN the approvals come half an hour later and the grant runs
    world.clock.advance(timedelta(minutes=30))
    world.lifecycle.approve(rid, ALICE)
    world.lifecycle.approve(rid, BOB)
    world.worker.drain()

    # THEN it is granted for a whole hour from the grant, not until an hour after the submission
    granted = submitted + timedelta(minutes=30)
    record = record_of(world, rid)
    assert (record.state.value, record.created_at, record.granted_at) == ("active", submitted, granted)
    assert record.expires_at is not None and record.expires_at - granted == HOUR
    assert record.expires_at != record.created_at + HOUR
    [hold] = world.store.holds_for_request(rid)
    assert (hold.granted_at, hold.expires_at) == (granted, granted + HOUR)
    applied, scheduled = world.store.chain(rid)[-2:]
    assert applied.data["expiresAt"] == scheduled.data["at"] == format_instant(granted + HOUR)
    # ...and the bus was asked to deliver its revoke at that expiry, on the queue of revocations, where the
    # record knows to cancel it
    [revoke] = [s for s in world.bus.scheduled if s.message_id.startswith("revoke:")]
    assert (revoke.queue, revoke.message_id, revoke.at) == ("access-revocations", f"revoke:{rid}:1", granted + HOUR)
    assert (revoke.queue, revoke.sequence_number) == (record.revoke_queue, record.revoke_sequence)

    # WHEN an hour has passed since the submission, THEN it is still active; at its expiry it is revoked
    world.advance(30 * 60 + 1)
    assert world.state(rid) == "active"
    world.advance(30 * 60)
    assert world.state(rid) == "revoked"


# ---------------------------------------------------------------- no grant without an approval, once


@pytest.mark.parametrize("ending", ["rejected", "denied", "expired"])
def test_a_request_never_approved_never_reaches_the_provider(world: World, ending: str) -> None:
    # GIVEN a request refused by the policy, denied by an approver, or left undecided past its deadline
    if ending == "rejected":
        rid = world.submit(access_request(role="Owner"))
    else:
        rid = world.submit(access_request(role="Contributor", scope=PROD_RG))
        if ending == "denied":
            world.lifecycle.deny(rid, CAROL, "change freeze")
        else:
            world.advance(3601)

    # WHEN a grant command for it arrives anyway (a stale or replayed message), and reconcile runs
    grant_again(world, rid)
    world.lifecycle.reconcile()

    # THEN jitgate never asked the provider for anything about it
    assert world.state(rid) == ending
    assert [c for c in world.grants.calls if c.method != "list_marked"] == []


def test_a_grant_delivered_again_calls_the_provider_no_more(world: World) -> None:
    # GIVEN an active grant
    rid = world.submit(access_request())
    assert len(world.grants.calls_to("create_assignment")) == 1
    calls = list(world.grants.calls)
    revoke = record_of(world, rid).revoke_sequence

    # WHEN its grant message is delivered twice more
    grant_again(world, rid)
    grant_again(world, rid)

    # THEN the provider hears nothing more, and the revoke is still the one scheduled message
    assert world.grants.calls == calls
    assert world.state(rid) == "active"
    assert {s.sequence_number for s in world.bus.scheduled if s.message_id.startswith("revoke:")} == {revoke}
    assert world.bus.scheduled_count("access-revocations") == 1
