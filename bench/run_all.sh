#!/usr/bin/env bash
# Runs every benchmark once, in the order and at the sizes docs/benchmarks.md reports; prints each one's
# figures, the load average around it and the total time. Exits non-zero only if a benchmark could not run
# (a missed target is a figure, not a failure). Sizes can be overridden, e.g. BURST_REQUESTS=10000 make bench.
# The sizes below keep the whole run under 5 minutes on a quiet 2-core machine; the figures of issue #10 use
# the full sizes (docs/benchmarks.md gives each command).
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${BENCH_JSON:-${TMPDIR:-/tmp}/jitgate-bench.jsonl}
: "${AUDIT_EVENTS:=1000000}"
: "${POLICY_EVALUATIONS:=100000}"
: "${CEDAR_WHOLE_SAMPLE:=1000}"
: "${CEDAR_SAMPLE:=5000}"
: "${COLDSTART_RUNS:=9}"
: "${CAPACITY_RATES:=100,500}"
: "${CAPACITY_WINDOW:=15}"
: "${BURST_REQUESTS:=2000}"
: "${CPU_LIFECYCLES:=1000}"
: "${OPERATIONS_LIFECYCLES:=20}"
: "${RECONCILE_FINISHED:=100,30000}"
: "${RECONCILE_ROUNDS:=3}"
: "${DATABASE_GRANTS:=40}"
: "${DATABASE_RATE:=5}"

rm -f "$OUT"
failed=()
started=$(date +%s)
run() {
    local name=$1; shift
    echo
    echo "\$ $PY $*    (load $(cut -d' ' -f1-3 /proc/loadavg))"
    local t0=$(date +%s)
    if ! "$PY" "$@" --json "$OUT"; then
        failed+=("$name")
    fi
    echo "($name took $(( $(date +%s) - t0 )) s, load $(cut -d' ' -f1-3 /proc/loadavg))"
}

echo "bench: $(nproc) cpus, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
run coldstart  bench/coldstart.py --runs "$COLDSTART_RUNS"
run policy     bench/policy.py --evaluations "$POLICY_EVALUATIONS" --cedar-sample "$CEDAR_SAMPLE" --cedar-whole-sample "$CEDAR_WHOLE_SAMPLE"
run audit      bench/audit.py --events "$AUDIT_EVENTS"
run capacity   bench/capacity.py --rates "$CAPACITY_RATES" --window "$CAPACITY_WINDOW"
run burst      bench/burst.py --requests "$BURST_REQUESTS"
run cpu        bench/cpu.py --lifecycles "$CPU_LIFECYCLES"
run operations bench/operations.py --lifecycles "$OPERATIONS_LIFECYCLES"
run reconcile  bench/reconcile.py --finished "$RECONCILE_FINISHED" --rounds "$RECONCILE_ROUNDS"
run database   bench/database.py --grants "$DATABASE_GRANTS" --rate "$DATABASE_RATE"
run envoy      bench/envoy.py --holds "${ENVOY_HOLDS:-10000}" --requests "${ENVOY_REQUESTS:-1000}"

echo
echo "bench: total $(( $(date +%s) - started )) s, load $(cut -d' ' -f1-3 /proc/loadavg); figures in $OUT"
echo "bench: medians over several runs: $PY bench/medians.py $OUT"
if (( ${#failed[@]} )); then
    echo "bench: could not run: ${failed[*]}" >&2
    exit 1
fi
