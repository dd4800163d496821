"""The policy engine: scope globs, first match, conditions, compile errors, the case runner, the directory."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.adapters.embedded.policy_directory import PolicyDirectory
from shared.domain.decision import Outcome
from shared.domain.errors import PolicyError
from shared.domain.policy import Policy
from shared.domain.request import AccessRequest, Target, parse_access_request
from shared.policy_cases import run_cases

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "policies" / "example.yaml"
EXAMPLE_TESTS = ROOT / "policies" / "example.tests.yaml"

DEV = "11111111-1111-4111-8111-111111111111"
PROD = "22222222-2222-4222-8222-222222222222"
ALICE = "aaaaaaaa-0000-4000-8000-00000000000a"
BOB = "bbbbbbbb-0000-4000-8000-00000000000b"
CAROL = "cccccccc-0000-4000-8000-00000000000c"
JANE = "dddddddd-0000-4000-8000-00000000000d"
THURSDAY_10 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)

GROUPS = f"""
groups:
  approvers: [{ALICE}, {BOB}]
  oncall: [{CAROL}]
  engineers: [{ALICE}, {BOB}, {CAROL}, {JANE}]
"""


def make_request(
    scope: str,
    role: str = "Reader",
    provider: str | None = None,
    duration: str = "PT1H",
    justification: str = "policy test",
    ticket: str | None = None,
    principal: str = JANE,
) -> AccessRequest:
    body: dict[str, Any] = {
        "schemaVersion": 1,
        "requestId": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        "requester": {"principalId": principal, "displayName": "Test"},
        "target": {
            "provider": provider or ("local" if scope.startswith("/") else "gcp-iam"),
            "scope": scope,
            "role": role,
        },
        "duration": duration,
        "justification": justification,
    }
    if ticket is not None:
        body["ticket"] = ticket
    return parse_access_request(json.dumps(body))


def make_policy(rules: str, groups: str = GROUPS) -> Policy:
    indented = textwrap.indent(textwrap.dedent(rules), "  ")
    return Policy.from_text(f"version: 1\n{textwrap.dedent(groups)}\nrules:\n{indented}")


def one_rule(extra: str = "", scopes: str = '["**"]', roles: str = '"*"', outcome: str = "auto") -> Policy:
    lines = f"""\
    - name: the-rule
      match: {{providers: "*", roles: {roles}, scopes: {scopes}}}
      outcome: {outcome}
    """
    return make_policy(textwrap.dedent(lines) + textwrap.indent(textwrap.dedent(extra), "  "))


def compile_errors(text: str, source: str = "p.yaml") -> list[str]:
    with pytest.raises(PolicyError) as caught:
        Policy.from_text(textwrap.dedent(text), source=source)
    return caught.value.errors


# ---------------------------------------------------------------- scope globs


D = f"/subscriptions/{DEV}"
P = f"/subscriptions/{PROD}"
WEB_APP = f"{D}/resourceGroups/r/providers/Microsoft.Web/sites/app"


@pytest.mark.parametrize(
    ("pattern", "scope", "matches"),
    [
        (f"{D}/**", D, True),  # ** is zero segments too
        (f"{D}/**", f"{D}/resourceGroups/rg-a", True),
        (f"{D}/**", WEB_APP, True),
        (f"{D}/**", P, False),
        (f"{D}/**", f"{P}/resourceGroups/{DEV}", False),
        ("/subscriptions/*", D, True),
        ("/subscriptions/*", f"{D}/resourceGroups/rg-a", False),  # * is exactly one segment
        (f"{D}/*/**", D, False),
        ("/subscriptions/*/resourceGroups/rg-*-dev", f"{D}/resourceGroups/rg-pay-dev", True),
        ("/subscriptions/*/resourceGroups/rg-*-dev", f"{D}/resourceGroups/rg-pay-dev/providers/A.B/c/d", False),
        ("/subscriptions/*/resourceGroups/rg-*-dev", f"{D}/resourceGroups/rg-pay-devx", False),
        ("/subscriptions/*/resourceGroups/rg-*-dev", f"{D}/resourceGroups/xrg-pay-dev", False),
        ("/subscriptions/*/resourceGroups/rg-*-dev", f"{D}/resourceGroups/rg-dev", False),
        (f"{D}/resourceGroups/rg-a", f"{D}/resourceGroups/rg-ab", False),
        (f"{D}/resourceGroups/rg-a", f"{D}/resourceGroups/rg-a/providers/A.B/c/d", False),
        (f"{D}/resourceGroups/RG-A", f"/SUBSCRIPTIONS/{DEV.upper()}/resourcegroups/rg-a", True),
        (f"{D}/resourceGroups/rg.prod", f"{D}/resourceGroups/rgXprod", False),
        (f"{D}/resourceGroups/rg(1)", f"{D}/resourceGroups/rg(1)", True),
        ("/**/resourceGroups/rg-a", f"{D}/resourceGroups/rg-a", True),
        (f"{D}/**/sites/*", WEB_APP, True),
        (f"{D}/**/**/sites/*", WEB_APP, True),
        ("**", D, True),
        ("**", "projects/acme-pay", True),
        ("projects/acme-*", "projects/acme-pay", True),
        ("projects/acme-*", "projects/other-pay", False),
        ("projects/*", "folders/123", False),
        ("*/subscriptions/*", D, False),  # * is never the empty segment before an ARM path's leading '/'
        ("*/**", D, False),
        ("projects/**", "projects/acme-pay", True),
    ],
)
@pytest.mark.parametrize("others", [0, 30])  # a few rules are scanned one by one, many go through a ScopeTree
def test_scope_patterns_match_whole_segments_case_insensitively(
    pattern: str, scope: str, matches: bool, others: int
) -> None:
    the_rule = f"- name: the-rule\n  match: {{providers: '*', roles: '*', scopes: {json.dumps([pattern])}}}\n"
    policy = make_policy(fillers(others) + the_rule + "  outcome: auto\n  maxDuration: PT1H\n")
    role = "Reader" if scope.startswith("/") else "roles/viewer"
    decision = policy.evaluate(make_request(scope, role), frozenset(), THURSDAY_10)
    assert (decision.rule == "the-rule") is matches, decision.summary()


@pytest.mark.parametrize("scope", [f"/subscriptions/{DEV}/resourceGroups/..", f"/subscriptions/{DEV}/../{PROD}",
                                   f"/subscriptions/{DEV}/./x", f"/subscriptions/{DEV}//x", f"/subscriptions/{DEV}/"])
def test_a_scope_that_is_not_one_literal_path_never_matches_even_when_the_model_was_bypassed(scope: str) -> None:
    policy = one_rule("maxDuration: PT1H", scopes=json.dumps([f"/subscriptions/{DEV}/**", "**"]))
    valid = make_request(f"/subscriptions/{DEV}")
    sneaky = valid.model_copy(update={"target": Target.model_construct(provider=valid.target.provider,
                                                                       scope=scope, role="Reader")})
    decision = policy.evaluate(sneaky, frozenset(), THURSDAY_10)
    assert decision.outcome is Outcome.DENY
    assert decision.rule is None
    assert "not one literal resource path" in decision.reasons[0]


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("/subscriptions/../x", "'..' segment"),
        ("/subscriptions/./x", "'.' segment"),
        ("/subscriptions/*/resourceGroups/rg-**", "must be a whole segment"),
        ("/subscriptions//x", "empty path segment"),
        ("/subscriptions/x/", "empty path segment"),
        ("/subscriptions/[ab]", "may only contain"),
        ("/subscriptions/.+", "may only contain"),
    ],
)
def test_scope_patterns_that_cannot_mean_a_path_are_refused(pattern: str, problem: str) -> None:
    errors = compile_errors(f"""\
        version: 1
        rules:
          - name: r
            match: {{providers: "*", roles: "*", scopes: [{json.dumps(pattern)}]}}
            outcome: auto
            maxDuration: PT1H
        """)
    assert len(errors) == 1
    assert errors[0].startswith("p.yaml:4: scope pattern")
    assert problem in errors[0]


def test_roles_match_names_and_ids_case_insensitively() -> None:
    policy = one_rule("maxDuration: PT1H", roles='[Reader, "B24988AC-6180-42A0-AB88-20F7382DD24C"]')
    scope = f"/subscriptions/{DEV}"
    assert policy.evaluate(make_request(scope, "READER"), frozenset(), THURSDAY_10).rule == "the-rule"
    assert policy.evaluate(make_request(scope, "b24988ac-6180-42a0-ab88-20f7382dd24c"), frozenset(),
                           THURSDAY_10).rule == "the-rule"
    assert policy.evaluate(make_request(scope, "Contributor"), frozenset(), THURSDAY_10).rule is None


# ---------------------------------------------------------------- order and matching


FIRST = f"""\
- name: first
  match: {{providers: [local], roles: [Reader], scopes: ["/subscriptions/{DEV}/**"]}}
  outcome: auto
  maxDuration: PT1H
