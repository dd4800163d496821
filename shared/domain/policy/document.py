"""The policy file (version 1): its shape as pydantic models over the composed YAML, the wording of its
errors, and the checks that span fields. `read_policy` gives the groups and the compiled rules, or
raises PolicyError listing every problem with its line.

The file format is documented in README.md; `policies/example.yaml` is a commented example.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Final, Self

from annotated_types import MinLen
from pydantic import Field, PlainValidator, ValidationInfo, field_validator, model_validator

from ..decision import Outcome
from ..ids import is_guid
from . import values as v
from .rules import Approval, JustificationRule, Rule, TicketRule, Window, hhmm
from .scopes import scopes_regex
from .yaml_source import (
    Findings,
    Loc,
    Refusal,
    Shape,
    Wording,
    YamlSource,
    is_true,
    keys_of,
    outcome,
    validate,
    whole_number,
)

DEFAULT_APPROVAL_DEADLINE: Final = timedelta(hours=24)

_NOT_FOR_DENY = ("approval", "maxDuration", "justification", "ticket", "window", "breakGlass")


# ---------------------------------------------------------------- the file's shape


class MatchShape(Shape):
    """What a rule matches: providers, roles (`"*"`: any), scope patterns, requester groups (absent: anyone)."""

    providers: v.Providers
    roles: v.Roles
    scopes: v.ScopePatterns
    requester_groups: v.GroupRefs | None = Field(None, alias="requesterGroups")

    @model_validator(mode="before")
    @classmethod
    def _possible_providers_in_context(cls, data: Any, info: ValidationInfo) -> Any:
        # Roles and scopes are checked against the valid providers even when some are not (each error
        # reported), which info.data (only fields valid as a whole) cannot give.
        if isinstance(info.context, dict):
            raw = data.get("providers", v.ABSENT) if isinstance(data, dict) else []
            info.context["possible"] = v.valid_providers(raw)
        return data


class ApprovalShape(Shape):
    """Approver groups, how many distinct approvers, and how long they have."""

    groups: v.GroupRefs
    required: Annotated[int, PlainValidator(whole_number(1))] = 1
    deadline: v.Duration = DEFAULT_APPROVAL_DEADLINE

    @model_validator(mode="after")
    def _enough_approvers(self, info: ValidationInfo) -> Self:
        groups = info.context["groups"] if info.context else {}
        members = frozenset[str]().union(*(groups[g] for g in self.groups))
        if self.required > len(members):
            raise Refusal(
                "{where} requires {required} distinct approvers but its approver groups ({names}) have {count}",
                at=("required",) if "required" in self.model_fields_set else (),
                required=self.required,
                names=", ".join(self.groups),
                count=f"{len(members)} member{'s' if len(members) != 1 else ''}",
            )
        return self


class JustificationShape(Shape):
    """The justification's minimum length and a pattern it must contain."""

    min_length: Annotated[int, PlainValidator(whole_number(0, 1000))] = Field(0, alias="minLength")
    pattern: v.Pattern | None = None


class TicketShape(Shape):
    """Whether a ticket is required, and the pattern a given ticket must match whole."""

    required: v.Flag = False
    pattern: v.Pattern | None = None


class WindowShape(Shape):
    """Days and UTC hours when a rule grants."""

    days: v.Days = list(range(7))
    start: Annotated[int, v.time_of_day("23:59")]
    end: Annotated[int, v.time_of_day("24:00")]

    @field_validator("end")
    @classmethod
    def _open_some_time(cls, end: int, info: ValidationInfo) -> int:
        if end == info.data.get("start"):
            raise Refusal("window of {where} starts and ends at {time}: never open", time=hhmm(end))
        return end


