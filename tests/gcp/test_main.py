"""main.py run for real: each function under `functions-framework` in a process of its own, fed CloudEvents over
HTTP as Eventarc pushes Pub/Sub messages (binary mode, and structured mode for the lifecycle topic), against the
local Pub/Sub and Cloud Tasks servers on the real clock. The test plays Eventarc: it pulls each topic's
subscription and POSTs the message as a `google.cloud.pubsub.topic.v1.messagePublished` event, acknowledging on
2xx and handing the message back otherwise, as a push subscription does."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.adapters.embedded.store import SqliteStore
from shared.adapters.gcp.pubsub import PubSubBus
from shared.ports import QueueSettings
from tests.fakes.world import POLICY, PROD_RG, PROD_SUB, access_request
from tests.gcp.contract_adapters import PROJECT, SCHEDULER_ACCOUNT, TASKS_QUEUE, GcpWorld
from tests.gcp.google_tokens import AUDIENCE, BACKSTAGE, GoogleCerts, GoogleSigner

pytestmark = pytest.mark.gcp

ROOT = Path(__file__).resolve().parents[2]
QUEUES = {"access-requests": "access_requests", "access-lifecycle": "access_lifecycle",
          "access-revocations": "access_revocations"}
SETTINGS = QueueSettings(lock_duration=timedelta(seconds=30), max_delivery_count=5)


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Functions:
    """One functions-framework process per target, on ports of their own."""

    def __init__(self, env: dict[str, str], targets: list[str], logs: Path) -> None:
        self.env = env
        self.ports = {target: _free_port() for target in targets}
        self.procs = {
            target: subprocess.Popen(
                [sys.executable, "-m", "functions_framework", "--target", target, "--source", "main.py",
                 "--host", "127.0.0.1", "--port", str(port)],
                cwd=ROOT, env=env, stdout=(logs / f"{target}.log").open("wb"), stderr=subprocess.STDOUT,
            )
            for target, port in self.ports.items()
        }
        deadline = time.monotonic() + 60
        for target, port in self.ports.items():
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    assert self.procs[target].poll() is None, (logs / f"{target}.log").read_text()
                    assert time.monotonic() < deadline, f"{target} did not start"
                    time.sleep(0.1)

    def url(self, target: str) -> str:
        return f"http://127.0.0.1:{self.ports[target]}"

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            proc.wait(timeout=20)


def cloud_event(message: Any, subscription: str, structured: bool) -> tuple[dict[str, str], bytes]:
    """The event Eventarc makes of a pulled Pub/Sub message, in binary or structured content mode."""
    data = {"message": {"data": base64.b64encode(bytes(message.data)).decode(),
                        "attributes": dict(message.attributes), "messageId": message.message_id,
                        "publishTime": message.publish_time.isoformat()},
            "subscription": subscription}
    attributes = {"id": message.message_id, "source": f"//pubsub.googleapis.com/{subscription}",
                  "type": "google.cloud.pubsub.topic.v1.messagePublished", "specversion": "1.0",
                  "time": message.publish_time.isoformat()}
    if structured:
        return {"Content-Type": "application/cloudevents+json"}, json.dumps({**attributes, "data": data}).encode()
    return {"Content-Type": "application/json", **{f"ce-{k}": v for k, v in attributes.items()}}, json.dumps(
        data).encode()


class Eventarc:
    """Pulls each topic's subscription and pushes to its function until stopped."""

    def __init__(self, gcp: GcpWorld, functions: Functions) -> None:
        self.gcp, self.functions = gcp, functions
        self.pushed: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from google.pubsub_v1.types import AcknowledgeRequest, ModifyAckDeadlineRequest, PullRequest

        with httpx.Client(timeout=30) as http:
            while not self._stop.is_set():
                idle = True
                for queue, target in QUEUES.items():
                    subscription = f"projects/{PROJECT}/subscriptions/{queue}"
                    pulled = self.gcp.pubsub.pull(PullRequest(subscription=subscription, max_messages=10))
                    for received in pulled.received_messages:
                        idle = False
                        headers, body = cloud_event(received.message, subscription, queue == "access-lifecycle")
                        status = http.post(self.functions.url(target), headers=headers, content=body).status_code
                        self.pushed.append((queue, status))
                        if 200 <= status < 300:
                            self.gcp.pubsub.acknowledge(AcknowledgeRequest(subscription=subscription,
                                                                           ack_ids=[received.ack_id]))
                        else:
                            self.gcp.pubsub.modify_ack_deadline(ModifyAckDeadlineRequest(
                                subscription=subscription, ack_ids=[received.ack_id], ack_deadline_seconds=0))
                if idle:
                    self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


