"""Database access timing: from approval to the person's first successful read, and from expiresAt to the
end of the person's open session, over N grants on a real throwaway PostgreSQL (issue #11; goal p99 <= 1 s).

Each grant is one person: a login an admin made (with a password, so the bench can sign in as it) and no
role; jitgate grants `payments_read` through the embedded runtime (SQLite bus and store, worker threads as
`jitgate serve` runs them). One prober thread per person signs in and tries to read the payments table
every few milliseconds until it can, then keeps that session reading until the revoke at expiry ends it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

from _common import Report, percentile

from shared.runtime import build_local
from shared.settings import Settings
from shared.worker import Worker
from tests.postgres import JITGATE_PASSWORD, PgWorld, admin_sql, prepare

POLICY = """\
version: 1
rules:
  - name: payments-db-read
    match: {providers: [postgres], roles: [payments_read], scopes: ["payments-*/payments"]}
    outcome: auto
    maxDuration: PT1H
"""
PROBE_SECONDS = 0.005


class Prober(threading.Thread):
    """One person: sign in and read until it works, then keep the session reading until it is ended."""

    def __init__(self, conninfo: str, deadline: float) -> None:
        super().__init__(daemon=True)
        self.conninfo = conninfo
        self.deadline = deadline
        self.first_read: float | None = None
        self.denied: float | None = None  # the REVOKE committed: reading is refused
        self.ended: float | None = None  # the session was terminated

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.conninfo, autocommit=True) as session:
            while self.first_read is None and time.time() < self.deadline:
                try:
                    session.execute("SELECT count(*) FROM payments").fetchone()
                    self.first_read = time.time()
                except psycopg.errors.InsufficientPrivilege:
                    time.sleep(PROBE_SECONDS)
            while time.time() < self.deadline:
                try:
                    session.execute("SELECT count(*) FROM payments").fetchone()
                except psycopg.errors.InsufficientPrivilege:
                    self.denied = self.denied or time.time()
                except psycopg.OperationalError:
                    self.ended = time.time()
                    self.denied = self.denied or self.ended
                    return
                time.sleep(PROBE_SECONDS)


def run(grants: int, duration: float, consumers: int, rate: float, report: Report) -> None:
    from shared.adapters.postgres.throwaway import ThrowawayPostgres

    pg = ThrowawayPostgres().start()
    try:
        prepare(pg)
        people = {str(uuid.uuid4()): f"bench_{i:03d}" for i in range(grants)}
        admin_sql(pg, *(f"CREATE ROLE {login} LOGIN PASSWORD 'bench-pw'" for login in people.values()))
        world = PgWorld({"payments-bench": pg})
        with tempfile.TemporaryDirectory(prefix="jitgate-bench-database-") as tmp:
            secret = Path(tmp) / "pw"
            secret.write_text(JITGATE_PASSWORD)
            servers = Path(tmp) / "servers.yaml"
            servers.write_text(world.servers_yaml("payments-bench", str(secret), people))
            policy = Path(tmp) / "policy.yaml"
            policy.write_text(POLICY)
            settings = Settings(data_dir=Path(tmp) / "data", policy_path=policy, workers=consumers,
                                databases_file=servers)
            runtime = build_local(settings)
            worker = Worker(runtime.lifecycle, runtime.bus, settings.requests_queue, settings.lifecycle_queue,
                            settings.max_delivery_count, settings.reconcile_interval.total_seconds(),
                            settings.poll_interval)
            deadline = time.time() + duration + 60 + (grants / rate if rate else 0)
            probers = {oid: Prober(pg.admin.conninfo(dbname="payments", user=login, password="bench-pw"), deadline)
                       for oid, login in people.items()}
            for prober in probers.values():
                prober.start()
            requests: dict[str, str] = {}
            with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):  # the outbox echo
                worker.start(consumers=consumers)
                started = time.monotonic()
                for i, oid in enumerate(people):
                    if rate:
                        time.sleep(max(0.0, started + i / rate - time.monotonic()))
                    request_id = str(uuid.uuid4())
                    requests[request_id] = oid
                    runtime.lifecycle.submit(json.dumps({
                        "schemaVersion": 1, "requestId": request_id,
                        "requester": {"principalId": oid, "displayName": "Bench User"},
                        "target": {"provider": "postgres", "scope": "payments-bench/payments", "role": "payments_read"},
                        "duration": f"PT{duration:g}S",
                        "justification": "Timing database access (bench/database.py)",
                    }).encode())
                for prober in probers.values():
                    prober.join(max(0.0, deadline - time.time()))
                while time.time() < deadline and not all(_revoked(runtime, r) for r in requests):
                    time.sleep(0.1)
                worker.stop.set()
            to_read, to_denied, to_end, missing = [], [], [], 0
            for request_id, oid in requests.items():
                approved = _event_time(runtime, request_id, "request.approved")
                holds = runtime.backends.ledger.holds_for_request(request_id)
                prober = probers[oid]
                if approved is None or not holds or None in (prober.first_read, prober.denied, prober.ended):
                    missing += 1
                    continue
                assert prober.first_read and prober.denied and prober.ended
                expires_at = holds[0].expires_at.timestamp()
                to_read.append(prober.first_read - approved)
                to_denied.append(prober.denied - expires_at)
                to_end.append(prober.ended - expires_at)
    finally:
        pg.stop()
    report.figure("grants", grants)
    report.figure("grants not measured (no read or no end seen)", missing)
    for label, values in (("approval -> first successful read", to_read),
                          ("expiresAt -> reading refused (REVOKE)", to_denied),
                          ("expiresAt -> session ended", to_end)):
        report.figure(f"{label} p50 s", round(percentile(values, 50), 3))
        report.figure(f"{label} p99 s", round(percentile(values, 99), 3), target="<= 1 s")
        report.figure(f"{label} max s", round(max(values, default=float("nan")), 3))


def _revoked(runtime: object, request_id: str) -> bool:
    record = runtime.requests.get_request(request_id)  # type: ignore[attr-defined]
    return record is not None and record.state.value == "revoked"


def _event_time(runtime: object, request_id: str, kind: str) -> float | None:
    for event in runtime.audit.chain(request_id):  # type: ignore[attr-defined]
        if event.type == kind:
            at: datetime = event.at
            return at.timestamp()
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--grants", type=int, default=40, help="people, each granted once (max_connections 60)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds each grant lasts")
    parser.add_argument("--consumers", type=int, default=2, help="worker threads (jitgate serve: 2)")
    parser.add_argument("--rate", type=float, default=0.0, help="requests per second (0: all at once, a burst)")
    parser.add_argument("--json", default=None, help="append the figures as one JSON line to this file")
    args = parser.parse_args(argv)
    report = Report("database")
    report.figure("probe interval s", PROBE_SECONDS)
    report.figure("requests per second", args.rate or "all at once")
    try:
        run(args.grants, args.duration, args.consumers, args.rate, report)
    except Exception as exc:  # the bench could not run: say why, exit non-zero
        print(f"bench database: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    report.done(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
