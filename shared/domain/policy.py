"""Approval rules as code: a YAML policy compiled once at load, evaluated per request; first match wins.

The file format (version 1) is documented in README.md; `policies/example.yaml` is a commented example.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import yaml

from .decision import Decision, Outcome
from .durations import duration_in_words, format_duration, parse_duration
from .errors import PolicyError
from .ids import is_guid
from .request import MAX_DURATION, AccessRequest, Provider, validate_role

ANY: Final = "*"
DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_APPROVAL_DEADLINE: Final = timedelta(hours=24)

# Up to this many candidate rules, trying each rule's regex is quicker than walking a ScopeTree.
_SCAN_AT_MOST = 16
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when installed: ten times faster

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"

_TOP_KEYS = ("version", "description", "groups", "rules")
_RULE_KEYS = (
    "name", "description", "match", "outcome", "approval", "maxDuration",
    "justification", "ticket", "window", "breakGlass", "reason",
)
_MATCH_KEYS = ("providers", "roles", "scopes", "requesterGroups")
_APPROVAL_KEYS = ("groups", "required", "deadline")
_JUSTIFICATION_KEYS = ("minLength", "pattern")
_TICKET_KEYS = ("required", "pattern")
_WINDOW_KEYS = ("days", "start", "end")
_NOT_FOR_DENY = ("approval", "maxDuration", "justification", "ticket", "window", "breakGlass")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_TIME_RE = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])\Z")
_SCOPE_PATTERN_CHARS = re.compile(r"^[A-Za-z0-9._()*/-]+\Z")


# ---------------------------------------------------------------- reading YAML with line numbers


class YamlReader:
    """Turns composed YAML nodes into typed values, keeping every problem with its file and line number."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[str] = []

    def compose(self, text: str) -> yaml.Node | None:
        try:
            node = yaml.compose(text, Loader=_LOADER)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else 1
            self.errors.append(f"{self.source}:{line}: invalid YAML: {exc.problem or exc.context}")
            return None
        except yaml.YAMLError as exc:
            self.errors.append(f"{self.source}:1: invalid YAML: {exc}")
            return None
        if node is None:
            self.errors.append(f"{self.source}:1: the file is empty")
        return node

    def error(self, node: yaml.Node, message: str) -> None:
        self.errors.append(f"{self.source}:{line_of(node)}: {message}")

    def raise_if_errors(self) -> None:
        """Raise PolicyError with every error, this file's in line order (others' first, as they came)."""
        if self.errors:
            raise PolicyError(sorted(self.errors, key=self._line_number))

    def _line_number(self, message: str) -> int:
        head, _, _ = message.removeprefix(self.source + ":").partition(":")
        return int(head) if message.startswith(self.source + ":") and head.isdigit() else -1

    def mapping(
        self, node: yaml.Node, where: str, allowed: Collection[str], required: Collection[str] = ()
    ) -> dict[str, yaml.Node] | None:
        """The value nodes of a mapping by key; unknown, duplicate and missing keys are errors."""
        if not isinstance(node, yaml.MappingNode):
            self.error(node, f"{where} must be a mapping")
            return None
        out: dict[str, yaml.Node] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag != _STR:
                self.error(key, f"keys in {where} must be strings")
            elif key.value in out:
                self.error(key, f"duplicate key '{key.value}' in {where}")
            elif key.value not in allowed:
                close = difflib.get_close_matches(key.value, list(allowed), n=1, cutoff=0.7)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                self.error(key, f"unknown key '{key.value}' in {where}{hint}")
            else:
                out[key.value] = value
        for key in required:
            if key not in out:
                self.error(node, f"{where} is missing '{key}'")
        return out

    def string(self, node: yaml.Node, what: str, name: bool = False) -> str | None:
        """A non-empty string; with `name`, one usable as a rule or group name."""
        if not isinstance(node, yaml.ScalarNode) or node.tag != _STR:
            self.error(node, f"{what} must be a string")
            return None
        value: str = node.value
        if not value.strip():
            self.error(node, f"{what} must not be empty")
            return None
        if name and not _NAME_RE.match(value):
            self.error(node, f"{what} {value!r} must be 1-64 letters, digits, '.', '_' or '-', starting alphanumeric")
            return None
        return value

    def integer(self, node: yaml.Node, what: str, minimum: int = 0, maximum: int | None = None) -> int | None:
        if not isinstance(node, yaml.ScalarNode) or node.tag != _INT or not node.value.isdigit():
            self.error(node, f"{what} must be a whole number")
            return None
        value = int(node.value)
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            self.error(node, f"{what} is {value}; it must be {bound}")
            return None
        return value

    def boolean(self, node: yaml.Node, what: str) -> bool | None:
        if not isinstance(node, yaml.ScalarNode) or node.tag != _BOOL:
            self.error(node, f"{what} must be true or false")
            return None
        return node.value.lower() in ("true", "yes", "on", "y")

    def outcome(self, node: yaml.Node, what: str) -> Outcome | None:
        text = self.string(node, what)
        if text is None:
            return None
        try:
            return Outcome(text)
        except ValueError:
            self.error(node, f"{what} is {text!r}; it must be auto, approval or deny")
            return None

    def is_null(self, node: yaml.Node) -> bool:
        return isinstance(node, yaml.ScalarNode) and node.tag == _NULL

    def is_any(self, node: yaml.Node) -> bool:
        return isinstance(node, yaml.ScalarNode) and node.tag == _STR and node.value == ANY

    def strings(self, node: yaml.Node, what: str) -> list[tuple[yaml.Node, str]] | None:
        """A non-empty list of strings, each with its node (for per-item line numbers)."""
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, f"{what} must be a list")
            return None
        if not node.value:
            self.error(node, f"{what} must not be empty")
            return None
        out = []
        for item in node.value:
            value = self.string(item, f"each of {what}")
            if value is not None:
                out.append((item, value))
        return out

    def duration(self, node: yaml.Node, what: str, maximum: timedelta | None = None) -> timedelta | None:
        text = self.string(node, what)
        if text is None:
            return None
        try:
            value = parse_duration(text)
        except ValueError:
            self.error(node, f"{what} {text!r} is not an ISO 8601 duration such as PT2H or PT30M")
            return None
        if value <= timedelta(0):
            self.error(node, f"{what} must be positive")
            return None
        if maximum is not None and value > maximum:
            self.error(node, f"{what} {text} exceeds the ceiling {format_duration(maximum)}")
            return None
        return value

    def regex(self, node: yaml.Node, what: str) -> re.Pattern[str] | None:
        text = self.string(node, what)
        if text is None:
            return None
        try:
            return re.compile(text)
        except re.error as exc:
            self.error(node, f"{what} {text!r} is not a valid regular expression: {exc}")
            return None

    def timestamp(self, node: yaml.Node, what: str) -> datetime | None:
        """An ISO 8601 date-time with a time zone, returned in UTC."""
        if not isinstance(node, yaml.ScalarNode) or self.is_null(node):
            self.error(node, f"{what} must be a date-time such as 2026-11-26T10:00:00Z")
            return None
        try:
            value = datetime.fromisoformat(node.value)
        except ValueError:
            self.error(node, f"{what} {node.value!r} is not a date-time such as 2026-11-26T10:00:00Z")
            return None
        if value.tzinfo is None:
            self.error(node, f"{what} {node.value!r} must carry a time zone, e.g. 2026-11-26T10:00:00Z")
            return None
        return value.astimezone(UTC)

    def plain(self, node: yaml.Node) -> Any:
        """The node as plain Python data (mappings, lists, scalars), as yaml.safe_load would give it."""
        return yaml.constructor.SafeConstructor().construct_document(node)


