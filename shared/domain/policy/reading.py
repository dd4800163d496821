"""Reading a policy file (version 1): composed YAML nodes turned into compiled rules, every problem kept
with its file and line number. `read_policy` gives the groups and the rules, or raises PolicyError.

The file format is documented in README.md; `policies/example.yaml` is a commented example.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import yaml

from ..decision import Outcome
from ..durations import format_duration, parse_duration
from ..errors import PolicyError
from ..ids import is_guid
from ..request import MAX_DURATION, Provider
from .rules import DAYS, Approval, JustificationRule, Rule, TicketRule, Window, hhmm, role_is_valid
from .scopes import ANY, compile_scope_pattern

DEFAULT_APPROVAL_DEADLINE: Final = timedelta(hours=24)

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


def read_policy(text: str, source: str = "<policy>") -> tuple[dict[str, frozenset[str]], list[Rule]]:
    """The groups and the compiled rules of a policy file; PolicyError lists every problem with its line."""
    reader = YamlReader(source)
    root = reader.compose(text)
    groups: dict[str, frozenset[str]] = {}
    rules: list[Rule] = []
    if root is not None:
        groups, rules = _compile(reader, root)
    reader.raise_if_errors()
    return groups, rules


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


def line_of(node: yaml.Node) -> int:
    return node.start_mark.line + 1 if node.start_mark is not None else 1



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
            if possible and not any(role_is_valid(p, value) for p in possible):
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
        reader.error(fields["end"], f"window of {where} starts and ends at {hhmm(start)}: never open")
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
