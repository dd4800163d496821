"""Reconcile: one pass with 100,000 finished requests and 100 due should cost about the same as with 100 finished.

    .venv/bin/python bench/reconcile.py                                   # 100 and 100,000 finished (issue #10)
    .venv/bin/python bench/reconcile.py --finished 100,30000 --rounds 3   # make bench

The embedded runtime runs in this process. First one real lifecycle runs to the end (auto-approved, granted,
revoked); its record and released hold are the template of every "finished" request, which are then written
through the store's own port methods (`create_request`, and `put_grant` or, before issue #10, `put_hold`)
with fresh request ids and people, up to each size in turn. Then, per round: 100 real requests are granted
(their revoke messages stay on the queue, as if lost) and left to expire, and one reconcile pass (the timer's
body: flush outboxes, then reconcile) is timed and its port calls counted; it must revoke all 100. A pass with
nothing due is timed too. Wall time and CPU time are both medians over the rounds; CPU time is the steadier
on a shared machine.
"""

from __future__ import annotations

import dataclasses
import random
import sys
import time
import uuid
from collections import Counter
from typing import Any

from _common import (
    DEV_SUB,
    Embedded,
    Report,
    Tally,
    command_line,
    count_ports,
    median,
    quiet,
    submissions,
)

from shared.domain.ledger import Hold
from shared.domain.lifecycle import RequestRecord, RequestState
from shared.worker import on_reconcile


def finished_template(embedded: Embedded) -> tuple[RequestRecord, Hold]:
    """A real request that went all the way (granted, expired, revoked) and its released hold."""
    (sub,) = submissions(1, 0, 0.5, 0.5, DEV_SUB)
    with quiet():
        embedded.runtime.lifecycle.submit(sub.body)
    embedded.drain_until(lambda: embedded.state(sub.request_id) is RequestState.REVOKED)
    record = embedded.store.get_request(sub.request_id)
    (hold,) = embedded.store.holds_for_request(sub.request_id)
    return record, hold


def seed_finished(embedded: Embedded, template: tuple[RequestRecord, Hold], count: int, rng: random.Random) -> None:
    record, hold = template
    assert record.request is not None and record.grant_key is not None
    for _ in range(count):
        request_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        principal = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        requester = record.request.requester.model_copy(update={"principal_id": principal})
        request = record.request.model_copy(update={"request_id": request_id, "requester": requester})
        embedded.store.create_request(record.model_copy(update={
            "request_id": request_id, "request": request, "version": 0,
            "grant_key": dataclasses.replace(record.grant_key, principal_id=principal)}))
        put_released(embedded.store, hold.model_copy(update={"request_id": request_id, "principal_id": principal}))


def put_released(store: Any, hold: Hold) -> None:
    """Record a released hold through the ledger port the store has: a grant key's document (issue #10), or
    the hold itself (before it)."""
    if hasattr(store, "put_grant"):
        from shared.domain.ledger import Grant  # only there since issue #10

        store.put_grant(Grant.new(hold.key).with_hold(hold))
    else:
        store.put_hold(hold)


def make_due(embedded: Embedded, count: int, duration: float, seed: int) -> None:
    """Grant `count` requests and let them expire without their revoke messages being handled."""
    subs = submissions(count, seed, duration, duration, DEV_SUB, principals=100_000)
    with quiet():
        for sub in subs:
            embedded.runtime.lifecycle.submit(sub.body)
    embedded.drain_until(lambda: all(embedded.state(s.request_id) is RequestState.ACTIVE for s in subs))
    expires = max(embedded.store.get_request(s.request_id).expires_at for s in subs)
    time.sleep(max(0.0, expires.timestamp() - time.time()) + 0.05)


def timed_pass(embedded: Embedded, tally: Tally) -> tuple[float, float, int, Counter[str]]:
    """(wall s, CPU s, requests revoked, port calls by method) of one reconcile pass."""
    tally.reset()
    wall, cpu = time.perf_counter(), time.process_time()
    with quiet():
        report = on_reconcile(embedded.runtime.lifecycle)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    calls = Counter(f"{c.port}.{c.method}" for c in tally.reset() if c.kind != "empty receive")
    return wall, cpu, len(report.revoked), calls


def main(argv: list[str] | None = None) -> int:
    parser = command_line(__doc__)
    parser.add_argument("--finished", default="100,100000", help="comma-separated numbers of finished requests")
    parser.add_argument("--due", type=int, default=100, help="requests due for revoke in each timed pass")
    parser.add_argument("--rounds", type=int, default=7, help="timed passes per size (the median counts)")
    parser.add_argument("--duration", type=float, default=2.5, help="seconds the due grants last (longer than "
                        "granting all of them takes)")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--json", default=None, help="append the figures as one JSON line to this file")
    args = parser.parse_args(argv)
    sizes = sorted(int(n) for n in args.finished.split(",") if n)

    report = Report("reconcile")
    rng = random.Random(args.seed)
    results: dict[int, dict[str, Any]] = {}
    with Embedded() as embedded:
        template = finished_template(embedded)
        tally = Tally(measure=False)
        count_ports(embedded, tally)
        seeded = 1  # the template itself
        for size in sizes:
            started = time.perf_counter()
            seed_finished(embedded, template, size - seeded, rng)
            seeded = size
            seeding = time.perf_counter() - started
            busy, idle = [], []
            for round_ in range(args.rounds):
                idle.append(timed_pass(embedded, tally))
                make_due(embedded, args.due, args.duration, args.seed + size + round_)
                busy.append(timed_pass(embedded, tally))
            results[size] = {
                "seeding s": round(seeding, 1),
                f"pass with {args.due} due: wall ms (median)": round(median([b[0] for b in busy]) * 1000, 1),
                f"pass with {args.due} due: CPU ms (median)": round(median([b[1] for b in busy]) * 1000, 1),
                "revoked by each pass": [b[2] for b in busy],
                "pass with nothing due: wall ms (median)": round(median([i[0] for i in idle]) * 1000, 1),
                "pass with nothing due: CPU ms (median)": round(median([i[1] for i in idle]) * 1000, 1),
                f"port calls, pass with {args.due} due": dict(sorted(busy[-1][3].items())),
                "port calls, pass with nothing due": dict(sorted(idle[-1][3].items())),
            }
            report.section(f"{size} finished", results[size], prefix=f"{size:>7,} finished: ")
    small, large = results[sizes[0]], results[sizes[-1]]
    for what in ("wall", "CPU"):
        key = f"pass with {args.due} due: {what} ms (median)"
        report.figure(f"{what} ratio, {sizes[-1]:,} / {sizes[0]:,} finished", round(large[key] / small[key], 2),
                      target="about 1")
    if any(n != args.due for r in results.values() for n in r["revoked by each pass"]):
        report.note(f"a pass revoked other than {args.due}: some revokes were handled before the pass "
                    "(raise --duration) or failed")
    report.done(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
