"""function_app.py as the Functions host sees it: the indexed functions and their bindings, and each function
invoked the way the Python worker invokes it (`.build().get_user_function()` with the library's own
ServiceBusMessage, TimerRequest and HttpRequest), against a runtime on the local embedded backends."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.functions.servicebus import ServiceBusMessage
from azure.functions.timer import TimerRequest

import function_app
from functions import _runtime, access_lifecycle, access_requests, access_revocations, archive, reconcile
from shared.domain.audit import EventType
from shared.domain.errors import TransientError
from shared.domain.lifecycle import LifecycleCommand, RequestState
from shared.runtime import Runtime
from tests.fakes.clock import FakeClock
from tests.fakes.world import DEV_RG, POLICY, access_request, body

ROOT = Path(__file__).resolve().parents[2]
REQUESTS, LIFECYCLE, REVOCATIONS = "jit-requests", "jit-lifecycle", "jit-revocations"
MAX_DELIVERIES = 3


# NB. Once per process, as the host does: a second get_functions() refuses the names it has seen.
INDEXED = {function.get_function_name(): function for function in function_app.app.get_functions()}
# The decorated names are function builders, invoked the way the worker does after indexing.
HANDLERS: dict[str, Callable[..., Any]] = {
    "access_requests": access_requests.access_requests.build().get_user_function(),
    "access_lifecycle": access_lifecycle.access_lifecycle.build().get_user_function(),
    "access_revocations": access_revocations.access_revocations.build().get_user_function(),
    "reconcile": reconcile.reconcile.build().get_user_function(),
    "archive": archive.archive.build().get_user_function(),
    "api": INDEXED["api"].get_user_function(),
}


def bindings(name: str) -> list[dict[str, Any]]:
    return [json.loads(binding) for binding in INDEXED[name].get_raw_bindings()]


def user_function(name: str) -> Callable[..., Any]:
    return HANDLERS[name]


def service_bus_message(raw: bytes, message_id: str, delivery_count: int = 1) -> ServiceBusMessage:
    """What the worker hands a Service Bus trigger."""
    return ServiceBusMessage(
        body=raw,
        message_id=message_id,
        delivery_count=delivery_count,
        content_type="application/json",
        application_properties={},
        user_properties={},
    )


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    """The app settings of a local deployment, and the runtime the functions build from them."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    for name, value in {
        "JITGATE_MODE": "local",
        "JITGATE_DATA_DIR": str(tmp_path / "data"),
        "JITGATE_POLICY": str(policy),
        "JITGATE_REQUESTS_QUEUE": REQUESTS,
        "JITGATE_LIFECYCLE_QUEUE": LIFECYCLE,
        "JITGATE_REVOCATIONS_QUEUE": REVOCATIONS,
        "JITGATE_MAX_DELIVERIES": str(MAX_DELIVERIES),
    }.items():
        monkeypatch.setenv(name, value)
    _runtime.reset()
    built = _runtime.runtime()
    built.backends.sleep = lambda seconds: None  # provider retries without waiting
    yield built
    _runtime.reset()
    for part in (built.bus, built.requests, built.rbac):
        close = getattr(part, "close", None)
        if close is not None:
            close()


def submit_and_evaluate(runtime: Runtime, **changes: Any) -> str:
    doc = access_request(scope=DEV_RG, **changes)
    user_function("access_requests")(service_bus_message(body(doc), doc["requestId"]))
    return str(doc["requestId"])


def deliver_lifecycle_commands(runtime: Runtime, delivery_count: int = 1) -> None:
    """Hand every due lifecycle command to the `access_lifecycle` function, as the host would."""
    for message in runtime.bus.receive(LIFECYCLE, 10):
        user_function("access_lifecycle")(service_bus_message(message.body, message.message_id, delivery_count))
        runtime.bus.complete(message)


def state(runtime: Runtime, request_id: str) -> RequestState:
    record = runtime.requests.get_request(request_id)
    assert record is not None
    return record.state


# ---------------------------------------------------------------- indexing


def test_the_app_indexes_one_function_per_trigger_and_the_http_api() -> None:
    names = sorted(INDEXED)
    assert names == ["access_lifecycle", "access_requests", "access_revocations", "api", "archive", "reconcile"]


def test_the_queue_triggers_bind_by_setting_name_through_the_managed_identity_connection() -> None:
    [requests] = bindings("access_requests")
    [lifecycle] = bindings("access_lifecycle")
    [revocations] = bindings("access_revocations")
    assert (requests["type"], requests["queueName"], requests["connection"]) == (
        "serviceBusTrigger", "%JITGATE_REQUESTS_QUEUE%", "ServiceBusConnection",
    )
    assert (lifecycle["type"], lifecycle["queueName"], lifecycle["connection"]) == (
        "serviceBusTrigger", "%JITGATE_LIFECYCLE_QUEUE%", "ServiceBusConnection",
    )
    assert (revocations["type"], revocations["queueName"], revocations["connection"]) == (
        "serviceBusTrigger", "%JITGATE_REVOCATIONS_QUEUE%", "ServiceBusConnection",
    )
    for binding in (requests, lifecycle, revocations):
        assert "autoComplete" not in binding  # host.json decides, for every queue


