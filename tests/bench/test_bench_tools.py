"""The benchmarks' own instruments (bench/): what they count, how they compute, and that each one runs.

The figures of issue #10 are only as good as these: a port method nobody classified would drop out of the
operation counts, an infinite latency averaged away would turn a request that never finished into a pass.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.append(str(BENCH))  # the scripts import `_common` as their neighbour

import _common  # noqa: E402
import burst  # noqa: E402
import capacity  # noqa: E402
import cpu  # noqa: E402
import operations  # noqa: E402
import reconcile  # noqa: E402

from shared import ports  # noqa: E402
from shared.domain.audit import EventType  # noqa: E402
from shared.domain.errors import ConcurrencyConflict  # noqa: E402
from shared.domain.lifecycle import RequestRecord, RequestState  # noqa: E402
from tests.fakes.world import World, access_request, body  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*httpx.*")  # the test client's notice about its HTTP library


def port_methods(protocol: type) -> set[str]:
    """The public methods a port protocol declares, its own and those of the ports it extends."""
    return {name for cls in protocol.__mro__ if cls.__module__ == ports.__name__
            for name, value in vars(cls).items() if inspect.isfunction(value) and not name.startswith("_")}


@pytest.mark.parametrize(("protocol", "kinds"), [
    (ports.RequestStore, _common.STORE_KINDS),
    (ports.LedgerStore, _common.STORE_KINDS),
    (ports.AuditStore, _common.STORE_KINDS),
    (ports.Bus, _common.BUS_KINDS),
    (ports.GrantProvider, _common.PROVIDER_KINDS),
])
def test_every_port_method_is_classified(protocol: type, kinds: dict[str, str]) -> None:
    # GIVEN the ports as they are  THEN each method is a known kind of operation (a new one must be added)
    assert port_methods(protocol) - kinds.keys() == set()


def test_a_request_that_never_finished_makes_its_percentiles_infinite() -> None:
    assert _common.percentile([1.0, 2.0, 3.0], 50) == 2.0
    assert _common.percentile([1.0, 2.0, math.inf], 50) == 2.0
    assert _common.percentile([1.0, 2.0, math.inf], 99) == math.inf
    assert _common.percentile([1.0, math.inf, math.inf], 50) == math.inf
    assert _common.seconds(math.inf) == "never"


def test_counted_ports_record_each_call_its_kind_its_documents_and_failures() -> None:
    # GIVEN a lifecycle on fakes whose store and bus are counted from the outside
    world = World()
    tally = _common.Tally()
    store = _common.Counted(world.store, "store", tally)
    bus = _common.Counted(world.bus, "bus", tally)
    world.backends.requests = world.backends.ledger = world.backends.audit = store  # type: ignore[assignment]
    world.backends.bus = bus  # type: ignore[assignment]
    world.worker.bus = bus  # type: ignore[assignment]
    # WHEN a request is submitted and evaluated
    doc = access_request()
    world.lifecycle.submit(body(doc))
    world.worker.drain()
    world.worker.drain()
    calls = tally.reset()
    # THEN every call is there with its kind, writes with the size of each document they wrote
    kinds = {(c.method, c.kind) for c in calls}
    assert {("get_request", "point read"), ("send", "send"), ("receive", "receive"), ("complete", "complete"),
            ("receive", "empty receive")} <= kinds
    records = {c.kind for c in calls if c.method in ("create_request", "save_request")}
    assert records and records <= {"write", "batch"}
    writes = [c for c in calls if c.kind in ("write", "batch")]
    assert all(len(c.sizes) == c.items and min(c.sizes) > _common.COSMOS_OVERHEAD_BYTES for c in writes)
    assert sum(c.items for c in calls if c.kind == "receive") == 2  # evaluate, then grant
    # AND a call that fails is counted too, marked failed
    record = world.store.get_request(doc["requestId"])
    assert record is not None
    with pytest.raises(ConcurrencyConflict):
        store.save_request(record.model_copy(update={"version": record.version - 1}))
    (failed,) = tally.reset()
    assert (failed.method, failed.kind, failed.failed) == ("save_request", "write", True)


def test_the_operations_driver_counts_the_apis_own_reads() -> None:
    # GIVEN the driver of the operations benchmark
    tally = _common.Tally()
    with _common.Embedded() as embedded:
        driver = operations.Driver(embedded, 0, tally)
        # WHEN the API reads a request for an early revoke  THEN that read is counted
        response = driver.client.post(f"/api/access-requests/{uuid.uuid4()}/revoke", content=b"",
                                      headers={"X-Jitgate-Dev-Principal": _common.APPROVER} | operations.JSON)
    assert response.status_code == 404
    assert [c.method for c in tally.calls] == ["get_request"]


def test_a_record_written_with_its_events_counts_as_one_batch_of_them() -> None:
    # GIVEN a record with two events in its outbox
    world = World()
    world.lifecycle.submit(body(access_request()))
    (record,) = world.store.requests_in({RequestState.RECEIVED})
    record.emit(EventType.POLICY_EVALUATED, record.updated_at, {})
    record.emit(EventType.REQUEST_APPROVED, record.updated_at, {})

    class CommitsEvents:
        """A store that writes a record's outbox with it, and hands the record back with it empty."""

        def save_request(self, saved: RequestRecord) -> RequestRecord:
            return saved.model_copy(update={"pending_events": [], "version": saved.version + 1})

    class KeepsEvents:
        """A store that writes the record alone (its outbox inside it) and hands the outbox back."""

        def save_request(self, saved: RequestRecord) -> RequestRecord:
            return saved.model_copy(update={"version": saved.version + 1})

    tally = _common.Tally()
    # WHEN each saves it
    _common.Counted(CommitsEvents(), "store", tally).save_request(record)
    _common.Counted(KeepsEvents(), "store", tally).save_request(record)
    batch, single = tally.reset()
    # THEN the first is a batch of the record and each event, the second one write of the record
    assert (batch.kind, batch.items, len(batch.sizes)) == ("batch", 3, 3)
    assert (single.kind, single.items, len(single.sizes)) == ("write", 1, 1)
    assert single.sizes[0] > batch.sizes[0]  # the outbox is inside the record written alone