"""
SECOND = """\
- name: second
  match: {providers: "*", roles: "*", scopes: ["**"]}
  outcome: approval
  approval: {groups: [approvers]}
  maxDuration: PT8H
"""
TWO_RULES = FIRST + SECOND


def fillers(count: int, tag: str = "other") -> str:
    """Rules that match nothing the tests ask for, so that the policy is large enough for a ScopeTree."""
    return "".join(
        f"- name: {tag}-{i}\n  match: {{providers: '*', roles: '*', scopes: ['/x{i}/**', 'projects/x{i}-*']}}\n"
        "  outcome: deny\n  reason: filler\n"
        for i in range(count)
    )


@pytest.mark.parametrize("others", [0, 30])
def test_the_first_matching_rule_decides(others: int) -> None:
    request = make_request(f"/subscriptions/{DEV}")
    for rules, winner in ((FIRST + fillers(others) + SECOND, "first"), (SECOND + fillers(others) + FIRST, "second")):
        assert make_policy(rules).evaluate(request, frozenset(), THURSDAY_10).rule == winner
        assert make_policy(fillers(others, "before") + rules).evaluate(request, frozenset(), THURSDAY_10).rule == winner


@pytest.mark.parametrize("others", [0, 30])
def test_the_decision_names_the_first_of_the_rule_patterns_that_matched(others: int) -> None:
    scopes = ["/x/**", f"{D}/**", "/subscriptions/*"]
    rule = f"- name: the-rule\n  match: {{providers: '*', roles: '*', scopes: {json.dumps(scopes)}}}\n"
    policy = make_policy(fillers(others) + rule + "  outcome: auto\n  maxDuration: PT1H\n")
    decision = policy.evaluate(make_request(D), frozenset(), THURSDAY_10)
    assert decision.reasons[0] == f"rule 'the-rule' matches local role 'Reader' at '{D}' (scope pattern '{D}/**')"


def test_a_later_rule_decides_what_the_first_does_not_match() -> None:
    policy = make_policy(TWO_RULES)
    decision = policy.evaluate(make_request(f"/subscriptions/{PROD}", "Contributor"), frozenset(), THURSDAY_10)
    assert decision.rule == "second"
    assert decision.outcome is Outcome.APPROVAL


def test_nothing_matches_means_deny_and_says_what_was_asked() -> None:
    policy = make_policy(FIRST)
    decision = policy.evaluate(make_request(f"/subscriptions/{PROD}", "Contributor"), frozenset(), THURSDAY_10)
    assert decision.outcome is Outcome.DENY
    assert decision.rule is None
    assert decision.reasons == [f"no rule matches local role 'Contributor' at scope '/subscriptions/{PROD}'"]


def test_providers_restrict_a_rule() -> None:
    policy = make_policy(FIRST)
    scope = f"/subscriptions/{DEV}"
    assert policy.evaluate(make_request(scope, provider="azure-rbac"), frozenset(), THURSDAY_10).rule is None
    assert policy.evaluate(make_request(scope, provider="local"), frozenset(), THURSDAY_10).rule == "first"


def test_requester_groups_make_a_rule_match_only_its_members_and_others_fall_through() -> None:
    policy = make_policy("""\
        - name: oncall-only
          match: {providers: "*", roles: "*", scopes: ["**"], requesterGroups: [oncall, approvers]}
          outcome: auto
          breakGlass: true
          maxDuration: PT1H
        - name: everyone
          match: {providers: "*", roles: "*", scopes: ["**"]}
          outcome: deny
          reason: not you
        """)
    request = make_request(f"/subscriptions/{PROD}")
    assert policy.evaluate(request, frozenset({"oncall"}), THURSDAY_10).rule == "oncall-only"
    assert policy.evaluate(request, frozenset({"approvers", "x"}), THURSDAY_10).rule == "oncall-only"
    assert policy.evaluate(request, frozenset({"engineers"}), THURSDAY_10).rule == "everyone"
    assert policy.evaluate(request, frozenset(), THURSDAY_10).rule == "everyone"


def test_a_deny_rule_gives_its_reason_first() -> None:
    policy = one_rule("reason: Owner is never granted just in time", roles="[Owner]", outcome="deny")
    decision = policy.evaluate(make_request(f"/subscriptions/{DEV}", "owner"), frozenset(), THURSDAY_10)
    assert decision.outcome is Outcome.DENY
    assert decision.rule == "the-rule"
    assert decision.reasons[0] == "Owner is never granted just in time"
    assert "matches local role 'owner'" in decision.reasons[1]


def test_explain_walks_every_rule_and_names_the_first_reason_it_did_not_match() -> None:
    policy = Policy.load(EXAMPLE)
    request = make_request(f"/subscriptions/{PROD}/resourceGroups/rg-pay-prod", "Contributor",
                           justification="Rotate the payments DB firewall rule", ticket="CHG-1")
    lines = policy.explain(request, frozenset({"engineers", "oncall"}), THURSDAY_10)
    assert len(lines) == len(policy.rules)
    assert lines[0].startswith("deny-owner: no match: role 'Contributor' is not one of [Owner")
    assert lines[2].startswith("dev-contributor: no match: scope ")
    assert lines[3] == (
        "prod-break-glass: matches; first match, this rule decides "
        "(unmet: ticket 'CHG-1' does not match the required pattern '^INC-[0-9]+$')"
    )
    assert lines[4] == "prod-contributor: matches, but 'prod-break-glass' comes first"
    assert lines[6] == "gcp-viewer: no match: provider local is not one of [gcp-iam]"
    jane = policy.explain(request, frozenset({"engineers"}), THURSDAY_10)
    assert jane[3] == "prod-break-glass: no match: the requester is in none of the groups [oncall]"
    assert jane[4] == "prod-contributor: matches; first match, this rule decides"


# ---------------------------------------------------------------- conditions


CONDITIONS = """\
maxDuration: PT4H
justification: {minLength: 20, pattern: "(?i)incident|change"}
ticket: {required: true, pattern: "^(INC|CHG)-[0-9]+$"}
window: {days: [mon, tue, wed, thu, fri], start: "08:00", end: 18:00}
"""
GOOD = {"duration": "PT4H", "justification": "Change the firewall rule now", "ticket": "CHG-7"}


def decide_conditions(now: datetime = THURSDAY_10, **overrides: Any) -> Any:
    policy = one_rule(CONDITIONS)
    fields = {**GOOD, **overrides}
    return policy.evaluate(make_request(f"/subscriptions/{DEV}", **fields), frozenset(), now)


def test_a_request_meeting_every_condition_is_granted_up_to_the_rule_maximum() -> None:
    decision = decide_conditions()
    assert decision.outcome is Outcome.AUTO
    assert decision.max_duration == timedelta(hours=4)
    assert decision.reasons[-1] == "auto-approved for at most 4 hours"


def test_duration_over_the_maximum_by_less_than_a_second_is_said_so() -> None:
    decision = decide_conditions(duration="PT4H0.5S")
    assert decision.reasons[0] == "a little over 4 hours is longer than this rule allows (4 hours)"


def test_duration_over_the_maximum_is_denied_by_that_rule() -> None:
    decision = decide_conditions(duration="PT4H1M")
    assert decision.outcome is Outcome.DENY
    assert decision.rule == "the-rule"
    assert decision.reasons[0] == "4 hours 1 minute is longer than this rule allows (4 hours)"
    assert decision.max_duration == timedelta(hours=4)


def test_justification_length_ignores_surrounding_space_and_pattern_must_be_found() -> None:
    short = decide_conditions(justification="   change it   ")
    assert short.reasons[0] == "justification is 9 characters, fewer than the rule's minimum 20"
    off_topic = decide_conditions(justification="I would like to look around please")
    assert off_topic.reasons[0] == "justification does not match the required pattern '(?i)incident|change'"


def test_ticket_missing_or_malformed_is_denied() -> None:
    assert decide_conditions(ticket=None).reasons[0] == "a ticket matching '^(INC|CHG)-[0-9]+$' is required"
    assert decide_conditions(ticket="JIRA-7").reasons[0] == (
        "ticket 'JIRA-7' does not match the required pattern '^(INC|CHG)-[0-9]+$'"
    )


def test_an_optional_ticket_may_be_absent_but_must_match_when_given() -> None:
    policy = one_rule("maxDuration: PT1H\nticket: {pattern: '^INC-[0-9]+$'}")
    scope = f"/subscriptions/{DEV}"
    assert policy.evaluate(make_request(scope), frozenset(), THURSDAY_10).outcome is Outcome.AUTO
    assert policy.evaluate(make_request(scope, ticket="INC-1"), frozenset(), THURSDAY_10).outcome is Outcome.AUTO
    assert policy.evaluate(make_request(scope, ticket="X-1"), frozenset(), THURSDAY_10).outcome is Outcome.DENY


def test_a_ticket_must_match_its_pattern_whole_while_a_justification_need_only_contain_it() -> None:
    policy = one_rule("maxDuration: PT1H\nticket: {pattern: 'INC-[0-9]+'}\njustification: {pattern: 'INC-[0-9]+'}")
    scope = f"/subscriptions/{DEV}"
    good = make_request(scope, ticket="INC-12", justification="see INC-12 for details")
    assert policy.evaluate(good, frozenset(), THURSDAY_10).outcome is Outcome.AUTO
    for ticket in ("XINC-12", "INC-12a"):
        decision = policy.evaluate(make_request(scope, ticket=ticket, justification="INC-12"), frozenset(), THURSDAY_10)
        assert decision.reasons[0] == f"ticket '{ticket}' does not match the required pattern 'INC-[0-9]+'"


def test_every_failing_condition_is_spelled_out() -> None:
    saturday = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    decision = decide_conditions(now=saturday, duration="PT8H", justification="pls", ticket="nope")
    assert decision.outcome is Outcome.DENY
    assert decision.reasons[:-1] == [
        "8 hours is longer than this rule allows (4 hours)",
        "justification is 3 characters, fewer than the rule's minimum 20",
        "justification does not match the required pattern '(?i)incident|change'",
        "ticket 'nope' does not match the required pattern '^(INC|CHG)-[0-9]+$'",
        "outside the rule's window mon,tue,wed,thu,fri 08:00-18:00 UTC (now sat 12:00 UTC)",
    ]
    assert decision.reasons[-1].startswith("rule 'the-rule' matches local role 'Reader'")


@pytest.mark.parametrize(
    ("now", "inside"),
    [
        (datetime(2026, 11, 26, 7, 59, 59, 999999, tzinfo=UTC), False),
        (datetime(2026, 11, 26, 8, 0, tzinfo=UTC), True),  # start is inclusive
        (datetime(2026, 11, 26, 17, 59, 59, tzinfo=UTC), True),
        (datetime(2026, 11, 26, 18, 0, tzinfo=UTC), False),  # end is exclusive
        (datetime(2026, 11, 27, 12, 0, tzinfo=UTC), True),  # friday
        (datetime(2026, 11, 28, 12, 0, tzinfo=UTC), False),  # saturday
        (datetime(2026, 11, 26, 9, 30, tzinfo=UTC).astimezone(tz=None), True),  # any zone, compared in UTC
        (datetime.fromisoformat("2026-11-26T19:30:00+02:00"), True),  # 17:30 UTC
        (datetime.fromisoformat("2026-11-26T06:30:00-02:00"), True),  # 08:30 UTC
    ],
)
def test_window_boundaries(now: datetime, inside: bool) -> None:
    decision = decide_conditions(now=now)
    assert (decision.outcome is Outcome.AUTO) is inside, decision.summary()


@pytest.mark.parametrize(
    ("now", "inside"),
    [
        (datetime(2026, 11, 27, 21, 59, tzinfo=UTC), False),  # friday before start
        (datetime(2026, 11, 27, 22, 0, tzinfo=UTC), True),  # friday night
        (datetime(2026, 11, 28, 5, 59, tzinfo=UTC), True),  # saturday morning, still friday's window
        (datetime(2026, 11, 28, 6, 0, tzinfo=UTC), False),
        (datetime(2026, 11, 28, 23, 0, tzinfo=UTC), False),  # saturday is not listed
        (datetime(2026, 11, 27, 3, 0, tzinfo=UTC), False),  # friday early: thursday is not listed
    ],
)
def test_a_window_ending_before_it_starts_runs_past_midnight(now: datetime, inside: bool) -> None:
    policy = one_rule("maxDuration: PT1H\nwindow: {days: [fri], start: '22:00', end: '06:00'}")
    decision = policy.evaluate(make_request(f"/subscriptions/{DEV}"), frozenset(), now)
    assert (decision.outcome is Outcome.AUTO) is inside


def test_a_window_may_end_at_midnight_and_defaults_to_every_day() -> None:
    policy = one_rule("maxDuration: PT1H\nwindow: {start: '20:00', end: '24:00'}")
    request = make_request(f"/subscriptions/{DEV}")
    assert policy.evaluate(request, frozenset(), datetime(2026, 11, 29, 23, 59, tzinfo=UTC)).outcome is Outcome.AUTO
    assert policy.evaluate(request, frozenset(), datetime(2026, 11, 29, 0, 0, tzinfo=UTC)).outcome is Outcome.DENY


def test_a_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide_conditions(now=datetime(2026, 11, 26, 10, 0))


def test_break_glass_is_auto_approved_and_flagged() -> None:
    policy = one_rule("maxDuration: PT1H\nbreakGlass: true")
    decision = policy.evaluate(make_request(f"/subscriptions/{PROD}"), frozenset(), THURSDAY_10)
    assert decision.outcome is Outcome.AUTO
    assert decision.break_glass is True
    assert decision.required_approvals == 0
    assert "flagged for after-the-fact review" in decision.reasons[-1]
    plain = one_rule("maxDuration: PT1H").evaluate(make_request(f"/subscriptions/{PROD}"), frozenset(), THURSDAY_10)
    assert plain.break_glass is False


def test_an_approval_decision_carries_approvers_count_and_deadlines() -> None:
    policy = one_rule("maxDuration: PT2H\napproval: {groups: [approvers, oncall], required: 3, deadline: PT4H}",
                      outcome="approval")
    decision = policy.evaluate(make_request(f"/subscriptions/{PROD}", duration="PT2H"), frozenset(), THURSDAY_10)
    assert decision.outcome is Outcome.APPROVAL
    assert decision.required_approvals == 3
    assert decision.approver_groups == ["approvers", "oncall"]
    assert decision.approval_deadline == timedelta(hours=4)
    assert decision.max_duration == timedelta(hours=2)
    assert decision.break_glass is False
    assert decision.reasons[1] == "needs 3 distinct approvals from approvers, oncall within 4 hours"
    assert decision.reasons[2] == "grant for at most 2 hours"


def test_approval_defaults_to_one_approver_and_a_day_to_decide() -> None:
    policy = one_rule("maxDuration: PT2H\napproval: {groups: [oncall]}", outcome="approval")
    decision = policy.evaluate(make_request(f"/subscriptions/{PROD}"), frozenset(), THURSDAY_10)
    assert decision.required_approvals == 1
    assert decision.approval_deadline == timedelta(hours=24)


def test_a_condition_failure_on_an_approval_rule_denies_without_asking_anyone() -> None:
    policy = one_rule("maxDuration: PT2H\napproval: {groups: [approvers], required: 2}", outcome="approval")
    decision = policy.evaluate(make_request(f"/subscriptions/{PROD}", duration="PT3H"), frozenset(), THURSDAY_10)
    assert decision.outcome is Outcome.DENY
    assert decision.required_approvals == 0
    assert decision.approver_groups == []


# ---------------------------------------------------------------- compile errors


RULE_HEAD = """\
version: 1
groups:
  approvers: [aaaaaaaa-0000-4000-8000-00000000000a, bbbbbbbb-0000-4000-8000-00000000000b]
