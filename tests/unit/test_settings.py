"""The one settings object: every bad setting named at once, the Teams secret checked when it is read."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest

from shared.settings import Settings, SettingsError, decode_teams_secret, default_worker_processes

KEY = b"k" * 32
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def test_defaults_and_the_read_bound() -> None:
    assert Settings.from_env({}).request_read_timeout == timedelta(seconds=10)
    assert Settings.from_env({"JITGATE_REQUEST_READ_SECONDS": "2.5"}).request_read_timeout == timedelta(seconds=2.5)


@pytest.mark.parametrize(("cores", "processes"), [(1, 0), (2, 2), (16, 2)])
def test_serve_runs_one_consumer_thread_in_each_of_two_processes_where_there_are_two_cores(
    cores: int, processes: int
) -> None:
    assert default_worker_processes(cores) == processes
    assert Settings.from_env({}).workers == 1
    assert Settings.from_env({}).worker_processes == default_worker_processes()
    assert Settings.from_env({"JITGATE_WORKER_PROCESSES": "0"}).worker_processes == 0


def test_serve_keeps_its_consumers_in_its_own_process_when_it_decides_for_envoy_unless_told() -> None:
    envoy = {"JITGATE_ENVOY_SERVICES": "payments=api://payments", "JITGATE_ENVOY_TENANT": TENANT}
    assert Settings.from_env(envoy).worker_processes == 0
    assert Settings.from_env({**envoy, "JITGATE_WORKER_PROCESSES": "2"}).worker_processes == 2


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


def test_gcp_mode_names_what_it_needs_and_refuses_an_unknown_store() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"JITGATE_MODE": "gcp", "JITGATE_STORE": "firestore",
                           "JITGATE_PUBSUB_PUBLISH_URL": "pubsub.example"})
    assert [problem.split(" ")[0] for problem in caught.value.problems] == [
        "JITGATE_PUBSUB_PUBLISH_URL", "JITGATE_STORE"]
    sqlite = Settings.from_env({"JITGATE_MODE": "gcp", "JITGATE_STORE": "SQLite"})
    assert sqlite.store == "sqlite"
    assert sqlite.pubsub_publish_url == "https://pubsub.googleapis.com"
    assert sqlite.federation_audience == "api://AzureADTokenExchange"
    # with SQLite the Cosmos DB and Entra settings are not needed
    assert sqlite.missing_gcp_settings() == [
        "JITGATE_GCP_PROJECT", "JITGATE_TASKS_QUEUE", "JITGATE_TASKS_SERVICE_ACCOUNT"]
