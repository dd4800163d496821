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


# ---------------------------------------------------------------- what the shortcuts skip is still refused


@pytest.mark.parametrize("raw", [
    b"[" + b"1" * 400 + b".5]",  # no exponent, still beyond a float
    b'{"a": [{"b": -1e999}]}',
    b'{"n": 1E400}',
])
def test_a_number_beyond_a_float_is_refused_wherever_it_is(raw: bytes) -> None:
    with pytest.raises(MalformedBody, match="out of range"):
        parse_json(raw, 65536)


def test_many_brackets_shallow_are_read_and_a_deep_nesting_among_them_is_refused() -> None:
    shallow = json.dumps([{"a": [1]} for _ in range(40)]).encode()
    assert len(parse_json(shallow, 65536)) == 40
    with pytest.raises(MalformedBody, match="nested more than"):
        parse_json(b"[" * 33 + b"]" * 33, 65536)


def test_an_escaped_surrogate_pair_is_a_character_and_a_lone_one_deep_in_a_key_is_refused() -> None:
    assert parse_json(b'{"e": "\\ud83d\\ude00"}', 65536) == {"e": "\U0001f600"}
    with pytest.raises(MalformedBody, match="lone surrogate"):
        parse_json(b'{"a": [{"ok": 1, "\\ud83d": 2}]}', 65536)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(doc=st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
), ascii_only=st.booleans())
def test_any_json_within_the_limits_reads_back_as_it_was_written(doc: object, ascii_only: bool) -> None:
    assert parse_json(json.dumps(doc, ensure_ascii=ascii_only).encode(), 1 << 20) == doc
