"""CPU per lifecycle in the runtime itself: no HTTP, no threads; the process's CPU time divided by lifecycles.

    .venv/bin/python bench/cpu.py                                   # 1,000 lifecycles (issue #10: <= 2 ms)
    .venv/bin/python bench/cpu.py --lifecycles 500 --profile /tmp/cpu.prof   # and where the time goes

The embedded runtime (`build_local`: SQLite bus and store, the local RBAC plane, the outbox notifier) runs in
this process with a `Worker` wired as `jitgate serve` wires it, drained by this one thread. Requests are
auto-approved (rule bench-auto), 1-2 s long. They enter through `Lifecycle.submit`, which is what HTTP intake
calls; then the worker handles every message until each request is revoked. `time.process_time()` is read
around each step, so CPU is split by phase: intake, each command handled (evaluate, grant, revoke, ...),
receiving (a drain's time outside the handlers: receiving and settling), and idle polling (drains that found
nothing, which is not per-lifecycle work and is shown apart). The figure of issue #10 is the sum without idle polling.
The same lifecycle over HTTP in a real server is `bench/burst.py`'s CPU figure.
"""

from __future__ import annotations

import cProfile
import json
import sys
import time
from collections import Counter
from typing import Any

from _common import Embedded, Report, command_line, non_terminal, quiet, submissions

from shared.domain.lifecycle import RequestState
from shared.ports import ReceivedMessage, Settlement


def run(count: int, min_duration: float, max_duration: float, seed: int, profile: str | None) -> dict[str, Any]:
    subs = submissions(count, seed, min_duration, max_duration)
    cpu: Counter[str] = Counter()
    handled: Counter[str] = Counter()
    with Embedded() as embedded:
        lifecycle, worker = embedded.runtime.lifecycle, embedded.worker
        requests_queue = embedded.settings.requests_queue
        plain_run = worker.run

        def run(message: ReceivedMessage) -> Settlement | None:
            kind = "evaluate" if message.queue == requests_queue else json.loads(message.body).get("command", "?")
            started = time.process_time()
            settlement = plain_run(message)
            cpu[kind] += time.process_time() - started
            handled[kind] += 1
            return settlement

        worker.run = run  # type: ignore[method-assign]  # timed from the outside, per command (settling is not)
        waiting = non_terminal()
        profiler = cProfile.Profile(time.process_time) if profile else None  # NB. CPU, the figure it explains
        if profiler:
            profiler.enable()
        started = time.process_time()
        with quiet():
            for sub in subs:
                lifecycle.submit(sub.body)
        cpu["intake"] = time.process_time() - started

        with quiet():
            while embedded.store.requests_in(waiting, limit=1):  # (the benchmark's own look: not timed)
                before, inside = time.process_time(), sum(cpu.values())
                found = worker.drain(256)
                spent = time.process_time() - before
                if found:
                    cpu["receiving"] += spent - (sum(cpu.values()) - inside)
                else:
                    cpu["idle polling"] += spent
                    time.sleep(0.02)
        if profiler:
            profiler.disable()
            profiler.dump_stats(profile)
        revoked = len(embedded.store.requests_in({RequestState.REVOKED}, limit=count + 1))
    per = {k: round(v / count * 1000, 3) for k, v in cpu.items()}
    work = sum(v for k, v in cpu.items() if k != "idle polling")
    return {
        "lifecycles": count,
        "revoked": revoked,
        "messages handled": dict(handled),
        "CPU per lifecycle ms": round(work / count * 1000, 3),
        "CPU per lifecycle ms, idle polling included": round(sum(cpu.values()) / count * 1000, 3),
        "by phase, ms per lifecycle": per,
    }


def main(argv: list[str] | None = None) -> int:
    parser = command_line(__doc__)
    parser.add_argument("--lifecycles", type=int, default=1000)
    parser.add_argument("--min-duration", type=float, default=1.0, help="shortest grant, seconds")
    parser.add_argument("--max-duration", type=float, default=2.0, help="longest grant, seconds")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--profile", default=None, help="write cProfile stats of the run to this file")
    parser.add_argument("--json", default=None, help="append the figures as one JSON line to this file")
    args = parser.parse_args(argv)

    report = Report("cpu")
    figures = run(args.lifecycles, args.min_duration, args.max_duration, args.seed, args.profile)
    report.section("runtime", figures)
    report.figure("CPU per lifecycle in the runtime ms", figures["CPU per lifecycle ms"], target="<= 2 ms")
    if figures["revoked"] != args.lifecycles:
        report.note(f"only {figures['revoked']} of {args.lifecycles} lifecycles ended revoked")
    if args.profile:
        report.note(f"profile written to {args.profile} (python -m pstats {args.profile})")
    report.done(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
