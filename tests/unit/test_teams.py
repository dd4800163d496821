"""The Teams outgoing webhook: HMAC signature, replay guard, command parsing and payloads."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest

from shared.domain.errors import AuthError
from shared.teams import (
    InvalidActivity,
    InvalidCommand,
    ReplayGuard,
    TeamsCommand,
    clean_text,
    outgoing_payload,
    parse_activity,
    parse_command,
    reply,
    request_id_named_in,
    sign,
    verify_signature,
)
from tests.fakes.clock import FakeClock

SECRET = b"0123456789abcdef0123456789abcdef"
RID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
OID = "aaaaaaaa-0000-4000-8000-00000000000a"


def refused(fn: object, *args: object) -> str:
    with pytest.raises(AuthError) as caught:
        fn(*args)  # type: ignore[operator]
    assert caught.value.status == 401
    return str(caught.value)


# ---------------------------------------------------------------- signature


def test_sign_is_base64_hmac_sha256_of_the_raw_body():
    body = b'{"type":"message"}'
    expected = base64.b64encode(hmac.new(SECRET, body, hashlib.sha256).digest()).decode()
    assert sign(SECRET, body) == f"HMAC {expected}"


def test_a_correct_signature_verifies():
    body = outgoing_payload(f"approve {RID}", OID, "Alice")
    verify_signature(SECRET, body, sign(SECRET, body))
    verify_signature(SECRET, body, "hmac " + sign(SECRET, body).split(" ", 1)[1])


def test_missing_malformed_and_forged_signatures_are_refused_distinctly():
    body = outgoing_payload(f"approve {RID}", OID, "Alice")
    missing = refused(verify_signature, SECRET, body, None)
    blank = refused(verify_signature, SECRET, body, "   ")
    wrong_scheme = refused(verify_signature, SECRET, body, "Bearer " + sign(SECRET, body).split()[1])
    not_base64 = refused(verify_signature, SECRET, body, "HMAC !!!not-base64!!!")
    wrong_length = refused(verify_signature, SECRET, body, "HMAC " + "A" * 44)
    forged = refused(verify_signature, SECRET, body, sign(b"another secret", body))
    tampered = refused(verify_signature, SECRET, body + b" ", sign(SECRET, body))
    assert "missing" in missing and "missing" in blank
    assert "malformed" in wrong_scheme and "malformed" in not_base64 and "malformed" in wrong_length
    assert "does not match" in forged and "does not match" in tampered
    assert len({missing, wrong_scheme, forged}) == 3


def test_an_empty_secret_is_a_configuration_error_not_a_pass():
    with pytest.raises(ValueError):
        verify_signature(b"", b"{}", sign(b"", b"{}"))


# ---------------------------------------------------------------- replay guard


def stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_replay_guard_accepts_once_and_refuses_the_same_id_again():
    clock = FakeClock()
    guard = ReplayGuard(clock)
    guard.check("1001", stamp(clock.now()))
    assert "already received" in refused(guard.check, "1001", stamp(clock.now()))
    guard.check("1002", stamp(clock.now()))


@pytest.mark.parametrize("offset", [timedelta(minutes=-5, seconds=-1), timedelta(minutes=5, seconds=1)])
def test_replay_guard_refuses_timestamps_more_than_five_minutes_away(offset: timedelta):
    clock = FakeClock()
    guard = ReplayGuard(clock)
    assert "more than 5 minutes" in refused(guard.check, "1", stamp(clock.now() + offset))


@pytest.mark.parametrize("offset", [timedelta(minutes=-5), timedelta(minutes=5)])
def test_replay_guard_accepts_the_edges_of_the_window(offset: timedelta):
    clock = FakeClock()
    ReplayGuard(clock).check("1", stamp(clock.now() + offset))


@pytest.mark.parametrize(("activity_id", "timestamp", "message"), [
    ("", "2026-11-26T09:00:00Z", "no id"),
    ("1", "", "no timestamp"),
    ("1", "yesterday", "not ISO 8601"),
    ("1", "2026-11-26T09:00:00", "no time zone"),
])
def test_replay_guard_refuses_activities_it_cannot_check(activity_id: str, timestamp: str, message: str):
    assert message in refused(ReplayGuard(FakeClock()).check, activity_id, timestamp)


def test_replay_guard_forgets_ids_once_their_timestamp_is_stale_anyway():
    clock = FakeClock()
    guard = ReplayGuard(clock)
    sent = clock.now()
    guard.check("1", stamp(sent))
    clock.advance(timedelta(minutes=4))
    guard.check("2", stamp(clock.now()))
    assert len(guard) == 2
    clock.advance(timedelta(minutes=1, seconds=1))
    guard.check("3", stamp(clock.now()))
    # "1" is forgotten, but a replay of it is still refused: its timestamp is now stale.
    assert len(guard) == 2
    assert "more than 5 minutes" in refused(guard.check, "1", stamp(sent))


def test_replay_guard_memory_is_bounded():
    clock = FakeClock()
    guard = ReplayGuard(clock, capacity=3)
    for n in range(10):
        guard.check(str(n), stamp(clock.now()))
    assert len(guard) == 3
    assert "already received" in refused(guard.check, "9", stamp(clock.now()))


# ---------------------------------------------------------------- commands


def test_clean_text_strips_mentions_html_and_nbsp():
    text = "<at>jitgate</at>&nbsp;approve <b>now</b>\u00a0please &amp; thanks\n"
    assert clean_text(text) == "approve now please & thanks"
    assert clean_text("<AT id='0'>Jit Gate</AT> status x") == "status x"


@pytest.mark.parametrize(("text", "command"), [
    (f"<at>jitgate</at> approve {RID}", TeamsCommand("approve", RID)),
    (f"<at>jitgate</at> APPROVE {RID.upper()} looks good&nbsp;to me",
     TeamsCommand("approve", RID, "looks good to me")),
    (f"<at>jitgate</at> deny {RID} change freeze until Monday",
     TeamsCommand("deny", RID, "change freeze until Monday")),
    (f"<p><at>jitgate</at>&nbsp;status&nbsp;{RID}</p>", TeamsCommand("status", RID)),
    ("<at>jitgate</at> help", TeamsCommand("help")),
    ("<at>jitgate</at>", TeamsCommand("help")),
])
def test_parse_command(text: str, command: TeamsCommand):
    assert parse_command(text) == command


# Zero-width space and joiner, byte-order mark, left-to-right mark, right-to-left override, word joiner, soft
# hyphen: invisible, and easily pasted along with a request id.
FORMAT_CHARACTERS = ["\u200b", "\u200d", "\ufeff", "\u200e", "\u202e", "\u2060", "\u00ad"]


@pytest.mark.parametrize("invisible", FORMAT_CHARACTERS)
def test_format_characters_in_a_command_are_ignored(invisible: str):
    rid = RID[:8] + invisible + RID[8:]
    text = f"<at>jitgate</at> {invisible}approve{invisible} {rid} looks{invisible} good{invisible}"
    assert parse_command(text) == TeamsCommand("approve", RID, "looks good")


@pytest.mark.parametrize("placeholder", ["[comment]", "[ Comment ]", "<comment>", "&lt;comment&gt;"])
def test_an_approval_with_the_placeholder_copied_from_the_card_has_no_comment(placeholder: str):
    assert parse_command(f"<at>jitgate</at> approve {RID} {placeholder}") == TeamsCommand("approve", RID)
    assert parse_command(f"<at>jitgate</at> approve {RID} {placeholder} ok for INC-1") == (
        TeamsCommand("approve", RID, "ok for INC-1")
    )


@pytest.mark.parametrize("placeholder", ["&lt;reason&gt;", "<reason>", "[reason]", "&lt; REASON &gt;"])
def test_a_denial_with_the_placeholder_copied_from_the_card_is_refused(placeholder: str):
    with pytest.raises(InvalidCommand, match="a denial needs a real reason the requester can act on"):
        parse_command(f"<at>jitgate</at> deny {RID} {placeholder}")
    assert parse_command(f"<at>jitgate</at> deny {RID} {placeholder} change freeze") == (
        TeamsCommand("deny", RID, "change freeze")
    )


def test_a_comment_that_only_mentions_the_word_is_kept():
    assert parse_command(f"<at>jitgate</at> approve {RID} comment: reason [1]") == (
        TeamsCommand("approve", RID, "comment: reason [1]")
    )


@pytest.mark.parametrize(("text", "message"), [
    ("<at>jitgate</at> grant everything", "I do not know “grant”"),
    ("<at>jitgate</at> approve", "needs a request id"),
    ("<at>jitgate</at> approve INC-4711", "is not a request id"),
    (f"<at>jitgate</at> deny {RID}", "needs a real reason"),
    (f"<at>jitgate</at> deny {RID}   ", "needs a real reason"),
    (f"<at>jitgate</at> status {RID} please", "takes only a request id"),
    (f"<at>jitgate</at> approve {RID} " + "x" * 1001, "longer than 1000"),
])
def test_parse_command_explains_what_is_wrong(text: str, message: str):
    with pytest.raises(InvalidCommand) as caught:
        parse_command(text)
    assert message in str(caught.value)


# ---------------------------------------------------------------- payloads and replies


def test_outgoing_payload_is_a_teams_message_activity():
    at = datetime(2026, 11, 26, 9, 30, 15, 123456, tzinfo=UTC)
    body = outgoing_payload(f"approve {RID} ok", OID, "Alice", activity_id="1485983408511", timestamp=at)
    doc = json.loads(body)
    assert doc["type"] == "message"
    assert doc["id"] == "1485983408511"
    assert doc["timestamp"] == "2026-11-26T09:30:15.123Z"
    assert doc["channelId"] == "msteams"
    assert doc["from"]["aadObjectId"] == OID and doc["from"]["name"] == "Alice"
    assert doc["from"]["id"].startswith("29:")
    assert doc["text"] == f"<at>jitgate</at> approve {RID} ok"
    assert {"tenant", "team", "channel"} <= set(doc["channelData"])
    assert any(e["type"] == "mention" for e in doc["entities"])
    assert parse_command(doc["text"]) == TeamsCommand("approve", RID, "ok")


def test_outgoing_payload_keeps_an_existing_mention_and_gives_unique_ids():
    first = json.loads(outgoing_payload(f"<at>bot</at> status {RID}", OID, "Alice"))
    second = json.loads(outgoing_payload(f"status {RID}", OID, "Alice"))
    assert first["text"] == f"<at>bot</at> status {RID}"
    assert first["id"] != second["id"]


def test_parse_activity_reads_sender_text_id_and_timestamp():
    body = outgoing_payload(f"approve {RID}", OID.upper(), "Alice", activity_id="42")
    activity = parse_activity(body)
    assert activity.id == "42"
    assert activity.aad_object_id == OID
    assert activity.name == "Alice"
    assert activity.text.endswith(f"approve {RID}")
    assert activity.timestamp.endswith("Z")


@pytest.mark.parametrize("body", [b"not json", b"\xff\xfe", b"[]", b'{"type": "invoke"}'])
def test_parse_activity_refuses_what_is_not_a_message(body: bytes):
    with pytest.raises(InvalidActivity):
        parse_activity(body)


def test_parse_activity_tolerates_missing_and_mistyped_fields():
    activity = parse_activity(b'{"type": "message", "from": "x", "text": 5}')
    assert (activity.id, activity.text, activity.aad_object_id) == ("", "", "")


def test_request_id_named_in_a_body():
    assert request_id_named_in(outgoing_payload(f"deny {RID} no", OID, "A")) == RID
    assert request_id_named_in(outgoing_payload("help", OID, "A")) is None
    assert request_id_named_in(b"garbage") is None


def test_reply():
    assert reply("done") == {"type": "message", "text": "done"}


def test_replies_quote_what_was_typed_never_a_python_repr():
    with pytest.raises(InvalidCommand) as caught:
        parse_command("<at>jitgate</at> approve it's-me")
    assert str(caught.value).startswith("“it's-me” is not a request id")
    assert "\\" not in str(caught.value) and "'it" not in str(caught.value)
