"""What every benchmark shares: percentiles, the machine, how figures are printed; the workload (policy and
access requests); a real `jitgate serve` and the CPU time of its process tree; a small HTTP client; reading
what happened from the audit trail; an embedded runtime in this process; and ports that count their calls.

Everything here reads and drives jitgate through its ports and its command line, not its tables, so that the
benchmarks measure a changed runtime (issue #10) the same way they measured the old one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as `python bench/x.py` from anywhere

from shared.domain.audit import AuditEvent  # noqa: E402
from shared.domain.lifecycle import RequestRecord, RequestState  # noqa: E402

# ---------------------------------------------------------------- figures


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) by linear interpolation between closest ranks. An infinite value (a request
    that never finished) makes every percentile that reaches it infinite."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    if rank == low:
        return ordered[low]
    high = ordered[low + 1]
    return math.inf if math.isinf(high) else ordered[low] + (high - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": model or platform.processor(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg": os.getloadavg(),
    }


def load() -> str:
    """The 1-, 5- and 15-minute load averages, as printed next to every figure."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class Report:
    """Figures of one benchmark: printed as they come, and as one JSON line at the end."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.figures: dict[str, Any] = {}
        self.notes: list[str] = []
        self.started = time.perf_counter()
        m = machine()
        self.figures["load at start"] = load()
        print(f"# bench {name}: {m['cpus']} cpus ({m['cpu']}), Python {m['python']}, load {load()}")

    def figure(self, key: str, value: Any, unit: str = "", target: str = "") -> None:
        self.figures[key] = value
        self._print(key, value, unit, target)

    def section(self, name: str, figures: dict[str, Any], prefix: str = "", show: bool = True) -> None:
        """A group of figures (one step, one kind), kept together under `name` in the JSON."""
        self.figures[name] = figures
        for key, value in figures.items() if show else ():
            self._print(prefix + key, value)

    @staticmethod
    def _print(key: str, value: Any, unit: str = "", target: str = "") -> None:
        if isinstance(value, bool):
            shown = "yes" if value else "no"
        elif isinstance(value, float):
            shown = f"{value:,.3f}"
        elif isinstance(value, int):
            shown = f"{value:,}"
        else:
            shown = str(value)
        suffix = f"  (target {target})" if target else ""
        print(f"  {key:<44} {shown} {unit}{suffix}".rstrip())

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}")

    def done(self, json_path: str | None = None) -> None:
        elapsed = time.perf_counter() - self.started
        self.figures["load at end"] = load()
        self.figures["benchWallSeconds"] = round(elapsed, 2)
        line = {"bench": self.name, "machine": machine(), "figures": self.figures, "notes": self.notes}
        print(f"  wall time {elapsed:.1f} s, load at end {load()}")
        print("JSON " + json.dumps(line, default=str))
        if json_path:
            with open(json_path, "a") as f:
                f.write(json.dumps(line, default=str) + "\n")


def command_line(doc: str | None) -> argparse.ArgumentParser:
    """A command line whose --help shows the script's docstring: its first paragraph, then the rest."""
    head, _, rest = (doc or "").strip().partition("\n\n")
    return argparse.ArgumentParser(description=" ".join(head.split()), epilog=rest,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def seconds(value: float, digits: int = 3) -> float | str:
    """A latency for a figure: rounded, or "never" for a request that did not get there in time."""
    return "never" if math.isinf(value) else round(value, digits)


# ---------------------------------------------------------------- the workload

DEV_SUB = "11111111-1111-4111-8111-111111111111"  # rule bench-auto: granted at once
PROD_SUB = "22222222-2222-4222-8222-222222222222"  # rule bench-one-approver: one approval
APPROVER = "aaaaaaaa-0000-4000-8000-00000000000a"
SUBMITTER = "5b5b5b5b-0000-4000-8000-00000000005b"  # the Backstage service identity (Jit.Submitter)
SUBMITTER_HEADERS = {"X-Jitgate-Dev-Principal": SUBMITTER, "X-Jitgate-Dev-Roles": "Jit.Submitter"}

BENCH_POLICY = f"""
version: 1
description: The benchmarks' policy (bench/_common.py).
groups:
  approvers: ["{APPROVER}"]
rules:
  - name: bench-auto
    match: {{providers: [local], roles: [Reader, Contributor], scopes: ["/subscriptions/{DEV_SUB}/**"]}}
    outcome: auto
    maxDuration: PT8H
  - name: bench-one-approver
    match: {{providers: [local], roles: [Reader, Contributor], scopes: ["/subscriptions/{PROD_SUB}/**"]}}
    outcome: approval
    approval: {{groups: [approvers], required: 1, deadline: PT1H}}
    maxDuration: PT8H
"""


def write_policy(directory: Path, approval_deadline: str = "PT1H") -> Path:
    path = directory / "bench-policy.yaml"
    path.write_text(BENCH_POLICY.replace("deadline: PT1H", f"deadline: {approval_deadline}"))
    return path


@dataclass(frozen=True)
class Submission:
    """One access request, ready to send."""

    request_id: str
    principal_id: str
    body: bytes


def submissions(count: int, seed: int, min_duration: float, max_duration: float,
                subscription: str = DEV_SUB, principals: int = 1000, groups: int = 500) -> list[Submission]:
    """`count` requests from `principals` people on `groups` resource groups (Reader or Contributor), each for
    a duration drawn from [min, max] seconds in tenths; the same seed gives the same requests."""
    rng = random.Random(seed)
    people = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(principals)]
    made = []
    for _ in range(count):
        request_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        principal = rng.choice(people)
        duration = round(rng.uniform(min_duration, max_duration), 1)
        body = json.dumps({
            "schemaVersion": 1,
            "requestId": request_id,
            "requester": {"principalId": principal, "displayName": "Bench User"},
            "target": {
                "provider": "local",
                "scope": f"/subscriptions/{subscription}/resourceGroups/rg-{rng.randrange(groups):03d}",
                "role": rng.choice(["Reader", "Contributor"]),
            },
            "duration": f"PT{duration:g}S",
            "justification": "Load test of the embedded runtime (jitgate bench)",
        }).encode()
        made.append(Submission(request_id, principal, body))
    return made


