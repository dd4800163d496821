"""Pure domain: durations, the request model, the state machine, the hash chain, grant keys."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta

import pytest

from shared.domain.audit import SYSTEM, EventType, make_event, verify_chain
from shared.domain.durations import format_duration, parse_duration
from shared.domain.errors import IllegalTransition, InvalidRequest
from shared.domain.ledger import Assignment, GrantKey, marker_for
from shared.domain.lifecycle import RequestRecord, RequestState, check_transition
from shared.domain.request import MAX_BODY_BYTES, parse_access_request
from tests.fakes.world import DEV_RG, access_request


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("PT2H", 7200),
        ("PT30M", 1800),
        ("PT5S", 5),
        ("P1D", 86400),
        ("P1DT1H", 90000),
        ("PT0.5S", 0.5),
        ("P1W", 604800),
    ],
)
def test_durations_parse_and_format_round_trip(text: str, seconds: float) -> None:
    value = parse_duration(text)
    assert value.total_seconds() == seconds
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize("text", ["", "P", "PT", "2H", "PT2h", "P1Y", "P1M", "-PT1H", "PT1H ", "P1DT"])
def test_durations_refuse_what_is_not_a_fixed_iso_duration(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_request_ids_and_principals_are_normalised_to_lower_case() -> None:
    doc = access_request(request_id="1B4E28BA-2FA1-11D2-883F-0016D3CCA427")
    doc["requester"]["principalId"] = doc["requester"]["principalId"].upper()
    request = parse_access_request(json.dumps(doc))
    assert request.request_id == "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    assert request.requester.principal_id.islower()


def test_all_problems_are_reported_together() -> None:
    doc = access_request(duration="PT0S", colour="red")
    doc["target"]["scope"] = DEV_RG + "/"
    with pytest.raises(InvalidRequest) as caught:
        parse_access_request(json.dumps(doc))
    assert {e.loc for e in caught.value.errors} == {"duration", "colour", "target.scope"}
    assert caught.value.request_id == doc["requestId"]


def test_oversize_body_is_refused_before_parsing() -> None:
    with pytest.raises(InvalidRequest, match="limit"):
        parse_access_request(b" " * (MAX_BODY_BYTES + 1))


def test_fingerprint_ignores_formatting_but_not_content() -> None:
    doc = access_request()
    a = parse_access_request(json.dumps(doc))
    b = parse_access_request(json.dumps(doc, indent=4))
    c = parse_access_request(json.dumps({**doc, "duration": "PT59M"}))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_state_machine_allows_the_story_and_refuses_the_rest() -> None:
    path = [
        RequestState.RECEIVED,
        RequestState.PENDING_APPROVAL,
        RequestState.APPROVED,
        RequestState.ACTIVE,
        RequestState.REVOKED,
    ]
    for current, target in itertools.pairwise(path):
        check_transition(current, target)
    for terminal in (
        RequestState.REVOKED,
        RequestState.REJECTED,
        RequestState.DENIED,
        RequestState.EXPIRED,
        RequestState.FAILED,
    ):
        assert terminal.terminal
        with pytest.raises(IllegalTransition):
            check_transition(terminal, RequestState.ACTIVE)
    with pytest.raises(IllegalTransition):
        check_transition(RequestState.RECEIVED, RequestState.ACTIVE)
    with pytest.raises(IllegalTransition):
        check_transition(RequestState.ACTIVE, RequestState.APPROVED)


def _chain(n: int) -> list:  # type: ignore[type-arg]
    now = datetime(2026, 11, 26, tzinfo=UTC)
    record = RequestRecord(request_id="r1", state=RequestState.RECEIVED, created_at=now, updated_at=now)
    for i in range(n):
        record.emit(EventType.REQUEST_RECEIVED, now + timedelta(seconds=i), {"i": i})
    return list(record.pending_events)


def test_chain_verifies_and_names_the_first_broken_link() -> None:
    events = _chain(5)
    assert verify_chain("r1", events).ok
    tampered = [*events[:2], events[2].model_copy(update={"data": {"i": 99}}), *events[3:]]
    report = verify_chain("r1", tampered)
    assert (report.ok, report.broken_seq) == (False, 2)
    assert "hash" in report.reason
    missing = [*events[:1], *events[2:]]
    assert verify_chain("r1", missing).broken_seq == 1
    relinked = [
        *events[:3],
        make_event("r1", 3, "f" * 64, EventType.GRANT_REVOKED, datetime.now(UTC), SYSTEM, {}),
    ]
    assert verify_chain("r1", relinked).reason == "prevHash does not match the previous event"


def test_event_documents_round_trip_with_their_hash() -> None:
    from shared.domain.audit import AuditEvent

    for event in _chain(3):
        again = AuditEvent.model_validate(json.loads(json.dumps(event.document())))
        assert again == event and again.computed_hash() == event.hash


def test_assignment_names_are_deterministic_and_case_insensitive() -> None:
    a = GrantKey.of("local", "ABC", "Role", "/Subscriptions/X")
    b = GrantKey.of("local", "abc", "role", "/subscriptions/x")
    assert a == b and a.assignment_name() == b.assignment_name()
    assert a.assignment_name() != GrantKey.of("local", "abc", "role", "/subscriptions/y").assignment_name()


def test_marker_names_the_request() -> None:
    assignment = Assignment(
        name="n",
        provider="local",
        principal_id="p",
        role_definition_id="r",
        scope="/s",
        description=marker_for("req-1"),
    )
    assert assignment.marked_request_id == "req-1"
    assert (
        Assignment(
            name="n",
            provider="local",
            principal_id="p",
            role_definition_id="r",
            scope="/s",
            description="made by hand",
        ).marked_request_id
        is None
    )
