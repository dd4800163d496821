"""Audit log at scale: 1,000,000 events in a SqliteStore, auditor queries by principal and time window,
and verification of every hash chain.

    .venv/bin/python bench/audit.py                 # 1,000,000 events
    .venv/bin/python bench/audit.py --events 100000 # quicker

Events are realistic: six per request (received with the whole request, policy.evaluated, approved,
grant.applied, revoke.scheduled, revoked), 1,000 requesters, spread over 30 days, loaded with
`SqliteStore.bulk_append`. Targets: query p95 <= 20 ms; verify every chain <= 10 s.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import random
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import Report, percentile

from shared.adapters.embedded.store import SqliteStore
from shared.domain.audit import SYSTEM, Actor, AuditEvent, EventType, event_id, format_instant, hash_of, verify_chain
from shared.ports import AuditQuery

START = datetime(2026, 10, 1, tzinfo=UTC)
SPAN = timedelta(days=30)
EVENTS_PER_REQUEST = 6
SUB = "11111111-1111-4111-8111-111111111111"


def principals(count: int, rng: random.Random) -> list[str]:
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]


def lifecycle_events(rid: str, principal: str, t0: datetime, rng: random.Random) -> list[AuditEvent]:
    """The six events of one auto-approved request that was granted and revoked on time."""
    duration = rng.choice([1, 2, 4, 8])
    expires = t0 + timedelta(hours=duration)
    scope = f"/subscriptions/{SUB}/resourceGroups/rg-{rng.randrange(200):03d}-dev"
    role = rng.choice(["Reader", "Contributor"])
    assignment = str(uuid.UUID(int=rng.getrandbits(128), version=5))
    lateness = round(rng.uniform(0.01, 0.9), 3)
    user = Actor(principal_id=principal, kind="user")
    steps: list[tuple[EventType, datetime, Actor, dict[str, Any]]] = [
        (EventType.REQUEST_RECEIVED, t0, user, {"request": {
            "schemaVersion": 1, "requestId": rid, "duration": f"PT{duration}H",
            "justification": f"Investigating incident INC-{rng.randrange(10_000)} in the web app",
            "requester": {"principalId": principal, "principalType": "User", "displayName": "Someone"},
            "target": {"provider": "local", "scope": scope, "role": role}, "ticket": None, "context": {}}}),
        (EventType.POLICY_EVALUATED, t0, SYSTEM, {
            "approverGroups": [], "breakGlass": False, "maxDuration": "PT8H", "outcome": "auto",
            "reasons": [f"rule 'dev-any' matches local role '{role}' at '{scope}' (scope pattern "
                        f"'/subscriptions/{SUB}/**')", "auto-approved for at most PT8H"],
            "requiredApprovals": 0, "rule": "dev-any"}),
        (EventType.REQUEST_APPROVED, t0, SYSTEM, {"breakGlass": False, "by": "policy", "rule": "dev-any"}),
        (EventType.GRANT_APPLIED, t0 + timedelta(milliseconds=40), SYSTEM, {
            "assignmentName": assignment, "expiresAt": format_instant(expires), "preexisting": False,
            "principalId": principal, "provider": "local", "roleDefinitionId": "acdd72a7-3385-48ef-bd42-f606fba81ae7",
            "scope": scope.lower()}),
        (EventType.REVOKE_SCHEDULED, t0 + timedelta(milliseconds=40), SYSTEM, {
            "at": format_instant(expires), "sequenceNumber": rng.randrange(10**6)}),
        (EventType.GRANT_REVOKED, expires + timedelta(seconds=lateness), SYSTEM, {
            "assignmentDeleted": True, "by": "jitgate", "latenessSeconds": lateness, "preexisting": False,
            "reason": "expired", "remainingHolds": 0}),
    ]
    events = []
    prev = ""
    for seq, (type_, at, actor, data) in enumerate(steps):
        # Hashed exactly as make_event does (canonical JSON of the document without hash), built directly
        # because make_event validates each event twice and loading a million would take minutes.
        at_text = format_instant(at)
        doc = {"id": event_id(rid, seq), "requestId": rid, "seq": seq, "type": type_.value, "at": at_text,
               "actor": {"principalId": actor.principal_id, "kind": actor.kind}, "data": data, "prevHash": prev}
        digest = hash_of(doc)
        events.append(AuditEvent.model_construct(
            id=doc["id"], request_id=rid, seq=seq, type=type_, at=at, actor=actor, data=data,
            prev_hash=prev, hash=digest))
        prev = digest
    return events


def generate(
    total: int, people: list[str], rng: random.Random, part: int = 0, parts: int = 1
) -> Iterator[tuple[AuditEvent, str | None]]:
    """Requests spread evenly over SPAN in time order (this part's share: every parts-th request), as events
    arrive in production: time ordered, request ids random."""
    requests = total // EVENTS_PER_REQUEST
    for i in range(part, requests, parts):
        rid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        principal = rng.choice(people)
        t0 = START + SPAN * ((i + rng.random()) / requests)
        for event in lifecycle_events(rid, principal, t0, rng):
            yield event, principal


def load_part(path: str, total: int, people: list[str], part: int, parts: int, batch: int = 12_000) -> int:
    """Append this part's share of `total` events to the store at `path` in batches; returns how many."""
    rng = random.Random(part)
    events = generate(total, people, rng, part, parts)
    loaded = 0
    with SqliteStore(path) as store:
        # Loading only: a bigger page cache for this connection, and each batch in time order (the grant.revoked
        # events come hours after the rest of their request), as a live store receives them.
        store._db.connection().execute("PRAGMA cache_size = -262144")
        while chunk := list(itertools.islice(events, batch)):
            chunk.sort(key=lambda pair: pair[0].at)
            loaded += store.bulk_append(chunk)
    return loaded


def load(path: Path, total: int, people: list[str], processes: int) -> tuple[float, float]:
    """Load in `processes` processes (generation and serialisation run in parallel; SQLite serialises the
    inserts themselves). Returns (wall seconds, CPU seconds of all processes)."""
    SqliteStore(path).close()  # the schema, once
    started = time.perf_counter()
    cpu = _cpu_seconds()
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
        list(pool.map(load_part, [str(path)] * processes, [total] * processes, [people] * processes,
                      range(processes), [processes] * processes))
    return time.perf_counter() - started, _cpu_seconds() - cpu


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children."""
    return sum(
        r.ru_utime + r.ru_stime
        for r in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--principals", type=int, default=1_000)
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--window-hours", type=float, default=24.0)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 2, help="for loading and verifying")
    parser.add_argument("--old-sample", type=int, default=60_000, help="events verified the old way (models)")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the store (default: a temp dir)")
    parser.add_argument("--json", default=None, help="append the figures as one JSON line to this file")
    args = parser.parse_args(argv)

    report = Report("audit")
    rng = random.Random(20261126)
    people = principals(args.principals, rng)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="jitgate-bench-audit-") as tmp:
        path = Path(tmp) / "store.db"
        wall, cpu = load(path, args.events, people, args.processes)
        store = SqliteStore(path)
        conn = store._db.connection()
        (count,) = conn.execute("SELECT COUNT(*) FROM audit_events").fetchone()
        (chains,) = conn.execute("SELECT COUNT(DISTINCT request_id) FROM audit_events").fetchone()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        report.figure("events", int(count))
        report.figure("chains (requests)", int(chains))
        report.figure(f"load with bulk_append, {args.processes} processes", round(wall, 1), "s")
        report.figure("load throughput", round(count / wall), "events/s")
        report.figure("load CPU per event (all processes)", round(cpu / count * 1e6, 1), "µs")
        report.figure("store file", round(path.stat().st_size / 2**20), "MiB")

        # ---- auditor queries: one principal, one time window; the API's default page (100) and its maximum
        for limit in (100, 1000):
            timings: list[float] = []
            returned: list[float] = []
            for _ in range(args.queries):
                since = START + timedelta(seconds=rng.uniform(0, SPAN.total_seconds() - args.window_hours * 3600))
                query = AuditQuery(
                    principal_id=rng.choice(people),
                    since=since,
                    until=since + timedelta(hours=args.window_hours),
                    limit=limit,
                )
                t = time.perf_counter()
                page = store.query(query)
                timings.append((time.perf_counter() - t) * 1000)
                returned.append(len(page.events))
            tag = f"query principal + {args.window_hours:g} h, limit {limit}"
            target = "<= 20 ms" if limit == 100 else ""
            report.figure(f"{tag}: events returned, median", percentile(returned, 50))
            report.figure(f"{tag}: p50", round(percentile(timings, 50), 2), "ms")
            report.figure(f"{tag}: p95", round(percentile(timings, 95), 2), "ms", target=target)
            report.figure(f"{tag}: p99", round(percentile(timings, 99), 2), "ms")

        # ---- verification, before: every event parsed into a model and re-dumped (on a sample, then scaled)
        t = time.perf_counter()
        c = time.process_time()
        sampled = 0
        for rid, events in store.iter_chains():
            if not verify_chain(rid, events).ok:
                report.note(f"chain {rid} does not verify the old way")
                report.done(args.json)
                return 1
            sampled += len(events)
            if sampled >= args.old_sample:
                break
        old_wall = (time.perf_counter() - t) / sampled
        old_cpu = (time.process_time() - c) / sampled
        report.figure("verify before (iter_chains + verify_chain)", round(old_wall * 1e6, 2), "µs/event")
        report.figure("verify before, CPU", round(old_cpu * 1e6, 2), "µs/event")
        report.figure(f"verify before, scaled to {count:,} events", round(old_wall * count, 1), "s")
        store.close()

        # ---- verification, now: the stored canonical documents hashed as they are
        for processes in sorted({1, args.processes}):
            with SqliteStore(path) as fresh:
                t = time.perf_counter()
                c = _cpu_seconds()
                reports = list(fresh.verify_chains(processes=processes))
                wall = time.perf_counter() - t
                cpu = _cpu_seconds() - c
            verified = sum(r.events for r in reports)
            if not all(r.ok for r in reports) or verified != count:
                report.note(f"verification disagreed: {sum(not r.ok for r in reports)} broken, {verified} events")
                report.done(args.json)
                return 1
            report.figure(f"verify every chain, {processes} process(es)", round(wall, 2), "s", target="<= 10 s")
            report.figure(f"verify, {processes} process(es), CPU per event", round(cpu / count * 1e6, 2), "µs")
            if processes == 1:
                report.figure("verify speed-up, 1 process, vs before (wall)", round(old_wall * count / wall, 1), "x")
    report.done(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
