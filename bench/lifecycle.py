"""Whole lifecycles through the embedded runtime: submit -> evaluate -> grant -> (duration) -> revoke, with
the real SQLite bus and store, the simulated RBAC plane, the real Worker threads and the system clock.

    .venv/bin/python bench/lifecycle.py                  # 1,000 then 10,000 lifecycles, each in a fresh process
    .venv/bin/python bench/lifecycle.py --counts 10000

Every request is auto-approved (the example policy of tests/fakes/world.py, rule dev-any) for a short
duration (2-4 s), for one of 1,000 principals on one of 500 resource groups. Requests are submitted
through `Lifecycle.submit` as HTTP intake does, by one thread, at `--rate` per second (0: as fast as
it can); `--consumers` Worker threads drain both queues as `jitgate serve` does. Figures come from the
audit trail: enqueue->active is request.received to grant.applied; revocation lateness is the
`latenessSeconds` of grant.revoked. Targets: >= 500 lifecycles/s on 2 cores; p99 lateness <= 1 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from _common import Report, current_rss_mib, peak_rss_mib, percentile

from shared.domain.audit import format_instant
from shared.runtime import Runtime, build_local
from shared.settings import Settings
from shared.worker import Worker
from tests.fakes.world import DEV_SUB, POLICY

_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def body(rng: random.Random, principals: list[str], duration: float) -> bytes:
    return json.dumps({
        "schemaVersion": 1,
        "requestId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "requester": {"principalId": rng.choice(principals), "displayName": "Bench User"},
        "target": {
            "provider": "local",
            "scope": f"/subscriptions/{DEV_SUB}/resourceGroups/rg-{rng.randrange(500):03d}",
            "role": rng.choice(["Reader", "Contributor"]),
        },
        "duration": f"PT{duration:g}S",
        "justification": "Load test of the embedded runtime (bench/lifecycle.py)",
    }).encode()


def consume(settings: Settings, stop: Any) -> None:
    """A worker process: its own runtime on the same files, consumer threads, until `stop` is set."""
    runtime = build_local(settings)
    worker = make_worker(runtime, settings)
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        worker.start(consumers=settings.workers)
        stop.wait()
        worker.stop.set()


def make_worker(runtime: Runtime, settings: Settings) -> Worker:
    return Worker(
        runtime.lifecycle, runtime.bus, settings.requests_queue, settings.lifecycle_queue,
        settings.max_delivery_count, settings.reconcile_interval.total_seconds(), settings.poll_interval,
    )


def instant(text: str) -> float:
    return datetime.strptime(text, _FORMAT).timestamp()


def run_once(count: int, rate: float, consumers: int, processes: int, min_duration: float,
             max_duration: float, timeout: float, profile: str | None) -> dict[str, float | int | str]:
    """One run; the submitter (and, with processes == 0, the consumers) in this process. Returns figures."""
    rng = random.Random(count)
    principals = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(1000)]
    bodies = [body(rng, principals, round(rng.uniform(min_duration, max_duration), 1)) for _ in range(count)]
    with tempfile.TemporaryDirectory(prefix="jitgate-bench-lifecycle-") as tmp:
        policy_path = Path(tmp) / "policy.yaml"
        policy_path.write_text(POLICY)
        settings = Settings(data_dir=Path(tmp) / "data", policy_path=policy_path, workers=consumers)
        runtime = build_local(settings)
        worker = make_worker(runtime, settings)
        context = multiprocessing.get_context("spawn")
        stop = context.Event()
        workers = [context.Process(target=consume, args=(settings, stop)) for _ in range(processes)]
        for process in workers:
            process.start()
        store_conn = runtime.requests._db.connection()  # type: ignore[attr-defined]  # bench-only introspection
        rss_start = current_rss_mib()
        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile()
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):  # the outbox echo
            # consumers == 0: one thread submits and drains in a tight loop (what --profile can see whole).
            threads = worker.start(consumers=consumers) if consumers and not processes else []
            started = time.perf_counter()
            wall_start = time.time()
            if profiler:
                profiler.enable()
            for i, raw in enumerate(bodies):
                if rate:
                    ahead = started + i / rate - time.perf_counter()
                    if ahead > 0:
                        time.sleep(ahead)
                runtime.lifecycle.submit(raw)
                if not consumers and not processes and i % 16 == 15:
                    worker.drain(64)
            submitted = time.perf_counter() - started
            deadline = time.perf_counter() + timeout
            revoked = 0
            rss_peak_seen = current_rss_mib()
            rss_at: dict[int, float] = {}  # RSS when a quarter, half, ... of the lifecycles had finished
            while time.perf_counter() < deadline:
                (revoked,) = store_conn.execute("SELECT COUNT(*) FROM requests WHERE state = 'revoked'").fetchone()
                rss = current_rss_mib()
                rss_peak_seen = max(rss_peak_seen, rss)
                for quarter in (25, 50, 75, 100):
                    if revoked * 100 >= count * quarter:
                        rss_at.setdefault(quarter, rss)
                if revoked >= count:
                    break
                if consumers or processes or not worker.drain(1000):
                    time.sleep(0.1)
            elapsed = time.perf_counter() - started
            peak_at_end = peak_rss_mib()  # before the audit trail is read back below
            if profiler:
                profiler.disable()
            worker.stop.set()
            stop.set()
            for thread in threads:
                thread.join(timeout=5)
            for process in workers:
                process.join(timeout=10)
        states = dict(store_conn.execute("SELECT state, COUNT(*) FROM requests GROUP BY state").fetchall())
        rows = store_conn.execute(
            "SELECT request_id, type, at, doc FROM audit_events"
            " WHERE type IN ('request.received', 'grant.applied', 'grant.revoked')"
        ).fetchall()
        received: dict[str, float] = {}
        active: dict[str, float] = {}
        lateness: list[float] = []
        last_revoked = wall_start
        for request_id, type_, at, doc in rows:
            if type_ == "request.received":
                received[request_id] = instant(at)
            elif type_ == "grant.applied":
                active[request_id] = instant(at)
            else:
                lateness.append(float(json.loads(doc)["data"].get("latenessSeconds", "nan")))
                last_revoked = max(last_revoked, instant(at))
        to_active = [(active[r] - received[r]) * 1000 for r in active if r in received]
        dead = sum(len(runtime.bus.dead_letters(q)) for q in (settings.requests_queue, settings.lifecycle_queue))
        if profiler:
            profiler.dump_stats(profile)
    return {
        "count": count,
        "revoked": revoked,
        "states": json.dumps(states),
        "dead letters": dead,
        "submit phase s": round(submitted, 2),
        "submit rate /s": round(count / submitted),
        "submit -> all revoked s": round(elapsed, 2),
        "lifecycles/s (first submit -> last revoked)": round(revoked / max(last_revoked - wall_start, 1e-9), 1),
        "mean duration granted s": round((min_duration + max_duration) / 2, 2),
        "enqueue -> active p50 ms": round(percentile(to_active, 50), 1),
        "enqueue -> active p99 ms": round(percentile(to_active, 99), 1),
        "revocation lateness p50 s": round(percentile(lateness, 50), 3),
        "revocation lateness p99 s": round(percentile(lateness, 99), 3),
        "revocation lateness max s": round(max(lateness, default=float("nan")), 3),
        "RSS at start MiB": round(rss_start, 1),
        "RSS peak MiB": round(max(peak_at_end, rss_peak_seen), 1),
        "RSS at 25/50/75/100% revoked MiB": " / ".join(f"{rss_at.get(q, float('nan')):.1f}" for q in (25, 50, 75, 100)),
        "RSS peak of a worker process MiB": round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1) if processes else "n/a",
        "RSS growth during run MiB": round(rss_peak_seen - rss_start, 1),
        "started": format_instant(datetime.fromtimestamp(wall_start).astimezone()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--counts", default="1000,10000", help="comma-separated; each runs in a fresh process")
    parser.add_argument("--rate", type=float, default=0.0, help="submissions per second (0: as fast as possible)")
    parser.add_argument(
        "--consumers", type=int, default=2,
        help="Worker consumer threads (jitgate serve: 2); 0: the submitting thread drains in a tight loop",
    )
    parser.add_argument(
        "--processes", type=int, default=0,
        help="worker processes (each with --consumers threads) instead of threads in the submitting process",
    )
    parser.add_argument("--min-duration", type=float, default=2.0)
    parser.add_argument("--max-duration", type=float, default=4.0)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for every revoke")
    parser.add_argument("--profile", default=None, help="write cProfile stats of the (single) run here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None, help="append the figures as one JSON line to this file")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",") if c]

    if args.child:
        figures = run_once(counts[0], args.rate, args.consumers, args.processes,
                           args.min_duration, args.max_duration, args.timeout, args.profile)
        print(json.dumps(figures))
        return 0

    report = Report("lifecycle")
    report.figure("consumers (Worker threads)", args.consumers)
    report.figure("worker processes", args.processes or "none (threads in the submitting process)")
    report.figure("submit rate asked", args.rate or "as fast as possible")
    complete = True
    for count in counts:
        command = [sys.executable, __file__, "--child", "--counts", str(count), "--rate", str(args.rate),
                   "--consumers", str(args.consumers), "--processes", str(args.processes),
                   "--min-duration", str(args.min_duration),
                   "--max-duration", str(args.max_duration), "--timeout", str(args.timeout)]
        if args.profile:
            command += ["--profile", f"{args.profile}.{count}"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            report.note(f"run of {count} failed: {done.stderr.strip()[-2000:]}")
            report.done(args.json)
            return 1
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        for key, value in figures.items():
            if key != "count":
                targets = {"revocation lateness p99 s": "<= 1 s"}
                if not args.rate:  # paced runs measure latency below capacity, not throughput
                    targets["lifecycles/s (first submit -> last revoked)"] = ">= 500"
                target = targets.get(key, "")
                report.figure(f"{count:>6,}: {key}", value, target=target)
        complete = complete and figures["revoked"] == count
    if not complete:
        report.note("not every request reached revoked before the timeout")
    report.done(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