def is_literal_path(scope: str) -> bool:
    """No empty, `.` or `..` segment and no wildcard: the only scopes the engine will match. Requests are
    validated before they get here; this keeps the engine safe on its own."""
    if not scope or "*" in scope or "//" in scope or scope.endswith("/"):
        return False
    padded = f"/{scope}/"
    return "/./" not in padded and "/../" not in padded


def line_of(node: yaml.Node) -> int:
    return node.start_mark.line + 1 if node.start_mark is not None else 1


# ---------------------------------------------------------------- scope patterns


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


class ScopeTree:
    """The scope patterns of some rules as one tree of path segments. Matching walks the scope's segments
    once (literal segments by dictionary, wildcard segments by their literal prefix) instead of trying
    every rule's regex in turn: its cost follows the scope's depth, not the number of rules."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self._root = _Segments()
        self._entries: list[tuple[Rule, str]] = []
        for rule in rules:
            for pattern in rule.scopes:
                self._add(scope_pattern_segments(pattern), len(self._entries))
                self._entries.append((rule, pattern))

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

    def match(self, scope: str) -> tuple[tuple[Rule, str], ...]:
        """Every (rule, pattern) matching the lower-cased literal scope, in rule order (one per rule)."""
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
        found: dict[int, tuple[Rule, str]] = {}
        for entry in sorted(entry for node in states for entry in node.ends):
            rule, pattern = self._entries[entry]
            found.setdefault(id(rule), (rule, pattern))
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


# ---------------------------------------------------------------- compiled rules


@dataclass(frozen=True, slots=True)
class Approval:
    """Who must approve: `required` distinct people from any of `groups`, within `deadline`."""

    groups: tuple[str, ...]
    required: int
    deadline: timedelta


@dataclass(frozen=True, slots=True)
class JustificationRule:
    """The justification must be at least `min_length` characters (ignoring surrounding space) and contain
    a match of `pattern`."""

    min_length: int
    pattern: re.Pattern[str] | None


@dataclass(frozen=True, slots=True)
class TicketRule:
    """A ticket reference: whether one is required, and the pattern the whole ticket must match when given."""

    required: bool
    pattern: re.Pattern[str] | None


@dataclass(frozen=True, slots=True)
class Window:
    """When requests may be granted, in UTC: on `days` (0 = Monday) from `start` until before `end`
    (minutes after midnight). An `end` before `start` runs past midnight into the next day."""

    days: frozenset[int]
    start: int
    end: int

    def contains(self, now: datetime) -> bool:
        t = now.astimezone(UTC)
        minute = t.hour * 60 + t.minute + (t.second + t.microsecond / 1_000_000) / 60
        day = t.weekday()
        if self.start < self.end:
            return day in self.days and self.start <= minute < self.end
        before_midnight = day in self.days and minute >= self.start
        return before_midnight or ((day - 1) % 7 in self.days and minute < self.end)

    def describe(self) -> str:
        days = ",".join(DAYS[d] for d in sorted(self.days))
        return f"{days} {_hhmm(self.start)}-{_hhmm(self.end)} UTC"


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled rule: what it matches, its outcome, and the conditions a matched request must meet."""

    name: str
    line: int
    description: str
    outcome: Outcome
    providers: frozenset[str] | None  # None: any provider
    roles: tuple[str, ...] | None  # as written; None: any role
    scopes: tuple[str, ...]
    requester_groups: frozenset[str] | None  # None: anyone
    max_duration: timedelta | None
    approval: Approval | None
    justification: JustificationRule | None
    ticket: TicketRule | None
    window: Window | None
    break_glass: bool
    reason: str | None
    scope_regex: re.Pattern[str]
    granted_reasons: tuple[str, ...] = field(init=False)  # after the match line, when conditions are met

    def __post_init__(self) -> None:
        object.__setattr__(self, "granted_reasons", self._granted_reasons())

    def _granted_reasons(self) -> tuple[str, ...]:
        if self.outcome is Outcome.DENY or self.max_duration is None:
            return ()
        longest = duration_in_words(self.max_duration)
        if self.approval is not None:
            approval = self.approval
            return (
                f"needs {approval.required} distinct approval{'s' if approval.required > 1 else ''} from "
                f"{', '.join(approval.groups)} within {duration_in_words(approval.deadline)}",
                f"grant for at most {longest}",
            )
        if self.break_glass:
            return (f"break-glass: auto-approved for at most {longest}, flagged for after-the-fact review",)
        return (f"auto-approved for at most {longest}",)

    @property
    def role_keys(self) -> frozenset[str] | None:
        return None if self.roles is None else frozenset(r.lower() for r in self.roles)

    def mismatch(self, provider: str, role: str, scope: str, requester_groups: frozenset[str]) -> str | None:
        """Why this rule does not match (the first reason), or None when it does."""
        if self.providers is not None and provider not in self.providers:
            return f"provider {provider} is not one of {_listed(sorted(self.providers))}"
        if self.roles is not None and role.lower() not in {r.lower() for r in self.roles}:
            return f"role '{role}' is not one of {_listed(self.roles)}"
        if not is_literal_path(scope) or not self.scope_regex.fullmatch(scope.lower() + "/"):
            return f"scope '{scope}' matches none of {_listed(self.scopes)}"
        if self.requester_groups is not None and self.requester_groups.isdisjoint(requester_groups):
            return f"the requester is in none of the groups {_listed(sorted(self.requester_groups))}"
        return None

    def failed_conditions(self, request: AccessRequest, now: datetime) -> list[str]:
        failures = []
        if self.max_duration is not None and request.duration > self.max_duration:
            asked, allowed = duration_in_words(request.duration), duration_in_words(self.max_duration)
            asked = f"a little over {allowed}" if asked == allowed else asked  # over by less than a second
            failures.append(f"{asked} is longer than this rule allows ({allowed})")
        if self.justification is not None:
            length = len(request.justification.strip())
            if length < self.justification.min_length:
                failures.append(
                    f"justification is {length} characters, fewer than the rule's minimum "
                    f"{self.justification.min_length}"
                )
            pattern = self.justification.pattern
            if pattern is not None and not pattern.search(request.justification):
                failures.append(f"justification does not match the required pattern '{pattern.pattern}'")
        if self.ticket is not None:
            pattern = self.ticket.pattern
            if request.ticket is None:
                if self.ticket.required:
                    shape = f" matching '{pattern.pattern}'" if pattern is not None else ""
                    failures.append(f"a ticket{shape} is required")
            elif pattern is not None and not pattern.fullmatch(request.ticket):
                failures.append(
                    f"ticket '{request.ticket}' does not match the required pattern '{pattern.pattern}'"
                )
        if self.window is not None and not self.window.contains(now):
            at = now.astimezone(UTC)
            failures.append(
                f"outside the rule's window {self.window.describe()} "
                f"(now {DAYS[at.weekday()]} {at:%H:%M} UTC)"
            )
        return failures

    def decide(self, request: AccessRequest, pattern: str, now: datetime) -> Decision:
        target = request.target
        matched = (
            f"rule '{self.name}' matches {target.provider.value} role '{target.role}' "
            f"at '{target.scope}' (scope pattern '{pattern}')"
        )
        if self.outcome is Outcome.DENY:
            return Decision(outcome=Outcome.DENY, rule=self.name, reasons=[self.reason or "denied", matched])
        failures = self.failed_conditions(request, now)
        if failures:
            return Decision(
                outcome=Outcome.DENY,
                rule=self.name,
                reasons=[*failures, matched],
                max_duration=self.max_duration,
            )
        reasons = [matched, *self.granted_reasons]
        if self.approval is not None:
            return Decision(
                outcome=Outcome.APPROVAL,
                rule=self.name,
                reasons=reasons,
                required_approvals=self.approval.required,
                approver_groups=list(self.approval.groups),
                approval_deadline=self.approval.deadline,
                max_duration=self.max_duration,
            )
        return Decision(
            outcome=Outcome.AUTO,
            rule=self.name,
            reasons=reasons,
            max_duration=self.max_duration,
            break_glass=self.break_glass,
        )


