"""The one guarded way to read JSON that came from outside: HTTP bodies, bus messages, identity headers.

`parse_json` answers with the document or with `MalformedBody` saying why, for every input: too large,
not UTF-8 (a byte order mark included), nested too deeply, not JSON, duplicate keys, NaN or Infinity, numbers
out of range and lone surrogates. Nothing else escapes it (no RecursionError, no UnicodeDecodeError), so a
caller maps one exception to its own 4xx.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .errors import JitgateError

# NB. Every document jitgate reads is at most a few levels deep (an access request 3, a Teams activity 4);
# the limit is far below the depth at which Python's parser would exhaust the stack.
MAX_DEPTH = 32

_UTF8_BOM = b"\xef\xbb\xbf"
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_OPENING = frozenset(b"[{")
_SURROGATE = re.compile("[\ud800-\udfff]")


class MalformedBody(JitgateError):
    """A body jitgate will not read as JSON; the message says why, in words for the sender."""


class BodyTooLarge(MalformedBody):
    """A body over its limit, refused without being parsed."""


def parse_json(raw: bytes, limit: int) -> Any:
    """The JSON document in `raw` (UTF-8, at most `limit` bytes and MAX_DEPTH levels), or MalformedBody."""
    if len(raw) > limit:
        raise BodyTooLarge(f"the body is {len(raw)} bytes; the limit is {limit}")
    if raw.startswith(_UTF8_BOM):
        raise MalformedBody("it starts with a byte order mark; send UTF-8 without one")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBody(f"it is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    # NB. A document cannot nest deeper than it has brackets: most have a handful, and are not scanned for depth.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _deeper_than(raw, MAX_DEPTH):
        raise MalformedBody(f"it is nested more than {MAX_DEPTH} levels deep")
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants,
                         parse_float=_finite)
    except ValueError as exc:  # JSONDecodeError, a duplicate key, NaN, the integer digit limit
        raise MalformedBody(str(exc)) from None
    # NB. UTF-8 text (decoded strictly) carries no surrogate: only a \u escape makes one.
    if "\\u" in text:
        _check_strings(doc)
    return doc


def _deeper_than(raw: bytes, limit: int) -> bool:
    """Whether the arrays and objects in `raw` nest more than `limit` deep; brackets inside strings do not
    count. Asked before parsing, so that the parser never recurses that far."""
    depth = 0
    for byte in _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS):
        depth += 1 if byte in _OPENING else -1
        if depth > limit:
            return True
    return False


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # NB. Parsers disagree on which duplicate wins; a body that means two things is refused.
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise ValueError(f"duplicate key {key!r}")
        doc[key] = value
    return doc


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(literal: str) -> float:
    """A number with a fraction or an exponent, refused when it overflows to infinity (1e999), which parses but
    cannot be stored or echoed."""
    value = float(literal)
    if not math.isfinite(value):
        raise MalformedBody("a number is out of range")
    return value


def _check_strings(doc: Any) -> None:
    """Refuse a lone surrogate escape (\\ud800) in any key or string: no UTF-8 text can carry it."""
    pending = [doc]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            pending.extend(value)
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, str) and _SURROGATE.search(value):
            raise MalformedBody("a string holds a lone surrogate escape (\\ud800-\\udfff), which is not a character")