class RuleShape(Shape):
    """One rule as written. Which fields an outcome needs or forbids is checked on the raw mapping (see
    `_rule_problems`), so that it is reported even when other fields are wrong."""

    name: v.Name
    description: v.Text = ""
    match: MatchShape
    outcome: Annotated[Outcome, PlainValidator(outcome)]
    reason: v.Text | None = None
    max_duration: v.Duration | None = Field(None, alias="maxDuration")
    approval: ApprovalShape | None = None
    justification: JustificationShape | None = None
    ticket: TicketShape | None = None
    window: WindowShape | None = None
    break_glass: v.Flag = Field(False, alias="breakGlass")

    def to_rule(self, line: int) -> Rule:
        match = self.match
        approval = self.approval
        justification, ticket, window = self.justification, self.ticket, self.window
        return Rule(
            name=self.name,
            line=line,
            description=self.description,
            outcome=self.outcome,
            providers=frozenset(match.providers) if match.providers is not None else None,
            roles=tuple(match.roles) if match.roles is not None else None,
            scopes=tuple(match.scopes),
            requester_groups=frozenset(match.requester_groups) if match.requester_groups is not None else None,
            max_duration=self.max_duration,
            approval=Approval(tuple(approval.groups), approval.required, approval.deadline) if approval else None,
            justification=JustificationRule(justification.min_length, justification.pattern)
            if justification
            else None,
            ticket=TicketRule(ticket.required, ticket.pattern) if ticket else None,
            window=Window(frozenset(window.days), window.start, window.end) if window else None,
            break_glass=self.break_glass,
            reason=self.reason,
            scope_regex=scopes_regex(match.scopes),
        )


class PolicyShape(Shape):
    """The whole file: version, description, the local directory's groups, and the ordered rules."""

    version: Annotated[int, PlainValidator(v.version)]
    description: v.Text = ""
    groups: dict[Annotated[str, PlainValidator(v.name)], list[Annotated[str, PlainValidator(v.member)]]] = {}
    rules: Annotated[list[RuleShape], MinLen(1)]


# ---------------------------------------------------------------- wording


# What a value is called in messages, where "{key} of {where}" (or "{mapping} {key} of {where}") is wrong.
_LABELS: Final[dict[Loc, str]] = {
    (): "the policy",
    ("groups", "*", "[key]"): "a group name",
    ("groups", "*", "#"): "a member of group '{group}'",
    ("rules", "#"): "{where}",
    ("rules", "#", "name"): "the name of rule #{position}",
    ("rules", "#", "approval", "required"): "required approvals of {where}",
}


class _PolicyWording(Wording):
    mappings = {
        (): keys_of(PolicyShape),
        ("groups",): None,
        ("rules", "#"): keys_of(RuleShape),
        ("rules", "#", "match"): keys_of(MatchShape),
        ("rules", "#", "approval"): keys_of(ApprovalShape),
        ("rules", "#", "justification"): keys_of(JustificationShape),
        ("rules", "#", "ticket"): keys_of(TicketShape),
        ("rules", "#", "window"): keys_of(WindowShape),
    }
    templates = {
        (("groups",), "dict_type"): "groups must be a mapping of group name to a list of principal ids",
        (("groups",), "not_string_key"): "a group name must be a string",
        (("groups", "*"), "duplicate_key"): "duplicate group '{key}'",
        (("groups", "*"), "list_type"): "group '{group}' must be a list of principal ids (GUIDs)",
        (("rules",), "too_short"): "rules is empty: every request would be denied",
    }

    def shape(self, loc: Loc) -> Loc:
        shape = super().shape(loc)
        return ("groups", "*", *shape[2:]) if shape[:1] == ("groups",) and len(shape) > 1 else shape

    def label(self, loc: Loc) -> str:
        shape = self.shape(loc)
        template = _LABELS.get(shape)
        if template is None and shape[-1:] == ("#",):
            return "each of " + self.label(loc[:-1])
        if template is None and shape[:1] == ("rules",) and len(shape) > 2:
            inner = [str(part) for part in shape[2:]]
            template = " ".join(inner[1:] if inner[0] == "match" and len(inner) > 1 else inner) + " of {where}"
        return (template or str(loc[-1])).format(**self.fields(loc))

    def fields(self, loc: Loc) -> dict[str, object]:
        if len(loc) > 1 and loc[0] == "groups":
            return {"group": loc[1]}
        if len(loc) > 1 and loc[0] == "rules" and isinstance(loc[1], int):
            return {"where": self.rule_label(loc[1]), "position": loc[1] + 1}
        return {}

    def rule_label(self, index: int) -> str:
        rule = self.source.data["rules"][index]
        name = rule.get("name") if isinstance(rule, dict) else None
        return f"rule '{name}'" if v.is_name(name) else f"rule #{index + 1}"