def _listed(items: Iterable[str]) -> str:
    return "[" + ", ".join(items) + "]"


# ---------------------------------------------------------------- the policy


class Policy:
    """A compiled approval policy: approver and requester groups, and ordered rules (first match wins).

    Rules are indexed by (provider, lower-cased role) with wildcard buckets merged in rule order, so an
    evaluation only looks at the scopes of rules that could match at all: by each rule's regex when they
    are few, through a ScopeTree when they are many.
    """

    def __init__(
        self, groups: Mapping[str, frozenset[str]], rules: Iterable[Rule], source: str = "<policy>"
    ) -> None:
        self.source = source
        self.groups: Mapping[str, frozenset[str]] = MappingProxyType(dict(groups))
        self.rules: tuple[Rule, ...] = tuple(rules)
        self._by_key, self._by_provider = _index(self.rules)
        self._trees: dict[tuple[str, str | None], ScopeTree] = {}

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError([f"{path}: cannot read the policy: {exc}"]) from None
        return cls.from_text(text, source=str(path))

    @classmethod
    def from_text(cls, text: str, source: str = "<policy>") -> Policy:
        reader = YamlReader(source)
        root = reader.compose(text)
        groups: dict[str, frozenset[str]] = {}
        rules: list[Rule] = []
        if root is not None:
            groups, rules = _compile(reader, root)
        reader.raise_if_errors()
        return cls(groups, rules, source)

    def evaluate(self, request: AccessRequest, requester_groups: frozenset[str], now: datetime) -> Decision:
        """The first matching rule decides; nothing matches → deny."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware (UTC)")
        target = request.target
        provider = target.provider.value
        scope = target.scope.lower()
        if not is_literal_path(scope):
            return Decision(
                outcome=Outcome.DENY,
                rule=None,
                reasons=[f"scope '{target.scope}' is not one literal resource path"],
            )
        for rule, pattern in self._matching(provider, target.role.lower(), scope):
            if rule.requester_groups is None or not rule.requester_groups.isdisjoint(requester_groups):
                return rule.decide(request, pattern, now)
        return Decision(
            outcome=Outcome.DENY,
            rule=None,
            reasons=[f"no rule matches {provider} role '{target.role}' at scope '{target.scope}'"],
        )

    def explain(self, request: AccessRequest, requester_groups: frozenset[str], now: datetime) -> list[str]:
        """One line per rule, in order: whether it matched and, if not, the first reason it did not; the
        deciding rule's line names any of its conditions the request does not meet."""
        target = request.target
        lines = []
        winner: Rule | None = None
        for rule in self.rules:
            why_not = rule.mismatch(target.provider.value, target.role, target.scope, requester_groups)
            if why_not is not None:
                lines.append(f"{rule.name}: no match: {why_not}")
            elif winner is None:
                winner = rule
                unmet = rule.failed_conditions(request, now) if rule.outcome is not Outcome.DENY else []
                verdict = f" (unmet: {'; '.join(unmet)})" if unmet else ""
                lines.append(f"{rule.name}: matches; first match, this rule decides{verdict}")
            else:
                lines.append(f"{rule.name}: matches, but '{winner.name}' comes first")
        return lines

    def allowed_roles(self) -> dict[str, list[str]]:
        """Provider → the roles (names or ids, sorted) some non-deny rule can grant; `*` means any role."""
        found: dict[str, dict[str, str]] = {}
        for rule in self.rules:
            if rule.outcome is Outcome.DENY:
                continue
            providers = sorted(rule.providers) if rule.providers is not None else [p.value for p in Provider]
            for provider in providers:
                for role in rule.roles if rule.roles is not None else (ANY,):
                    if role == ANY or _role_valid(Provider(provider), role):
                        found.setdefault(provider, {}).setdefault(role.lower(), role)
        return {p: sorted(roles.values(), key=str.lower) for p, roles in sorted(found.items())}

    def _matching(self, provider: str, role: str, scope: str) -> tuple[tuple[Rule, str], ...]:
        """The rules (in order) whose provider, role and scope patterns match, each with the pattern that did."""
        rules = self._by_key.get((provider, role))
        role_key: str | None = role
        if rules is None:
            rules = self._by_provider.get(provider, ())
            role_key = None
        if len(rules) <= _SCAN_AT_MOST:
            path = scope + "/"
            found = []
            for rule in rules:
                hit = rule.scope_regex.fullmatch(path)
                if hit is not None:
                    found.append((rule, rule.scopes[(hit.lastindex or 1) - 1]))
            return tuple(found)
        tree = self._trees.get((provider, role_key))
        if tree is None:
            # Built on first use: one per (provider, role) actually asked for, each holding only its candidates.
            tree = self._trees[(provider, role_key)] = ScopeTree(rules)
        return tree.match(scope)