rules:
  - name: r
    match: {providers: [local], roles: [Reader], scopes: ["/subscriptions/*"]}
"""


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        ("    outcome: auto\n    maxDuration: PT1H\n  - name: a: b\n", "p.yaml:9: invalid YAML: mapping values"),
        ("    outcome: auto\n    maxDuration: PT1H\n    colour: red\n", "p.yaml:9: unknown key 'colour' in rule 'r'"),
        ("    outcome: auto\n    maxDuration: 2\n", "p.yaml:8: maxDuration of rule 'r' must be a string"),
        ("    outcome: auto\n    maxDuration: P1M\n", "p.yaml:8: maxDuration of rule 'r' 'P1M' is not an ISO 8601"),
        ("    outcome: auto\n    maxDuration: PT1H\n    ticket: {pattern: '(INC'}\n",
         "p.yaml:9: ticket pattern of rule 'r' '(INC' is not a valid regular expression"),
        ("    outcome: approval\n    maxDuration: PT1H\n    approval: {groups: [ghosts]}\n",
         "p.yaml:9: unknown group 'ghosts' in approval groups of rule 'r' (groups: approvers)"),
        ("    outcome: approval\n    maxDuration: PT1H\n    approval: {required: 1}\n",
         "p.yaml:9: approval of rule 'r' is missing 'groups'"),
        ("    outcome: approval\n    maxDuration: PT1H\n    approval: {groups: [approvers], required: 3}\n",
         "p.yaml:9: rule 'r' requires 3 distinct approvers but its approver groups (approvers) have 2 members"),
        ("    outcome: approval\n    maxDuration: PT1H\n",
         "p.yaml:5: rule 'r' has outcome approval but no 'approval'"),
        ("    outcome: auto\n    maxDuration: PT1H\n    window: {days: [mon, someday], start: '9:00', end: '17:00'}\n",
         "p.yaml:9: window day 'someday' in rule 'r' is not one of mon"),
        ("    outcome: auto\n    maxDuration: PT1H\n    window: {start: '09:00', end: '09:00'}\n",
         "p.yaml:9: window of rule 'r' starts and ends at 09:00: never open"),
        ("    outcome: approval\n    approval: {groups: [approvers]}\n    maxDuration: PT1H\n    breakGlass: true\n",
         "p.yaml:10: breakGlass needs outcome auto; rule 'r' is approval"),
        ("    outcome: auto\n", "p.yaml:5: rule 'r' is missing 'maxDuration'"),
        ("    outcome: deny\n", "p.yaml:5: rule 'r' denies, so it needs a 'reason'"),
        ("    outcome: deny\n    reason: never\n    maxDuration: PT1H\n",
         "p.yaml:9: 'maxDuration' has no effect on rule 'r'"),
        ("    outcome: sometimes\n    maxDuration: PT1H\n", "p.yaml:7: outcome of rule 'r' is 'sometimes'"),
        ("    outcome: auto\n    maxDuration: PT1H\n    justification: {minLength: '20'}\n",
         "p.yaml:9: justification minLength of rule 'r' must be a whole number"),
        ("    outcome: auto\n    maxDuration: PT1H\n"
         "  - name: r\n    match: {providers: '*', roles: '*', scopes: ['**']}\n    outcome: deny\n    reason: x\n",
         "p.yaml:9: duplicate rule name 'r' (first defined on line 5)"),
        ("    outcome: auto\n    maxDuration: PT1H\n    maxDuration: PT2H\n",
         "p.yaml:9: duplicate key 'maxDuration' in rule 'r'"),
    ],
)
def test_a_bad_rule_is_refused_with_its_line_number(tail: str, expected: str) -> None:
    errors = compile_errors(RULE_HEAD + tail)
    assert any(e.startswith(expected) for e in errors), errors


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "p.yaml:1: the file is empty"),
        ("- just\n- a list\n", "p.yaml:1: the policy must be a mapping"),
        ("version: 2\nrules: []\n", "p.yaml:1: version 2 is not supported"),
        ("rules: []\n", "p.yaml:1: the policy is missing 'version'"),
        ("version: 1\nrules: []\n", "p.yaml:2: rules is empty"),
        ("version: 1\ngroups:\n  g: [not-a-guid]\nrules: []\n", "p.yaml:3: member 'not-a-guid' of group 'g'"),
        ("version: 1\nrules:\n  - name: x\n    match: {providers: [aws], roles: '*', scopes: ['**']}\n",
         "p.yaml:4: unknown provider 'aws' in rule 'x'"),
        ("version: 1\nrules:\n  - name: x\n    match: {providers: [gcp-iam], roles: [Reader], scopes: ['**']}\n",
         "p.yaml:4: role 'Reader' in rule 'x' is not a valid role for gcp-iam"),
        ("version: 1\nrules:\n  - name: x\n    match: {providers: [gcp-iam], roles: '*', scopes: ['/x/**']}\n",
         "p.yaml:4: scope pattern '/x/**' in rule 'x' is an ARM path"),
        ("version: 1\nrules:\n  - name: x\n    match: {providers: [local], roles: '*', scopes: ['**'], "
         "requesterGroups: [nobody]}\n", "p.yaml:4: unknown group 'nobody' in requesterGroups of rule 'x'"),
        ("version: 1\nrules:\n  - name: x\n    match: {providers: '*', roles: [], scopes: ['**']}\n",
         "p.yaml:4: roles of rule 'x' must not be empty"),
        ("version: 1\nrules:\n  - match: {providers: '*', roles: '*', scopes: ['**']}\n",
         "p.yaml:3: rule #1 is missing 'name'"),
        ("version: 1\nrules:\n  - name: x\n    match: {providers: '*', roles: '*'}\n",
         "p.yaml:4: match of rule 'x' is missing 'scopes'"),
        ("version: 1\nrules: []\n---\nversion: 1\n", "p.yaml:3: invalid YAML"),
    ],
)
def test_a_bad_file_is_refused_with_line_numbers(text: str, expected: str) -> None:
    errors = compile_errors(text)
    assert any(e.startswith(expected) for e in errors), errors


def test_the_unknown_key_message_names_the_rule_and_suggests_the_right_key() -> None:
    text = EXAMPLE.read_text().replace("    maxDuration: PT2H\n", "    maxDuraton: PT2H\n", 1)
    line = text.splitlines().index("    maxDuraton: PT2H") + 1
    errors = compile_errors(text, source="example.yaml")
    expected = f"example.yaml:{line}: unknown key 'maxDuraton' in rule 'prod-contributor' (did you mean 'maxDuration'?)"
    assert expected in errors


def test_every_error_in_a_file_is_reported_at_once_in_line_order() -> None:
    errors = compile_errors("""\
        version: 1
        groups:
          approvers: [aaaaaaaa-0000-4000-8000-00000000000a]
        rules:
          - name: a
            match: {providers: [local], roles: [Reader], scopes: ["/subscriptions/**"]}
            outcome: approval
            approval: {groups: [approvers, ghosts], required: 2}
            maxDuraton: PT1H
          - name: b
            match: {providers: [local], roles: [Reader], scopes: ["/x/../y"]}
            outcome: auto
            maxDuration: forever
          - name: a
            match: {providers: [local], roles: [Reader], scopes: ["**"]}
            outcome: deny
        """)
    lines = [int(e.split(":")[1]) for e in errors]
    assert lines == sorted(lines)
    assert len(errors) == 7, errors
    for expected in ("p.yaml:5: rule 'a' is missing 'maxDuration'", "p.yaml:8: unknown group 'ghosts'",
                     "p.yaml:9: unknown key 'maxDuraton'", "p.yaml:11: scope pattern '/x/../y'",
                     "p.yaml:13: maxDuration of rule 'b' 'forever'", "p.yaml:14: duplicate rule name 'a'",
                     "p.yaml:14: rule 'a' denies, so it needs a 'reason'"):
        assert any(e.startswith(expected) for e in errors), (expected, errors)


def test_unquoted_times_are_read_as_written() -> None:
    # YAML 1.1 reads an unquoted 18:00 as the base-60 integer 1080; the window must still be 18:00.
    policy = one_rule("maxDuration: PT1H\nwindow: {start: 09:00, end: 18:00}")
    window = policy.rules[0].window
    assert window is not None
    assert window.describe() == "mon,tue,wed,thu,fri,sat,sun 09:00-18:00 UTC"


def test_load_reports_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read the policy"):
        Policy.load(tmp_path / "missing.yaml")


# ---------------------------------------------------------------- the example, allowed roles, the directory


def test_the_example_policy_loads_with_its_groups() -> None:
    policy = Policy.load(EXAMPLE)
    assert policy.groups["platform-approvers"] == frozenset({ALICE, BOB})
    assert policy.groups["oncall"] == frozenset({CAROL})
    assert JANE in policy.groups["engineers"]
    assert policy.rules[0].name == "deny-owner"


def test_allowed_roles_lists_what_non_deny_rules_can_grant_per_provider() -> None:
    assert Policy.load(EXAMPLE).allowed_roles() == {
        "azure-rbac": ["Contributor", "Reader"],
        "gcp-iam": ["roles/editor", "roles/logging.viewer", "roles/viewer"],
        "local": ["Contributor", "Reader"],
        "postgres": ["payments_read", "payments_write"],
        "azure-sql": ["payments_read", "payments_write"],
        "cosmos-data": ["00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000002",
                        "Cosmos DB Built-in Data Contributor", "Cosmos DB Built-in Data Reader"],
    }


def test_allowed_roles_spreads_provider_wildcards_by_role_validity_and_shows_role_wildcards() -> None:
    policy = make_policy("""\
        - name: names
          match: {providers: "*", roles: [Reader, reader, roles/viewer], scopes: ["**"]}
          outcome: auto
          maxDuration: PT1H
        - name: anything
          match: {providers: [azure-pim], roles: "*", scopes: ["**"]}
          outcome: approval
          approval: {groups: [approvers]}
          maxDuration: PT1H
        - name: never
          match: {providers: "*", roles: [Owner], scopes: ["**"]}
          outcome: deny
          reason: never
        """)
    assert policy.allowed_roles() == {
        "azure-pim": ["*", "Reader"],
        "azure-rbac": ["Reader"],
        "gcp-iam": ["roles/viewer"],
        "local": ["Reader"],
        # NB. A database role may be any printable name, so a rule for every provider names one too.
        "postgres": ["Reader", "roles/viewer"],
        "azure-sql": ["Reader", "roles/viewer"],
        "cosmos-data": ["Reader"],
    }


def test_the_example_allows_local_wherever_it_allows_azure_rbac() -> None:
    for rule in Policy.load(EXAMPLE).rules:
        if rule.providers is not None and "azure-rbac" in rule.providers:
            assert "local" in rule.providers, rule.name


def test_policy_directory_answers_from_the_policy_groups() -> None:
    directory = PolicyDirectory(Policy.load(EXAMPLE))
    assert directory.groups_of(CAROL) == frozenset({"oncall", "engineers"})
    assert directory.groups_of(ALICE.upper()) == frozenset({"platform-approvers", "engineers"})
    assert directory.groups_of(JANE) == frozenset({"engineers"})
    assert directory.groups_of("eeeeeeee-0000-4000-8000-00000000000e") == frozenset()


# ---------------------------------------------------------------- policy test cases


def test_the_example_cases_all_pass() -> None:
    report = run_cases(EXAMPLE_TESTS)
    assert len(report.results) >= 15
    assert report.passed, report.render()
    assert report.render().endswith(f"{len(report.results)} passed, 0 failed ({EXAMPLE})")


def test_the_example_cases_reach_every_rule() -> None:
    report = run_cases(EXAMPLE_TESTS)
    decided = {r.decision.rule for r in report.results}
    assert {r.name for r in Policy.load(EXAMPLE).rules} <= decided
    assert None in decided


def write_cases(tmp_path: Path, cases: str, head: str = "now: '2026-11-26T10:00:00Z'\n") -> Path:
    (tmp_path / "p.yaml").write_text(EXAMPLE.read_text())
    path = tmp_path / "p.tests.yaml"
    path.write_text("policy: p.yaml\n" + head + "cases:\n" + textwrap.indent(textwrap.dedent(cases), "  "))
    return path


JANE_DEV_READER = f"""\
- name: jane reads dev
  request:
    requester: {{principalId: {JANE}}}
    target: {{provider: local, scope: /subscriptions/{DEV}, role: Reader}}
