"""Capacity: the highest sustained submit rate at which enqueue -> active p99 and revocation lateness p99 both
stay <= 1 s, with a real `jitgate serve` (the embedded runtime, as users run it) on this machine's cores.

    .venv/bin/python bench/capacity.py --search                          # the figure of issue #10 (60 s steps)
    .venv/bin/python bench/capacity.py --rates 100,500 --window 15       # fixed steps (make bench)
    .venv/bin/python bench/capacity.py --rates 100 --intake http         # through the HTTP API instead

Each step starts a fresh `jitgate serve` with its defaults (on 2 cores: two consumer processes of one thread each;
reconcile every 60 s) on a new data directory, submits requests paced at the step's rate for `--window` seconds,
waits up to `--drain` seconds for the last ones to be revoked, stops the server and reads what happened back
through the store's ports. Requests are auto-approved (rule bench-auto) for 2-4 s,
from 1,000 people on 500 resource groups.

Intake (`--intake`):
  queue  the request is sent to the `access-requests` queue, as the Backstage action does; the server records,
         evaluates, grants and revokes it. All the lifecycle's work is the server's. (default)
  http   POST /api/access-requests over `--connections` keep-alive connections; intake runs in the server too.

A step passes when the submitter reached >= 97 % of the rate, every request was revoked, no message was
dead-lettered, and both p99s are <= 1 s:
  enqueue -> active   queue: from the moment the message was sent (submitter's clock) to grant.applied;
                      http: request.received -> grant.applied (intake writes request.received, then enqueues).
  revocation lateness the latenessSeconds of grant.revoked, and (independently) grant.revoked's `at` minus the
                      grant's expiresAt; the larger p99 counts.
A request that is not active (or not revoked) by the end of the drain counts as infinitely late. The
submitter's reached rate and lag are printed so that a slow submitter is never mistaken for a slow runtime.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _common import (
    SUBMITTER_HEADERS,
    Posted,
    Report,
    Serve,
    Submission,
    Trail,
    add_serve_env,
    command_line,
    idle_cpu_rate,
    load,
    local_bus,
    own_cpu_seconds,
    post_all,
    seconds,
    submissions,
    wait_finished,
)

from shared.settings import Settings

TARGET_P99 = 1.0
REACHED = 0.97  # of the asked rate


def send_to_queue(serve: Serve, subs: list[Submission], rate: float) -> dict[str, float]:
    """Send each request to the intake queue at its paced time; returns when each was sent (wall clock)."""
    bus = local_bus(serve.data_dir)
    queue = Settings().requests_queue
    sent: dict[str, float] = {}
    started = time.perf_counter()
    try:
        for i, sub in enumerate(subs):
            ahead = started + i / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
            sent[sub.request_id] = time.time()
            bus.send(queue, sub.request_id, sub.body)
    finally:
        bus.close()
    return sent


def post_paced(serve: Serve, subs: list[Submission], rate: float, connections: int) -> dict[str, float]:
    posted: list[Posted] = post_all(serve.url, [("/api/access-requests", s.body) for s in subs],
                                    SUBMITTER_HEADERS, connections, rate)
    refused = Counter(p.status for p in posted if p.status != 202)
    if refused:
        raise RuntimeError(f"the server refused requests: {dict(refused)}")
    return {s.request_id: p.sent for s, p in zip(subs, posted, strict=True)}


def step(rate: float, args: argparse.Namespace) -> dict[str, Any]:
    """One paced window at `rate` on a fresh server; its figures and whether it passed."""
    subs = submissions(max(1, round(rate * args.window)), args.seed, args.min_duration, args.max_duration)
    ids = [s.request_id for s in subs]
    env = dict(args.serve_env)
    with tempfile.TemporaryDirectory(prefix="jitgate-bench-capacity-") as tmp:
        serve = Serve(Path(tmp), env)
        with serve:
            idle = idle_cpu_rate(serve)
            cpu_before, own_before, wall_before = serve.cpu_seconds(), own_cpu_seconds(), time.monotonic()
            if args.intake == "queue":
                sent = send_to_queue(serve, subs, rate)
            else:
                sent = post_paced(serve, subs, rate, args.connections)
            finished = wait_finished(serve.data_dir, time.monotonic() + args.drain)
            cpu = serve.cpu_seconds() - cpu_before
            elapsed = time.monotonic() - wall_before
            own = own_cpu_seconds() - own_before
            if not serve.alive():
                raise RuntimeError(f"jitgate serve died:\n{serve.log_tail()}")
        trail = Trail.read(serve.data_dir)
    times = sorted(sent.values())
    reached = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else rate
    lag = max(t - (times[0] + i / rate) for i, t in enumerate(times))
    lifecycles = sum(1 for r in ids if r in trail.revoked)
    figures: dict[str, Any] = {
        "rate asked /s": rate,
        "rate reached /s": round(reached, 1),
        "submitter behind schedule at most s": round(lag, 3),
        "requests": len(subs),
        "finished within the drain": finished,
    }
    figures |= trail.figures(ids, sent)
    enqueue = "submitted -> active" if args.intake == "queue" else "received -> active (audit)"
    figures["enqueue -> active p99 s"] = figures[f"{enqueue} p99 s"]
    late = [figures[f"revocation lateness ({how}) p99 s"] for how in ("latenessSeconds", "event at - expiresAt")]
    figures["revocation lateness p99 s"] = seconds(max(map(latency, late)))
    figures |= {
        # NB. Only when every lifecycle finished: otherwise the CPU of half-done ones is spread over the rest.
        "server CPU per lifecycle ms": round(cpu / lifecycles * 1000, 2) if lifecycles == len(ids) else "unfinished",
        "server CPU cores used": round(cpu / elapsed, 2),
        "server idle CPU cores": round(idle, 3),
        "submitter CPU cores used": round(own / elapsed, 2),
    }
    figures |= trail.leftovers(len(subs))
    reasons = []
    if reached < REACHED * rate:
        reasons.append(f"the submitter reached only {reached:.0f}/s")
    if latency(figures["enqueue -> active p99 s"]) > TARGET_P99:
        reasons.append("enqueue -> active p99 > 1 s")
    if latency(figures["revocation lateness p99 s"]) > TARGET_P99:
        reasons.append("revocation lateness p99 > 1 s")
    if not figures["every request revoked"]:
        reasons.append("not every request was revoked")
    if trail.dead_letters:
        reasons.append(f"{trail.dead_letters} dead letters")
    figures["passed"] = not reasons
    figures["why not"] = "; ".join(reasons)
    return figures


def latency(figure: float | str) -> float:
    """A latency figure as a number ("never": infinitely late)."""
    return math.inf if figure == "never" else float(figure)


def shown(value: Any) -> str:
    return value if isinstance(value, str) else f"{value:.3f}" if isinstance(value, float) else str(value)


def run(rate: float, args: argparse.Namespace, report: Report, results: dict[float, dict[str, Any]]) -> bool:
    print(f"-- {rate:g}/s for {args.window:g} s ({args.intake} intake), load {load()}", flush=True)
    figures = step(rate, args)
    results[rate] = figures
    report.section(f"{rate:g}/s", figures, prefix=f"{rate:>6g}/s: ")
    verdict = "PASS" if figures["passed"] else f"FAIL ({figures['why not']})"
    print(f"   => {rate:g}/s: enqueue->active p99 {shown(figures['enqueue -> active p99 s'])} s, revocation "
          f"lateness p99 {shown(figures['revocation lateness p99 s'])} s, reached {figures['rate reached /s']}/s:"
          f" {verdict}", flush=True)
    return bool(figures["passed"])


def search(args: argparse.Namespace, report: Report, results: dict[float, dict[str, Any]]) -> float | None:
    """Double from `--start` until a step fails (halve if the first fails), then bisect between the highest
    pass and the lowest fail until they are within 10 % (at least `--resolution`/s)."""
    passed: float | None = None
    failed: float | None = None
    rate = args.start
    while True:
        if run(rate, args, report, results):
            passed = rate
        else:
            failed = rate
        if failed is None:
            if rate >= args.max_rate:
                return passed
            rate = min(rate * 2, args.max_rate)
        elif passed is None:
            rate = round(rate / 2, 1)
            if rate < 1:
                return None
        elif failed - passed <= max(args.resolution, passed * 0.1, 1.0):
            return passed
        else:
            rate = float(round((passed + failed) / 2))


def main(argv: list[str] | None = None) -> int:
    parser = command_line(__doc__)
    parser.add_argument("--rates", default="100,500", help="comma-separated rates (/s), each on a fresh server")
    parser.add_argument("--search", action="store_true", help="find the highest passing rate instead of --rates")
    parser.add_argument("--start", type=float, default=50.0, help="--search: the first rate")
    parser.add_argument("--max-rate", type=float, default=2000.0, help="--search: never ask more than this")
    parser.add_argument("--resolution", type=float, default=10.0, help="--search: stop when pass and fail are this "
                        "close (/s), or within 10 %%")
    parser.add_argument("--window", type=float, default=60.0, help="seconds of paced submission per step")
    parser.add_argument("--drain", type=float, default=10.0, help="seconds to wait after the window for the last "
                        "revokes (longer than --max-duration)")
    parser.add_argument("--intake", choices=["queue", "http"], default="queue")
    parser.add_argument("--connections", type=int, default=16, help="--intake http: client connections")
    parser.add_argument("--min-duration", type=float, default=2.0, help="shortest grant, seconds")
    parser.add_argument("--max-duration", type=float, default=4.0, help="longest grant, seconds")
    parser.add_argument("--seed", type=int, default=10)
    add_serve_env(parser)
    parser.add_argument("--json", default=None, help="append the figures as one JSON line to this file")
    args = parser.parse_args(argv)
    if args.drain <= args.max_duration:
        parser.error("--drain must be longer than --max-duration, or no grant could be revoked in time")

    report = Report("capacity")
    report.figure("intake", args.intake)
    report.figure("window s", args.window)
    results: dict[float, dict[str, Any]] = {}
    if args.search:
        best = search(args, report, results)
    else:
        for rate in (float(r) for r in args.rates.split(",") if r):
            run(rate, args, report, results)
        best = max((r for r, f in results.items() if f["passed"]), default=None)
    report.figure("highest passing rate /s", best if best is not None else "none", target=">= 500")
    print(f"   steps: {', '.join(f'{r:g}/s ' + ('pass' if f['passed'] else 'fail') for r, f in results.items())}")
    report.done(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
