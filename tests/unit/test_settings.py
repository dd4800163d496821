"""The one settings object: every bad setting named at once, the Teams secret checked when it is read."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest

from shared.settings import Settings, SettingsError, decode_teams_secret

KEY = b"k" * 32


def test_defaults_and_the_read_bound() -> None:
    assert Settings.from_env({}).request_read_timeout == timedelta(seconds=10)
    assert Settings.from_env({"JITGATE_REQUEST_READ_SECONDS": "2.5"}).request_read_timeout == timedelta(seconds=2.5)


def test_every_problem_is_collected_before_refusing() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"JITGATE_MODE": "cloud", "JITGATE_LOCK_SECONDS": "nan", "JITGATE_MAX_DELIVERIES": "0",
                           "JITGATE_GROUP_OBJECT_IDS": "approvers", "JITGATE_PORTAL_URL": "backstage"})
    assert [problem.split(" ")[0].rstrip(":") for problem in caught.value.problems] == [
        "JITGATE_MODE", "JITGATE_LOCK_SECONDS", "JITGATE_MAX_DELIVERIES", "JITGATE_GROUP_OBJECT_IDS",
        "JITGATE_PORTAL_URL"]


@pytest.mark.parametrize(("text", "hint"), [
    (base64.b64encode(KEY).decode().rstrip("="), "padding"),
    ("not base64!", "not valid base64"),
    ("", "is empty"),
    (base64.b64encode(b"short").decode(), "fewer than 16"),
])
def test_a_teams_secret_that_is_not_a_base64_key_is_refused_by_name(text: str, hint: str) -> None:
    with pytest.raises(SettingsError, match="JITGATE_TEAMS_SECRET") as caught:
        decode_teams_secret("JITGATE_TEAMS_SECRET", text)
    assert hint in str(caught.value)


def test_a_teams_secret_pasted_with_a_trailing_newline_is_the_same_key() -> None:
    assert decode_teams_secret("JITGATE_TEAMS_SECRET", base64.b64encode(KEY).decode() + "\n") == KEY


def test_outside_local_mode_a_missing_secret_disables_the_webhook_instead_of_failing() -> None:
    assert not Settings(mode="azure").has_teams_secret
    assert Settings(mode="azure", teams_secret=base64.b64encode(KEY).decode()).resolved_teams_secret() == KEY
    with pytest.raises(SettingsError, match="required outside local mode"):
        Settings(mode="azure").resolved_teams_secret()


def test_revocations_have_a_queue_of_their_own_named_by_a_setting() -> None:
    assert Settings.from_env({}).queues == ("access-requests", "access-lifecycle", "access-revocations")
    assert Settings.from_env({"JITGATE_REVOCATIONS_QUEUE": "jit-revocations"}).revocations_queue == "jit-revocations"


def test_two_settings_naming_the_same_queue_are_refused() -> None:
    # A revoke on the requests queue would be read as an access request, and rejected.
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"JITGATE_REVOCATIONS_QUEUE": "access-requests"})
    assert caught.value.problems == [
        "JITGATE_REQUESTS_QUEUE and JITGATE_REVOCATIONS_QUEUE name the same queue 'access-requests'; each needs its own"
    ]