# ---------------------------------------------------------------- reading


def read_policy(text: str, source: str = "<policy>") -> tuple[dict[str, frozenset[str]], list[Rule]]:
    """The groups and the compiled rules of a policy file; PolicyError lists every problem with its line."""
    document = YamlSource(text, source)
    wording = _PolicyWording(document)
    findings = Findings(source)
    data = document.data if isinstance(document.data, dict) else {}
    if isinstance(data.get("rules"), list):
        for problem in _rule_problems(data["rules"], wording):
            findings.add(*problem)
    shape = validate(PolicyShape, wording, findings, context={"groups": _lenient_groups(data.get("groups"))})
    findings.raise_if_any()
    assert shape is not None
    rules = [rule.to_rule(document.line(("rules", i))) for i, rule in enumerate(shape.rules)]
    return {name: frozenset(members) for name, members in shape.groups.items()}, rules


def _lenient_groups(raw: object) -> dict[str, frozenset[str]]:
    """The groups as far as they are valid (each valid name, with its valid members), for the checks of
    the rules that name them while the groups' own errors are reported."""
    if not isinstance(raw, dict):
        return {}
    return {
        name: frozenset(m.lower() for m in members if isinstance(m, str) and is_guid(m.lower()))
        if isinstance(members, list)
        else frozenset()
        for name, members in raw.items()
        if v.is_name(name)
    }


def _rule_problems(raw_rules: list[Any], wording: _PolicyWording) -> list[tuple[int, str, str]]:
    """Duplicate rule names, and the fields an outcome needs or forbids, each checked whatever else is
    wrong with the rule. As (line, message, kind)."""
    line = wording.source.line
    found: list[tuple[int, str, str]] = []
    first_line: dict[str, int] = {}
    for index, raw in enumerate(raw_rules):
        if not isinstance(raw, dict):
            continue
        where = wording.rule_label(index)
        at = ("rules", index)
        name = raw.get("name")
        if v.is_name(name) and name in first_line:
            message = f"duplicate rule name '{name}' (first defined on line {first_line[name]})"
            found.append((line(at), message, "duplicate_key"))
        elif v.is_name(name):
            first_line[name] = line(at)
        given = raw.get("outcome")
        if given not in tuple(Outcome):
            continue
        problems: list[tuple[Loc, str]] = []
        if given == Outcome.DENY:
            problems += [((key,), f"'{key}' has no effect on {where}, whose outcome is deny") for key in _NOT_FOR_DENY
                         if key in raw]
            if "reason" not in raw:
                problems.append(((), f"{where} denies, so it needs a 'reason' telling the requester why"))
        else:
            if "reason" in raw:
                problems.append((("reason",), f"'reason' is only for deny rules; {where} has outcome {given}"))
            if "maxDuration" not in raw:
                problems.append(((), f"{where} is missing 'maxDuration'"))
            if given == Outcome.APPROVAL and "approval" not in raw:
                problems.append(((), f"{where} has outcome approval but no 'approval' (approver groups, required)"))
            if given == Outcome.AUTO and "approval" in raw:
                problems.append((("approval",), f"'approval' is only for outcome approval; {where} is auto"))
        if given != Outcome.AUTO and is_true(raw.get("breakGlass")):
            problems.append((("breakGlass",), f"breakGlass needs outcome auto; {where} is {given}"))
        found += [(line((*at, *below)), message, "") for below, message in problems]
    return found