def test_the_reconcile_timer_takes_its_schedule_from_a_setting() -> None:
    [timer] = bindings("reconcile")
    assert (timer["type"], timer["schedule"], timer["useMonitor"]) == (
        "timerTrigger", "%JITGATE_RECONCILE_SCHEDULE%", True,
    )


def test_the_http_api_is_one_anonymous_catch_all_function() -> None:
    trigger, output = bindings("api")
    assert (trigger["type"], trigger["route"], trigger["authLevel"]) == ("httpTrigger", "/{*route}", "ANONYMOUS")
    assert output["type"] == "http"


def test_importing_the_app_builds_nothing_and_imports_no_azure_sdk() -> None:
    # GIVEN a fresh interpreter with Azure settings that could not be built (nothing to connect to)
    probe = (
        "import json, sys; import function_app; from functions import _runtime; "
        "print(json.dumps({'built': _runtime._runtime is not None, 'modules': sorted(m for m in sys.modules "
        "if m.split('.')[:2] in (['azure', 'servicebus'], ['azure', 'cosmos'], ['azure', 'identity']) "
        "or m.split('.')[0] in ('fastapi', 'httpx') or m == 'shared.api')}))"
    )
    env = {**os.environ, "JITGATE_MODE": "azure", "PYTHONPATH": str(ROOT)}
    # WHEN function_app is imported, as the host does to index the functions
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True)
    # THEN no runtime was built and none of the SDKs (nor the HTTP stack) was loaded
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"built": False, "modules": []}


# ---------------------------------------------------------------- the queue triggers


def test_an_access_request_is_evaluated_and_then_granted(runtime: Runtime) -> None:
    # WHEN the access-requests function gets an auto-approved request
    request_id = submit_and_evaluate(runtime)
    # THEN it is approved and its grant command is on the lifecycle queue
    assert state(runtime, request_id) is RequestState.APPROVED
    # AND WHEN the access-lifecycle function gets that command
    deliver_lifecycle_commands(runtime)
    # THEN the role is granted and its revoke is scheduled
    assert state(runtime, request_id) is RequestState.ACTIVE
    types = [e.type for e in runtime.audit.chain(request_id)]
    assert types[-2:] == [EventType.GRANT_APPLIED, EventType.REVOKE_SCHEDULED]
    assert runtime.rbac is not None and len(runtime.rbac.list_marked()) == 1


def test_the_same_request_delivered_twice_is_granted_once(runtime: Runtime) -> None:
    doc = access_request(scope=DEV_RG)
    for _ in range(2):
        user_function("access_requests")(service_bus_message(body(doc), doc["requestId"]))
        deliver_lifecycle_commands(runtime)
    assert state(runtime, doc["requestId"]) is RequestState.ACTIVE
    assert runtime.rbac is not None and len(runtime.rbac.list_marked()) == 1


def test_an_invalid_request_is_rejected_and_audited_without_raising(runtime: Runtime) -> None:
    request_id = str(uuid.uuid4())
    raw = json.dumps({"schemaVersion": 1, "requestId": request_id, "justification": "x" * 2000}).encode()

    user_function("access_requests")(service_bus_message(raw, request_id))  # returns: the host completes it

    assert state(runtime, request_id) is RequestState.REJECTED
    [event] = runtime.audit.chain(request_id)
    assert event.type is EventType.REQUEST_REJECTED
    assert {e["loc"] for e in event.data["errors"]} >= {"requester", "justification"}


def test_the_revoke_at_expiry_arrives_through_the_revocations_function(runtime: Runtime) -> None:
    # GIVEN an active grant: the lifecycle function scheduled its revoke on the revocations queue, not its own
    request_id = submit_and_evaluate(runtime, duration="PT1H")
    deliver_lifecycle_commands(runtime)
    assert (runtime.bus.scheduled_count(REVOCATIONS), runtime.bus.scheduled_count(LIFECYCLE)) == (1, 0)
    # WHEN its expiry comes and the revocations function gets the revoke, as the host hands it over
    record = runtime.requests.get_request(request_id)
    assert record is not None and record.expires_at is not None and record.revoke_queue == REVOCATIONS
    runtime.backends.clock = FakeClock(record.expires_at)
    revoke = LifecycleCommand(command="revoke", request_id=request_id, reason="expired")
    user_function("access_revocations")(service_bus_message(revoke.body(), revoke.message_id))
    # THEN the grant is revoked on time and the assignment is gone
    assert state(runtime, request_id) is RequestState.REVOKED
    assert runtime.audit.chain(request_id)[-1].data["latenessSeconds"] == 0
    assert runtime.rbac is not None and runtime.rbac.list_marked() == []