Deployment = tuple[GcpWorld, Functions, Eventarc, PubSubBus, Path]


@contextmanager
def deployed(tmp_path: Path, policy_text: str = POLICY, **extra_env: str) -> Iterator[Deployment]:
    gcp = GcpWorld(SystemClock(), dict.fromkeys(QUEUES, SETTINGS))
    gcp.tasks.start_dispatcher()
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text)
    data = tmp_path / "data"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("JITGATE_")},
        "PYTHONPATH": str(ROOT),
        "JITGATE_MODE": "gcp",
        "JITGATE_STORE": "sqlite",
        "JITGATE_DATA_DIR": str(data),
        "JITGATE_POLICY": str(policy),
        "JITGATE_PROVIDERS": "local",
        "JITGATE_GCP_PROJECT": PROJECT,
        "JITGATE_TASKS_QUEUE": TASKS_QUEUE,
        "JITGATE_TASKS_SERVICE_ACCOUNT": SCHEDULER_ACCOUNT,
        "JITGATE_PUBSUB_PUBLISH_URL": gcp.pubsub.rest_url,
        "JITGATE_TASKS_EMULATOR_HOST": gcp.tasks.host,
        "JITGATE_GCP_API_AUDIENCE": AUDIENCE,
        "PUBSUB_EMULATOR_HOST": gcp.pubsub.host,
        "WORKERS": "1",
        "THREADS": "2",
        **extra_env,
    }
    functions = Functions(env, [*QUEUES.values(), "api", "reconcile"], tmp_path)
    eventarc = Eventarc(gcp, functions)
    bus = gcp.bus(dict.fromkeys(QUEUES, SETTINGS))
    try:
        yield gcp, functions, eventarc, bus, data
    finally:
        eventarc.stop()
        functions.stop()
        bus.close()
        gcp.close()


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    with deployed(tmp_path) as found:
        yield found