def _index(
    rules: tuple[Rule, ...],
) -> tuple[dict[tuple[str, str], tuple[Rule, ...]], dict[str, tuple[Rule, ...]]]:
    """(provider, role) → candidate rules in rule order, for every role some rule names; provider → the
    candidates for any other role (rules with a role wildcard)."""
    buckets: dict[tuple[str | None, str | None], list[int]] = {}
    for position, rule in enumerate(rules):
        providers: Iterable[str | None] = rule.providers if rule.providers is not None else (None,)
        role_keys = rule.role_keys
        roles: Iterable[str | None] = role_keys if role_keys is not None else (None,)
        for provider in providers:
            for role in roles:
                buckets.setdefault((provider, role), []).append(position)
    known_roles = {role for _, role in buckets if role is not None}
    by_key: dict[tuple[str, str], tuple[Rule, ...]] = {}
    by_provider: dict[str, tuple[Rule, ...]] = {}
    for member in Provider:
        provider = member.value
        any_role = buckets.get((provider, None), []) + buckets.get((None, None), [])
        by_provider[provider] = tuple(rules[i] for i in sorted(set(any_role)))
        for role in known_roles:
            positions = buckets.get((provider, role), []) + buckets.get((None, role), []) + any_role
            by_key[(provider, role)] = tuple(rules[i] for i in sorted(set(positions)))
    return by_key, by_provider


