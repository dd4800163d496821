"""Cold start: the time to import the application entry in a fresh interpreter, against a baseline that
also imports every cloud SDK eagerly (what an entry module with import-time clients would pay).

    .venv/bin/python bench/coldstart.py
    .venv/bin/python bench/coldstart.py --runs 31

Each variant is a fresh `python -c "import ..."`; variants are interleaved run by run so that a noisy
neighbour hurts them alike, and the median of the runs is reported. The SDKs must be installed for the
baseline (`pip install azure-servicebus azure-identity azure-cosmos azure-monitor-query
google-cloud-pubsub`); those that are missing are left out of it and named in the output.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from _common import ROOT, Report, percentile

SDKS = {
    "azure-servicebus": "azure.servicebus",
    "azure-identity": "azure.identity",
    "azure-cosmos": "azure.cosmos",
    "azure-monitor-query": "azure.monitor.query",
    "google-cloud-pubsub": "google.cloud.pubsub",
    "google-cloud-tasks": "google.cloud.tasks_v2",
}
ENTRY = "import shared.api"  # the ASGI app; it imports shared.runtime (the local wiring) itself


def run(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def importable(module: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, capture_output=True).returncode == 0


def import_profile(code: str, top: int) -> list[tuple[float, str]]:
    """The slowest top-level imports (cumulative ms) from `python -X importtime`."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=ROOT, capture_output=True, text=True)
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.removeprefix("import time:").split("|")
        if not name.startswith("  "):  # nested imports are indented by two more spaces per level
            rows.append((int(cumulative) / 1000, name.strip()))
    return sorted(rows, reverse=True)[:top]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--json", default=None, help="append the figures as one JSON line to this file")
    args = parser.parse_args(argv)

    report = Report("coldstart")
    present = {dist: module for dist, module in SDKS.items() if importable(module)}
    missing = sorted(set(SDKS) - set(present))
    if missing:
        report.note(f"not installed, left out of the baseline: {', '.join(missing)}")
    report.figure("SDKs in the baseline", ", ".join(present) or "none")
    sdk_imports = "; ".join(f"import {m}" for m in present.values())

    leaked = subprocess.run(
        # NB. Namespace packages (no __file__) left out: functions-framework's .pth loads `google` and `google.cloud`
        # at interpreter start, empty, whatever the entry imports.
        [sys.executable, "-c", f"{ENTRY}; import sys, json; print(json.dumps(sorted(m for m, v in sys.modules.items()"
         " if m.split('.')[0] in ('azure', 'google', 'grpc') and getattr(v, '__file__', None))))"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    loaded = json.loads(leaked.stdout)
    report.figure("cloud SDK modules loaded by the entry", len(loaded))
    report.figure("shared.runtime loaded by the entry", "shared.runtime" in json.loads(subprocess.run(
        [sys.executable, "-c", f"{ENTRY}; import sys, json; print(json.dumps(sorted(sys.modules)))"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout))

    variants = {
        "interpreter only (python -c pass)": "pass",
        "entry: import shared.api (+ shared.runtime)": ENTRY,
        "import shared.cli": "import shared.cli",
        "baseline: entry + every SDK eagerly": f"{ENTRY}; {sdk_imports}" if sdk_imports else ENTRY,
    }
    azure_entry = importable("function_app")
    if azure_entry:
        # The Azure Functions entry (it builds the runtime and imports shared.api on the first invocation).
        variants["Azure entry: import function_app"] = "import function_app"
    else:
        report.note("function_app.py is absent or not importable here (azure-functions?): not measured")
    gcp_entry = importable("main")
    if gcp_entry:
        # The Google Cloud entry (functions-framework; the runtime is built on the first invocation).
        variants["Google Cloud entry: import main"] = "import main"
        clients = subprocess.run(
            [sys.executable, "-c", "import main, sys; print(sum(1 for m in sys.modules if m.startswith(("
             "'google.cloud.pubsub', 'google.pubsub_v1', 'google.cloud.tasks', 'google.api_core', 'grpc'))))"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        )
        report.figure("Google SDK client modules loaded by main", int(clients.stdout))
    else:
        report.note("main.py is absent or not importable here (functions-framework?): not measured")
    for code in variants.values():
        run(code)  # compile and cache bytecode, warm the page cache
    timings: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.runs):
        for name, code in variants.items():
            timings[name].append(run(code) * 1000)
    for name, values in timings.items():
        report.figure(f"{name}: median", round(percentile(values, 50)), "ms")
        report.figure(f"{name}: p90", round(percentile(values, 90)), "ms")
    entry = percentile(timings["entry: import shared.api (+ shared.runtime)"], 50)
    baseline = percentile(timings["baseline: entry + every SDK eagerly"], 50)
    floor = percentile(timings["interpreter only (python -c pass)"], 50)
    report.figure("runs per variant", args.runs)
    report.figure("ratio baseline / entry (medians)", round(baseline / entry, 2), "x")
    report.figure("ratio, interpreter start-up subtracted", round((baseline - floor) / (entry - floor), 2), "x")
    if azure_entry:
        report.figure("ratio baseline / Azure entry (medians)", round(
            baseline / percentile(timings["Azure entry: import function_app"], 50), 2), "x")
    if gcp_entry:
        report.figure("ratio baseline / Google Cloud entry (medians)", round(
            baseline / percentile(timings["Google Cloud entry: import main"], 50), 2), "x")
    report.figure("import shared.cli / entry (medians)", round(
        percentile(timings["import shared.cli"], 50) / entry, 2), "x")
    for cumulative, name in import_profile(variants["baseline: entry + every SDK eagerly"], 10):
        report.figure(f"importtime (baseline), {name}", round(cumulative), "ms")
    for cumulative, name in import_profile(ENTRY, 6):
        report.figure(f"importtime (entry), {name}", round(cumulative), "ms")
    report.done(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