def test_a_revoke_scheduled_on_the_lifecycle_queue_before_the_upgrade_still_revokes(runtime: Runtime) -> None:
    # GIVEN an active grant whose revoke was scheduled on the lifecycle queue, as before revocations had a queue
    request_id = submit_and_evaluate(runtime, duration="PT1H")
    deliver_lifecycle_commands(runtime)
    old = LifecycleCommand(command="revoke", request_id=request_id, reason="expired")
    # WHEN the lifecycle function gets that revoke command
    user_function("access_lifecycle")(service_bus_message(old.body(), old.message_id))
    # THEN it revokes, as it always did
    assert state(runtime, request_id) is RequestState.REVOKED
    assert runtime.rbac is not None and runtime.rbac.list_marked() == []


def test_a_transient_fault_raises_so_that_service_bus_redelivers(runtime: Runtime) -> None:
    # GIVEN an approved request and a role-assignment plane that keeps failing transiently
    request_id = submit_and_evaluate(runtime)
    [command] = runtime.bus.receive(LIFECYCLE)
    assert runtime.rbac is not None
    runtime.rbac.inject_fault("resolve", TransientError("ARM 503"), times=runtime.backends.provider_attempts)
    # WHEN the grant command is delivered, and it is not the last delivery
    with pytest.raises(TransientError):
        user_function("access_lifecycle")(service_bus_message(command.body, command.message_id, 1))
    # THEN nothing changed; the redelivery grants
    assert state(runtime, request_id) is RequestState.APPROVED
    user_function("access_lifecycle")(service_bus_message(command.body, command.message_id, 2))
    assert state(runtime, request_id) is RequestState.ACTIVE


def test_on_the_last_delivery_a_grant_fails_visibly_instead_of_raising(runtime: Runtime) -> None:
    request_id = submit_and_evaluate(runtime)
    [command] = runtime.bus.receive(LIFECYCLE)
    assert runtime.rbac is not None
    runtime.rbac.inject_fault("resolve", TransientError("ARM 503"), times=runtime.backends.provider_attempts)

    user_function("access_lifecycle")(service_bus_message(command.body, command.message_id, MAX_DELIVERIES))

    assert state(runtime, request_id) is RequestState.FAILED
    assert runtime.audit.chain(request_id)[-1].type is EventType.GRANT_FAILED


# ---------------------------------------------------------------- the timer


def test_the_timer_revokes_what_is_overdue(runtime: Runtime) -> None:
    # GIVEN an active one-hour grant whose scheduled revoke was lost
    request_id = submit_and_evaluate(runtime, duration="PT1H")
    deliver_lifecycle_commands(runtime)
    assert state(runtime, request_id) is RequestState.ACTIVE
    # WHEN the reconcile timer fires two hours later
    clock = FakeClock(runtime.backends.clock.now() + timedelta(hours=2))
    runtime.backends.clock = clock
    user_function("reconcile")(TimerRequest(past_due=True, schedule={"AdjustForDST": True}))
    # THEN the grant is revoked and the assignment is gone
    record = runtime.requests.get_request(request_id)
    assert record is not None and record.state is RequestState.REVOKED
    assert record.revoke_reason == "expired (reconcile)"
    assert runtime.rbac is not None and runtime.rbac.list_marked() == []


def test_the_daily_archive_exports_the_last_week_of_closed_requests(runtime: Runtime) -> None:
    [timer] = bindings("archive")
    assert (timer["type"], timer["schedule"]) == ("timerTrigger", "0 30 0 * * *")
    # GIVEN an archive (in Azure: Blob Storage) that records what it is asked for
    windows: list[tuple[datetime, datetime]] = []
    runtime.archive = lambda since, until: windows.append((since, until)) or ["closed-requests/day.jsonl"]
    # WHEN the daily timer fires
    user_function("archive")(TimerRequest(past_due=False, schedule={"AdjustForDST": True}))
    # THEN it asks for the last seven days, up to now
    [(since, until)] = windows
    assert until - since == timedelta(days=7)


def test_the_archive_timer_says_so_when_there_is_no_archive(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    assert runtime.archive is None
    with caplog.at_level("WARNING", logger="jitgate.archive"):
        user_function("archive")(TimerRequest(past_due=False, schedule={"AdjustForDST": True}))
    assert "JITGATE_ARCHIVE_ACCOUNT_URL is not set" in caplog.text


# ---------------------------------------------------------------- HTTP


def test_the_http_function_serves_the_api(runtime: Runtime) -> None:
    request = func.HttpRequest(method="GET", url="http://localhost/api/health", headers={}, body=b"")

    async def call() -> func.HttpResponse:
        response: func.HttpResponse = await user_function("api")(request, None)
        # NB. Shut the ASGI lifespan down in the loop it started in, not in the app's __del__ at exit.
        await function_app.app.middleware.notify_shutdown()
        function_app.app.startup_task_done = False
        return response

    response = asyncio.run(call())

    assert response.status_code == 200
    assert json.loads(response.get_body()) == {
        "status": "ok", "mode": "local", "backends": runtime.backend_names,
    }
