"""Reading a policy file: pydantic validates the composed YAML, and every error still names its line.

These pin the seams between the YAML (nodes and their lines), the file's shape (pydantic models) and
the checks that span fields; test_policy.py covers the messages of single mistakes.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from shared.domain.errors import PolicyError
from shared.domain.policy import Policy
from shared.domain.policy.yaml_source import YamlScalar, YamlSource
from shared.policy_cases import run_cases

ALICE = "aaaaaaaa-0000-4000-8000-00000000000a"
EXAMPLE = Path(__file__).resolve().parents[2] / "policies" / "example.yaml"


def errors_of(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        Policy.from_text(textwrap.dedent(text), source="p.yaml")
    return caught.value.errors


def test_an_error_deep_inside_a_block_rule_names_the_line_of_the_value() -> None:
    errors = errors_of(f"""\
        version: 1
        groups:
          approvers: [{ALICE}]
        rules:
          - name: r
            match:
              providers: [local]
              roles: [Reader]
              scopes:
                - /subscriptions/*
                - /subscriptions/x/../y
            outcome: approval
            approval:
              groups: [approvers]
              required: 2
            maxDuration: PT1H
            justification:
              minLength: 5
              pattern: "(unclosed"
            window:
              days: [mon]
              start: "09:00"
              end: "09:00"
        """)
    assert errors == [
        "p.yaml:11: scope pattern '/subscriptions/x/../y' in rule 'r' has a '..' segment, which never appears "
        "in a scope",
        "p.yaml:15: rule 'r' requires 2 distinct approvers but its approver groups (approvers) have 1 member",
        "p.yaml:19: justification pattern of rule 'r' '(unclosed' is not a valid regular expression: "
        "missing ), unterminated subpattern at position 0",
        "p.yaml:23: window of rule 'r' starts and ends at 09:00: never open",
    ]


def test_an_approval_count_without_required_points_at_the_approval() -> None:
    errors = errors_of("""\
        version: 1
        groups:
          approvers: []
        rules:
          - name: r
            match: {providers: [local], roles: [Reader], scopes: ["**"]}
            outcome: approval
            approval:
              groups: [approvers]
            maxDuration: PT1H
        """)
    assert errors == [
        "p.yaml:9: rule 'r' requires 1 distinct approvers but its approver groups (approvers) have 0 members"
    ]


def test_an_unknown_key_is_reported_at_its_own_line_with_the_yaml_spelling_suggested() -> None:
    errors = errors_of("""\
        version: 1
        rules:
          - name: r
            match: {providers: [local], roles: [Reader], scopes: ["**"]}
            outcome: auto
            maxDuration: PT1H
            justification:
              minLenght:
                5
        """)
    assert errors == ["p.yaml:8: unknown key 'minLenght' in justification of rule 'r' (did you mean 'minLength'?)"]


def test_duplicate_and_non_string_keys_are_refused_where_keys_are_checked_and_nowhere_else() -> None:
    errors = errors_of("""\
        version: 1
        rules:
          - name: r
            match: {providers: [local], roles: [Reader], scopes: ["**"], 3: x, roles: [Owner]}
            outcome: deny
            reason: never
            colour: {a: 1, a: 2}
        """)
    assert errors == [
        "p.yaml:4: keys in match of rule 'r' must be strings",
        "p.yaml:4: duplicate key 'roles' in match of rule 'r'",
        "p.yaml:7: unknown key 'colour' in rule 'r'",
    ]


def test_non_string_scalars_are_refused_where_text_is_expected_and_read_as_written_where_not() -> None:
    errors = errors_of("""\
        version: 1
        description: 2026-11-26
        rules:
          - name: r
            match: {providers: [local], roles: [Reader], scopes: ["**"]}
            outcome: auto
            maxDuration: ~
            breakGlass: yes
            window: {start: 09:00, end: 0x10}
        """)
    assert errors == [
        "p.yaml:2: description must be a string",
        "p.yaml:7: maxDuration of rule 'r' must be a string",
        "p.yaml:9: window end of rule 'r' '0x10' is not a time of day HH:MM (00:00 to 24:00)",
    ]


def test_roles_and_scopes_are_checked_against_the_valid_providers_even_when_another_is_unknown() -> None:
    errors = errors_of("""\
        version: 1
        rules:
          - name: r
            match:
              providers: [aws, gcp-iam]
              roles: [Reader]
              scopes: ["/subscriptions/*"]
            outcome: deny
            reason: never
        """)
    assert errors == [
        "p.yaml:5: unknown provider 'aws' in rule 'r'; known: azure-rbac, azure-pim, gcp-iam, local, postgres, "
        "azure-sql, cosmos-data",
        "p.yaml:6: role 'Reader' in rule 'r' is not a valid role for gcp-iam",
        "p.yaml:7: scope pattern '/subscriptions/*' in rule 'r' is an ARM path (starting with '/'); it never "
        "matches gcp-iam",
    ]


def test_a_group_with_a_bad_member_is_still_known_to_the_rules_that_name_it() -> None:
    errors = errors_of(f"""\
        version: 1
        groups:
          approvers: [{ALICE}, not-a-guid]
        rules:
          - name: r
            match: {{providers: [local], roles: [Reader], scopes: ["**"], requesterGroups: [approvers]}}
            outcome: approval
            approval: {{groups: [approvers]}}
            maxDuration: PT1H
        """)
    assert errors == ["p.yaml:3: member 'not-a-guid' of group 'approvers' is not a principal id (GUID)"]


def test_outcome_checks_are_made_whatever_else_is_wrong_with_the_rule() -> None:
    errors = errors_of("""\
        version: 1
        rules:
          - name: r
            match: {providers: [local], roles: [Reader], scopes: ["**"]}
            outcome: auto
            reason: not for auto
            approval: {groups: [nobody]}
            maxDuration: forever
        """)
    assert errors == [
        "p.yaml:6: 'reason' is only for deny rules; rule 'r' has outcome auto",
        "p.yaml:7: 'approval' is only for outcome approval; rule 'r' is auto",
        "p.yaml:7: unknown group 'nobody' in approval groups of rule 'r' (groups: none defined)",
        "p.yaml:8: maxDuration of rule 'r' 'forever' is not an ISO 8601 duration such as PT2H or PT30M",
    ]


def test_an_aliased_mapping_is_reported_for_each_rule_that_uses_it_at_the_anchor_line() -> None:
    errors = errors_of("""\
        version: 1
        rules:
          - name: a
            match: &everything {providers: "*", roles: "*", scopes: ["**"], colour: red, roles: "*"}
            outcome: deny
            reason: never
          - name: b
            match: *everything
            outcome: deny
            reason: never
        """)
    assert errors == [
        "p.yaml:4: duplicate key 'roles' in match of rule 'a'",
        "p.yaml:4: duplicate key 'roles' in match of rule 'b'",
        "p.yaml:4: unknown key 'colour' in match of rule 'a'",
        "p.yaml:4: unknown key 'colour' in match of rule 'b'",
    ]


def test_aliases_share_one_value_and_deep_nesting_does_not_recurse() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{name}: &{name} [{', '.join(['*' + previous] * 9)}]\n"
        for previous, name in zip("abcdefgh", "bcdefghi", strict=True)
    )
    deep = "deep: " + "[" * 999 + "]" * 999 + "\n"  # libyaml's deepest, about Python's recursion limit
    source = YamlSource(bomb + deep, "bomb.yaml")  # 9**9 strings if the aliases were expanded
    assert source.data["i"][0] is source.data["i"][8] is source.data["h"]
    assert source.line(("i", 3, 2)) == 7  # i[3] is h, h[2] is g: an alias is found at its anchor

    errors = errors_of(bomb + "version: 1\ndescription: *i\nrules: *i\n" + deep)
    unknown = [f"p.yaml:{line}: unknown key '{key}' in the policy" for line, key in enumerate("abcdefghi", start=1)]
    every_rule_is_list_h = [f"p.yaml:8: rule #{n} must be a mapping" for n in range(1, 10)]
    assert errors == [
        *unknown[:8], *every_rule_is_list_h, unknown[8], "p.yaml:9: description must be a string",
        "p.yaml:13: unknown key 'deep' in the policy",
    ]


def test_scalars_other_than_strings_keep_their_tag_and_text() -> None:
    data = YamlSource("a: 18:00\nb: '18:00'\nc: ~\nd: yes\n", "s.yaml").data
    assert data == {
        "a": YamlScalar("tag:yaml.org,2002:int", "18:00"),
        "b": "18:00",
        "c": YamlScalar("tag:yaml.org,2002:null", "~"),
        "d": YamlScalar("tag:yaml.org,2002:bool", "yes"),
    }


def test_a_case_request_yaml_cannot_construct_is_an_error_with_its_line_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(EXAMPLE.read_text())
    path = tmp_path / "t.yaml"
    path.write_text(
        "policy: p.yaml\ncases:\n  - name: c\n    request:\n      target: !custom {provider: local}\n"
        "    expect: {outcome: deny}\n"
    )
    with pytest.raises(PolicyError) as caught:
        run_cases(path)
    assert caught.value.errors == [
        f"{path}:5: request of case 'c' cannot be read: could not determine a constructor for the tag '!custom'"
    ]