# ---------------------------------------------------------------- processes

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (after the command name, which may hold spaces)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU time of a process, its live descendants, and every child they have reaped."""
    stats = {pid: stat for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
             if (stat := _proc_stat(pid)) is not None}
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        children.setdefault(int(stat[1]), []).append(pid)
    ticks, todo = 0, [root]
    while todo:
        pid = todo.pop()
        stat = stats.get(pid)
        if stat is None:
            continue
        ticks += sum(int(stat[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
        todo.extend(children.get(pid, []))
    return ticks / _CLOCK_TICKS


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Serve:
    """A real `jitgate serve` (API, bus workers and reconcile timer in one process, as users run it) on a free
    port, with its own data directory and the benchmarks' policy. Its output goes to `serve.log` there."""

    def __init__(self, directory: Path, env: Mapping[str, str] | None = None) -> None:
        self.directory = directory
        self.data_dir = directory / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = directory / "serve.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("JITGATE_")},
            "JITGATE_MODE": "local",
            "JITGATE_DATA_DIR": str(self.data_dir),
            "JITGATE_POLICY": str(write_policy(directory)),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Serve:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 60.0) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "shared.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            )
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self.process.poll() is not None:
                raise RuntimeError(f"jitgate serve exited with {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"jitgate serve not healthy after {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/api/health", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.pid)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(15)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def add_serve_env(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--serve-env", action="append", default=[], metavar="NAME=VALUE", type=_setting,
                        help="extra environment for jitgate serve, e.g. JITGATE_WORKERS=4 (repeatable)")


def _setting(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, not {text!r}")
    return name, value


def idle_cpu_rate(serve: Serve, window: float = 1.0, settle: float = 1.0) -> float:
    """Cores the server burns doing nothing (its consumers poll the bus): the floor under every CPU figure. Taken
    `settle` seconds after the server answers, so that consumer processes (JITGATE_WORKER_PROCESSES) still
    importing are not counted as idle work."""
    time.sleep(settle)
    before = serve.cpu_seconds()
    time.sleep(window)
    return (serve.cpu_seconds() - before) / window


# ---------------------------------------------------------------- a small HTTP client


@dataclass(frozen=True)
class Posted:
    """One HTTP exchange: its status and when (wall clock) it was sent and answered."""

    status: int
    sent: float
    answered: float


def post_all(url: str, requests: Sequence[tuple[str, bytes]], headers: Mapping[str, str], connections: int,
             rate: float = 0.0) -> list[Posted]:
    """POST every (path, body) over `connections` keep-alive HTTP/1.1 connections, in order; request i is sent
    no earlier than i / `rate` seconds after the start (0: all at once). A raw asyncio client, so that the
    client's own CPU stays a small fraction of the server's."""
    host, port = url.removeprefix("http://").split(":")
    return asyncio.run(_post_all(host, int(port), requests, headers, connections, rate))


async def _post_all(host: str, port: int, requests: Sequence[tuple[str, bytes]], headers: Mapping[str, str],
                    connections: int, rate: float) -> list[Posted]:
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    results: list[Posted | None] = [None] * len(requests)
    cursor = iter(range(len(requests)))
    started = time.perf_counter()

    async def connection() -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        try:
            for i in cursor:
                if rate:
                    await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
                path, body = requests[i]
                message = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                           f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body
                for attempt in (1, 2):  # the server may have closed an idle keep-alive connection
                    if writer is None:
                        reader, writer = await asyncio.open_connection(host, port)
                    assert reader is not None
                    sent = time.time()
                    try:
                        writer.write(message)
                        status, close = await _response(reader)
                        break
                    except (ConnectionError, asyncio.IncompleteReadError):
                        writer.close()
                        reader = writer = None
                        if attempt == 2:
                            raise
                results[i] = Posted(status, sent, time.time())
                if close:
                    writer.close()
                    reader = writer = None
        finally:
            if writer is not None:
                writer.close()

    await asyncio.gather(*(connection() for _ in range(max(1, min(connections, len(requests))))))
    return [r for r in results if r is not None]


async def _response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; return its status and whether the server will close the connection."""
    status_line = await reader.readuntil(b"\r\n")
    status = int(status_line.split()[1])
    length, chunked, close = 0, False, False
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = line.decode("latin-1").partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding":
            chunked = "chunked" in value
        elif name == "connection":
            close = value == "close"
    if not chunked:
        await reader.readexactly(length)
        return status, close
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        await reader.readexactly(size + 2)
    await reader.readuntil(b"\r\n")
    return status, close


# ---------------------------------------------------------------- what the audit trail says happened


def non_terminal() -> set[RequestState]:
    return {state for state in RequestState if not state.terminal}


def queue_names(settings: Any) -> list[str]:
    """Every queue the settings name (`*_queue`), so a queue added later is looked at too."""
    return [getattr(settings, f.name) for f in fields(settings) if f.name.endswith("_queue")]


def local_store(data_dir: Path) -> Any:
    """The store of a local data directory, through its adapter (not its tables)."""
    from shared.adapters.embedded.store import SqliteStore

    return SqliteStore(data_dir / "store.db")


def local_bus(data_dir: Path) -> Any:
    from shared.adapters.embedded.bus import SqliteBus
    from shared.clock import SystemClock

    return SqliteBus(data_dir / "bus.db", SystemClock())


def local_rbac(data_dir: Path) -> Any:
    from shared.adapters.embedded.rbac import LocalRbac

    return LocalRbac(data_dir / "rbac.db")


def wait_finished(data_dir: Path, deadline: float, poll: float = 0.25) -> bool:
    """Wait until no request is waiting in the intake queue and none is in a non-terminal state (every one
    revoked, rejected, ...). False if `deadline` (time.monotonic()) passes first."""
    from shared.settings import Settings

    store, bus = local_store(data_dir), local_bus(data_dir)
    waiting = non_terminal()
    intake = Settings().requests_queue
    try:
        while time.monotonic() < deadline:
            if not store.requests_in(waiting, limit=1) and bus.active_count(intake) == 0:
                return True
            time.sleep(poll)
        return False
    finally:
        store.close()
        bus.close()


def _events(store: Any, type_: str) -> Iterator[AuditEvent]:
    from shared.ports import AuditQuery

    continuation = None
    while True:
        page = store.query(AuditQuery(type=type_, limit=1000, continuation=continuation))
        yield from page.events
        continuation = page.continuation
        if continuation is None:
            return


@dataclass
class Trail:
    """When each request was received, granted and revoked (epoch seconds), read back through the ports after
    a run; plus what must be empty at the end: dead letters, leftover assignments and active holds."""

    received: dict[str, float] = field(default_factory=dict)
    active: dict[str, float] = field(default_factory=dict)
    expires: dict[str, float] = field(default_factory=dict)
    revoked: dict[str, float] = field(default_factory=dict)
    lateness: dict[str, float] = field(default_factory=dict)
    states: Counter[str] = field(default_factory=Counter)
    dead_letters: int = 0
    assignments_left: int = 0
    active_holds_left: int = 0

    @classmethod
    def read(cls, data_dir: Path) -> Trail:
        from shared.adapters.store_format import parse_instant
        from shared.settings import Settings

        store, bus, rbac = local_store(data_dir), local_bus(data_dir), local_rbac(data_dir)
        trail = cls()
        try:
            for event in _events(store, "request.received"):
                trail.received[event.request_id] = event.at.timestamp()
            for event in _events(store, "grant.applied"):
                trail.active[event.request_id] = event.at.timestamp()
                trail.expires[event.request_id] = parse_instant(event.data["expiresAt"]).timestamp()
            for event in _events(store, "grant.revoked"):
                trail.revoked[event.request_id] = event.at.timestamp()
                if "latenessSeconds" in event.data:
                    trail.lateness[event.request_id] = float(event.data["latenessSeconds"])
            trail.states = Counter(r.state.value for r in store.requests_in(set(RequestState), limit=10**9))
            trail.dead_letters = sum(len(bus.dead_letters(queue)) for queue in queue_names(Settings()))
            trail.assignments_left = len(rbac.all_assignments())
            trail.active_holds_left = len(store.all_active_holds())
        finally:
            store.close()
            bus.close()
            rbac.close()
        return trail

    def figures(self, request_ids: Sequence[str], sent: Mapping[str, float] | None = None) -> dict[str, Any]:
        """Latency percentiles over `request_ids`; a request that never got there counts as infinitely late.
        `sent`: when the client handed each request to jitgate (its own clock, the same machine's)."""
        inf = math.inf

        def spread(name: str, values: list[float], digits: int = 3) -> dict[str, Any]:
            return {f"{name} p50 s": seconds(percentile(values, 50), digits),
                    f"{name} p99 s": seconds(percentile(values, 99), digits),
                    f"{name} max s": seconds(max(values, default=math.nan), digits)}

        def since(start: Mapping[str, float], end: Mapping[str, float]) -> list[float]:
            return [end[r] - start[r] if r in end and r in start else inf for r in request_ids]

        out: dict[str, Any] = {}
        if sent is not None:
            out |= spread("submitted -> active", since(sent, self.active))
        out |= spread("received -> active (audit)", since(self.received, self.active))
        out |= spread("revocation lateness (latenessSeconds)", [self.lateness.get(r, inf) for r in request_ids])
        out |= spread("revocation lateness (event at - expiresAt)", since(self.expires, self.revoked))
        return out

    def leftovers(self, expected: int) -> dict[str, Any]:
        return {
            "requests recorded": sum(self.states.values()),
            "states": dict(self.states),
            "every request revoked": self.states.get("revoked", 0) == expected,
            "dead letters": self.dead_letters,
            "assignments left": self.assignments_left,
            "active holds left": self.active_holds_left,
        }


# ---------------------------------------------------------------- the runtime in this process


class Embedded:
    """`build_local` in a temporary directory with the benchmarks' policy, and a `Worker` wired as `jitgate
    serve` wires it, but no threads: the caller drains, so that what happens is deterministic and its CPU
    time is this thread's. The local notifier's console echo is silenced (it still writes its outbox)."""

    def __init__(self, approval_deadline: str = "PT1H") -> None:
        from shared.runtime import build_local
        from shared.settings import Settings
        from shared.worker import Worker

        self._tmp = tempfile.TemporaryDirectory(prefix="jitgate-bench-")
        directory = Path(self._tmp.name)
        self.settings = Settings(data_dir=directory / "data", policy_path=write_policy(directory, approval_deadline))
        self.runtime = build_local(self.settings)
        # The adapters themselves, for the benchmark's own looks (never counted when the ports are).
        self.store, self.bus = self.runtime.requests, self.runtime.bus
        s = self.settings
        self.worker = Worker(self.runtime.lifecycle, self.runtime.bus, s.requests_queue, s.lifecycle_queue,
                             s.max_delivery_count, s.reconcile_interval.total_seconds(), s.poll_interval)

    def __enter__(self) -> Embedded:
        return self

    def __exit__(self, *exc: object) -> None:
        for closable in (self.bus, self.store, self.runtime.rbac):
            with contextlib.suppress(Exception):
                closable.close()
        self._tmp.cleanup()

    def state(self, request_id: str) -> RequestState | None:
        record = self.store.get_request(request_id)
        return None if record is None else record.state

    def queues_empty(self) -> bool:
        """No message left in any queue, due or scheduled."""
        return all(self.bus.active_count(q) == 0 and self.bus.scheduled_count(q) == 0
                   for q in queue_names(self.settings))

    def drain_until(self, done: Callable[[], bool], timeout: float = 120.0, poll: float = 0.02) -> None:
        """Handle due messages until `done()`, sleeping `poll` seconds after a drain that found nothing."""
        deadline = time.monotonic() + timeout
        with quiet():
            while not done():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"not done after {timeout:.0f} s")
                if not self.worker.drain(256):
                    time.sleep(poll)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the local notifier's console echo (one line per notice)."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


# ---------------------------------------------------------------- ports that count their calls

# What one port call is, as a store or bus operation. A method not named here is counted as "unclassified"
# and named in the output, so that a port method added later is never silently left out.
STORE_KINDS = {
    "get_request": "point read", "get_grant": "point read",
    "create_request": "write", "save_request": "write", "put_grant": "write", "append": "write",
    "requests_in": "query", "requests_with_outbox": "query", "holds_for_request": "query",
    "overdue_holds": "query", "all_active_holds": "query", "chain": "query", "query": "query",
    "request_ids": "query", "chain_documents": "query", "list_requests": "query",
    "bulk_append": "batch",
    # The ledger's port before issue #10 (a document per hold), so that the code before it is counted too.
    "get_hold": "point read", "put_hold": "write", "active_holds": "query",
}
# Cosmos: the queries that stay in one partition (the rest fan out across partitions).
SINGLE_PARTITION = {"active_holds", "chain", "chain_documents"}
BUS_KINDS = {
    "send": "send", "schedule": "schedule", "cancel_scheduled": "cancel",
    "receive": "receive", "complete": "complete", "abandon": "abandon", "dead_letter": "dead-letter",
    "renew_lock": "renew", "dead_letters": "peek", "replay_dead_letter": "send",
}
PROVIDER_KINDS = {
    "resolve_role": "resolve role", "find_assignment": "find", "get_assignment": "read",
    "create_assignment": "create", "delete_assignment": "delete", "list_marked": "list",
}
# Added to each stored document by Cosmos (_rid, _self, _etag, _attachments, _ts) and by the adapter (id,
# sort keys); measured documents are this much bigger in Cosmos than jitgate's own JSON of them.
COSMOS_OVERHEAD_BYTES = 200


def document_bytes(value: Any) -> int:
    """Bytes of the JSON document(s) a store call wrote or returned, as jitgate serialises them."""
    if value is None:
        return 0
    if isinstance(value, RequestRecord | AuditEvent):
        return len(json.dumps(value.document())) + COSMOS_OVERHEAD_BYTES
    if isinstance(value, BaseModel):  # a hold, a grant key's document
        return len(value.model_dump_json()) + COSMOS_OVERHEAD_BYTES
    if isinstance(value, list | tuple):
        return sum(document_bytes(v) for v in value)
    if isinstance(value, str):  # a raw stored document
        return len(value) + COSMOS_OVERHEAD_BYTES
    return 0


@dataclass
class Call:
    """What one port call did: its kind and the documents it moved."""

    port: str
    method: str
    kind: str
    items: int = 1  # messages received, events in a batch
    sizes: list[int] = field(default_factory=list)  # bytes of each document written or read
    failed: bool = False
    creates: bool = False  # a write of a document at version 0: it did not exist yet


class Tally:
    """Every call the counted ports saw, in order. `measure=False` skips measuring documents (cheaper)."""

    def __init__(self, measure: bool = True) -> None:
        self.measure = measure
        self.calls: list[Call] = []

    def reset(self) -> list[Call]:
        calls, self.calls = self.calls, []
        return calls

    def record(self, port: str, method: str, args: tuple[Any, ...], result: Any, failed: bool) -> None:
        if port == "bus" and method == "settle":
            # NB. The embedded bus settles a worker's batch in one transaction (`SettlesTogether`); on Service Bus
            # each settlement is an operation of its own, and that is what is counted.
            for settlement in args[0]:
                self.record(port, settlement.outcome, (settlement.message,), None, failed)
            return
        kinds = {"store": STORE_KINDS, "bus": BUS_KINDS, "provider": PROVIDER_KINDS}[port]
        kind = kinds.get(method, "unclassified")
        call = Call(port, method, kind, failed=failed)
        if port == "bus" and method == "receive":
            call.items = len(result or [])
            if not call.items:
                call.kind = "empty receive"
        elif port == "store":
            written = list(_documents(args))
            if _committed_with_events(written, result):
                # NB. The store wrote the record's outbox with it: one transactional batch in Cosmos (the record
                # and each event), where a store that hands the outbox back writes the record alone.
                record = written[0]
                call.kind = "batch"
                written = [record.model_copy(update={"pending_events": []}), *record.pending_events]
            call.items = max(len(written), 1)
            call.creates = any(getattr(d, "version", None) == 0 for d in written[:1])
            if self.measure:
                found = written or (result if isinstance(result, list) else [result])
                call.sizes = [document_bytes(d) for d in found]
        self.calls.append(call)


def _committed_with_events(written: list[Any], result: Any) -> bool:
    return (len(written) == 1 and isinstance(written[0], RequestRecord) and bool(written[0].pending_events)
            and isinstance(result, RequestRecord) and not result.pending_events)


def _documents(values: Any) -> Iterator[Any]:
    """The documents among a call's arguments, however nested in lists and tuples (a batch)."""
    for value in values:
        if isinstance(value, BaseModel):
            yield value
        elif isinstance(value, list | tuple):
            yield from _documents(value)


class Counted:
    """A port (or any object) whose public method calls are recorded in a `Tally`; everything else passes
    through. Iterators a method returns are counted as one call, as the Cosmos SDK pages them."""

    def __init__(self, target: Any, port: str, tally: Tally) -> None:
        self._target = target
        self._port = port
        self._tally = tally

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if name.startswith("_") or not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            result, failed = None, True
            try:
                result = attr(*args, **kwargs)
                failed = False
                return result
            finally:
                self._tally.record(self._port, name, args, result, failed)

        return counted


def count_ports(embedded: Embedded, tally: Tally) -> None:
    """Wrap the store, bus and grant providers of an embedded runtime (the lifecycle's, the API's and the
    worker's) in counting proxies, from the outside."""
    runtime = embedded.runtime
    backends = runtime.lifecycle.b
    store = Counted(backends.requests, "store", tally)
    bus = Counted(backends.bus, "bus", tally)
    backends.requests = backends.ledger = backends.audit = store
    backends.bus = bus
    backends.providers = {name: Counted(p, "provider", tally) for name, p in backends.providers.items()}
    embedded.runtime = replace(runtime, bus=bus, requests=store, audit=store)
    embedded.worker.bus = bus
