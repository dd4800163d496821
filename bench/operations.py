"""Operations per lifecycle, by kind: what one access request costs in store and bus operations, and what that
would cost in Azure (Cosmos DB request units, Service Bus operations).

    .venv/bin/python bench/operations.py                  # 20 lifecycles of each kind
    .venv/bin/python bench/operations.py --lifecycles 100

The embedded runtime runs in this process (`build_local`, a `Worker` drained by this thread, no reconcile
timer) behind the real HTTP API (FastAPI's test client, in process). Its store, bus and grant provider are
wrapped from the outside in proxies that record every port call. Three kinds of lifecycle, each driven the
way people drive it:
  auto           POST /api/access-requests (auto-approved) -> granted -> expires -> revoked
  one approver   POST (needs one approval) -> a signed Teams `approve` -> granted -> expires -> revoked; the
                 approval deadline's expire-request message is delivered too (a no-op by then)
  early revoke   POST (auto-approved, 60 s) -> granted -> POST .../revoke by the requester
A lifecycle is counted until no message of it is left on any queue. Drains that found nothing (the embedded
worker polls) are not counted: in Azure the Functions host long-polls per instance, not per request.

Port call -> what the Azure adapters make of it (shared/adapters/azure/cosmos.py, servicebus.py):
  point read   get_request, get_grant (get_hold before issue #10) -> read_item (1 RU up to 1 KB, 10 RU at
               100 KB; a miss ~1 RU)
  write        create_request, append -> create_item; save_request -> replace_item with If-Match (the adapter
               remembers the etag it read, so no extra read); put_grant -> replace_item with If-Match, or for a
               key's first write a query of its partition and a create_item (put_hold -> upsert_item before
               issue #10). 5 RU up to 1 KB, 50 RU at 100 KB: Microsoft's published point-write charges.
  batch        a record the store writes together with its events (it hands the record back with an empty
               outbox; since issue #10), or any call writing several documents: one transactional batch,
               charged the sum of its operations
  query        requests_in, requests_with_outbox, list_requests, overdue_holds, all_active_holds,
               holds_for_request (cross-partition); chain, active_holds before issue #10 (one partition)
               -> query_items. Query charges are not published: we assume 3 RU per query plus 1 RU per KB
               returned, on one physical partition (below 50 GB and 10,000 RU/s a container has one). Check
               with the x-ms-request-charge header on a real account.
  bus          send, schedule, cancel, each delivery (receive), complete/abandon/dead-letter, lock renewal: one
               billable Service Bus operation each (messages are far below 64 KB); Standard tier.
Document sizes are measured from the documents each call wrote or read, plus 200 bytes for the properties
Cosmos and the adapter add. A port method this script does not know is counted as "unclassified" and named.
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from _common import (
    APPROVER,
    DEV_SUB,
    PROD_SUB,
    SINGLE_PARTITION,
    SUBMITTER_HEADERS,
    Call,
    Embedded,
    Report,
    Submission,
    Tally,
    command_line,
    count_ports,
    quiet,
    submissions,
)

from shared.domain.lifecycle import RequestState
from shared.teams import outgoing_payload, sign
from shared.worker import on_reconcile

READ_RU_PER_KB = (1.0, 10.0)  # point read of a 1 KB item, of a 100 KB item (Microsoft's published charges)
WRITE_FACTOR = 5.0  # a point write of the same item: 5 RU at 1 KB, 50 RU at 100 KB
QUERY_RU = 3.0  # our assumption per query (one page, one physical partition), plus reading what it returns
KINDS = ("auto", "one approver", "early revoke")
JSON = {"Content-Type": "application/json"}


def read_ru(size: int) -> float:
    """Charge of a point read of `size` bytes: 1 RU up to 1 KB, growing linearly to 10 RU at 100 KB."""
    kb = size / 1024
    one, hundred = READ_RU_PER_KB
    return one if kb <= 1 else one + (hundred - one) * (kb - 1) / 99


def request_units(call: Call) -> float:
    if call.port != "store":
        return 0.0
    if call.method == "put_grant" and call.creates:
        # NB. The Cosmos adapter's first write of a key also queries the key's partition for hold documents of
        # the layout before issue #10 (to delete them in the same batch).
        return QUERY_RU + WRITE_FACTOR * sum(read_ru(size) for size in call.sizes)
    if call.kind == "point read":
        return sum(read_ru(size) for size in call.sizes) or 1.0
    if call.kind in ("write", "batch"):
        return sum(WRITE_FACTOR * read_ru(size) for size in call.sizes)
    if call.kind == "query":
        return QUERY_RU + sum(call.sizes) / 1024
    return 0.0


def servicebus_operations(call: Call) -> int:
    if call.port != "bus" or call.kind in ("empty receive", "peek"):
        return 0
    return call.items if call.kind == "receive" else 1


def row(call: Call) -> str:
    """The table row a call belongs to."""
    if call.port == "store":
        if call.kind == "query":
            return f"store query, {'one partition' if call.method in SINGLE_PARTITION else 'cross-partition'}"
        return f"store {call.kind}"
    if call.port == "bus":
        return "bus receive (messages delivered)" if call.kind == "receive" else f"bus {call.kind}"
    return f"provider {call.kind}"


class Driver:
    """Drives lifecycles through the API and the worker, and says when they are done. Every port call of the
    runtime, the worker and the API lands in `tally`."""

    def __init__(self, embedded: Embedded, seed: int, tally: Tally) -> None:
        from fastapi.testclient import TestClient

        from shared.api import create_app

        count_ports(embedded, tally)  # NB. before the API is made, so that its own reads are counted too
        self.embedded = embedded
        self.seed = seed
        self.client = TestClient(create_app(embedded.runtime))
        self.secret = embedded.settings.resolved_teams_secret()

    def submit(self, count: int, subscription: str, duration: float) -> list[Submission]:
        self.seed += 1
        subs = submissions(count, self.seed, duration, duration, subscription, principals=100_000)
        for sub in subs:
            expect(self.client.post("/api/access-requests", content=sub.body, headers=SUBMITTER_HEADERS | JSON), 202)
        return subs

    def until(self, subs: list[Submission], state: RequestState) -> None:
        self.embedded.drain_until(lambda: all(self.embedded.state(s.request_id) is state for s in subs))

    def finish(self, subs: list[Submission]) -> None:
        """Until every request is revoked and nothing of theirs is left on a queue."""
        revoked = RequestState.REVOKED
        self.embedded.drain_until(lambda: self.embedded.queues_empty()
                                  and all(self.embedded.state(s.request_id) is revoked for s in subs))

    def approve(self, sub: Submission) -> None:
        body = outgoing_payload(f"approve {sub.request_id}", APPROVER, "Approver")
        expect(self.client.post("/api/teams/webhook", content=body,
                                headers={"Authorization": sign(self.secret, body)} | JSON), 200)
        if self.embedded.state(sub.request_id) is not RequestState.APPROVED:
            raise RuntimeError(f"the approval of {sub.request_id} did not count")

    def revoke(self, sub: Submission) -> None:
        expect(self.client.post(f"/api/access-requests/{sub.request_id}/revoke", content=b"",
                                headers={"X-Jitgate-Dev-Principal": sub.principal_id} | JSON), 200)


def expect(response: Any, status: int) -> None:
    if response.status_code != status:
        raise RuntimeError(f"{response.request.method} {response.request.url.path}: {response.status_code}"
                           f" {response.text[:500]}")


def auto(driver: Driver, count: int) -> None:
    subs = driver.submit(count, DEV_SUB, 1.0)
    driver.finish(subs)


def one_approver(driver: Driver, count: int) -> None:
    subs = driver.submit(count, PROD_SUB, 1.0)
    driver.until(subs, RequestState.PENDING_APPROVAL)
    with quiet():
        for sub in subs:
            driver.approve(sub)
    driver.finish(subs)  # waits for the approval deadline, whose expire-request message is then a no-op


def early_revoke(driver: Driver, count: int) -> None:
    subs = driver.submit(count, DEV_SUB, 60.0)
    driver.until(subs, RequestState.ACTIVE)
    with quiet():
        for sub in subs:
            driver.revoke(sub)
    driver.finish(subs)


def per_lifecycle(calls: list[Call], count: int) -> dict[str, Any]:
    counted = [c for c in calls if c.kind != "empty receive"]
    rows: Counter[str] = Counter()
    for call in counted:
        rows[row(call)] += call.items if call.kind == "receive" else 1
    methods = Counter(f"{c.port}.{c.method}" for c in counted)
    return {
        "operations": {k: round(v / count, 2) for k, v in sorted(rows.items())},
        "by method": {k: round(v / count, 2) for k, v in sorted(methods.items())},
        "Cosmos DB RU (estimate)": round(sum(request_units(c) for c in counted) / count, 1),
        "Service Bus operations": round(sum(servicebus_operations(c) for c in counted) / count, 2),
        "unclassified": sorted({f"{c.port}.{c.method}" for c in counted if c.kind == "unclassified"}),
    }


def sizes(calls: list[Call]) -> dict[str, int]:
    """Mean bytes of the documents each store method wrote or read (as stored in Cosmos, estimated)."""
    seen: dict[str, list[int]] = defaultdict(list)
    for call in calls:
        if call.port == "store" and call.sizes and call.kind in ("write", "batch", "point read"):
            seen[call.method].extend(s for s in call.sizes if s)
    return {method: round(statistics.mean(values)) for method, values in sorted(seen.items()) if values}


def print_table(results: dict[str, dict[str, Any]], part: str, totals: tuple[str, ...] = ()) -> None:
    """One row per operation (or method), one column per kind of lifecycle."""
    keys = sorted({k for r in results.values() for k in r[part]})
    width = max(len(k) for k in [*keys, *totals, "per lifecycle"])
    print(f"\n  {'per lifecycle':<{width}} " + " ".join(f"{k:>16}" for k in results))
    for key in keys:
        print(f"  {key:<{width}} " + " ".join(f"{r[part].get(key, 0):>16g}" for r in results.values()))
    for key in totals:
        print(f"  {key:<{width}} " + " ".join(f"{r[key]:>16g}" for r in results.values()))


def main(argv: list[str] | None = None) -> int:
    parser = command_line(__doc__)
    parser.add_argument("--lifecycles", type=int, default=20, help="lifecycles of each kind")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--json", default=None, help="append the figures as one JSON line to this file")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*httpx.*")  # the test client's notice about its HTTP library

    report = Report("operations")
    drives: dict[str, Callable[[Driver, int], None]] = {
        "auto": auto, "one approver": one_approver, "early revoke": early_revoke}
    results: dict[str, dict[str, Any]] = {}
    all_calls: list[Call] = []
    tally = Tally()
    with Embedded(approval_deadline="PT4S") as embedded:
        driver = Driver(embedded, args.seed, tally)
        with driver.client:
            for kind, drive in drives.items():
                started = time.perf_counter()
                tally.reset()
                drive(driver, args.lifecycles)
                calls = tally.reset()
                all_calls += calls
                results[kind] = per_lifecycle(calls, args.lifecycles)
                results[kind]["wall s"] = round(time.perf_counter() - started, 1)
            with quiet():
                on_reconcile(embedded.runtime.lifecycle)
            idle_pass = per_lifecycle(tally.reset(), 1)
    for kind, figures in results.items():
        report.section(kind, figures, show=False)
    results["idle reconcile pass"] = idle_pass
    report.section("idle reconcile pass", idle_pass, show=False)
    print_table(results, "operations", ("Cosmos DB RU (estimate)", "Service Bus operations"))
    print_table(results, "by method")
    print("  (the idle reconcile pass is per pass, once a minute by default, not per lifecycle)\n")
    report.figure("document sizes, mean bytes", sizes(all_calls))
    for kind in KINDS:
        report.figure(f"{kind}: Cosmos DB RU per lifecycle (estimate)", results[kind]["Cosmos DB RU (estimate)"])
        report.figure(f"{kind}: Service Bus operations per lifecycle", results[kind]["Service Bus operations"])
    unknown = sorted({u for r in results.values() for u in r["unclassified"]})
    if unknown:
        report.note(f"port methods this script does not classify (add them to _common.py): {', '.join(unknown)}")
    report.done(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