"""


def test_a_case_whose_decision_differs_fails_and_says_what_differed(tmp_path: Path) -> None:
    path = write_cases(tmp_path, JANE_DEV_READER + "  expect: {outcome: approval, rule: prod-reader, breakGlass: true,"
                                                   " requiredApprovals: 2, reasonContains: nope}\n")
    report = run_cases(path)
    assert not report.passed
    [failure] = report.failures
    assert failure.line == 4
    assert failure.message.startswith(
        "outcome is auto, expected approval; rule is 'dev-reader', expected 'prod-reader'; "
        "breakGlass is false, expected true; requiredApprovals is 0, expected 2; no reason contains 'nope' "
        "(decision: auto by rule 'dev-reader'"
    )
    assert f"FAIL {path}:4: jane reads dev: outcome is auto" in report.render()
    assert report.render().endswith(f"0 passed, 1 failed ({tmp_path / 'p.yaml'})")


def test_a_case_expecting_no_rule_fails_when_a_rule_matched(tmp_path: Path) -> None:
    report = run_cases(write_cases(tmp_path, JANE_DEV_READER + "  expect: {outcome: auto, rule: null}\n"))
    assert report.failures[0].message.startswith("rule is 'dev-reader', expected none (no rule matched)")


def test_case_groups_replace_the_directory_and_now_can_be_set_per_case(tmp_path: Path) -> None:
    cases = JANE_DEV_READER + "  groups: []\n  expect: {outcome: deny, rule: null}\n" + """\
