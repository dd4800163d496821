"""A local Cloud Tasks: a real gRPC server speaking `google.cloud.tasks.v2` CreateTask and DeleteTask with the real
proto types, and a dispatcher that sends each due HTTP task to its URL.

What it reproduces, from the API reference (google/cloud/tasks/v2/cloudtasks.proto, task.proto and the quotas page):

- CreateTask: NOT_FOUND when the queue does not exist; INVALID_ARGUMENT for a task name outside the queue or a
  TASK_ID that is not letters, digits, `-` and `_` (500 at most), and for a schedule_time more than 30 days ahead
  (the documented maximum); ALREADY_EXISTS for the name of a task that exists or was deleted or executed within
  the last hour (the de-duplication window of a queue created through Cloud Tasks). A schedule_time in the past
  or unset means now.
- DeleteTask: NOT_FOUND for a task that does not exist (never created, deleted, or already executed).
- Dispatch: at schedule_time the HTTP request is sent with its headers, body and the X-CloudTasks-* headers; an
  OAuth token target gets `Authorization: Bearer <token>`. A 2xx answer ends the task; anything else is retried
  with exponential backoff (0.1 s doubling up to 1 h, the queue defaults), `dispatch_count` counting attempts.

Dispatching runs at the start of every RPC and whenever `dispatch_due()` is called (the Pub/Sub fake calls it
before each Pull; `start_dispatcher()` calls it every 20 ms for tests on the real clock).
"""

from __future__ import annotations

import re
import threading
from concurrent import futures
from dataclasses import dataclass
from datetime import datetime, timedelta

import grpc
import httpx
from google.cloud.tasks_v2.types import CreateTaskRequest, DeleteTaskRequest, Task

from shared.ports import Clock
from tests.gcp.fake_pubsub import Refused, grpc_handlers

MAX_SCHEDULE_AHEAD = timedelta(days=30)
TOMBSTONE = timedelta(hours=1)
TASK_ID = re.compile(r"[A-Za-z0-9_-]{1,500}")


@dataclass
class _Pending:
    task: Task
    due: datetime
    attempts: int = 0


class FakeCloudTasks:
    """Queues by full name; tasks by full name; names deleted or executed, with when."""

    def __init__(self, clock: Clock, queues: list[str]) -> None:
        self.clock = clock
        self.queues = set(queues)
        self.tasks: dict[str, _Pending] = {}
        self.gone: dict[str, datetime] = {}
        self.dispatched: list[tuple[str, int]] = []  # (task name, HTTP status)
        self.token = "fake-oauth-token"
        self._lock = threading.RLock()
        self._dispatching = threading.Lock()
        self._server: grpc.Server | None = None
        self._stop = threading.Event()
        self._http = httpx.Client(timeout=10.0)
        self.port = 0

    # ------------------------------------------------------------ RPCs

    def create_task(self, request: CreateTaskRequest) -> Task:
        self.dispatch_due()
        with self._lock:
            if request.parent not in self.queues:
                raise Refused(grpc.StatusCode.NOT_FOUND, f"Queue does not exist: {request.parent}")
            task = Task(request.task)
            now = self.clock.now()
            if task.name:
                parent, _, task_id = task.name.rpartition("/tasks/")
                if parent != request.parent or not TASK_ID.fullmatch(task_id):
                    raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid task name: {task.name}")
            else:
                task.name = f"{request.parent}/tasks/{len(self.tasks) + len(self.gone) + 1}"
            due = task.schedule_time if "schedule_time" in task else now
            if due - now > MAX_SCHEDULE_AHEAD:
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                              "Task schedule_time is more than 30 days in the future; the maximum is 30 days")
            self._forget_old_tombstones(now)
            if task.name in self.tasks or task.name in self.gone:
                raise Refused(grpc.StatusCode.ALREADY_EXISTS, "Requested entity already exists")
            task.schedule_time = max(due, now)
            task.create_time = now
            self.tasks[task.name] = _Pending(task, max(due, now))
            return task

    def delete_task(self, request: DeleteTaskRequest) -> None:
        self.dispatch_due()
        with self._lock:
            if self.tasks.pop(request.name, None) is None:
                raise Refused(grpc.StatusCode.NOT_FOUND, "Requested entity was not found.")
            self.gone[request.name] = self.clock.now()

    def _forget_old_tombstones(self, now: datetime) -> None:
        for name, at in list(self.gone.items()):
            if now - at >= TOMBSTONE:
                del self.gone[name]

    # ------------------------------------------------------------ dispatch

    def dispatch_due(self) -> None:
        """Send every task due now, once each; one dispatcher at a time."""
        with self._dispatching:
            with self._lock:
                now = self.clock.now()
                due = sorted((p for p in self.tasks.values() if p.due <= now), key=lambda p: p.due)
            for pending in due:
                self._attempt(pending, now)

    def _attempt(self, pending: _Pending, now: datetime) -> None:
        task, request = pending.task, pending.task.http_request
        headers = dict(request.headers)
        headers.update({
            "X-CloudTasks-QueueName": task.name.split("/")[5],
            "X-CloudTasks-TaskName": task.name.rsplit("/", 1)[-1],
            "X-CloudTasks-TaskRetryCount": str(pending.attempts),
            "X-CloudTasks-TaskExecutionCount": str(pending.attempts),
            "X-CloudTasks-TaskETA": f"{task.schedule_time.timestamp():.6f}",
        })
        if request.oauth_token.service_account_email:
            headers["Authorization"] = f"Bearer {self.token}"
        method = request.http_method.name if request.http_method else "POST"
        try:
            status = self._http.request(method, request.url, headers=headers, content=request.body).status_code
        except httpx.HTTPError:
            status = 0
        with self._lock:
            self.dispatched.append((task.name, status))
            pending.attempts += 1
            if 200 <= status < 300:
                self.tasks.pop(task.name, None)
                self.gone[task.name] = now
            else:
                pending.due = now + min(timedelta(seconds=0.1 * 2 ** (pending.attempts - 1)), timedelta(hours=1))

    def start_dispatcher(self, every: float = 0.02) -> None:
        def run() -> None:
            while not self._stop.wait(every):
                self.dispatch_due()

        threading.Thread(target=run, name="fake-cloud-tasks", daemon=True).start()

    # ------------------------------------------------------------ serving

    def serve(self) -> FakeCloudTasks:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        server.add_generic_rpc_handlers(grpc_handlers({
            ("google.cloud.tasks.v2.CloudTasks", "CreateTask"): (CreateTaskRequest, Task, self.create_task),
            ("google.cloud.tasks.v2.CloudTasks", "DeleteTask"): (DeleteTaskRequest, None, self.delete_task),
        }))
        self.port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        return self

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.stop(grace=None)
        self._http.close()