def _wait_for(what: str, check: Any, seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_request_goes_from_submit_to_granted_to_revoked_at_expiry_through_cloud_tasks(deployment: Any) -> None:
    gcp, functions, eventarc, bus, data = deployment
    # GIVEN an access request on the access-requests topic, as the Backstage action sends it
    request = access_request(duration="PT4S")
    rid = request["requestId"]
    bus.send("access-requests", rid, json.dumps(request).encode())
    store = SqliteStore(data / "store.db")

    def state() -> str:
        record = store.get_request(rid)
        return record.state.value if record is not None else ""

    # THEN it is granted, with its revoke waiting as a Cloud Task
    _wait_for("the grant", lambda: state() == "active")
    assert [name.rsplit("/", 1)[-1].split("-", 1)[1] for name in gcp.tasks.tasks] == ["access-revocations"]
    # AND at expiry Cloud Tasks publishes the revoke, the revocations function runs it
    _wait_for("the revoke at expiry", lambda: state() == "revoked", seconds=40)
    types = [e.type.value for e in store.chain(rid)]
    assert types == ["request.received", "policy.evaluated", "request.approved", "grant.applied",
                     "revoke.scheduled", "grant.revoked"]
    assert [status for _, status in gcp.tasks.dispatched] == [200]
    # NB. The record is revoked inside the push; the stand-in Eventarc notes the push when its answer comes back.
    _wait_for("the revocations push answered", lambda: {queue for queue, _ in eventarc.pushed} == set(QUEUES))
    assert all(status == 200 for _, status in eventarc.pushed)
    # AND the API and reconcile answer from their own functions
    health = httpx.get(f"{functions.url('api')}/api/health").json()
    assert health["mode"] == "gcp" and health["backends"]["bus"] == "pubsub"
    assert httpx.post(functions.url("reconcile")).status_code == 200
    assert httpx.get(functions.url("reconcile")).status_code == 405


def test_malformed_events_and_commands_are_rejected_with_their_reasons_and_the_function_lives_on(
    deployment: Any,
) -> None:
    _, functions, _, bus, _ = deployment
    url = functions.url("access_lifecycle")
    base = {"ce-id": "1", "ce-source": "//pubsub.googleapis.com/x", "ce-specversion": "1.0",
            "Content-Type": "application/json"}
    # a CloudEvent of another type, one whose data is not base64, and a command that is not one
    wrong_type = httpx.post(url, headers={**base, "ce-type": "google.cloud.storage.object.v1.finalized"},
                            content=b'{"bucket": "b"}')
    not_base64 = httpx.post(url, headers={**base, "ce-type": "google.cloud.pubsub.topic.v1.messagePublished"},
                            content=json.dumps({"message": {"data": "%%%"}}).encode())
    bad_command = base64.b64encode(b'{"command": "grant", "command": "revoke"}').decode()
    invalid = httpx.post(url, headers={**base, "ce-type": "google.cloud.pubsub.topic.v1.messagePublished"},
                         content=json.dumps({"message": {"data": bad_command, "messageId": "7"}}).encode())
    unknown = base64.b64encode(json.dumps({"command": "grant", "requestId": str(uuid.uuid4())}).encode()).decode()
    never_seen = httpx.post(url, headers={**base, "ce-type": "google.cloud.pubsub.topic.v1.messagePublished"},
                            content=json.dumps({"message": {"data": unknown, "messageId": "8"}}).encode())
    # not a CloudEvent at all: functions-framework itself refuses it
    garbage = httpx.post(url, headers={"Content-Type": "application/json"}, content=b"[")
    assert [r.status_code for r in (wrong_type, not_base64, invalid, never_seen)] == [200, 200, 200, 200]
    assert garbage.status_code == 400
    # THEN each one the function saw is on the dead-letter topic with its reason, and nothing was retried
    dead = bus.dead_letters("access-lifecycle")
    assert sorted(d.reason for d in dead) == ["InvalidCommand", "MalformedEvent", "MalformedEvent", "UnknownRequest"]
    assert any("duplicate" in d.description for d in dead if d.reason == "InvalidCommand")
    assert any("google.cloud.storage.object.v1.finalized" in d.description for d in dead)
    # AND the function still serves
    assert httpx.post(url, headers={**base, "ce-type": "x"}, content=b"{}").status_code == 200
    # AND `jitgate dlq list` in gcp mode shows what was rejected, with the reasons
    listed = subprocess.run([sys.executable, "-m", "shared.cli", "dlq", "list", "--queue", "access-lifecycle",
                             "--json"], cwd=ROOT, env=functions.env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert sorted(row["reason"] for row in json.loads(listed.stdout)) == [
        "InvalidCommand", "MalformedEvent", "MalformedEvent", "MalformedEvent", "UnknownRequest"]


def test_an_invalid_access_request_is_rejected_and_audited_and_acknowledged(deployment: Any) -> None:
    _, functions, _, _, data = deployment
    request = access_request(duration="PT9H")  # longer than the rule allows: refused by the policy
    bad = {**access_request(), "justification": ""}  # invalid: no justification
    headers = {"ce-id": "1", "ce-source": "//pubsub.googleapis.com/x", "ce-specversion": "1.0",
               "ce-type": "google.cloud.pubsub.topic.v1.messagePublished", "Content-Type": "application/json"}
    for doc in (request, bad):
        pushed = {"message": {"data": base64.b64encode(json.dumps(doc).encode()).decode(), "messageId": "9"}}
        assert httpx.post(functions.url("access_requests"), headers=headers,
                          content=json.dumps(pushed).encode()).status_code == 200
    store = SqliteStore(data / "store.db")
    record = store.get_request(request["requestId"])
    assert record is not None and record.state.value == "rejected"
    rejected = [e for e in store.chain(bad["requestId"]) if e.type.value == "request.rejected"]
    assert rejected and "justification" in json.dumps(rejected[0].data)


GOOGLE_POLICY = f"""
version: 1
groups:
  approvers: ["user:alice@example.com"]
  auditors: ["user:audrey@example.com"]
rules:
  - name: prod-contributor
    match: {{providers: [local], roles: [Contributor], scopes: ["/subscriptions/{PROD_SUB}/resourceGroups/*"]}}
    outcome: approval
    approval: {{groups: [approvers], required: 1, deadline: PT1H}}
    maxDuration: PT2H
"""


def google_request(principal: str) -> dict[str, Any]:
    request = access_request(role="Contributor", scope=PROD_RG)
    request["requester"] = {"principalId": principal, "principalType": "GoogleUser", "displayName": "Someone"}
    return request


def test_google_callers_use_the_api_with_their_own_id_tokens(tmp_path: Path) -> None:
    signer = GoogleSigner("google-key-1")
    certs = GoogleCerts(signer)
    roles = f"Jit.Submitter=serviceAccount:{BACKSTAGE},Jit.Auditor=group:auditors"
    try:
        with deployed(tmp_path, GOOGLE_POLICY, JITGATE_GCP_CERTS_URL=certs.certs_url,
                      JITGATE_GCP_ROLES=roles) as (_, functions, _, _, _):
            api = f"{functions.url('api')}/api/access-requests"
            jane, alice, audrey, backstage = ({"Authorization": f"Bearer {signer.token(email)}"} for email in (
                "jane@example.com", "alice@example.com", "audrey@example.com", BACKSTAGE))

            def state(rid: str) -> str:
                answer = httpx.get(f"{api}/{rid}", headers=jane)
                assert answer.status_code == 200, answer.text
                return str(answer.json()["state"])

            # GIVEN Jane, signed in with Google, asking for access for herself (and not for Bob)
            mine = google_request("user:jane@example.com")
            rid = mine["requestId"]
            answer = httpx.post(api, json=mine, headers=jane)
            assert answer.status_code == 202, answer.text
            refused = httpx.post(api, json=google_request("user:bob@example.com"), headers=jane)
            assert refused.status_code == 403 and "only request access for yourself" in refused.text
            # THEN she sees it among hers, waiting for an approver
            _wait_for("evaluation", lambda: state(rid) == "pending_approval")
            listed = httpx.get(api, params={"mine": "true"}, headers=jane).json()["requests"]
            assert [r["requestId"] for r in listed] == [rid]
            # AND Alice, in the approver group by her Google identity, finds it waiting for her and approves
            waiting = httpx.get(api, params={"waitingForMe": "true"}, headers=alice).json()["requests"]
            assert [(r["requestId"], r["approval"]["youMay"]) for r in waiting] == [(rid, True)]
            assert httpx.post(f"{api}/{rid}/approve", json={}, headers=backstage).status_code == 403  # a service
            assert httpx.post(f"{api}/{rid}/approve", json={"comment": "go"}, headers=alice).status_code == 200
            given = httpx.get(f"{api}/{rid}", headers=jane).json()["approval"]["given"]
            assert [a["approverId"] for a in given] == ["user:alice@example.com"]
            # (the grant itself is for gcp-iam: tests/gcp/test_lifecycle_gcp.py takes a Google caller through it)
            # WHEN a token signed with another key under Google's key id comes
            forged = {"Authorization": f"Bearer {GoogleSigner(signer.kid).token('jane@example.com')}"}
            answer = httpx.get(f"{api}/{rid}", headers=forged)
            # THEN it is refused, and the auditor (a role from a policy group) finds the refusal
            assert answer.status_code == 401 and "signature does not verify" in answer.json()["detail"]
            audit = f"{functions.url('api')}/api/audit/events"
            events = httpx.get(audit, params={"requestId": rid, "type": "access.refused"}, headers=audrey)
            assert events.status_code == 200, events.text
            refusals = [(e["data"]["action"], e["actor"]["principalId"]) for e in events.json()["events"]]
            assert refusals == [("approve", f"serviceAccount:{BACKSTAGE}"), ("read", "anonymous")]
            assert httpx.get(audit, params={"requestId": rid}, headers=jane).status_code == 403
            # AND Backstage's service account, with Jit.Submitter, asks for Bob
            answer = httpx.post(api, json=google_request("user:bob@example.com"), headers=backstage)
            assert answer.status_code == 202, answer.text
    finally:
        certs.close()


def test_main_imports_no_google_sdk_client() -> None:
    # cold start: the clients come with the runtime, on the first invocation (bench/coldstart.py measures it)
    done = subprocess.run(
        [sys.executable, "-c", "import main, sys; print(sorted(m for m in sys.modules if m.startswith(("
         "'google.cloud.pubsub', 'google.pubsub_v1', 'google.cloud.tasks', 'google.api_core', 'grpc', "
         "'azure.cosmos', 'azure.identity', 'shared.runtime'))))"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    assert done.stdout.strip() == "['shared.runtime']"