def _role_valid(provider: Provider, role: str) -> bool:
    try:
        validate_role(provider, role)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------- compiling a file


def _compile(reader: YamlReader, root: yaml.Node) -> tuple[dict[str, frozenset[str]], list[Rule]]:
    top = reader.mapping(root, "the policy", _TOP_KEYS, required=("version", "rules"))
    if top is None:
        return {}, []
    if "version" in top:
        version = reader.integer(top["version"], "version")
        if version is not None and version != 1:
            reader.error(top["version"], f"version {version} is not supported; this jitgate reads version 1")
    if "description" in top:
        reader.string(top["description"], "description")
    groups = _compile_groups(reader, top["groups"]) if "groups" in top else {}
    rules: list[Rule] = []
    rules_node = top.get("rules")
    if rules_node is None:
        return groups, rules
    if not isinstance(rules_node, yaml.SequenceNode):
        reader.error(rules_node, "rules must be a list")
        return groups, rules
    if not rules_node.value:
        reader.error(rules_node, "rules is empty: every request would be denied")
    first_line: dict[str, int] = {}
    for position, node in enumerate(rules_node.value, start=1):
        rule = _compile_rule(reader, node, position, groups, first_line)
        if rule is not None:
            rules.append(rule)
    return groups, rules


def _compile_groups(reader: YamlReader, node: yaml.Node) -> dict[str, frozenset[str]]:
    if not isinstance(node, yaml.MappingNode):
        reader.error(node, "groups must be a mapping of group name to a list of principal ids")
        return {}
    groups: dict[str, frozenset[str]] = {}
    for key, value in node.value:
        name = reader.string(key, "a group name", name=True)
        if name is None:
            continue
        if name in groups:
            reader.error(key, f"duplicate group '{name}'")
            continue
        if not isinstance(value, yaml.SequenceNode):
            reader.error(value, f"group '{name}' must be a list of principal ids (GUIDs)")
            groups[name] = frozenset()
            continue
        members = set()
        for item in value.value:
            member = reader.string(item, f"a member of group '{name}'")
            if member is None:
                continue
            if not is_guid(member.lower()):
                reader.error(item, f"member {member!r} of group '{name}' is not a principal id (GUID)")
                continue
            members.add(member.lower())
        groups[name] = frozenset(members)
    return groups


