"""Extending an active grant, and the pages' lists (who may read, "waiting for me", filters, paging), on fakes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.domain.errors import AuthError, IllegalTransition, InvalidRequest
from shared.domain.lifecycle import RequestState
from shared.lifecycle import RequestFilter, Viewer
from tests.fakes.bus import FakeBus
from tests.fakes.world import ALICE, BOB, CAROL, DEV_RG, JANE, PROD_RG, World, access_request


@pytest.fixture
def world() -> World:
    return World()


def viewer(world: World, principal: str, reads_all: bool = False) -> Viewer:
    return Viewer(principal, world.backends.directory.groups_of(principal), reads_all)


# ---------------------------------------------------------------- extend


def test_an_extension_moves_the_hold_the_provider_expiry_and_the_revoke(world: World) -> None:
    # GIVEN an active grant of an hour
    rid = world.submit(access_request(duration="PT1H"))
    granted_at = world.clock.now()
    # WHEN its requester asks for 30 minutes more
    result = world.lifecycle.extend(rid, JANE, timedelta(minutes=30), "the migration runs long")
    # THEN the record, the hold and the provider (asked again, with the new end) all say 1.5 hours from the grant
    until = granted_at + timedelta(minutes=90)
    assert result.state is RequestState.ACTIVE and "extended" in result.message
    record = world.store.get_request(rid)
    assert record is not None and record.expires_at == until
    [hold] = world.store.holds_for_request(rid)
    assert hold.expires_at == until
    creates = world.grants.calls_to("create_assignment")
    assert creates[-1].args[-1] == until and len(creates) == 2
    # AND the trail says who extended it, why, and when the new revoke is due
    extended = [e for e in world.store.chain(rid) if e.type.value == "grant.extended"]
    assert extended[0].actor.principal_id == JANE and extended[0].data["reason"] == "the migration runs long"
    assert world.event_types(rid)[-2:] == ["grant.extended", "revoke.scheduled"]
    # AND the old revoke is cancelled: only the new one waits
    assert world.bus.scheduled_count("access-revocations") == 1
    # WHEN the old end passes, access stays; at the new end it goes
    world.advance(3601)
    assert world.state(rid) == "active" and len(world.marked()) == 1
    world.advance(1800)
    assert world.state(rid) == "revoked" and world.marked() == []
    assert world.verify(rid).ok


def test_an_extension_beyond_what_the_bus_can_schedule_is_left_to_reconcile_and_the_trail_says_so() -> None:
    # GIVEN an active grant of 20 minutes on a bus that schedules at most 30 minutes ahead (Cloud Tasks: 30 days)
    world = World(make_bus=lambda clock, queues: FakeBus(clock, queues, schedule_horizon=timedelta(minutes=30)))
    rid = world.submit(access_request(duration="PT20M"))
    assert world.bus.scheduled_count("access-revocations") == 1
    # WHEN it is extended to an hour
    world.lifecycle.extend(rid, JANE, timedelta(minutes=40), "the migration runs long")
    # THEN the old revoke is cancelled, the new end has no scheduled revoke and the trail says reconcile revokes it
    assert world.bus.scheduled_count("access-revocations") == 0
    scheduled = [e for e in world.store.chain(rid) if e.type.value == "revoke.scheduled"][-1]
    assert scheduled.data["sequenceNumber"] is None and scheduled.data["by"] == "reconcile"
    # AND at the new end reconcile revokes it
    world.advance(3601)
    assert world.lifecycle.reconcile().revoked == [rid]
    assert world.state(rid) == "revoked" and world.marked() == []


def test_a_revoke_at_the_old_end_that_was_not_cancelled_does_nothing(world: World) -> None:
    # GIVEN an extension whose cancel of the old revoke came too late (the bus had it delivered already)
    rid = world.submit(access_request(duration="PT1H"))
    record = world.store.get_request(rid)
    assert record is not None
    world.bus.cancel_scheduled = lambda queue, seq: None  # type: ignore[method-assign]
    world.lifecycle.extend(rid, JANE, timedelta(hours=1))
    # WHEN the revoke at the old end is delivered
    world.advance(3601)
    # THEN it finds the end moved and leaves the grant alone; the revoke at the new end ends it
    assert world.state(rid) == "active" and len(world.marked()) == 1
    world.advance(3600)
    assert world.state(rid) == "revoked" and world.marked() == []


def test_a_second_extension_moves_the_end_again(world: World) -> None:
    rid = world.submit(access_request(duration="PT1H"))
    world.lifecycle.extend(rid, JANE, timedelta(hours=1))
    world.lifecycle.extend(rid, JANE, timedelta(hours=1))
    world.advance(2 * 3600 + 1)
    assert world.state(rid) == "active"
    world.advance(3600)
    assert world.state(rid) == "revoked"


def test_an_extension_past_the_rules_maximum_is_refused_with_the_policys_reason(world: World) -> None:
    rid = world.submit(access_request(duration="PT7H"))
    with pytest.raises(InvalidRequest) as refused:
        world.lifecycle.extend(rid, JANE, timedelta(hours=2))
    assert "9 hours" in str(refused.value) and "8 hours" in str(refused.value)
    record = world.store.get_request(rid)
    assert record is not None and record.expires_at == record.granted_at + timedelta(hours=7)  # type: ignore[operator]
    assert "grant.extended" not in world.event_types(rid)


def active_in_production(world: World) -> str:
    """An active production grant of an hour (the rule wants two approvals, of Alice, Bob or Carol)."""
    rid = world.submit(access_request(role="Contributor", scope=PROD_RG, duration="PT1H"))
    world.lifecycle.approve(rid, ALICE)
    world.lifecycle.approve(rid, BOB)
    world.worker.drain()
    assert world.state(rid) == "active"
    return rid


def test_more_time_the_rule_wants_approved_is_put_to_its_approvers_and_applied_when_approved(world: World) -> None:
    rid = active_in_production(world)
    record = world.store.get_request(rid)
    assert record is not None and record.expires_at is not None
    end = record.expires_at
    # WHEN Jane asks for 30 minutes more
    asked = world.lifecycle.extend(rid, JANE, timedelta(minutes=30), "the migration runs long")
    # THEN it waits for two approvals, the grant unchanged, the approvers told
    assert "waits for 2 approvals" in asked.message and "prod-contributor" in asked.message
    record = world.store.get_request(rid)
    assert record is not None and record.expires_at == end and record.extension is not None
    notice = world.notifier.notices[-1]
    assert notice.kind == "approval_requested" and notice.audience == ["approvers"]
    assert "More time asked" in notice.title
    assert notice.facts["More time"].endswith("0 of 2 approvals: the migration runs long")
    # AND the same rules as for a request: not the requester, one person once
    with pytest.raises(AuthError):
        world.lifecycle.approve(rid, JANE)
    assert world.lifecycle.approve(rid, CAROL).message == "approval 1 of 2 for more time recorded"
    assert world.lifecycle.approve(rid, CAROL).message == "your approval is already counted"
    # WHEN a second approver approves, THEN the grant is extended at once, in the requester's name, approvers named
    done = world.lifecycle.approve(rid, ALICE, "ok")
    assert done.message.startswith("extended: active until")
    record = world.store.get_request(rid)
    assert record is not None and record.expires_at == end + timedelta(minutes=30) and record.extension is None
    extended = next(e for e in world.store.chain(rid) if e.type.value == "grant.extended")
    assert extended.actor.principal_id == JANE and extended.data["approvers"] == sorted([ALICE, CAROL])
    world.advance(3601)
    assert world.state(rid) == "active"
    world.advance(1800)
    assert world.state(rid) == "revoked" and world.verify(rid).ok


def test_more_time_denied_leaves_the_grant_as_it_was(world: World) -> None:
    rid = active_in_production(world)
    world.lifecycle.extend(rid, JANE, timedelta(minutes=30))
    with pytest.raises(IllegalTransition):  # one ask at a time
        world.lifecycle.extend(rid, JANE, timedelta(minutes=10))
    denied = world.lifecycle.deny(rid, BOB, "not during the freeze")
    assert denied.state is RequestState.ACTIVE and "more time denied" in denied.message
    record = world.store.get_request(rid)
    assert record is not None and record.extension is None
    world.advance(3601)
    assert world.state(rid) == "revoked"


def test_more_time_approved_before_a_crash_is_applied_by_reconcile(world: World) -> None:
    rid = active_in_production(world)
    world.lifecycle.extend(rid, JANE, timedelta(minutes=30))
    # GIVEN the approvals written, and the process gone before it extended the grant
    world.lifecycle.approvals.approve(rid, ALICE)
    world.lifecycle.approvals.approve(rid, CAROL)
    record = world.store.get_request(rid)
    assert record is not None and record.extension is not None and record.extension.approved
    # WHEN reconcile runs, THEN it extends the grant
    world.lifecycle.reconcile()
    record = world.store.get_request(rid)
    assert record is not None and record.extension is None
    assert "grant.extended" in world.event_types(rid)


def test_more_time_still_waiting_goes_with_the_grant(world: World) -> None:
    rid = active_in_production(world)
    world.lifecycle.extend(rid, JANE, timedelta(minutes=30))
    world.lifecycle.request_revoke(rid, JANE, is_admin=False)
    record = world.store.get_request(rid)
    assert record is not None and record.extension is None
    with pytest.raises(AuthError):
        world.lifecycle.approve(rid, ALICE)


def test_only_the_requester_extends_and_only_an_active_grant(world: World) -> None:
    rid = world.submit(access_request(duration="PT1H"))
    with pytest.raises(AuthError):
        world.lifecycle.extend(rid, ALICE, timedelta(hours=1))
    with pytest.raises(InvalidRequest):
        world.lifecycle.extend(rid, JANE, timedelta(0))
    world.lifecycle.request_revoke(rid, JANE, is_admin=False)
    with pytest.raises(IllegalTransition):
        world.lifecycle.extend(rid, JANE, timedelta(hours=1))


# ---------------------------------------------------------------- lists


def test_waiting_for_me_is_what_an_approval_would_accept(world: World) -> None:
    # GIVEN Jane's production request (approvers: Alice, Bob, Carol) and her dev grant
    prod = world.submit(access_request(role="Contributor", scope=PROD_RG))
    dev = world.submit(access_request())
    waiting = RequestFilter(waiting_for_me=True)
    lists = world.lifecycle.lists

    def ids(principal: str, wanted: RequestFilter, reads_all: bool = False) -> list[str]:
        page = lists.list_requests(wanted, viewer(world, principal, reads_all), 50, None)
        return [r.request_id for r in page.records]

    # THEN it waits for each approver, never for its requester nor for anyone who is no approver
    assert ids(ALICE, waiting) == [prod] and ids(CAROL, waiting) == [prod]
    assert ids(JANE, waiting) == []
    # WHEN Alice approves, it no longer waits for her, still for Bob
    world.lifecycle.approve(prod, ALICE)
    assert ids(ALICE, waiting) == [] and ids(BOB, waiting) == [prod]
    # AND who may still approve it: Bob and Carol, not Jane nor Alice
    record = world.store.get_request(prod)
    assert record is not None
    assert {p.principal_id for p in lists.who_may_approve(record)} == {BOB, CAROL}
    # AND "mine" is Jane's two, newest first; a stranger to the dev request does not see it
    assert ids(JANE, RequestFilter(mine=True)) == [dev, prod]
    assert ids(CAROL, RequestFilter()) == [prod]
    assert ids(CAROL, RequestFilter(), reads_all=True) == [dev, prod]
    assert ids(ALICE, RequestFilter(waiting_for_me=True, states=frozenset({RequestState.DENIED}))) == []


def test_waiting_for_me_includes_more_time_asked_for_an_active_grant(world: World) -> None:
    rid = active_in_production(world)
    waiting = RequestFilter(waiting_for_me=True)
    lists = world.lifecycle.lists
    assert lists.list_requests(waiting, viewer(world, CAROL), 10, None).records == []
    world.lifecycle.extend(rid, JANE, timedelta(minutes=30))
    assert [r.request_id for r in lists.list_requests(waiting, viewer(world, CAROL), 10, None).records] == [rid]
    # NB. Alice approved the request itself; more time is another question, which she has not answered yet
    assert [r.request_id for r in lists.list_requests(waiting, viewer(world, ALICE), 10, None).records] == [rid]
    assert lists.list_requests(waiting, viewer(world, JANE), 10, None).records == []
    record = world.store.get_request(rid)
    assert record is not None
    assert {p.principal_id for p in lists.who_may_approve(record)} == {ALICE, BOB, CAROL}


def test_filters_by_state_and_target_and_pages_without_gaps(world: World) -> None:
    rids = [world.submit(access_request(duration="PT1H")) for _ in range(7)]
    other = world.submit(access_request(scope=DEV_RG.replace("rg-web-dev", "rg-api-dev")))
    world.lifecycle.request_revoke(rids[0], JANE, is_admin=False)
    me = viewer(world, JANE)
    lists = world.lifecycle.lists
    active_here = RequestFilter(states=frozenset({RequestState.ACTIVE}), scope=DEV_RG.upper(), role="reader")
    seen: list[str] = []
    continuation = None
    while True:
        page = lists.list_requests(active_here, me, 2, continuation)
        assert len(page.records) <= 2
        seen += [r.request_id for r in page.records]
        continuation = page.continuation
        if continuation is None:
            break
    assert seen == list(reversed(rids[1:]))
    assert other not in seen
    with pytest.raises(ValueError):
        lists.list_requests(RequestFilter(), me, 2, "not-a-token")