- name: editor on saturday
  now: 2026-11-28T10:00:00Z
  request:
    target: {provider: gcp-iam, scope: projects/acme-pay-dev, role: roles/editor}
  groups: [engineers]
  expect: {outcome: deny, rule: gcp-dev-editor}
"""
    report = run_cases(write_cases(tmp_path, cases))
    assert report.passed, report.render()


def test_now_falls_back_to_the_given_time_when_the_file_has_none(tmp_path: Path) -> None:
    cases = f"""\
- name: editor
  request:
    requester: {{principalId: {JANE}}}
    target: {{provider: gcp-iam, scope: projects/acme-pay-dev, role: roles/editor}}
  expect: {{outcome: auto}}
"""
    path = write_cases(tmp_path, cases, head="")
    assert run_cases(path, now=THURSDAY_10).passed
    assert not run_cases(path, now=datetime(2026, 11, 29, 10, 0, tzinfo=UTC)).passed


def test_errors_in_a_case_file_carry_line_numbers_and_are_all_reported(tmp_path: Path) -> None:
    cases = f"""\
- name: bad scope
  request:
    target:
      provider: local
      scope: /subscriptions/{DEV}/../x
      role: Reader
  expect: {{outcome: auto}}
- name: bad expectations
  groups: [ghosts]
  request:
    target: {{provider: local, scope: /subscriptions/{DEV}, role: Reader}}
    duration: forever
  expect: {{outcome: maybe, breakGlas: true}}