def _compile_rule(
    reader: YamlReader,
    node: yaml.Node,
    position: int,
    groups: Mapping[str, frozenset[str]],
    first_line: dict[str, int],
) -> Rule | None:
    errors_before = len(reader.errors)
    where = f"rule #{position}"
    name: str | None = None
    if isinstance(node, yaml.MappingNode):
        # The name first, so that every later message can say which rule it is about.
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == "name":
                name = reader.string(value, f"the name of {where}", name=True)
                break
    if name is not None:
        where = f"rule '{name}'"
        if name in first_line:
            reader.error(node, f"duplicate rule name '{name}' (first defined on line {first_line[name]})")
        else:
            first_line[name] = line_of(node)
    fields = reader.mapping(node, where, _RULE_KEYS, required=("name", "match", "outcome"))
    if fields is None:
        return None

    description = ""
    if "description" in fields:
        description = reader.string(fields["description"], f"description of {where}") or ""

    outcome = reader.outcome(fields["outcome"], f"outcome of {where}") if "outcome" in fields else None

    match = _compile_match(reader, fields["match"], where, groups) if "match" in fields else None

    if outcome is Outcome.DENY:
        for key in _NOT_FOR_DENY:
            if key in fields:
                reader.error(fields[key], f"'{key}' has no effect on {where}, whose outcome is deny")
        if "reason" not in fields:
            reader.error(node, f"{where} denies, so it needs a 'reason' telling the requester why")
    elif outcome is not None:
        if "reason" in fields:
            reader.error(
                fields["reason"], f"'reason' is only for deny rules; {where} has outcome {outcome.value}"
            )
        if "maxDuration" not in fields:
            reader.error(node, f"{where} is missing 'maxDuration'")
        if outcome is Outcome.APPROVAL and "approval" not in fields:
            reader.error(node, f"{where} has outcome approval but no 'approval' (approver groups, required)")
        if outcome is Outcome.AUTO and "approval" in fields:
            reader.error(fields["approval"], f"'approval' is only for outcome approval; {where} is auto")

    reason = reader.string(fields["reason"], f"reason of {where}") if "reason" in fields else None
    max_duration = (
        reader.duration(fields["maxDuration"], f"maxDuration of {where}", MAX_DURATION)
        if "maxDuration" in fields
        else None
    )
    approval = _compile_approval(reader, fields["approval"], where, groups) if "approval" in fields else None
    justification = (
        _compile_justification(reader, fields["justification"], where) if "justification" in fields else None
    )
    ticket = _compile_ticket(reader, fields["ticket"], where) if "ticket" in fields else None
    window = _compile_window(reader, fields["window"], where) if "window" in fields else None
    break_glass = False
    if "breakGlass" in fields:
        break_glass = bool(reader.boolean(fields["breakGlass"], f"breakGlass of {where}"))
        if break_glass and outcome is not None and outcome is not Outcome.AUTO:
            reader.error(
                fields["breakGlass"], f"breakGlass needs outcome auto; {where} is {outcome.value}"
            )

    if len(reader.errors) > errors_before or name is None or outcome is None or match is None:
        return None
    providers, roles, scopes, requester_groups, regex = match
    return Rule(
        name=name,
        line=line_of(node),
        description=description,
        outcome=outcome,
        providers=providers,
        roles=roles,
        scopes=scopes,
        requester_groups=requester_groups,
        max_duration=max_duration,
        approval=approval,
        justification=justification,
        ticket=ticket,
        window=window,
        break_glass=break_glass,
        reason=reason,
        scope_regex=regex,
    )