def test_request_units_follow_the_published_charges() -> None:
    def units(kind: str, *sizes: int) -> float:
        return operations.request_units(_common.Call("store", "m", kind, sizes=list(sizes)))

    assert units("point read", 1024) == 1.0
    assert units("point read", 100 * 1024) == pytest.approx(10.0)
    assert units("point read") == 1.0  # a miss still costs a read
    assert units("write", 1024) == 5.0
    assert units("write", 100 * 1024) == pytest.approx(50.0)
    assert units("batch", 1024, 1024) == 10.0  # the sum of its operations
    assert units("query", 2048) == operations.QUERY_RU + 2.0
    first = _common.Call("store", "put_grant", "write", sizes=[1024], creates=True)
    assert operations.request_units(first) == operations.QUERY_RU + 5.0  # the adapter looks for older documents


def test_servicebus_operations_count_deliveries_and_settlements_not_empty_polls() -> None:
    def ops(kind: str, items: int = 1) -> int:
        return operations.servicebus_operations(_common.Call("bus", "m", kind, items=items))

    assert [ops("send"), ops("schedule"), ops("cancel"), ops("complete"), ops("receive", 3)] == [1, 1, 1, 1, 3]
    assert ops("empty receive", 0) == 0


@pytest.fixture
def http_server() -> Iterator[tuple[str, list[bytes]]]:
    """A tiny HTTP/1.1 server answering 202 with a sized body, then a chunked one, then closing the connection."""
    seen: list[bytes] = []
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    port: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(
                b"content-length")))
            seen.append(await reader.readexactly(length))
            n = len(seen)
            if n % 3 == 1:
                writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}")
            elif n % 3 == 2:
                writer.write(b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
                await writer.drain()
                writer.close()
                return
            await writer.drain()

    def run() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(asyncio.start_server(serve, "127.0.0.1", 0))
        port.append(server.sockets[0].getsockname()[1])
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(5)
    yield f"http://127.0.0.1:{port[0]}", seen
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def test_the_http_client_reads_sized_and_chunked_responses_and_reconnects(
        http_server: tuple[str, list[bytes]]) -> None:
    url, seen = http_server
    requests = [("/x", json.dumps({"n": i}).encode()) for i in range(7)]
    posted = _common.post_all(url, requests, {"X-Test": "1"}, connections=1)
    assert [p.status for p in posted] == [202] * 7
    assert seen == [b for _, b in requests]  # in order, each exactly once
    assert all(p.sent <= p.answered for p in posted)


def test_the_http_client_paces_requests() -> None:
    # GIVEN nothing listening  WHEN there is nothing to send  THEN nothing is sent (and nothing connects)
    assert _common.post_all("http://127.0.0.1:9", [], {}, connections=4, rate=10) == []


def test_tree_cpu_counts_live_and_reaped_descendants() -> None:
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        f"subprocess.run([sys.executable, '-c', {burn!r}])\n"  # reaped when it ends
        f"live = subprocess.Popen([sys.executable, '-c', {burn!r} + 'print(1, flush=True)\\ntime.sleep(30)'],"
        " stdout=subprocess.PIPE)\n"
        "live.stdout.readline()\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None and parent.stdout.readline().strip() == "ready"
        assert _common.tree_cpu_seconds(parent.pid) >= 0.55
    finally:
        for child in _children(parent.pid):
            os.kill(child, signal.SIGKILL)
        parent.kill()
        parent.wait()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        stat = _common._proc_stat(int(entry.name)) if entry.name.isdigit() else None
        if stat is not None and int(stat[1]) == pid:
            found.append(int(entry.name))
    return found


def last_report(path: Path) -> dict[str, Any]:
    figures: dict[str, Any] = json.loads(path.read_text().splitlines()[-1])["figures"]
    return figures


def test_cpu_bench_runs(tmp_path: Path) -> None:
    out = tmp_path / "cpu.jsonl"
    assert cpu.main(["--lifecycles", "5", "--min-duration", "0.3", "--max-duration", "0.3", "--json", str(out)]) == 0
    runtime = last_report(out)["runtime"]
    assert runtime["revoked"] == 5 and runtime["CPU per lifecycle ms"] > 0


def test_operations_bench_counts_every_delivery_settled(tmp_path: Path) -> None:
    out = tmp_path / "operations.jsonl"
    assert operations.main(["--lifecycles", "2", "--json", str(out)]) == 0
    figures = last_report(out)
    for kind in operations.KINDS:
        counted = figures[kind]["operations"]
        assert counted["bus receive (messages delivered)"] == counted["bus complete"] > 0
        assert figures[kind]["unclassified"] == [] and figures[kind]["Cosmos DB RU (estimate)"] > 0


def test_reconcile_bench_revokes_every_due_request(tmp_path: Path) -> None:
    out = tmp_path / "reconcile.jsonl"
    assert reconcile.main(["--finished", "3,10", "--due", "3", "--rounds", "1", "--duration", "1",
                           "--json", str(out)]) == 0
    figures = last_report(out)
    assert figures["10 finished"]["revoked by each pass"] == [3]


@pytest.mark.e2e
def test_burst_bench_ends_clean(tmp_path: Path) -> None:
    out = tmp_path / "burst.jsonl"
    assert burst.main(["--requests", "20", "--connections", "4", "--min-duration", "0.5", "--max-duration", "0.5",
                       "--timeout", "60", "--json", str(out)]) == 0
    figures = last_report(out)["burst"]
    assert figures["every request revoked"] and figures["dead letters"] == 0 and figures["assignments left"] == 0
    assert figures["accepted (202)"] == 20


@pytest.mark.e2e
def test_capacity_bench_runs_a_step_through_the_queue(tmp_path: Path) -> None:
    out = tmp_path / "capacity.jsonl"
    started = time.monotonic()
    assert capacity.main(["--rates", "10", "--window", "2", "--drain", "5", "--min-duration", "0.5",
                          "--max-duration", "0.5", "--json", str(out)]) == 0
    step = last_report(out)["10/s"]
    assert step["requests"] == 20 and step["every request revoked"] and step["dead letters"] == 0
    assert time.monotonic() - started < 60
