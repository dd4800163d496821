"""`jitgate policy test FILE`: example requests and the decisions the policy must give them (like `opa test`).

A case file names the policy (relative to itself), an optional `now`, and `cases`, each a partial
request, optional requester `groups` (otherwise the policy's groups of the requester), an optional
`now`, and what to `expect`. See policies/example.tests.yaml.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from .adapters.embedded.policy_directory import PolicyDirectory
from .clock import SystemClock
from .domain.decision import Decision, Outcome
from .domain.errors import InvalidRequest, PolicyError
from .domain.ids import JITGATE_NAMESPACE
from .domain.policy import Policy, YamlReader, line_of
from .domain.request import AccessRequest, parse_access_request

DEFAULT_PRINCIPAL_ID = "00000000-0000-4000-8000-000000000000"
DEFAULT_DURATION = "PT1H"
DEFAULT_JUSTIFICATION = "policy test"

_FILE_KEYS = ("policy", "now", "cases")
_CASE_KEYS = ("name", "request", "groups", "now", "expect")
_EXPECT_KEYS = ("outcome", "rule", "breakGlass", "requiredApprovals", "reasonContains")


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
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError([f"{path}: cannot read the case file: {exc}"]) from None
    reader = YamlReader(str(path))
    root = reader.compose(text)
    if root is None:
        reader.raise_if_errors()
    assert root is not None
    top = reader.mapping(root, "the case file", _FILE_KEYS, required=("policy", "cases"))
    if top is None:
        reader.raise_if_errors()
    assert top is not None

    policy: Policy | None = None
    if "policy" in top:
        policy = _load_policy(reader, top["policy"], Path(path).parent)
    file_now = reader.timestamp(top["now"], "now") if "now" in top else None

    cases: list[PolicyCase] = []
    cases_node = top.get("cases")
    if cases_node is not None and not isinstance(cases_node, yaml.SequenceNode):
        reader.error(cases_node, "cases must be a list")
    elif cases_node is not None:
        if not cases_node.value:
            reader.error(cases_node, "cases is empty")
        first_line: dict[str, int] = {}
        for position, node in enumerate(cases_node.value, start=1):
            case = _load_case(reader, node, position, policy, first_line)
            if case is not None:
                cases.append(case)
    reader.raise_if_errors()
    assert policy is not None
    return policy, file_now, cases


def _load_policy(reader: YamlReader, node: yaml.Node, base: Path) -> Policy | None:
    ref = reader.string(node, "policy")
    if ref is None:
        return None
    policy_path = base / ref
    if not policy_path.is_file():
        reader.error(node, f"policy file '{policy_path}' does not exist")
        return None
    try:
        return Policy.load(policy_path)
    except PolicyError as exc:
        reader.errors.extend(exc.errors)
        return None


def _load_case(
    reader: YamlReader, node: yaml.Node, position: int, policy: Policy | None, first_line: dict[str, int]
) -> PolicyCase | None:
    errors_before = len(reader.errors)
    name: str | None = None
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == "name":
                name = reader.string(value, f"the name of case #{position}")
                break
    where = f"case '{name}'" if name is not None else f"case #{position}"
    if name is not None:
        if name in first_line:
            reader.error(node, f"duplicate case name '{name}' (first on line {first_line[name]})")
        else:
            first_line[name] = line_of(node)
    fields = reader.mapping(node, where, _CASE_KEYS, required=("name", "request", "expect"))
    if fields is None:
        return None

    request = None
    if "request" in fields:
        request = _load_request(reader, fields["request"], where, name or str(position))
    groups: frozenset[str] | None = None
    if "groups" in fields:
        groups = _load_groups(reader, fields["groups"], where, policy)
    now = reader.timestamp(fields["now"], f"now of {where}") if "now" in fields else None
    expect = _load_expectation(reader, fields["expect"], where) if "expect" in fields else None

    if len(reader.errors) > errors_before or name is None or request is None or expect is None:
        return None
    return PolicyCase(name, line_of(node), request, groups, now, expect)


def _load_request(reader: YamlReader, node: yaml.Node, where: str, name: str) -> AccessRequest | None:
    """A partial request filled with valid defaults, then validated exactly like one from the bus."""
    if not isinstance(node, yaml.MappingNode):
        reader.error(node, f"request of {where} must be a mapping")
        return None
    given: dict[str, Any] = reader.plain(node)
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
        reader.error(node, f"request of {where} is missing 'target' (provider, scope, role)")
        return None
    try:
        return parse_access_request(json.dumps(body, default=str))
    except InvalidRequest as exc:
        for error in exc.errors:
            reader.error(_node_at(node, error.loc), f"request of {where}: {error.loc}: {error.msg}")
        return None


def _node_at(node: yaml.Node, loc: str) -> yaml.Node:
    """The deepest node along a dotted path such as `target.scope` (for the error's line number)."""
    for part in loc.split("."):
        if not isinstance(node, yaml.MappingNode):
            break
        found = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part), None)
        if found is None:
            break
        node = found
    return node


def _load_groups(
    reader: YamlReader, node: yaml.Node, where: str, policy: Policy | None
) -> frozenset[str] | None:
    if not isinstance(node, yaml.SequenceNode):
        reader.error(node, f"groups of {where} must be a list of group names")
        return None
    names = set()
    for item in node.value:
        name = reader.string(item, f"a group of {where}")
        if name is None:
            continue
        if policy is not None and name not in policy.groups:
            known = ", ".join(sorted(policy.groups)) or "none defined"
            reader.error(item, f"unknown group '{name}' in {where} (the policy's groups: {known})")
            continue
        names.add(name)
    return frozenset(names)


def _load_expectation(reader: YamlReader, node: yaml.Node, where: str) -> Expectation | None:
    errors_before = len(reader.errors)
    fields = reader.mapping(node, f"expect of {where}", _EXPECT_KEYS, required=("outcome",))
    if fields is None:
        return None
    outcome = reader.outcome(fields["outcome"], f"outcome of {where}") if "outcome" in fields else None
    check_rule = "rule" in fields
    rule: str | None = None
    if check_rule:
        rule_node = fields["rule"]
        # `rule: null` expects that no rule matched.
        if not reader.is_null(rule_node):
            rule = reader.string(rule_node, f"expected rule of {where}")
    break_glass = None
    if "breakGlass" in fields:
        break_glass = reader.boolean(fields["breakGlass"], f"breakGlass of {where}")
    approvals = None
    if "requiredApprovals" in fields:
        approvals = reader.integer(fields["requiredApprovals"], f"requiredApprovals of {where}")
    contains = None
    if "reasonContains" in fields:
        contains = reader.string(fields["reasonContains"], f"reasonContains of {where}")
    if len(reader.errors) > errors_before or outcome is None:
        return None
    return Expectation(outcome, check_rule, rule, break_glass, approvals, contains)