_Match = tuple[
    frozenset[str] | None,
    tuple[str, ...] | None,
    tuple[str, ...],
    frozenset[str] | None,
    re.Pattern[str],
]


def _compile_match(
    reader: YamlReader, node: yaml.Node, where: str, groups: Mapping[str, frozenset[str]]
) -> _Match | None:
    errors_before = len(reader.errors)
    fields = reader.mapping(node, f"match of {where}", _MATCH_KEYS, required=("providers", "roles", "scopes"))
    if fields is None:
        return None

    providers: frozenset[str] | None = None
    if "providers" in fields and not reader.is_any(fields["providers"]):
        known = [p.value for p in Provider]
        chosen = set()
        for item, value in reader.strings(fields["providers"], f"providers of {where}") or []:
            if value not in known:
                reader.error(item, f"unknown provider {value!r} in {where}; known: {', '.join(known)}")
                continue
            chosen.add(value)
        providers = frozenset(chosen)
    possible = [Provider(p) for p in sorted(providers)] if providers is not None else list(Provider)

    roles: tuple[str, ...] | None = None
    if "roles" in fields and not reader.is_any(fields["roles"]):
        named = []
        for item, value in reader.strings(fields["roles"], f"roles of {where}") or []:
            if possible and not any(_role_valid(p, value) for p in possible):
                reader.error(item, f"role {value!r} in {where} is not a valid role for {', '.join(possible)}")
            named.append(value)
        roles = tuple(named)

    scopes: list[str] = []
    sources: list[str] = []
    listed = reader.strings(fields["scopes"], f"scopes of {where}") if "scopes" in fields else None
    for item, value in listed or []:
        try:
            source = compile_scope_pattern(value)
        except ValueError as exc:
            reader.error(item, f"scope pattern {value!r} in {where} {exc}")
            continue
        arm = value.startswith("/") or value.startswith("**")
        gcp = not value.startswith("/")
        if possible and not any(arm if p.uses_arm_scopes else gcp for p in possible):
            kind = "an ARM path (starting with '/')" if arm and not gcp else "a path without a leading '/'"
            reader.error(
                item, f"scope pattern {value!r} in {where} is {kind}; it never matches {', '.join(possible)}"
            )
        scopes.append(value)
        sources.append(f"({source})")

    requester_groups: frozenset[str] | None = None
    if "requesterGroups" in fields:
        requester_groups = frozenset(
            _known_groups(reader, fields["requesterGroups"], f"requesterGroups of {where}", groups)
        )

    if len(reader.errors) > errors_before or not sources:
        return None
    regex = re.compile("(?:" + "|".join(sources) + ")")
    return providers, roles, tuple(scopes), requester_groups, regex


