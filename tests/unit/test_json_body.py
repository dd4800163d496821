"""The one guarded JSON parser (`shared.domain.json_body`): every outside body is read through it, and nothing
but MalformedBody, with a reason a sender can act on, ever escapes it."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.domain.json_body import MAX_DEPTH, BodyTooLarge, MalformedBody, parse_json

LIMIT = 64 * 1024


def nested(depth: int, inner: str = "1") -> bytes:
    return ("[" * depth + inner + "]" * depth).encode()


def refusal(raw: bytes, limit: int = LIMIT) -> str:
    with pytest.raises(MalformedBody) as caught:
        parse_json(raw, limit)
    return str(caught.value)


def test_a_plain_document_is_read() -> None:
    assert parse_json(b'{"reason": "done", "n": [1, 2.5, null, true]}', LIMIT) == {
        "reason": "done", "n": [1, 2.5, None, True]}


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1000, 5000, 10_000])
def test_nesting_beyond_the_limit_is_refused_before_parsing(depth: int) -> None:
    assert f"nested more than {MAX_DEPTH} levels" in refusal(nested(depth))
    assert f"nested more than {MAX_DEPTH} levels" in refusal(('{"a":' * depth + "1" + "}" * depth).encode())


def test_nesting_up_to_the_limit_is_read() -> None:
    doc = parse_json(nested(MAX_DEPTH), LIMIT)
    for _ in range(MAX_DEPTH):
        doc = doc[0]
    assert doc == 1


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = "[" * 5000 + '\\"' + "{" * 5000
    assert parse_json(json.dumps({"reason": text}).encode(), LIMIT) == {"reason": text}


def test_an_unclosed_nesting_is_refused_whatever_its_depth() -> None:
    assert "nested" in refusal(b"[" * 40_000)
    assert "Expecting value" in refusal(b"[" * 10)


def test_a_body_over_the_limit_is_refused_as_too_large() -> None:
    with pytest.raises(BodyTooLarge, match="the body is 11 bytes; the limit is 10"):
        parse_json(b'{"a": "bc"}', 10)


@pytest.mark.parametrize(("raw", "reason"), [
    (b"\xef\xbb\xbf{}", "byte order mark"),
    ('{"a": "b"}'.encode("utf-16"), "not UTF-8"),
    (b'{"a": "\xff"}', "not UTF-8 (invalid start byte at byte 7)"),
    (b'{"a": "\xed\xa0\x80"}', "not UTF-8"),  # an encoded surrogate
    (b'{"a": 1, "a": 2}', "duplicate key 'a'"),
    (b"[NaN]", "NaN is not JSON"),
    (b'{"a": -Infinity}', "-Infinity is not JSON"),
    (b"[1e999]", "out of range"),
    (b'{"reason": "\\ud800"}', "lone surrogate"),
    (b'{"\\udfff": 1}', "lone surrogate"),
    (b"[" + b"9" * 5000 + b"]", "digits"),
    (b"", "Expecting value"),
    (b"{} {}", "Extra data"),
])
def test_what_is_not_one_utf8_json_document_is_refused_with_a_reason(raw: bytes, reason: str) -> None:
    assert reason in refusal(raw)


def test_a_surrogate_pair_is_a_character() -> None:
    assert parse_json(b'{"a": "\\ud83d\\ude00"}', LIMIT) == {"a": "\U0001f600"}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048) | st.text(alphabet='[]{}"\\:,0 aé\ud800', max_size=4096).map(
    lambda t: t.encode("utf-8", "surrogatepass")))
def test_nothing_but_malformed_body_escapes(raw: bytes) -> None:
    try:
        parse_json(raw, 1024)
    except MalformedBody as exc:
        assert str(exc)
