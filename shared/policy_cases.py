"""`jitgate policy test FILE`: example requests and the decisions the policy must give them (like `opa test`).

A case file names the policy (relative to itself), an optional `now`, and `cases`, each a partial
request, optional requester `groups` (otherwise the policy's groups of the requester), an optional
`now`, and what to `expect`. See policies/example.tests.yaml.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final

import yaml
from annotated_types import MinLen
from pydantic import Field, PlainValidator, ValidationInfo

from .adapters.embedded.policy_directory import PolicyDirectory
from .clock import SystemClock
from .domain.decision import Decision, Outcome
from .domain.errors import InvalidRequest, PolicyError
from .domain.ids import JITGATE_NAMESPACE
from .domain.policy import Policy
from .domain.policy.yaml_source import (
    Findings,
    Loc,
    Refusal,
    Shape,
    Wording,
    YamlScalar,
    YamlSource,
    flag,
    keys_of,
    outcome,
    text,
    validate,
    whole_number,
)
from .domain.request import AccessRequest, parse_access_request

DEFAULT_PRINCIPAL_ID = "00000000-0000-4000-8000-000000000000"
DEFAULT_DURATION = "PT1H"
DEFAULT_JUSTIFICATION = "policy test"

_EXAMPLE_TIME = "2026-11-26T10:00:00Z"


@dataclass(frozen=True)
class Expectation:
    """What a case expects of the decision; None (or `check_rule` False) means 'not checked'."""

    outcome: Outcome
    check_rule: bool = False
    rule: str | None = None
    break_glass: bool | None = None
    required_approvals: int | None = None
    reason_contains: str | None = None

    def differences(self, decision: Decision) -> list[str]:
        out = []
        if decision.outcome is not self.outcome:
            out.append(f"outcome is {decision.outcome.value}, expected {self.outcome.value}")
        if self.check_rule and decision.rule != self.rule:
            out.append(f"rule is {_rule_name(decision.rule)}, expected {_rule_name(self.rule)}")
        if self.break_glass is not None and decision.break_glass != self.break_glass:
            actual, wanted = str(decision.break_glass).lower(), str(self.break_glass).lower()
            out.append(f"breakGlass is {actual}, expected {wanted}")
        approvals = decision.required_approvals
        if self.required_approvals is not None and approvals != self.required_approvals:
            out.append(f"requiredApprovals is {approvals}, expected {self.required_approvals}")
        if self.reason_contains is not None and not any(self.reason_contains in r for r in decision.reasons):
            out.append(f"no reason contains {self.reason_contains!r}")
        return out


def _rule_name(rule: str | None) -> str:
    return f"'{rule}'" if rule is not None else "none (no rule matched)"


@dataclass(frozen=True)
class PolicyCase:
    """One example request, the circumstances it is evaluated in, and the expected decision."""

    name: str
    line: int
    request: AccessRequest
    groups: frozenset[str] | None  # None: the policy's groups of the requester
    now: datetime | None  # None: the file's `now`, else the clock
    expect: Expectation


@dataclass(frozen=True)
class CaseResult:
    """One case's verdict; `message` says what differed (empty when it passed)."""

    name: str
    line: int
    passed: bool
    message: str
    decision: Decision


