"""The `jitgate` command line, in-process: exit codes, outputs and error messages (no server, no network)."""

from __future__ import annotations

import json
import re
import shutil
from contextlib import closing
from pathlib import Path

import pytest

from shared.adapters.embedded.bus import SqliteBus
from shared.cli import main
from shared.clock import SystemClock

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_POLICY = ROOT / "policies" / "example.yaml"
EXAMPLE_TESTS = ROOT / "policies" / "example.tests.yaml"
ALLOWED_ROLES = ROOT / "infra" / "allowed-roles.json"

VALID_REQUEST = {
    "schemaVersion": 1,
    "requestId": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
    "requester": {"principalId": "dddddddd-0000-4000-8000-00000000000d", "displayName": "Jane"},
    "target": {
        "provider": "local",
        "scope": "/subscriptions/11111111-1111-4111-8111-111111111111",
        "role": "Reader",
    },
    "duration": "PT1H",
    "justification": "reading the dev subscription",
}


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No command may touch the developer's .jitgate or a policy chosen by the environment."""
    for name in ("JITGATE_POLICY", "JITGATE_MODE", "JITGATE_URL", "JITGATE_TOKEN", "JITGATE_SEED_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JITGATE_DATA_DIR", str(tmp_path / "env-data"))


# ------------------------------------------------------------------------------------- policy check


def test_policy_check_accepts_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", str(EXAMPLE_POLICY)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out
    assert str(EXAMPLE_POLICY) in out


def test_policy_check_reports_every_error_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\n"  # 1
        "groups:\n"  # 2
        "  engineers: [dddddddd-0000-4000-8000-00000000000d]\n"  # 3
        "rules:\n"  # 4
        "  - name: r1\n"  # 5
        "    match:\n"  # 6
        "      providers: [local]\n"  # 7
        "      roles: [Reader]\n"  # 8
        '      scopes: ["**"]\n'  # 9
        "    outcome: auto\n"  # 10
        "    maxDuration: PT8H\n"  # 11
        "    surprise: true\n"  # 12  unknown key
        "  - name: r2\n"  # 13
        "    match:\n"  # 14
        "      providers: [local]\n"  # 15
        "      roles: [Contributor]\n"  # 16
        '      scopes: ["**"]\n'  # 17
        "    outcome: auto\n"  # 18
        "    maxDuration: eight hours\n"  # 19  bad duration
    )
    assert main(["policy", "check", str(bad)]) == 1
    captured = capsys.readouterr()
    assert "OK" not in captured.out
    err = captured.err
    assert str(bad) in err or bad.name in err
    assert "Traceback" not in err
    assert re.search(r":12:", err), err
    assert re.search(r":19:", err), err
    assert "surprise" in err


def test_policy_check_on_a_missing_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    assert main(["policy", "check", str(missing)]) == 1
    err = capsys.readouterr().err
    assert f"{missing}: cannot read the policy" in err


# -------------------------------------------------------------------------------------- policy test


