"""Text for people: durations, instants, states and lists as a person reads them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.domain.decision import Decision, Outcome
from shared.domain.lifecycle import Approval, RequestRecord, RequestState
from shared.text import (
    clauses,
    counted,
    duration_in_words,
    instant_in_words,
    listed,
    quoted,
    reason_in_words,
    roughly,
    state_in_words,
    when_in_words,
)

AT = datetime(2026, 12, 6, 5, 17, 16, 250_000, tzinfo=UTC)
RID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (timedelta(hours=1), "1 hour"),
        (timedelta(hours=1, minutes=30), "1 hour 30 minutes"),
        (timedelta(hours=2), "2 hours"),
        (timedelta(days=1, hours=4), "1 day 4 hours"),
        (timedelta(days=2, seconds=1), "2 days 1 second"),
        (timedelta(seconds=45), "45 seconds"),
        (timedelta(minutes=1, seconds=0.4), "1 minute"),
        (timedelta(0), "0 seconds"),
        (timedelta(milliseconds=300), "less than a second"),
        (timedelta(minutes=-5), "minus 5 minutes"),
    ],
)
def test_duration_in_words(value: timedelta, words: str) -> None:
    assert duration_in_words(value) == words


def test_instant_in_words_is_to_the_second_in_utc_with_its_zone() -> None:
    assert instant_in_words(AT) == "2026-12-06 05:17:16 UTC"
    paris = AT.astimezone(timezone(timedelta(hours=1)))
    assert instant_in_words(paris) == "2026-12-06 05:17:16 UTC"
    with pytest.raises(ValueError, match="time zone"):
        instant_in_words(AT.replace(tzinfo=None))


@pytest.mark.parametrize(
    ("offset", "words"),
    [
        (timedelta(hours=1), "2026-12-06 05:17:16 UTC (in 1 hour)"),
        (timedelta(minutes=59, seconds=50), "2026-12-06 05:17:16 UTC (in 1 hour)"),
        (timedelta(hours=1, minutes=30, seconds=10), "2026-12-06 05:17:16 UTC (in 1 hour 30 minutes)"),
        (timedelta(days=2, hours=3, minutes=4), "2026-12-06 05:17:16 UTC (in 2 days 3 hours)"),
        (timedelta(seconds=20), "2026-12-06 05:17:16 UTC (in less than a minute)"),
        (timedelta(0), "2026-12-06 05:17:16 UTC (just now)"),
        (timedelta(seconds=-20), "2026-12-06 05:17:16 UTC (just now)"),
        (timedelta(minutes=-5), "2026-12-06 05:17:16 UTC (5 minutes ago)"),
        (timedelta(days=-1, hours=-2), "2026-12-06 05:17:16 UTC (1 day 2 hours ago)"),
    ],
)
def test_when_in_words_says_the_instant_and_how_far_it_is_from_now(offset: timedelta, words: str) -> None:
    assert when_in_words(AT, AT - offset) == words
    assert roughly(-offset) == roughly(offset)


@pytest.mark.parametrize(
    ("items", "words"),
    [([], ""), (["a"], "a"), (["a", "b"], "a and b"), (["a", "b", "c"], "a, b and c")],
)
def test_listed(items: list[str], words: str) -> None:
    assert listed(items) == words


def test_counted_and_clauses_and_quoted() -> None:
    assert (counted(1, "approval"), counted(2, "approval"), counted(0, "hour")) == ("1 approval", "2 approvals",
                                                                                     "0 hours")
    assert clauses(["Owner is never granted just in time.", " too long ", ""]) == (
        "Owner is never granted just in time; too long"
    )
    assert quoted("grant") == "“grant”"
    assert quoted("x" * 100, 10) == "“xxxxxxxxx…”"


def record(state: RequestState, **fields: object) -> RequestRecord:
    return RequestRecord.model_validate(
        {"request_id": RID, "state": state, "created_at": AT, "updated_at": AT, **fields}
    )


def approval(required: int) -> Decision:
    return Decision(outcome=Outcome.APPROVAL, rule="prod", reasons=["r"], required_approvals=required,
                    approver_groups=["platform-approvers"], approval_deadline=timedelta(hours=4))


def test_state_in_words_counts_the_approvals_still_missing() -> None:
    one_of_two = record(
        RequestState.PENDING_APPROVAL,
        decision=approval(2),
        approvals=[Approval(approver_id="a", at=AT)],
        approval_deadline=AT + timedelta(hours=4),
    )
    assert state_in_words(one_of_two) == "waiting for 1 more approval (deadline 2026-12-06 09:17:16 UTC)"
    none_yet = record(RequestState.PENDING_APPROVAL, decision=approval(2))
    assert state_in_words(none_yet) == "waiting for 2 more approvals"


@pytest.mark.parametrize(
    ("state", "fields", "words"),
    [
        (RequestState.RECEIVED, {}, "received, not evaluated yet"),
        (RequestState.APPROVED, {}, "approved, being granted"),
        (RequestState.ACTIVE, {"expires_at": AT}, "active until 2026-12-06 05:17:16 UTC"),
        (RequestState.REVOKED, {}, "revoked"),
        (RequestState.REJECTED, {}, "rejected as invalid"),
        (RequestState.DENIED, {}, "denied by an approver"),
        (RequestState.EXPIRED, {}, "expired without a decision"),
        (RequestState.FAILED, {}, "failed: the grant could not be made"),
    ],
)
def test_state_in_words(state: RequestState, fields: dict[str, object], words: str) -> None:
    assert state_in_words(record(state, **fields)) == words


def test_reason_in_words_says_why_a_request_ended_without_dots_before_semicolons() -> None:
    denied = record(RequestState.DENIED, denial={"by": "b", "reason": "change freeze.", "at": "x"})
    assert reason_in_words(denied) == "change freeze"
    by_policy = Decision(outcome=Outcome.DENY, rule="owner-never",
                         reasons=["Owner is never granted just in time.", "rule 'owner-never' matches"])
    rejected = record(RequestState.REJECTED, decision=by_policy)
    assert reason_in_words(rejected) == "Owner is never granted just in time; rule 'owner-never' matches"
    invalid = record(RequestState.REJECTED, errors=[{"loc": "duration", "msg": "must be positive"}])
    assert reason_in_words(invalid) == "duration: must be positive"
    failed = record(RequestState.FAILED, failure="provider refused.")
    assert reason_in_words(failed) == "provider refused"
    assert reason_in_words(record(RequestState.REVOKED)) == ""
