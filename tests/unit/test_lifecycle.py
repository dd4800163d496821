"""The lifecycle on fakes: every handler, idempotency under redelivery, and the safety net."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.domain.audit import EventType
from shared.domain.errors import (
    AuthError,
    IdempotencyMismatch,
    InvalidRequest,
    PermanentError,
    TransientError,
)
from shared.domain.ledger import Assignment, Deletion, Grant, GrantKey, marker_for
from shared.domain.lifecycle import LifecycleCommand, RequestState
from tests.fakes.world import (
    ALICE,
    BOB,
    CAROL,
    DEV_RG,
    JANE,
    PROD_RG,
    World,
    access_request,
    body,
)


@pytest.fixture
def world() -> World:
    return World()


def test_auto_approved_request_is_granted_then_revoked_at_expiry(world: World) -> None:
    # GIVEN a request the policy auto-approves
    rid = world.submit(access_request(duration="PT10S"))
    # THEN it is active with one marked assignment and a revoke scheduled at its expiry
    assert world.state(rid) == "active"
    assert [a.marked_request_id for a in world.marked()] == [rid]
    assert world.bus.scheduled_count("access-revocations") == 1
    assert world.bus.scheduled_count("access-lifecycle") == 0
    # WHEN the expiry passes
    world.advance(9)
    assert world.state(rid) == "active"
    world.advance(1.5)
    # THEN the revoke fired, the assignment is gone and the trail tells the whole story
    assert world.state(rid) == "revoked"
    assert world.marked() == []
    assert world.event_types(rid) == [
        "request.received",
        "policy.evaluated",
        "request.approved",
        "grant.applied",
        "revoke.scheduled",
        "grant.revoked",
    ]
    revoked = world.store.chain(rid)[-1]
    assert revoked.data["assignmentDeleted"] is True
    assert 0 <= revoked.data["latenessSeconds"] <= 1
    assert world.chains_ok()


def test_every_message_delivered_three_times_has_the_effect_of_one(world: World) -> None:
    doc = access_request(duration="PT1M")
    rid = doc["requestId"]
    for _ in range(3):
        world.lifecycle.evaluate(body(doc))
    for _ in range(3):
        world.lifecycle.handle_command(LifecycleCommand(command="grant", request_id=rid).body())
    world.worker.drain()
    assert world.state(rid) == "active"
    assert len(world.grants.all_assignments()) == 1
    assert world.event_types(rid).count("grant.applied") == 1
    assert world.event_types(rid).count("request.received") == 1
    world.clock.advance(61)
    for _ in range(3):
        world.lifecycle.handle_command(LifecycleCommand(command="revoke", request_id=rid).body())
    assert world.event_types(rid).count("grant.revoked") == 1
    assert world.chains_ok()


def test_request_id_reused_with_another_body_is_refused_and_audited_in_the_name_of_who_reused_it(
    world: World,
) -> None:
    from shared.domain.audit import Actor

    doc = access_request()
    rid = world.submit(doc)
    # WHEN Bob reuses Jane's request id over HTTP (verified), and a queued body claiming Carol does too
    bob = Actor(principal_id=BOB, kind="user")
    by_bob = {**doc, "requester": {"principalId": BOB, "displayName": "Bob"}}
    with pytest.raises(IdempotencyMismatch):
        world.lifecycle.submit(body(by_bob), bob)
    claiming_carol = {**doc, "requester": {"principalId": CAROL, "displayName": "Carol"}}
    world.lifecycle.evaluate(body(claiming_carol))  # on the queue: completed, not raised
    # THEN Jane's request stands, and each rejection names who reused the id, and whether that is verified
    assert world.state(rid) == "active"
    rejected = [e for e in world.store.chain(rid) if e.type is EventType.REQUEST_REJECTED]
    assert [(e.actor.principal_id, e.actor.kind, e.data["actorVerified"]) for e in rejected] == [
        (BOB, "user", True),
        (CAROL, "user", False),
    ]
    # AND the same sender reusing it again within a minute is refused without growing Jane's trail
    with pytest.raises(IdempotencyMismatch):
        world.lifecycle.submit(body(by_bob), bob)
    world.lifecycle.evaluate(body(claiming_carol))
    assert world.event_types(rid).count("request.rejected") == 2
    assert world.lifecycle.submit(body(doc)).message == "already received"


def test_invalid_message_is_terminal_rejected_with_reasons_and_audited_once(world: World) -> None:
    doc = access_request(duration="-PT5M", colour="blue")
    assert world.lifecycle.evaluate(body(doc)) is None
    world.lifecycle.evaluate(body(doc))
    record = world.store.get_request(doc["requestId"])
    assert record is not None and record.state is RequestState.REJECTED
    assert {e["loc"] for e in record.errors} == {"duration", "colour"}
    assert world.event_types(record.request_id) == ["request.rejected"]
    with pytest.raises(InvalidRequest):
        world.lifecycle.submit(b"{not json")


def test_two_approvals_requester_never_counts_and_one_person_counts_once(world: World) -> None:
    rid = world.submit(access_request(role="Contributor", scope=PROD_RG, duration="PT1H"))
    assert world.state(rid) == "pending_approval"
    assert world.notifier.of_kind("approval_requested")
    with pytest.raises(AuthError, match="own request"):
        world.lifecycle.approve(rid, JANE)
    with pytest.raises(AuthError, match=r"^you are not in approvers, the approver group of this request$"):
        world.lifecycle.approve(rid, "99999999-0000-4000-8000-000000000009")
    assert world.lifecycle.approve(rid, ALICE, "ok").message == "approval 1 of 2 recorded"
    assert world.lifecycle.approve(rid, ALICE.upper()).message == "your approval is already counted"
    assert world.state(rid) == "pending_approval"
    assert world.lifecycle.approve(rid, BOB).state is RequestState.APPROVED
    world.worker.drain()
    assert world.state(rid) == "active"
    refused = [
        e for e in world.store.chain(rid) if e.type is EventType.APPROVAL_RECORDED and not e.data["counted"]
    ]
    assert len(refused) == 2


def test_denied_request_is_never_granted(world: World) -> None:
    rid = world.submit(access_request(role="Contributor", scope=PROD_RG))
    world.lifecycle.deny(rid, CAROL, "change freeze")
    world.lifecycle.handle_command(LifecycleCommand(command="grant", request_id=rid).body())
    assert world.state(rid) == "denied"
    assert world.grants.all_assignments() == []
    with pytest.raises(AuthError, match="the request is denied by an approver: only a request waiting for approvals"):
        world.lifecycle.approve(rid, BOB)


def test_policy_denial_rejects_with_the_rule_and_reason(world: World) -> None:
    rid = world.submit(access_request(role="Owner"))
    record = world.store.get_request(rid)
    assert record is not None and record.state is RequestState.REJECTED
    assert record.decision is not None and record.decision.rule == "owner-never"
    assert world.event_types(rid) == ["request.received", "policy.evaluated", "request.rejected"]


def test_undecided_request_expires_at_its_deadline(world: World) -> None:
    rid = world.submit(access_request(role="Contributor", scope=PROD_RG))
    world.lifecycle.approve(rid, ALICE)
    world.advance(3599)
    assert world.state(rid) == "pending_approval"
    world.advance(2)
    assert world.state(rid) == "expired"
    assert world.notifier.of_kind("expired")


def test_overlapping_requests_do_not_cut_each_other_short(world: World) -> None:
    long_id = world.submit(access_request(duration="PT60S"))
    short_id = world.submit(access_request(duration="PT10S"))
    assert len(world.marked()) == 1
    world.advance(11)
    assert world.state(short_id) == "revoked"
    assert world.state(long_id) == "active"
    assert len(world.marked()) == 1
    assert world.store.chain(short_id)[-1].data["remainingHolds"] == 1
    world.advance(50)
    assert world.state(long_id) == "revoked"
    assert world.marked() == []


def test_preexisting_assignment_is_never_created_nor_deleted(world: World) -> None:
    seeded = world.grants.seed(JANE, "Reader", DEV_RG)
    rid = world.submit(access_request(duration="PT10S"))
    hold = world.store.holds_for_request(rid)[0]
    assert hold.preexisting
    world.advance(11)
    assert world.state(rid) == "revoked"
    assert world.grants.get_assignment(seeded.scope, seeded.name) is not None


def test_early_revoke_by_requester_cancels_the_scheduled_revoke(world: World) -> None:
    rid = world.submit(access_request(duration="PT1H"))
    with pytest.raises(AuthError):
        world.lifecycle.request_revoke(rid, BOB, is_admin=False)
    result = world.lifecycle.request_revoke(rid, JANE, is_admin=False, reason="done")
    assert result.state is RequestState.REVOKED
    assert world.marked() == []
    assert world.bus.scheduled_count("access-revocations") == 0
    world.advance(3601)
    assert world.event_types(rid).count("grant.revoked") == 1


def test_a_revoke_arriving_just_after_expiry_says_it_had_already_ended_and_is_audited(world: World) -> None:
    # GIVEN a grant whose expiry has come, its scheduled revoke about to be delivered
    rid = world.submit(access_request(duration="PT1M"))
    world.clock.advance(60)
    real_put = world.store.put_grant

    def expiry_lands_then_put(grant: Grant) -> Grant:
        world.store.put_grant = real_put  # type: ignore[method-assign]
        world.worker.drain()  # the revoke at expiry lands while Jane's own revoke is under way
        return real_put(grant)  # her release, decided on what she read before: refused, decided again

    world.store.put_grant = expiry_lands_then_put  # type: ignore[method-assign]
    # WHEN Jane says she is done a few milliseconds late
    result = world.lifecycle.request_revoke(rid, JANE, is_admin=False, reason="done")
    # THEN the answer says the request had already ended at expiry, not that her revoke ended it
    assert result.state is RequestState.REVOKED
    assert result.message == "already ended at expiry: revoked at 2026-11-26 09:01:00 UTC (just now)"
    assert "done" not in result.message
    [revoked] = [e for e in world.store.chain(rid) if e.type is EventType.GRANT_REVOKED]
    assert revoked.data["reason"] == "expired" and revoked.actor.principal_id == "jitgate"
    # AND her attempt is audited, and people hear of the revoke once
    attempt = world.store.chain(rid)[-1]
    assert attempt.type is EventType.ACCESS_REFUSED and attempt.actor.principal_id == JANE
    assert attempt.data["action"] == "revoke"
    assert attempt.data["reason"] == (
        "nothing to revoke: already ended at expiry: revoked at 2026-11-26T09:01:00.000000Z"  # ISO 8601 in events
    )
    assert len(world.notifier.of_kind("revoked")) == 1
    # AND asking again later gets the same answer, from the stored record
    world.clock.advance(90)
    again = world.lifecycle.request_revoke(rid, JANE, is_admin=False)
    assert again.message == "already ended at expiry: revoked at 2026-11-26 09:01:00 UTC (2 minutes ago)"
    assert world.event_types(rid).count("access.refused") == 2
    assert world.chains_ok()


def test_the_grant_answers_until_when_in_words_and_audits_it_in_iso_8601(world: World) -> None:
    doc = access_request(duration="PT1H")
    world.lifecycle.evaluate(body(doc))
    result = world.lifecycle.grant(doc["requestId"])
    assert result.message == "active until 2026-11-26 10:00:00 UTC (in 1 hour)"
    [applied] = [e for e in world.store.chain(doc["requestId"]) if e.type is EventType.GRANT_APPLIED]
    assert applied.data["expiresAt"] == "2026-11-26T10:00:00.000000Z"


def test_withdrawing_a_request_never_granted_is_announced_as_withdrawn_not_revoked(world: World) -> None:
    rid = world.submit(access_request(role="Contributor", scope=PROD_RG))
    assert world.state(rid) == "pending_approval"
    result = world.lifecycle.request_revoke(rid, JANE, is_admin=False)
    assert result.state is RequestState.REVOKED and result.message.startswith("withdrawn")
    [notice] = world.notifier.of_kind("withdrawn")
    assert notice.title.startswith("Request withdrawn") and "revoked" not in notice.title.lower()
    assert world.notifier.of_kind("revoked") == []
    assert world.lifecycle.request_revoke(rid, JANE, is_admin=False).message.startswith("already withdrawn at")


def test_a_grant_landing_while_the_last_hold_is_deleted_waits_then_grants_as_the_principal_it_is(world: World) -> None:
    # GIVEN a group holding Reader through jitgate, and a second request of that group for the same grant,
    # approved, its grant command waiting on the queue
    group = "99999999-0000-4000-8000-000000000099"
    first, second = (access_request(principal=group, duration=d) for d in ("PT1M", "PT1H"))
    for doc in (first, second):
        doc["requester"]["principalType"] = "Group"
    world.submit(first)
    world.lifecycle.evaluate(body(second))
    real_delete = world.grants.delete_assignment
    held_while_deleting: list[list[str]] = []

    def grant_lands_mid_delete(scope: str, name: str) -> None:
        world.grants.delete_assignment = real_delete  # type: ignore[method-assign]
        world.worker.drain()  # the second grant runs while the first revoke deletes the assignment
        held_while_deleting.append([h.request_id for h in world.store.all_active_holds()])
        real_delete(scope, name)

    world.grants.delete_assignment = grant_lands_mid_delete  # type: ignore[method-assign]
    # WHEN the first request is revoked early
    world.lifecycle.request_revoke(first["requestId"], group, is_admin=False)
    # THEN the second grant held nothing while the assignment was being deleted: it waited, and left its
    # message to the bus
    assert held_while_deleting == [[]]
    assert (world.state(first["requestId"]), world.state(second["requestId"])) == ("revoked", "approved")
    assert world.marked() == []
    # WHEN the bus delivers the grant again
    world.advance(31)
    # THEN it is granted on an assignment of its own, made after the delete, as the group it is
    assert world.state(second["requestId"]) == "active"
    [assignment] = world.marked()
    assert (assignment.principal_type, assignment.marked_request_id) == ("Group", second["requestId"])
    writes = [c.method for c in world.grants.calls if c.method in ("create_assignment", "delete_assignment")]
    assert writes == ["create_assignment", "delete_assignment", "create_assignment"]


def test_a_grant_whose_hold_a_revoke_released_meanwhile_removes_what_it_created_and_is_not_active(
    world: World,
) -> None:
    # GIVEN an approved request, and a revoke of it that releases its hold (and deletes the assignment,
    # there being none yet) just after the grant looked for the assignment and before it creates it
    doc = access_request()
    world.lifecycle.evaluate(body(doc))
    rid = doc["requestId"]
    real_find = world.grants.find_assignment

    def revoke_releases_meanwhile(key: GrantKey) -> Assignment | None:
        world.grants.find_assignment = real_find  # type: ignore[method-assign]
        found = real_find(key)
        world.lifecycle.access.grants.release(key, rid)
        return found

    world.grants.find_assignment = revoke_releases_meanwhile  # type: ignore[method-assign]
    # WHEN the grant runs
    result = world.lifecycle.grant(rid)
    # THEN the assignment it created after the revoke's delete is removed again, by the grant itself
    assert world.marked() == []
    writes = [c.method for c in world.grants.calls if c.method in ("create_assignment", "delete_assignment")]
    assert writes == ["delete_assignment", "create_assignment", "delete_assignment"]
    # AND the request is not announced nor recorded as active: its state is the revoke's to write
    assert (result.state, result.message) == (RequestState.APPROVED, "revoked while the grant ran")
    assert world.state(rid) == "approved" and world.notifier.of_kind("granted") == []


def test_a_grant_delivered_again_after_its_request_ended_removes_an_assignment_left_behind(world: World) -> None:
    # GIVEN a revoked request whose assignment is still there (a grant cut short by its revoke created it
    # after the revoke confirmed it gone, and could not remove it before the message was redelivered)
    rid = world.submit(access_request(duration="PT1H"))
    world.lifecycle.request_revoke(rid, JANE, is_admin=False)
    key = _grant_of(world, rid).key
    world.grants.create_assignment(key, key.assignment_name(), marker_for(rid))
    # WHEN the grant message comes again
    result = world.lifecycle.grant(rid)
    # THEN nothing is granted, and what the request left is removed
    assert result.message == "nothing to grant (revoked)"
    assert world.marked() == []
    assert _grant_of(world, rid).deleting is None


def test_admin_revokes_someone_elses_grant(world: World) -> None:
    rid = world.submit(access_request(duration="PT1H"))
    world.lifecycle.request_revoke(rid, CAROL, is_admin=True)
    revoked = world.store.chain(rid)[-1]
    assert revoked.actor.principal_id == CAROL and revoked.data["reason"] == "admin"


def test_transient_provider_faults_are_retried_with_backoff(world: World) -> None:
    world.grants.inject_fault("create", TransientError("throttled", retry_after=3.0), times=2)
    rid = world.submit(access_request())
    assert world.state(rid) == "active"
    assert world.sleeps == [3.0, 3.0]


def test_permanent_provider_fault_fails_visibly(world: World) -> None:
    world.grants.inject_fault("create", PermanentError("principal does not exist"), times=1)
    rid = world.submit(access_request())
    assert world.state(rid) == "failed"
    assert "grant.failed" in world.event_types(rid)
    assert world.notifier.of_kind("failed")
    assert world.store.holds_for_request(rid)[0].status.value == "released"


def test_transient_faults_on_the_last_delivery_end_in_failed_not_silence(world: World) -> None:
    world.grants.inject_fault("create", TransientError("503"), times=1000)
    rid = world.submit(access_request())
    for _ in range(world.max_deliveries + 2):
        world.advance(31)  # lock expiry is the bus-level backoff
    assert world.state(rid) == "failed"
    assert world.bus.dead_letters("access-lifecycle") == []


def test_reconcile_revokes_overdue_holds_when_the_scheduled_revoke_is_lost(world: World) -> None:
    rid = world.submit(access_request(duration="PT10S"))
    record = world.store.get_request(rid)
    assert record is not None and record.revoke_sequence is not None
    world.bus.cancel_scheduled("access-revocations", record.revoke_sequence)
    assert world.bus.scheduled_count("access-revocations") == 0
    world.advance(20)
    assert world.state(rid) == "active"
    report = world.lifecycle.reconcile()
    assert report.revoked == [rid]
    assert world.state(rid) == "revoked"
    assert world.marked() == []


def test_reconcile_removes_orphans_and_audits_them(world: World) -> None:
    # GIVEN a revoked request whose assignment reappeared (re-created behind jitgate's back)
    rid = world.submit(access_request(duration="PT10S"))
    world.advance(11)
    key = world.store.holds_for_request(rid)[0].key
    world.grants.create_assignment(key, key.assignment_name(), marker_for(rid))
    # WHEN reconcile runs, THEN the orphan is removed and audited on that request's chain
    report = world.lifecycle.reconcile()
    assert len(report.orphans_removed) == 1
    assert world.marked() == []
    assert world.event_types(rid)[-1] == "reconcile.orphan_removed"
    assert world.chains_ok()


def test_reconcile_finishes_a_revoke_interrupted_after_the_hold_was_released(world: World) -> None:
    # GIVEN an active request whose revoke died after releasing the hold (a crash of an earlier jitgate,
    # which wrote no deletion intent)
    rid = world.submit(access_request(duration="PT1H"))
    grant = _grant_of(world, rid)
    world.store.put_grant(grant.released(rid, world.clock.now()))
    world.clock.advance(10)
    # WHEN reconcile runs
    report = world.lifecycle.reconcile()
    # THEN the revoke is completed: assignment gone, request revoked, and said so in the trail
    assert report.revoked == [rid]
    assert world.state(rid) == "revoked" and world.marked() == []
    assert world.store.chain(rid)[-1].data["reason"] == "early (completed by reconcile)"


def test_a_deletion_whose_writer_died_is_taken_over_once_its_lease_runs_out(world: World) -> None:
    # GIVEN an active request whose revoke died after writing the release and its deletion intent
    rid = world.submit(access_request(duration="PT1H"))
    grant = _grant_of(world, rid)
    dead = Deletion.begin(world.clock.now(), rid)
    world.store.put_grant(grant.released(rid, world.clock.now()).model_copy(update={"deleting": dead}))
    deletes = len(world.grants.calls_to("delete_assignment"))
    # WHEN reconcile runs while the intent is younger than the lease
    world.clock.advance(10)
    report = world.lifecycle.reconcile()
    # THEN nobody deletes under another writer's lease: the revoke waits, and is reported for the next pass
    assert len(report.errors) == 1 and "still being deleted" in report.errors[0]
    assert len(world.grants.calls_to("delete_assignment")) == deletes and len(world.marked()) == 1
    # WHEN the lease has run out
    world.clock.advance(world.backends.delete_lease.total_seconds())
    report = world.lifecycle.reconcile()
    # THEN the next pass takes the deletion over and finishes the revoke; the intent is gone
    assert report.revoked == [rid] and report.errors == []
    assert world.state(rid) == "revoked" and world.marked() == []
    assert _grant_of(world, rid).deleting is None


def test_a_revoke_that_waited_for_an_abandoned_deletion_is_as_late_as_the_confirmed_delete(world: World) -> None:
    # GIVEN a grant at its expiry, whose key carries the intent of a deleting writer that died (reconcile,
    # say), its lease running out in three seconds; and a clock that moves while jitgate waits
    rid = world.submit(access_request(duration="PT1M"))
    world.clock.advance(60)
    since = world.clock.now() - world.backends.delete_lease + timedelta(seconds=3)
    world.store.put_grant(_grant_of(world, rid).model_copy(update={"deleting": Deletion.begin(since, None)}))
    world.backends.sleep = world.clock.advance
    # WHEN the revoke at expiry runs
    world.worker.drain()
    # THEN it waited until the intent went stale, took the deletion over, and says how late it really was
    assert world.state(rid) == "revoked" and world.marked() == []
    [revoked] = [e for e in world.store.chain(rid) if e.type is EventType.GRANT_REVOKED]
    record = world.store.get_request(rid)
    assert record is not None and record.expires_at is not None
    assert revoked.data["latenessSeconds"] == (revoked.at - record.expires_at).total_seconds() >= 3


def _grant_of(world: World, request_id: str) -> Grant:
    [hold] = world.store.holds_for_request(request_id)
    grant = world.store.get_grant(hold.key)
    assert grant is not None
    return grant


def test_reconcile_regrants_an_approved_request_whose_grant_message_was_lost(world: World) -> None:
    doc = access_request()
    world.lifecycle.evaluate(body(doc))
    rid = doc["requestId"]
    lost = world.bus.receive("access-lifecycle")
    world.bus.complete(lost[0])
    assert world.state(rid) == "approved"
    world.clock.advance(61)
    assert world.lifecycle.reconcile().regranted == [rid]
    assert world.state(rid) == "active"


def test_outbox_left_by_a_crash_is_flushed_exactly_once(world: World) -> None:
    rid = world.submit(access_request())
    record = world.store.get_request(rid)
    assert record is not None
    record.emit(EventType.ACTIVITY_SUMMARY, world.clock.now(), {"operations": 3})
    world.store.put_legacy_record(record)  # an earlier jitgate crashed here: state written, event not appended
    assert world.lifecycle.flush_pending() == 1
    assert world.lifecycle.flush_pending() == 0
    assert world.event_types(rid)[-1] == "activity.summary"
    assert world.chains_ok()


def test_a_record_left_with_an_outbox_partly_appended_is_flushed_before_its_next_write(world: World) -> None:
    # GIVEN an active request an earlier jitgate left with two events in its outbox, the first already appended
    rid = world.submit(access_request())
    record = world.store.get_request(rid)
    assert record is not None
    first = record.emit(EventType.ACTIVITY_SUMMARY, world.clock.now(), {"operations": 3})
    record.emit(EventType.ACTIVITY_SUMMARY, world.clock.now(), {"operations": 4})
    world.store.put_legacy_record(record)
    world.store.append(first, JANE)
    # WHEN the requester revokes it (a write of the record, before any reconcile ran)
    result = world.lifecycle.request_revoke(rid, JANE, is_admin=False)
    # THEN the outbox went first, each event once, and the revoke after it
    assert result.state is RequestState.REVOKED
    assert world.event_types(rid)[-3:] == ["activity.summary", "activity.summary", "grant.revoked"]
    assert world.chains_ok() and world.store.requests_with_outbox() == []


def test_refused_api_access_is_audited_on_the_request(world: World) -> None:
    from shared.domain.audit import Actor

    rid = world.submit(access_request())
    assert world.lifecycle.refuse_access(rid, Actor(principal_id=BOB, kind="user"), "GET", "not allowed")
    assert world.event_types(rid)[-1] == "access.refused"
    # the same refusal again within a minute is not written again (nobody can flood a chain)...
    for _ in range(50):
        world.lifecycle.refuse_access(rid, Actor(principal_id=BOB, kind="user"), "GET", "not allowed")
    assert world.event_types(rid).count("access.refused") == 1
    # ...but it is after a minute, and a different refusal is at once
    world.lifecycle.refuse_access(rid, Actor(principal_id=BOB, kind="user"), "revoke", "not allowed")
    world.clock.advance(61)
    world.lifecycle.refuse_access(rid, Actor(principal_id=BOB, kind="user"), "GET", "not allowed")
    assert world.event_types(rid).count("access.refused") == 3
    assert not world.lifecycle.refuse_access(
        "0" * 8 + "-0000-4000-8000-" + "0" * 12, Actor(principal_id=BOB, kind="user"), "GET", "x"
    )


def test_refusals_are_collapsed_by_verified_facts_and_their_bookkeeping_is_bounded(world: World) -> None:
    from shared.domain.audit import Actor
    from shared.domain.lifecycle import PROVOKED_KEPT

    rid = world.submit(access_request())
    # GIVEN refusals of unauthenticated callers whose reasons carry whatever they claimed
    unauthenticated = Actor(principal_id="unauthenticated", kind="user")
    for n in range(100):
        world.lifecycle.refuse_access(rid, unauthenticated, "teams.webhook", f"bad signature (claims sender {n})")
    # THEN one is audited: what they claimed does not make a refusal new
    assert world.event_types(rid).count("access.refused") == 1
    # WHEN many authenticated callers are refused, THEN each is audited, yet the record keeps a bounded memory
    for n in range(40):
        caller = Actor(principal_id=f"{n:08d}-0000-4000-8000-000000000000", kind="user")
        world.lifecycle.refuse_access(rid, caller, "read", "not allowed")
    assert world.event_types(rid).count("access.refused") == 41
    record = world.store.get_request(rid)
    assert record is not None and len(record.refusals) == PROVOKED_KEPT


def test_unknown_provider_fails_the_grant(world: World) -> None:
    doc = access_request()
    doc["target"]["provider"] = "azure-rbac"
    rid = world.submit(doc)
    # the test policy only allows provider local, so azure-rbac is refused by policy before any grant
    assert world.state(rid) == "rejected"
    assert DEV_RG in world.store.get_request(rid).request.target.scope  # type: ignore[union-attr]


def test_a_command_for_an_unknown_request_is_dead_lettered_at_once(world: World) -> None:
    cmd = LifecycleCommand(command="grant", request_id="0badf00d-0000-4000-8000-000000000000")
    world.bus.send("access-lifecycle", cmd.message_id, cmd.body())
    world.worker.drain()
    [dead] = world.bus.dead_letters("access-lifecycle")
    assert (dead.reason, dead.delivery_count) == ("UnknownRequest", 1)


def test_a_grant_whose_time_ran_out_mid_way_is_closed_not_granted_again(world: World) -> None:
    # GIVEN a grant that created the assignment, then died before scheduling its revoke
    real_schedule = world.bus.schedule
    calls: list[str] = []

    def schedule_fails_once(queue: str, message_id: str, body: bytes, at: object) -> int:
        calls.append(message_id)
        if len(calls) == 1:
            raise TransientError("the process died here")
        return real_schedule(queue, message_id, body, at)  # type: ignore[arg-type]

    world.bus.schedule = schedule_fails_once  # type: ignore[method-assign]
    rid = world.submit(access_request(duration="PT10S"))
    assert world.state(rid) == "approved" and len(world.marked()) == 1
    created = len(world.grants.all_assignments())
    # WHEN the grant command comes back only after the request's expiry
    world.advance(31)
    # THEN the role is not handed out again: the grant that happened is recorded, then revoked at once
    assert world.state(rid) == "revoked"
    assert world.marked() == [] and created == 1
    assert world.event_types(rid)[-3:] == ["grant.applied", "revoke.scheduled", "grant.revoked"]
    assert world.store.chain(rid)[-1].data["assignmentDeleted"] is True


def test_an_early_revoke_cut_short_is_finished_in_the_requesters_name(world: World) -> None:
    # GIVEN Jane's early revoke died right after it released her hold
    rid = world.submit(access_request(duration="PT1H"))
    world.grants.inject_fault("delete", PermanentError("the process died here"), times=1)
    world.lifecycle.request_revoke(rid, JANE, is_admin=False, reason="done")
    # WHEN reconcile runs
    world.lifecycle.reconcile()
    # THEN it is finished with her reason and in her name, not as an expiry by the system
    revoked = world.store.chain(rid)[-1]
    assert revoked.type is EventType.GRANT_REVOKED
    assert revoked.data["reason"].startswith("done") and revoked.actor.principal_id == JANE


def test_a_request_withdrawn_before_evaluation_is_never_granted(world: World) -> None:
    doc = access_request()
    world.lifecycle.submit(body(doc))
    world.lifecycle.request_revoke(doc["requestId"], JANE, is_admin=False, reason="typo in the scope")
    world.worker.drain()
    assert world.state(doc["requestId"]) == "revoked"
    assert world.grants.all_assignments() == []


def test_reconcile_evaluates_a_request_whose_evaluation_message_was_lost(world: World) -> None:
    doc = access_request()
    world.lifecycle.submit(body(doc))
    [lost] = world.bus.receive("access-requests")
    world.bus.dead_letter(lost, "MaxDeliveryCountExceeded")
    world.clock.advance(61)
    world.lifecycle.reconcile()
    world.worker.drain()
    assert world.state(doc["requestId"]) == "active"


def test_a_later_overlapping_hold_tells_the_provider_its_expiry(world: World) -> None:
    # WHEN a short request and then a longer one hold the same key
    short_id = world.submit(access_request(duration="PT10S"))
    long_id = world.submit(access_request(duration="PT1H"))
    # THEN the provider heard each hold's expiry (PIM expires grants itself), the later one last, and there
    # is still one assignment
    expiries = [call.args[4] for call in world.grants.calls_to("create_assignment")]
    assert expiries == [world.store.holds_for_request(rid)[0].expires_at for rid in (short_id, long_id)]
    assert len(world.marked()) == 1
