"""Burst: 10,000 access requests POSTed at once to a real `jitgate serve`. Grants may queue; revocations must not:
the target is revocation lateness p99 <= 1 s while the backlog of grants drains.

    .venv/bin/python bench/burst.py                        # 10,000 requests (issue #10)
    .venv/bin/python bench/burst.py --requests 2000        # make bench

The client opens `--connections` keep-alive connections and sends every request as fast as the server takes
them (the Backstage service identity, role Jit.Submitter). Grants last 2-4 s, so most of them expire while
later grants are still queued: every revoke that comes due then competes with the backlog. The run ends
when every request is in a terminal state (or after `--timeout`); the server is then stopped and the audit
trail, the bus and the local RBAC plane are read back through their adapters.

Figures: revocation lateness (latenessSeconds, and grant.revoked's `at` minus expiresAt), enqueue -> active
(request.received -> grant.applied), time to drain (first POST to last revoke), dead letters (must be 0),
states (all revoked), assignments and active holds left (must be 0), and CPU per lifecycle of the server's
process tree from /proc (user + system, intake over HTTP included), beside the server's idle CPU.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _common import (
    SUBMITTER_HEADERS,
    Report,
    Serve,
    Trail,
    add_serve_env,
    command_line,
    idle_cpu_rate,
    own_cpu_seconds,
    post_all,
    submissions,
    wait_finished,
)


def burst(count: int, connections: int, min_duration: float, max_duration: float, timeout: float, seed: int,
          env: dict[str, str]) -> dict[str, Any]:
    subs = submissions(count, seed, min_duration, max_duration)
    ids = [s.request_id for s in subs]
    with tempfile.TemporaryDirectory(prefix="jitgate-bench-burst-") as tmp:
        serve = Serve(Path(tmp), env)
        with serve:
            idle = idle_cpu_rate(serve)
            cpu_before, own_before, started = serve.cpu_seconds(), own_cpu_seconds(), time.time()
            posted = post_all(serve.url, [("/api/access-requests", s.body) for s in subs], SUBMITTER_HEADERS,
                              connections)
            intake_done, own = time.time(), own_cpu_seconds() - own_before
            finished = wait_finished(serve.data_dir, time.monotonic() + timeout)
            cpu, elapsed = serve.cpu_seconds() - cpu_before, time.time() - started
            if not serve.alive():
                raise RuntimeError(f"jitgate serve died:\n{serve.log_tail()}")
        trail = Trail.read(serve.data_dir)
    statuses = Counter(p.status for p in posted)
    sent = {s.request_id: p.sent for s, p in zip(subs, posted, strict=True)}
    revoked = [trail.revoked[r] for r in ids if r in trail.revoked]
    last_grant = max((trail.active[r] for r in ids if r in trail.active), default=started)
    figures: dict[str, Any] = {
        "requests": count,
        "client connections": connections,
        "accepted (202)": statuses.get(202, 0),
        "refused": {str(k): v for k, v in statuses.items() if k != 202},
        "intake s (first POST -> last 202)": round(intake_done - started, 2),
        "intake rate /s": round(count / max(intake_done - started, 1e-9)),
        "time to drain s (first POST -> last revoke)": round(max(revoked, default=started) - started, 2),
        "finished within the timeout": finished,
        "revokes due before the last grant was applied": sum(1 for r in ids if trail.expires.get(r, 1e18) < last_grant),
    }
    figures |= trail.figures(ids, sent)
    def per_lifecycle(seconds: float) -> float | str:
        # NB. Only when every lifecycle finished: otherwise the CPU of half-done ones is spread over the rest.
        return round(seconds / count * 1000, 2) if len(revoked) == count else "unfinished"

    figures |= {
        "server CPU s": round(cpu, 2),
        "server CPU per lifecycle ms (HTTP intake included)": per_lifecycle(cpu),
        "server idle CPU cores": round(idle, 3),
        "server CPU per lifecycle ms, idle subtracted": per_lifecycle(cpu - idle * elapsed),
        "client CPU per request ms": round(own / count * 1000, 3),
    }
    figures |= trail.leftovers(count)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = command_line(__doc__)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=100, help="concurrent client connections")
    parser.add_argument("--min-duration", type=float, default=2.0, help="shortest grant, seconds")
    parser.add_argument("--max-duration", type=float, default=4.0, help="longest grant, seconds")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for every request to finish")
    parser.add_argument("--seed", type=int, default=11)
    add_serve_env(parser)
    parser.add_argument("--json", default=None, help="append the figures as one JSON line to this file")
    args = parser.parse_args(argv)

    report = Report("burst")
    env = dict(args.serve_env)
    figures = burst(args.requests, args.connections, args.min_duration, args.max_duration, args.timeout, args.seed,
                    env)
    report.section("burst", figures)
    lateness = figures["revocation lateness (latenessSeconds) p99 s"]
    report.figure("revocation lateness p99 s", lateness, target="<= 1 s")
    if figures["dead letters"] or not figures["every request revoked"] or figures["assignments left"]:
        report.note("the run did not end clean: see dead letters, states and assignments left")
    report.done(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
