"""Promises of the lifecycle that end states alone cannot show, pinned on the calls the fakes saw: what
jitgate asked the provider to do (and not to do), and when it asked the bus to deliver a revoke."""

from __future__ import annotations

import pytest

from shared.domain.audit import EventType
from shared.domain.ledger import HoldStatus
from shared.domain.lifecycle import RequestRecord
from tests.fakes.grants import ProviderCall
from tests.fakes.world import World, access_request


@pytest.fixture
def world() -> World:
    return World()


def record_of(world: World, request_id: str) -> RequestRecord:
    record = world.store.get_request(request_id)
    assert record is not None
    return record


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
    assert [d.message_id for d in world.bus.dead_letters("access-lifecycle")] == [f"revoke:{rid}:1"]
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
