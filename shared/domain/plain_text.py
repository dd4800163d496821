"""What text a person may type into an access request: the one definition, for jitgate and for Backstage.

The request model checks the requester's name and the justification with `text_problem`; the Backstage module checks
the same fields with tables generated from here (`shared/schema.py`, written by `jitgate schema write` and checked
for staleness by the tests), so that a text its dry run accepts jitgate accepts too.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator

# NB. By Unicode category rather than a list: control (Cc), format (Cf: bidi overrides, zero-width
# joiners, BOM, soft hyphen), line/paragraph separators (Zl, Zp) and unassigned/private code points can
# forge lines or hide text in Teams cards, logs and terminals.
FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn"})
# What a multi-line text (the justification) may hold of the above.
MULTI_LINE_ALLOWED = "\n\t"
LAST_CODE_POINT = 0x10FFFF


def text_problem(value: str, allow_newlines: bool) -> str | None:
    """Why `value` is not plain text a person typed, or None: a forbidden code point (the first), or nothing but
    white space."""
    allowed = MULTI_LINE_ALLOWED if allow_newlines else ""
    for char in value:
        if char not in allowed and unicodedata.category(char) in FORBIDDEN_CATEGORIES:
            return f"must not contain control or bidirectional formatting characters (U+{ord(char):04X})"
    if not value.strip():
        return "must not be blank"
    return None


def forbidden_ranges() -> list[tuple[int, int]]:
    """Every forbidden code point, as inclusive ranges in ascending order."""
    forbidden = (cp for cp in range(LAST_CODE_POINT + 1) if unicodedata.category(chr(cp)) in FORBIDDEN_CATEGORIES)
    return list(_ranges(forbidden))


def white_space() -> list[int]:
    """The code points `str.strip` removes: a text of nothing else is blank."""
    return [cp for cp in range(LAST_CODE_POINT + 1) if chr(cp).isspace()]


def _ranges(code_points: Iterator[int]) -> Iterator[tuple[int, int]]:
    first = last = -2
    for cp in code_points:
        if cp != last + 1:
            if first >= 0:
                yield first, last
            first = cp
        last = cp
    if first >= 0:
        yield first, last