def _known_groups(
    reader: YamlReader, node: yaml.Node, what: str, groups: Mapping[str, frozenset[str]]
) -> list[str]:
    names = []
    for item, value in reader.strings(node, what) or []:
        if value not in groups:
            known = ", ".join(sorted(groups)) or "none defined"
            reader.error(item, f"unknown group '{value}' in {what} (groups: {known})")
            continue
        names.append(value)
    return names


def _compile_approval(
    reader: YamlReader, node: yaml.Node, where: str, groups: Mapping[str, frozenset[str]]
) -> Approval | None:
    errors_before = len(reader.errors)
    fields = reader.mapping(node, f"approval of {where}", _APPROVAL_KEYS, required=("groups",))
    if fields is None:
        return None
    names = []
    if "groups" in fields:
        names = _known_groups(reader, fields["groups"], f"approval groups of {where}", groups)
    required = 1
    if "required" in fields:
        required = reader.integer(fields["required"], f"required approvals of {where}", minimum=1) or 1
    deadline = DEFAULT_APPROVAL_DEADLINE
    if "deadline" in fields:
        what = f"approval deadline of {where}"
        deadline = reader.duration(fields["deadline"], what, MAX_DURATION) or deadline
    if len(reader.errors) > errors_before:
        return None
    members = frozenset[str]().union(*(groups[g] for g in names))
    if required > len(members):
        reader.error(
            fields.get("required", node),
            f"{where} requires {required} distinct approvers but its approver groups "
            f"({', '.join(names)}) have {len(members)} member{'s' if len(members) != 1 else ''}",
        )
        return None
    return Approval(tuple(names), required, deadline)


def _compile_justification(reader: YamlReader, node: yaml.Node, where: str) -> JustificationRule | None:
    fields = reader.mapping(node, f"justification of {where}", _JUSTIFICATION_KEYS)
    if fields is None:
        return None
    min_length = 0
    if "minLength" in fields:
        min_length = reader.integer(fields["minLength"], f"justification minLength of {where}", 0, 1000) or 0
    pattern = None
    if "pattern" in fields:
        pattern = reader.regex(fields["pattern"], f"justification pattern of {where}")
    return JustificationRule(min_length, pattern)


def _compile_ticket(reader: YamlReader, node: yaml.Node, where: str) -> TicketRule | None:
    fields = reader.mapping(node, f"ticket of {where}", _TICKET_KEYS)
    if fields is None:
        return None
    required = False
    if "required" in fields:
        required = bool(reader.boolean(fields["required"], f"ticket required of {where}"))
    pattern = reader.regex(fields["pattern"], f"ticket pattern of {where}") if "pattern" in fields else None
    return TicketRule(required, pattern)


def _compile_window(reader: YamlReader, node: yaml.Node, where: str) -> Window | None:
    errors_before = len(reader.errors)
    fields = reader.mapping(node, f"window of {where}", _WINDOW_KEYS, required=("start", "end"))
    if fields is None:
        return None
    days = set(range(7))
    if "days" in fields:
        days = set()
        for item, value in reader.strings(fields["days"], f"window days of {where}") or []:
            if value.lower() not in DAYS:
                reader.error(item, f"window day {value!r} in {where} is not one of {', '.join(DAYS)}")
                continue
            days.add(DAYS.index(value.lower()))
    start = end = None
    if "start" in fields:
        start = _time_of_day(reader, fields["start"], f"window start of {where}", False)
    if "end" in fields:
        end = _time_of_day(reader, fields["end"], f"window end of {where}", True)
    if start is not None and end is not None and start == end:
        reader.error(fields["end"], f"window of {where} starts and ends at {_hhmm(start)}: never open")
    if len(reader.errors) > errors_before or start is None or end is None:
        return None
    return Window(frozenset(days), start, end)


def _time_of_day(reader: YamlReader, node: yaml.Node, what: str, allow_24: bool) -> int | None:
    # NB. Unquoted 18:00 is a YAML 1.1 base-60 integer (1080); the node keeps the text as written.
    if not isinstance(node, yaml.ScalarNode) or node.tag == _NULL:
        reader.error(node, f"{what} must be a time of day HH:MM")
        return None
    text = node.value
    if allow_24 and text == "24:00":
        return 24 * 60
    found = _TIME_RE.match(text)
    if found is None:
        latest = "24:00" if allow_24 else "23:59"
        reader.error(node, f"{what} {text!r} is not a time of day HH:MM (00:00 to {latest})")
        return None
    return int(found.group(1)) * 60 + int(found.group(2))
