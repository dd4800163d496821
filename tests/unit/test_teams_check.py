"""`jitgate teams check` on its own: the secret, and the test card posted to a local Workflows webhook fake.
The signed test message to a running jitgate is in tests/e2e/test_teams_check.py."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from shared.adapters.teams.check import Check, check_teams
from shared.cli import main
from shared.settings import Settings
from shared.teams import decode_secret
from tests.azure.fake_http import error
from tests.azure.fake_teams import SIGNATURE, FakeTeamsWebhook

KEY = bytes(range(32))
ALICE = "aaaaaaaa-0000-4000-8000-00000000000a"


@pytest.fixture
def webhook() -> Iterator[FakeTeamsWebhook]:
    server = FakeTeamsWebhook()
    yield server
    server.close()


def azure(tmp_path: Path, **fields: object) -> Settings:
    base = Settings(mode="azure", data_dir=tmp_path, teams_secret=base64.b64encode(KEY).decode())
    return replace(base, **fields)  # type: ignore[arg-type]


def by_name(checks: list[Check]) -> dict[str, tuple[str, str]]:
    return {c.name: (c.status, c.detail) for c in checks}


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("", "the secret is empty"),
        ("not base64!", "not valid base64"),
        ("abc", "not valid base64"),
        (base64.b64encode(b"short").decode(), "decodes to 5 bytes, fewer than 16"),
    ],
)
def test_a_secret_that_cannot_be_the_teams_token_is_refused_with_the_reason(token: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        decode_secret(token)
    assert decode_secret(" " + base64.b64encode(KEY).decode() + "\n") == KEY


def test_the_secret_check_names_the_setting_and_what_is_wrong(tmp_path: Path) -> None:
    checks = by_name(check_teams(azure(tmp_path, teams_secret="hello world")))
    assert checks["secret"] == ("failed", "JITGATE_TEAMS_SECRET: the secret is not valid base64: paste the security "
                                          "token exactly as Teams showed it")
    assert checks["webhook"][0] == "skipped"

    assert by_name(check_teams(azure(tmp_path)))["secret"] == (
        "ok", "JITGATE_TEAMS_SECRET is valid base64 of 32 bytes"
    )
    assert by_name(check_teams(azure(tmp_path, teams_secret="")))["secret"][0] == "failed"


def test_locally_the_secret_is_read_from_the_data_dir_and_never_created(tmp_path: Path) -> None:
    local = Settings(data_dir=tmp_path)
    assert by_name(check_teams(local))["secret"][0] == "failed"
    assert not (tmp_path / "teams-secret").exists()
    (tmp_path / "teams-secret").write_text(base64.b64encode(KEY).decode())
    assert by_name(check_teams(local))["secret"] == ("ok", f"{tmp_path / 'teams-secret'} is valid base64 of 32 bytes")
    assert by_name(check_teams(local))["card"][0] == "skipped"


def test_a_test_card_is_posted_to_the_workflows_webhook(tmp_path: Path, webhook: FakeTeamsWebhook) -> None:
    settings = azure(tmp_path, teams_webhook_url=webhook.webhook_url, teams_webhook_name="JIT Gate",
                     portal_url="https://backstage.example.com")

    checks = by_name(check_teams(settings, mention=[ALICE]))

    assert checks["card"] == ("ok", "the Workflows webhook accepted a test card: find it in the channel and reply "
                                    "“@JIT Gate help” there (pick JIT Gate from the list) to try the whole loop")
    [message] = webhook.messages
    card = message["attachments"][0]["content"]
    assert card["msteams"]["entities"][0]["mentioned"]["id"] == ALICE
    lines = [run["text"] for block in card["body"] if block["type"] == "Container"
             for item in block["items"] for run in item["inlines"]]
    assert lines == ["@JIT Gate help"]
    assert card["actions"][0]["url"].startswith("https://backstage.example.com/jitgate/requests/")


def test_a_refused_card_reports_the_exact_failure_and_never_the_url(tmp_path: Path, webhook: FakeTeamsWebhook) -> None:
    wrong = webhook.webhook_url.replace(SIGNATURE, "wrong")
    status, detail = by_name(check_teams(azure(tmp_path, teams_webhook_url=wrong)))["card"]
    assert status == "failed" and "webhook answered 401 Unauthorized" in detail
    assert "sig" not in detail and "127.0.0.1" not in detail

    webhook.script.append(error(400, "InvalidRequestContent"))
    status, detail = by_name(check_teams(azure(tmp_path, teams_webhook_url=webhook.webhook_url)))["card"]
    assert status == "failed" and "webhook answered 400 Bad Request" in detail

    status, detail = by_name(check_teams(azure(tmp_path)))["card"]
    assert (status, detail) == ("failed", "JITGATE_TEAMS_WEBHOOK_URL is not set: approvers would hear of nothing")


def test_the_command_prints_one_line_a_check_and_fails_when_one_fails(
    tmp_path: Path, webhook: FakeTeamsWebhook, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [n for n in os.environ if n.startswith("JITGATE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("JITGATE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("JITGATE_TEAMS_SECRET", base64.b64encode(KEY).decode())
    monkeypatch.setenv("JITGATE_TEAMS_WEBHOOK_URL", webhook.webhook_url)

    assert main(["teams", "check"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in out] == [["ok", "secret"], ["skipped", "webhook"], ["ok", "card"]]

    monkeypatch.setenv("JITGATE_TEAMS_SECRET", "abc")
    assert main(["teams", "check"]) == 1
    assert capsys.readouterr().out.startswith("failed  secret   JITGATE_TEAMS_SECRET: the secret is not valid base64")

    assert main(["teams", "check", "--mention", "alice@example.com"]) == 1
    assert "--mention takes Entra object ids (GUIDs), not alice@example.com" in capsys.readouterr().err