- name: no target
  now: yesterday
  request: {{duration: PT1H}}
- name: bad scope
  request: {{target: {{provider: local, scope: /subscriptions/{DEV}, role: Reader}}}}
  expect: {{outcome: auto}}
"""
    path = write_cases(tmp_path, cases)
    with pytest.raises(PolicyError) as caught:
        run_cases(path)
    errors = caught.value.errors
    src = str(path)
    for expected in (
        f"{src}:8: request of case 'bad scope': target.scope: scope segment '..' is not allowed",
        f"{src}:12: unknown group 'ghosts' in case 'bad expectations'",
        f"{src}:15: request of case 'bad expectations': duration: 'forever' is not an ISO 8601 duration",
        f"{src}:16: outcome of case 'bad expectations' is 'maybe'",
        f"{src}:16: unknown key 'breakGlas' in expect of case 'bad expectations' (did you mean 'breakGlass'?)",
        f"{src}:17: case 'no target' is missing 'expect'",
        f"{src}:18: now of case 'no target' 'yesterday' is not a date-time",
        f"{src}:19: request of case 'no target' is missing 'target'",
        f"{src}:20: duplicate case name 'bad scope' (first on line 4)",
    ):
        assert any(e.startswith(expected) for e in errors), (expected, errors)


def test_a_case_file_naming_a_missing_or_broken_policy_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("policy: nowhere.yaml\ncases: []\n")
    with pytest.raises(PolicyError) as caught:
        run_cases(path)
    assert caught.value.errors[0].startswith(f"{path}:1: policy file '{tmp_path / 'nowhere.yaml'}' does not exist")

    (tmp_path / "broken.yaml").write_text("version: 1\nrules:\n  - name: x\n")
    path.write_text("policy: broken.yaml\ncases:\n  - name: c\n")
    with pytest.raises(PolicyError) as caught:
        run_cases(path)
    assert any(e.startswith(f"{tmp_path / 'broken.yaml'}:3: rule 'x' is missing 'match'") for e in caught.value.errors)
    assert any(e.startswith(f"{path}:3: case 'c' is missing 'request'") for e in caught.value.errors)


# ---------------------------------------------------------------- the index agrees with a plain scan


SUBS = [DEV, PROD]
PATTERN_POOL = [
    "**", f"/subscriptions/{DEV}/**", f"/subscriptions/{PROD}/**", "/subscriptions/*/resourceGroups/rg-*-dev/**",
    "/subscriptions/*/resourceGroups/rg-*-prod", f"/subscriptions/{DEV}", "/subscriptions/*",
    f"/subscriptions/{PROD}/resourceGroups/rg-a-prod/**", "/**/resourceGroups/rg-a-*",
    "/subscriptions/*/resourceGroups/*-prod",
    f"/subscriptions/{DEV}/**/sites/*", "/subscriptions/*/**/providers/microsoft.web/**", "/*/*/*/*",
]
SCOPE_POOL = [
    f"/subscriptions/{DEV}", f"/subscriptions/{PROD}", f"/subscriptions/{DEV}/resourceGroups/rg-a-dev",
    f"/subscriptions/{PROD}/resourceGroups/rg-a-prod", f"/subscriptions/{PROD}/resourceGroups/rg-b-prod",
    f"/subscriptions/{DEV}/resourceGroups/rg-a-dev/providers/Microsoft.Web/sites/app",
    f"/subscriptions/{PROD}/resourceGroups/rg-a-prod/providers/Microsoft.Web/sites/sites",
    f"/subscriptions/{PROD}/resourceGroups/rg-a-dev",
]

rule_strategy = st.fixed_dictionaries({
    "providers": st.sampled_from(['"*"', "[local]", "[azure-rbac]", "[local, azure-rbac]"]),
    "roles": st.sampled_from(['"*"', "[Reader]", "[contributor]", "[Reader, Contributor]", "[Owner]"]),
    "scopes": st.lists(st.sampled_from(PATTERN_POOL), min_size=1, max_size=3),
    "groups": st.sampled_from(["", ", requesterGroups: [oncall]", ", requesterGroups: [engineers, approvers]"]),
})


@settings(max_examples=200, deadline=None)
@given(
    rules=st.lists(rule_strategy, min_size=1, max_size=40).filter(lambda r: len(r) < 5 or len(r) > 20),
    provider=st.sampled_from(["local", "azure-rbac"]),
    role=st.sampled_from(["Reader", "CONTRIBUTOR", "Owner", "Storage Blob Data Reader"]),
    scope=st.sampled_from(SCOPE_POOL),
    groups=st.sets(st.sampled_from(["oncall", "engineers", "approvers"])),
)
def test_the_indexed_evaluation_picks_the_same_rule_as_a_plain_scan(
    rules: list[dict[str, Any]], provider: str, role: str, scope: str, groups: set[str]
) -> None:
    text = "".join(
        f"- name: r{i}\n  match: {{providers: {r['providers']}, roles: {r['roles']}, "
        f"scopes: {json.dumps(r['scopes'])}{r['groups']}}}\n  outcome: auto\n  maxDuration: PT8H\n"
        for i, r in enumerate(rules)
    )
    policy = make_policy(text)
    request = make_request(scope, role, provider)
    frozen = frozenset(groups)
    expected = next(
        (r.name for r in policy.rules if r.mismatch(provider, role, scope, frozen) is None), None
    )
    assert policy.evaluate(request, frozen, THURSDAY_10).rule == expected
