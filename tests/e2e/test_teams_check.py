"""`jitgate teams check` as an admin runs it: against a running `jitgate serve` and a local fake of the Teams
Workflows webhook."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.azure.fake_teams import FakeTeamsWebhook
from tests.e2e.conftest import JitgateServer, clean_env

pytestmark = pytest.mark.e2e


@pytest.fixture
def webhook() -> Iterator[FakeTeamsWebhook]:
    server = FakeTeamsWebhook()
    yield server
    server.close()


def check(server: JitgateServer, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", "teams", "check", "--url", server.url,
         "--data-dir", str(server.data_dir)],
        env=clean_env(JITGATE_MODE="local", **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_passes_against_the_running_server_and_the_workflows_webhook(
    jitgate_server: JitgateServer, webhook: FakeTeamsWebhook
) -> None:
    done = check(jitgate_server, JITGATE_TEAMS_WEBHOOK_URL=webhook.webhook_url)

    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["ok", "secret"], ["ok", "webhook"], ["ok", "card"]]
    assert (f"{jitgate_server.url}/api/teams/webhook verified a signed test message and answered “Start each command "
            "with @jitgate") in lines[1]
    [card] = webhook.messages
    assert card["attachments"][0]["content"]["type"] == "AdaptiveCard"


def test_check_says_when_the_server_holds_another_secret(
    jitgate_server: JitgateServer, webhook: FakeTeamsWebhook
) -> None:
    other = base64.b64encode(os.urandom(32)).decode()

    done = check(jitgate_server, JITGATE_TEAMS_SECRET=other, JITGATE_TEAMS_WEBHOOK_URL=webhook.webhook_url)

    assert done.returncode == 1, done.stdout + done.stderr
    [webhook_line] = [line for line in done.stdout.splitlines() if line.split()[1] == "webhook"]
    endpoint = f"{jitgate_server.url}/api/teams/webhook"
    assert webhook_line.startswith(f"failed  webhook  {endpoint} refused the signature (401")
    assert webhook_line.endswith("the server's JITGATE_TEAMS_SECRET is not this one")


def test_check_says_when_no_server_answers(jitgate_server: JitgateServer) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shared.cli", "teams", "check", "--url", "http://127.0.0.1:9",
         "--data-dir", str(jitgate_server.data_dir)],
        env=clean_env(JITGATE_MODE="local"), capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 1
    assert "failed  webhook  cannot reach http://127.0.0.1:9/api/teams/webhook: ConnectError" in done.stdout
