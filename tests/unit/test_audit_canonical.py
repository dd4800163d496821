"""`make_event` builds an event's canonical text from plain values instead of dumping the model (issue #10, CPU per
lifecycle). Not one byte of any event or hash may change: pinned by golden events hashed by the implementation
before, and by Hypothesis against that implementation (`reference_event`, kept here as it was)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.domain.audit import (
    SYSTEM,
    Actor,
    AuditEvent,
    EventType,
    canonical_document,
    canonical_json,
    event_id,
    hash_of,
    make_event,
    verify_chain,
)

AT = datetime(2026, 12, 6, 13, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
JANE = Actor(principal_id="dddddddd-0000-4000-8000-00000000000d", kind="user")
RID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"


def reference_event(
    request_id: str, seq: int, prev_hash: str, type: EventType, at: datetime, actor: Actor, data: dict[str, Any]
) -> tuple[AuditEvent, str]:
    """`make_event` and the text a store wrote for it, as they were before issue #10's second pass."""
    unsigned = AuditEvent(
        id=event_id(request_id, seq),
        request_id=request_id,
        seq=seq,
        type=type,
        at=at.astimezone(UTC),
        actor=actor,
        data=json.loads(json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)),
        prev_hash=prev_hash,
        hash="",
    )
    body = unsigned.document()
    body.pop("hash")
    digest = hash_of(body)
    body["hash"] = digest
    return unsigned.model_copy(update={"hash": digest}), json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


# ---------------------------------------------------------------- golden events (hashed before the change)


def test_an_event_hashes_and_is_stored_exactly_as_before() -> None:
    data = {"reason": 'grüße "quoted" \u2028 \\', "n": 2, "x": 1.5e16, "nested": {"b": [1, None, True, (2, 3)],
            "a": "z"}, "big": 10**30}
    event = make_event(RID, 3, "ab" * 32, EventType.GRANT_REVOKED, AT, JANE, data)
    assert event.hash == "73b6d25282739d76edf52f65a8640401ef35543cc0d447f2e8ebff98ce32e0a3"
    assert canonical_document(event) == (
        '{"actor":{"kind":"user","principalId":"dddddddd-0000-4000-8000-00000000000d"},'
        '"at":"2026-12-06T12:00:00.123456Z","data":{"big":1000000000000000000000000000000,"n":2,'
        '"nested":{"a":"z","b":[1,null,true,[2,3]]},"reason":"grüße \\"quoted\\" \u2028 \\\\","x":1.5e+16},'
        '"hash":"73b6d25282739d76edf52f65a8640401ef35543cc0d447f2e8ebff98ce32e0a3",'
        f'"id":"{RID}:000003","prevHash":"{"ab" * 32}","requestId":"{RID}","seq":3,"type":"grant.revoked"}}'
    )


def test_a_non_finite_number_is_hashed_as_null_as_before() -> None:
    data = {"reason": 'grüße "quoted"', "n": 2, "x": 1.5, "nested": {"b": [1, None, True], "a": "z"},
            "lateness": float("inf")}
    event = make_event(RID, 3, "ab" * 32, EventType.GRANT_REVOKED, AT, JANE, data)
    assert event.hash == "4b33b04e3871a6563deff5e4a046ef6fa91adb24084b7451f65e2820b9ccff3e"
    assert '"data":{"lateness":null,"n":2,' in canonical_document(event)


def test_number_keys_are_ordered_as_the_stored_text_orders_them_as_before() -> None:
    event = make_event("r1", 0, "", EventType.REQUEST_RECEIVED, AT, SYSTEM, {10: "ten", 9: "nine"})
    assert event.hash == "844e472390e5af68ca7b7381be87fcc1eaee164e1ea90df41e55b676ee0be240"
    assert '"data":{"10":"ten","9":"nine"}' in canonical_document(event)


# ---------------------------------------------------------------- any event, against the implementation before

_keys = st.text(max_size=6)
_scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
    | st.sampled_from(["NaN", "Infinity", "-Infinity", "\\u0000", '"', "\u2028", "\x00", "é", "\U0001f600"])
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner) | st.dictionaries(_keys, inner, max_size=4)
    | st.dictionaries(st.integers(-50, 50), inner, max_size=3),
    max_leaves=12,
)
_instants = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]),
)
_actors = st.builds(Actor, principal_id=st.text(max_size=20), kind=st.sampled_from(["user", "service", "system"]))


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    request_id=st.text(max_size=40),
    seq=st.integers(min_value=0, max_value=10**7),
    prev_hash=st.text(max_size=64),
    type=st.sampled_from(list(EventType)),
    at=_instants,
    actor=_actors,
    data=st.dictionaries(_keys, _values, max_size=5),
)
def test_every_event_is_the_event_it_was_before_to_the_byte(
    request_id: str, seq: int, prev_hash: str, type: EventType, at: datetime, actor: Actor, data: dict[str, Any]
) -> None:
    expected = reference_event(request_id, seq, prev_hash, type, at, actor, data)
    event = make_event(request_id, seq, prev_hash, type, at, actor, data)
    before, stored = expected
    assert event.hash == before.hash
    assert canonical_document(event) == stored
    assert canonical_json(event.document()) == canonical_json(before.document())
    assert event.computed_hash() == event.hash
    assert verify_chain(request_id, [event]).ok is (seq == 0 and prev_hash == "")


@settings(max_examples=200, deadline=None, derandomize=True)
@given(data=st.dictionaries(_keys, _values | st.just(float("nan")) | st.just("\ud800"), max_size=4))
def test_what_could_not_be_hashed_before_cannot_be_now(data: dict[str, Any]) -> None:
    try:
        reference_event("r", 0, "", EventType.REQUEST_RECEIVED, AT, SYSTEM, data)
    except Exception as refused:
        try:
            make_event("r", 0, "", EventType.REQUEST_RECEIVED, AT, SYSTEM, data)
        except type(refused):
            return
        raise AssertionError(f"the reference refused it ({refused!r}), make_event did not") from None
    make_event("r", 0, "", EventType.REQUEST_RECEIVED, AT, SYSTEM, data)


def test_a_negative_seq_and_an_unknown_type_are_refused_as_before() -> None:
    for seq, type in ((-1, EventType.REQUEST_RECEIVED), (0, "no.such")):
        try:
            make_event("r", seq, "", type, AT, SYSTEM, {})  # type: ignore[arg-type]
        except ValueError:
            continue
        raise AssertionError(f"seq {seq}, type {type} accepted")
