"""Scope patterns: their syntax, their regex, and a tree that matches many of them in one walk of a scope."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Final, Generic, TypeVar

ANY: Final = "*"
_SCOPE_PATTERN_CHARS = re.compile(r"^[A-Za-z0-9._()*/-]+\Z")

T = TypeVar("T")


def is_literal_path(scope: str) -> bool:
    """No empty, `.` or `..` segment and no wildcard: the only scopes the engine will match. Requests are
    validated before they get here; this keeps the engine safe on its own."""
    if not scope or "*" in scope or "//" in scope or scope.endswith("/"):
        return False
    padded = f"/{scope}/"
    return "/./" not in padded and "/../" not in padded


def scope_pattern_segments(pattern: str) -> list[str]:
    """A scope pattern's lower-cased segments (`''` first for a leading '/'), consecutive `**` as one.

    `*` is exactly one path segment (or, inside a segment, any run of characters within it); `**` is
    any number of segments including none; everything else is literal and compared case-insensitively.
    Raises ValueError for what cannot mean a path.
    """
    if not _SCOPE_PATTERN_CHARS.match(pattern):
        raise ValueError("may only contain letters, digits, . _ ( ) - / and the wildcards * and **")
    segments: list[str] = []
    for position, segment in enumerate(pattern.lower().split("/")):
        if segment == "" and position == 0 and "/" in pattern:
            segments.append(segment)
        elif segment == "":
            raise ValueError("has an empty path segment ('//' or a trailing '/')")
        elif segment in (".", ".."):
            raise ValueError(f"has a '{segment}' segment, which never appears in a scope")
        elif "**" in segment and segment != "**":
            raise ValueError(f"uses '**' inside the segment {segment!r}; '**' must be a whole segment")
        elif not (segment == "**" and segments and segments[-1] == "**"):
            segments.append(segment)
    return segments


def _segment_regex(segment: str) -> str:
    if segment == ANY:
        return "[^/]+"
    return "".join("[^/]*" if ch == ANY else re.escape(ch) for ch in segment)


def compile_scope_pattern(pattern: str) -> str:
    """A scope pattern → the source of a regex that fully matches `scope.lower() + "/"`."""
    return "".join(
        "(?:[^/]*/)*" if segment == "**" else _segment_regex(segment) + "/"
        for segment in scope_pattern_segments(pattern)
    )


def scopes_regex(patterns: Iterable[str]) -> re.Pattern[str]:
    """One regex for all the patterns, each its own group in order, so `lastindex` names the one that matched."""
    return re.compile("(?:" + "|".join(f"({compile_scope_pattern(p)})" for p in patterns) + ")")


class _Segments:
    """One node of a tree of scope patterns, reached after some path segments."""

    __slots__ = ("ends", "globstar", "literal", "loops", "wild")

    def __init__(self, loops: bool = False) -> None:
        self.literal: dict[str, _Segments] = {}
        # literal prefix length → literal prefix → segment pattern → (its regex, next node)
        self.wild: dict[int, dict[str, dict[str, tuple[re.Pattern[str], _Segments]]]] = {}
        self.globstar: _Segments | None = None
        self.loops = loops  # reached through `**`: any further segment may be consumed here
        self.ends: list[int] = []


class ScopeTree(Generic[T]):
    """The scope patterns of some items (rules) as one tree of path segments. Matching walks the scope's
    segments once (literal segments by dictionary, wildcard segments by their literal prefix) instead of
    trying every item's regex in turn: its cost follows the scope's depth, not the number of items."""

    def __init__(self, items: Iterable[tuple[T, Sequence[str]]]) -> None:
        self._root = _Segments()
        self._entries: list[tuple[int, T, str]] = []
        for position, (item, patterns) in enumerate(items):
            for pattern in patterns:
                self._add(scope_pattern_segments(pattern), len(self._entries))
                self._entries.append((position, item, pattern))

    def _add(self, segments: list[str], entry: int) -> None:
        node = self._root
        for segment in segments:
            if segment == "**":
                if node.globstar is None:
                    node.globstar = _Segments(loops=True)
                node = node.globstar
            elif ANY not in segment:
                node = node.literal.setdefault(segment, _Segments())
            else:
                prefix = segment.split(ANY, 1)[0]
                by_pattern = node.wild.setdefault(len(prefix), {}).setdefault(prefix, {})
                if segment not in by_pattern:
                    by_pattern[segment] = (re.compile(_segment_regex(segment)), _Segments())
                node = by_pattern[segment][1]
        node.ends.append(entry)

    def match(self, scope: str) -> tuple[tuple[T, str], ...]:
        """Every (item, pattern) matching the lower-cased literal scope, in item order (one per item)."""
        states = _with_globstars([self._root])
        for segment in scope.split("/"):
            following = []
            for node in states:
                child = node.literal.get(segment)
                if child is not None:
                    following.append(child)
                for length, by_prefix in node.wild.items():
                    for regex, wild_child in by_prefix.get(segment[:length], {}).values():
                        if regex.fullmatch(segment):
                            following.append(wild_child)
                if node.loops:
                    following.append(node)
            if not following:
                return ()
            states = _with_globstars(following)
        found: dict[int, tuple[T, str]] = {}
        for entry in sorted(entry for node in states for entry in node.ends):
            position, item, pattern = self._entries[entry]
            found.setdefault(position, (item, pattern))
        return tuple(found.values())


def _with_globstars(nodes: list[_Segments]) -> dict[_Segments, None]:
    """The nodes and, through a `**`, the node reached by consuming no segment; each once. (A `**` node
    has no `**` child: consecutive `**` are one.)"""
    out: dict[_Segments, None] = {}
    for node in nodes:
        out[node] = None
        if node.globstar is not None:
            out[node.globstar] = None
    return out