@dataclass(frozen=True)
class CaseReport:
    """The verdicts of every case in one case file, in file order."""

    source: str
    policy_source: str
    results: tuple[CaseResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> list[CaseResult]:
        return [r for r in self.results if not r.passed]

    def render(self) -> str:
        lines = []
        for result in self.results:
            if result.passed:
                lines.append(f"PASS {result.name}")
            else:
                lines.append(f"FAIL {self.source}:{result.line}: {result.name}: {result.message}")
        failed = len(self.failures)
        lines.append(f"{len(self.results) - failed} passed, {failed} failed ({self.policy_source})")
        return "\n".join(lines)


def run_cases(path: str | Path, now: datetime | None = None) -> CaseReport:
    """Evaluate every case of the file against its policy. A malformed case file (or policy) raises
    PolicyError with every problem and its line; a case whose decision differs is a failed result."""
    policy, file_now, cases = load_cases(path)
    default_now = file_now or now or SystemClock().now()
    directory = PolicyDirectory(policy)
    results = []
    for case in cases:
        groups = case.groups
        if groups is None:
            groups = directory.groups_of(case.request.requester.principal_id)
        decision = policy.evaluate(case.request, groups, case.now or default_now)
        differences = case.expect.differences(decision)
        message = "; ".join(differences) + f" (decision: {decision.summary()})" if differences else ""
        results.append(CaseResult(case.name, case.line, not differences, message, decision))
    return CaseReport(str(path), policy.source, tuple(results))


def load_cases(path: str | Path) -> tuple[Policy, datetime | None, list[PolicyCase]]:
    """The policy a case file names, the file's `now`, and its cases; PolicyError lists every problem."""
    try:
        content = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError([f"{path}: cannot read the case file: {exc}"]) from None
    document = YamlSource(content, str(path))
    wording = _CaseWording(document)
    findings = Findings(str(path))
    data = document.data if isinstance(document.data, dict) else {}
    policy = _load_policy(document, data.get("policy"), Path(path).parent, findings)
    context = {"groups": policy.groups if policy is not None else None}
    shape = validate(_CaseFile, wording, findings, context)
    requests: dict[int, AccessRequest] = {}
    if isinstance(data.get("cases"), list):
        requests = _case_requests(data["cases"], wording, findings)
    findings.raise_if_any()
    assert shape is not None and policy is not None
    cases = [
        PolicyCase(
            case.name,
            document.line(("cases", i)),
            requests[i],
            frozenset(case.groups) if case.groups is not None else None,
            case.now,
            Expectation(
                case.expect.outcome,
                "rule" in case.expect.model_fields_set,
                case.expect.rule,
                case.expect.break_glass,
                case.expect.required_approvals,
                case.expect.reason_contains,
            ),
        )
        for i, case in enumerate(shape.cases)
    ]
    return policy, shape.now, cases


def _load_policy(document: YamlSource, ref: object, base: Path, findings: Findings) -> Policy | None:
    if not isinstance(ref, str) or not ref.strip():
        return None  # the shape says why
    policy_path = base / ref
    if not policy_path.is_file():
        findings.add(document.line(("policy",)), f"policy file '{policy_path}' does not exist")
        return None
    try:
        return Policy.load(policy_path)
    except PolicyError as exc:
        findings.extend_from_other_file(exc.errors)
        return None


# ---------------------------------------------------------------- the case file's shape


def _timestamp(value: object) -> datetime:
    """An ISO 8601 date-time with a time zone, in UTC."""
    if isinstance(value, YamlScalar) and not value.is_null:
        value = value.text  # an unquoted date-time is a YAML timestamp: read it as written
    if not isinstance(value, str):
        raise Refusal("{what} must be a date-time such as " + _EXAMPLE_TIME)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise Refusal("{what} {text!r} is not a date-time such as " + _EXAMPLE_TIME, text=value) from None
    if moment.tzinfo is None:
        raise Refusal("{what} {text!r} must carry a time zone, e.g. " + _EXAMPLE_TIME, text=value)
    return moment.astimezone(UTC)


def _group(value: object, info: ValidationInfo) -> str:
    name = text(value)
    groups = info.context["groups"] if info.context else None
    if groups is not None and name not in groups:
        known = ", ".join(sorted(groups)) or "none defined"
        raise Refusal("unknown group '{value}' in {where} (the policy's groups: {known})", known=known)
    return name


def _rule_or_none(value: object) -> str | None:
    """`rule: null` expects that no rule matched."""
    return None if isinstance(value, YamlScalar) and value.is_null else text(value)


Timestamp = Annotated[datetime, PlainValidator(_timestamp)]


class _Expect(Shape):
    outcome: Annotated[Outcome, PlainValidator(outcome)]
    rule: Annotated[str | None, PlainValidator(_rule_or_none)] = None
    break_glass: Annotated[bool, PlainValidator(flag)] | None = Field(None, alias="breakGlass")
    required_approvals: Annotated[int, PlainValidator(whole_number())] | None = Field(None, alias="requiredApprovals")
    reason_contains: Annotated[str, PlainValidator(text)] | None = Field(None, alias="reasonContains")


class _Case(Shape):
    name: Annotated[str, PlainValidator(text)]
    request: dict[str, Any]
    groups: list[Annotated[str, PlainValidator(_group)]] | None = None
    now: Timestamp | None = None
    expect: _Expect


class _CaseFile(Shape):
    policy: Annotated[str, PlainValidator(text)]
    now: Timestamp | None = None
    cases: Annotated[list[_Case], MinLen(1)]


_LABELS: Final[dict[Loc, str]] = {
    (): "the case file",
    ("cases", "#"): "{where}",
    ("cases", "#", "name"): "the name of case #{position}",
    ("cases", "#", "groups", "#"): "a group of {where}",
    ("cases", "#", "expect", "rule"): "expected rule of {where}",
}


class _CaseWording(Wording):
    mappings = {(): keys_of(_CaseFile), ("cases", "#"): keys_of(_Case), ("cases", "#", "expect"): keys_of(_Expect)}
    templates = {
        (("cases",), "too_short"): "cases is empty",
        (("cases", "#", "groups"), "list_type"): "groups of {where} must be a list of group names",
    }

    def label(self, loc: Loc) -> str:
        shape = self.shape(loc)
        template = _LABELS.get(shape)
        if template is None and len(shape) > 2 and shape[0] == "cases":
            template = f"{shape[-1]} of {{where}}"
        return (template or str(loc[-1])).format(**self.fields(loc))

    def fields(self, loc: Loc) -> dict[str, object]:
        if len(loc) > 1 and loc[0] == "cases" and isinstance(loc[1], int):
            return {"where": self.case_label(loc[1]), "position": loc[1] + 1}
        return {}

    def case_label(self, index: int) -> str:
        case = self.source.data["cases"][index]
        name = case.get("name") if isinstance(case, dict) else None
        return f"case '{name}'" if isinstance(name, str) and name.strip() else f"case #{index + 1}"


# ---------------------------------------------------------------- requests


def _case_requests(raw_cases: list[Any], wording: _CaseWording, findings: Findings) -> dict[int, AccessRequest]:
    """Each case's request (by position), filled and validated; duplicate case names."""
    document = wording.source
    requests = {}
    first_line: dict[str, int] = {}
    for index, raw in enumerate(raw_cases):
        if not isinstance(raw, dict):
            continue
        at = ("cases", index)
        where = wording.case_label(index)
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            name = None
        elif name in first_line:
            findings.add(document.line(at), f"duplicate case name '{name}' (first on line {first_line[name]})")
        else:
            first_line[name] = document.line(at)
        if isinstance(raw.get("request"), dict):
            request = _load_request(document, (*at, "request"), where, name or str(index + 1), findings)
            if request is not None:
                requests[index] = request
    return requests


def _load_request(
    document: YamlSource, at: Loc, where: str, name: str, findings: Findings
) -> AccessRequest | None:
    """A partial request filled with valid defaults, then validated exactly like one from the bus."""
    try:
        given: dict[str, Any] = document.plain(at)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else document.line(at)
        findings.add(line, f"request of {where} cannot be read: {getattr(exc, 'problem', None) or exc}")
        return None
    body: dict[str, Any] = {
        "schemaVersion": 1,
        "requestId": str(uuid.uuid5(JITGATE_NAMESPACE, f"policy-case:{name}")),
        "duration": DEFAULT_DURATION,
        "justification": DEFAULT_JUSTIFICATION,
        **given,
    }
    requester = given.get("requester", {})
    if isinstance(requester, dict):
        body["requester"] = {"principalId": DEFAULT_PRINCIPAL_ID, "displayName": "Policy test", **requester}
    if "target" not in given:
        findings.add(document.line(at), f"request of {where} is missing 'target' (provider, scope, role)")
        return None
    try:
        return parse_access_request(json.dumps(body, default=str))
    except InvalidRequest as exc:
        for error in exc.errors:
            line = document.line((*at, *error.loc.split(".")))
            findings.add(line, f"request of {where}: {error.loc}: {error.msg}")
        return None