def test_policy_test_runs_the_example_cases(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "test", str(EXAMPLE_TESTS)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    match = re.fullmatch(r"(\d+) passed, 0 failed", lines[-1])
    assert match, lines[-1]
    assert int(match.group(1)) > 0
    assert int(match.group(1)) == sum(1 for line in lines if line.startswith("PASS "))
    assert not any(line.startswith("FAIL ") for line in lines)


def test_policy_test_fails_a_case_expecting_the_wrong_outcome(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(EXAMPLE_POLICY, tmp_path / "example.yaml")
    cases = tmp_path / "wrong.tests.yaml"
    cases.write_text(
        "policy: example.yaml\n"
        'now: "2026-11-26T10:00:00Z"\n'
        "cases:\n"
        "  - name: owner is wrongly expected to be granted\n"
        "    request:\n"
        "      requester: {principalId: aaaaaaaa-0000-4000-8000-00000000000a}\n"
        "      target:\n"
        "        provider: local\n"
        "        scope: /subscriptions/11111111-1111-4111-8111-111111111111\n"
        "        role: Owner\n"
        "    expect: {outcome: auto}\n"
        "  - name: jane reads dev\n"
        "    request:\n"
        "      requester: {principalId: dddddddd-0000-4000-8000-00000000000d}\n"
        "      target:\n"
        "        provider: local\n"
        "        scope: /subscriptions/11111111-1111-4111-8111-111111111111\n"
        "        role: Reader\n"
        "    expect: {outcome: auto, rule: dev-reader}\n"
    )
    assert main(["policy", "test", str(cases)]) == 1
    out = capsys.readouterr().out
    fail_lines = [line for line in out.splitlines() if line.startswith("FAIL ")]
    assert len(fail_lines) == 1
    assert "owner is wrongly expected to be granted" in fail_lines[0]
    assert "expected auto" in fail_lines[0]
    assert out.strip().splitlines()[-1] == "1 passed, 1 failed"


# ----------------------------------------------------------------------------------- policy explain


def test_policy_explain_prints_a_decision(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    request = tmp_path / "request.json"
    request.write_text(json.dumps(VALID_REQUEST))
    assert main(["policy", "explain", str(EXAMPLE_POLICY), str(request)]) == 0
    out = capsys.readouterr().out
    decision = [line for line in out.splitlines() if line.startswith("decision:")]
    assert len(decision) == 1
    assert "dev-reader" in out


def test_policy_explain_with_an_invalid_request_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request = tmp_path / "request.json"
    request.write_text(json.dumps({**VALID_REQUEST, "surprise": True}))
    assert main(["policy", "explain", str(EXAMPLE_POLICY), str(request)]) == 1
    captured = capsys.readouterr()
    assert "decision:" not in captured.out
    assert captured.err.startswith("jitgate: ")
    assert str(request) in captured.err
    assert "not a valid access request" in captured.err


def test_policy_explain_with_malformed_json_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request = tmp_path / "request.json"
    request.write_text("{not json")
    assert main(["policy", "explain", str(EXAMPLE_POLICY), str(request)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("jitgate: ")
    assert "not a valid access request" in err


# ------------------------------------------------------------------------------------------- schema


def test_schema_check_passes_on_the_committed_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "check"]) == 0
    assert "is current" in capsys.readouterr().out


# -------------------------------------------------------------------------------------------- infra


def test_infra_roles_prints_the_committed_allowed_roles(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["infra", "roles"]) == 0
    assert capsys.readouterr().out == ALLOWED_ROLES.read_text()


def test_infra_roles_refuses_a_policy_that_allows_any_role(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "wildcard.yaml"
    policy.write_text(
        "version: 1\n"
        "groups:\n"
        "  engineers: [dddddddd-0000-4000-8000-00000000000d]\n"
        "rules:\n"
        "  - name: anything\n"
        "    match:\n"
        "      providers: [azure-rbac]\n"
        '      roles: "*"\n'
        '      scopes: ["**"]\n'
        "      requesterGroups: [engineers]\n"
        "    outcome: approval\n"
        "    approval:\n"
        "      groups: [engineers]\n"
        "    maxDuration: PT1H\n"
    )
    assert main(["policy", "check", str(policy)]) == 0, "the fixture itself must be a valid policy"
    capsys.readouterr()
    assert main(["infra", "roles", "--policy", str(policy)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{policy}:5:" in captured.err
    assert "allows any role" in captured.err
    assert "Traceback" not in captured.err


# -------------------------------------------------------------------------------------------- audit


def test_audit_verify_without_a_store_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["audit", "verify", "--data-dir", str(empty)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("jitgate: no store at")
    assert str(empty / "store.db") in err
    assert not (empty / "store.db").exists(), "verify must not create a store"


# ---------------------------------------------------------------------------------------------- dlq


def test_dlq_list_on_a_fresh_store_is_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    assert main(["dlq", "list", "--data-dir", str(data), "--policy", str(EXAMPLE_POLICY)]) == 0
    assert "no dead-lettered messages" in capsys.readouterr().out


def test_dlq_list_json_on_a_fresh_store_is_an_empty_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    assert main(["dlq", "list", "--json", "--data-dir", str(data), "--policy", str(EXAMPLE_POLICY)]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_dlq_replay_of_an_unknown_sequence_number_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    argv = ["dlq", "replay", "access-lifecycle", "999", "--data-dir", str(data), "--policy", str(EXAMPLE_POLICY)]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "replayed" not in captured.out
    assert captured.err.startswith("jitgate: ")
    assert "999" in captured.err and "access-lifecycle" in captured.err


def test_dlq_lists_and_replays_the_revocations_queue_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN a revoke command dead-lettered on the revocations queue of a local store
    data = tmp_path / "data"
    data.mkdir()
    options = ["--data-dir", str(data), "--policy", str(EXAMPLE_POLICY)]
    with closing(SqliteBus(data / "bus.db", SystemClock())) as bus:
        bus.send("access-revocations", "revoke:x:1", b"{}")
        [message] = bus.receive("access-revocations")
        bus.dead_letter(message, "InvalidCommand", "not a lifecycle command")
        # WHEN the operator lists every dead letter, THEN it is there, with its queue
        assert main(["dlq", "list", "--json", *options]) == 0
        [row] = json.loads(capsys.readouterr().out)
        assert (row["queue"], row["messageId"], row["reason"]) == ("access-revocations", "revoke:x:1", "InvalidCommand")
        # AND it replays it onto that queue
        assert main(["dlq", "replay", "access-revocations", str(row["sequenceNumber"]), *options]) == 0
        assert capsys.readouterr().out.strip() == f"replayed access-revocations #{row['sequenceNumber']}"
        assert bus.dead_letters("access-revocations") == [] and bus.active_count("access-revocations") == 1


def test_dlq_on_a_queue_jitgate_does_not_have_names_its_queues(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    options = ["--data-dir", str(tmp_path / "data"), "--policy", str(EXAMPLE_POLICY)]
    for argv in (["dlq", "replay", "access-revocation"], ["dlq", "list", "--queue", "access-revocation"]):
        assert main([*argv, *options]) == 1
        assert capsys.readouterr().err.strip() == (
            "jitgate: no queue access-revocation: jitgate's queues are access-requests, access-lifecycle, "
            "access-revocations"
        )


# ---------------------------------------------------------------------------------------- reconcile


def test_reconcile_on_a_fresh_store_prints_a_json_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    assert main(["reconcile", "--data-dir", str(data), "--policy", str(EXAMPLE_POLICY)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "flushed" in report
    assert report["flushed"] == 0


# ------------------------------------------------------------------------------------------ no args


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: jitgate" in capsys.readouterr().out


@pytest.mark.parametrize("group", ["policy", "audit", "dlq", "infra"])
def test_a_command_group_without_an_action_exits_2(group: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([group]) == 2
    assert "usage: jitgate" in capsys.readouterr().out


# ------------------------------------------------------------------------------ the README's usage

GUID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
PLACEHOLDERS = {"ID": [GUID], "OBJECT_ID": ["aaaaaaaa-0000-4000-8000-00000000000a"], "FILE": ["request.json"],
                "T": ["grant.applied"], "ISO": ["2026-01-01T09:00:00Z"], "DIR": [".jitgate"],
                "QUEUE": ["access-requests"], "SEQ": ["7"], "comment": ["looks", "good"], "reason": ["not", "now"]}
ELLIPSIS_ARGUMENTS = {"policy check": ["policies/example.yaml"],
                      "policy explain": ["policies/example.yaml", "request.json"],
                      "policy test": ["policies/example.tests.yaml"]}


def readme_commands() -> list[str]:
    """Every `jitgate ...` line of the README's shell blocks, comments stripped, `a | b` split in two."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = [line.split("  #")[0].strip() for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL)
             for line in block.splitlines() if line.startswith("jitgate ")]
    return [part.strip().removeprefix("jitgate ") for line in lines for part in line.split(" | ")]


def expansions(usage: str) -> list[list[str]]:
    """Concrete argument lists for one usage line: every alternative of `a|b`, optional parts `[...]` all given
    and none given, placeholders filled in, `x...` given twice."""
    variants: list[list[str]] = [[]]
    for item in re.findall(r"\[[^\]]*\]|\S+", usage):
        if item.startswith("["):
            options = [[]] + [words for choice in item[1:-1].split("|") for words in expansions(choice)]
        elif "|" in item:
            options = [[choice] for choice in item.split("|")]
        elif item == "...":
            options = [["..."]]
        else:
            name = item.removesuffix("...")
            filled = PLACEHOLDERS.get(name, [name])
            options = [filled * 2 if item.endswith("...") else filled]
        variants = [v + o for v in variants for o in options]
    out = []
    for argv in variants:
        if "..." in argv:
            at = argv.index("...")
            argv = argv[:at] + ELLIPSIS_ARGUMENTS[" ".join(argv[:at])] + argv[at + 1:]
        out.append(argv)
    return out


def test_the_readme_lists_the_commands_this_test_knows() -> None:
    commands = readme_commands()
    assert any(c.startswith("teams approve ID --as OBJECT_ID [comment]") for c in commands), commands
    assert len(commands) >= 14


@pytest.mark.parametrize("usage", readme_commands())
def test_every_readme_usage_line_parses(usage: str) -> None:
    from shared.cli import _parser, parse

    for argv in expansions(usage):
        try:
            args = parse(_parser(), argv)
        except SystemExit as exc:
            pytest.fail(f"`jitgate {' '.join(argv)}` does not parse (exit {exc.code})")
        assert hasattr(args, "run"), argv


@pytest.mark.parametrize(("argv", "words"), [
    (["teams", "approve", GUID, "--as", GUID, "looks", "good"], ["looks", "good"]),
    (["teams", "approve", GUID, "looks", "--as", GUID, "good"], ["looks", "good"]),
    (["teams", "approve", GUID, "looks", "good", "--as", GUID], ["looks", "good"]),
    (["teams", "deny", GUID, "--as", GUID, "--url", "http://x", "not", "now"], ["not", "now"]),
    (["teams", "deny", GUID, "--as", GUID, "--", "--not", "now"], ["--not", "now"]),
    (["teams", "status", GUID, "--as", GUID], []),
])
def test_teams_takes_its_comment_before_or_after_the_options(argv: list[str], words: list[str]) -> None:
    from shared.cli import _parser, parse

    args = parse(_parser(), argv)
    assert args.text == words
    assert args.principal == GUID


@pytest.mark.parametrize("argv", [
    ["teams", "approve", GUID, "--as", GUID, "looks", "--bogus"],
    ["policy", "check", "a.yaml", "b.yaml"],
    ["schema", "check", "--bogus"],
])
def test_unknown_options_and_extra_words_are_still_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err
