#!/usr/bin/env bash
# Runs every benchmark once, in the order and at the sizes docs/benchmarks.md reports; prints each one's
# figures and the total time. Exits non-zero only if a benchmark could not run (a missed target is a
# figure, not a failure). Sizes can be overridden, e.g. AUDIT_EVENTS=100000 bash bench/run_all.sh.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${BENCH_JSON:-${TMPDIR:-/tmp}/jitgate-bench.jsonl}
: "${AUDIT_EVENTS:=1000000}"
: "${POLICY_EVALUATIONS:=100000}"
: "${CEDAR_WHOLE_SAMPLE:=1000}"
: "${CEDAR_SAMPLE:=5000}"
: "${COLDSTART_RUNS:=15}"
: "${LIFECYCLE_COUNTS:=1000,10000}"
: "${LIFECYCLE_PACED:=200}"

rm -f "$OUT"
failed=()
started=$(date +%s)
run() {
    local name=$1; shift
    echo
    echo "\$ $PY $*"
    local t0=$(date +%s)
    if ! "$PY" "$@" --json "$OUT"; then
        failed+=("$name")
    fi
    echo "($name took $(( $(date +%s) - t0 )) s)"
}

echo "bench: $(nproc) cpus, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
run coldstart  bench/coldstart.py --runs "$COLDSTART_RUNS"
run policy     bench/policy.py --evaluations "$POLICY_EVALUATIONS" --cedar-sample "$CEDAR_SAMPLE" --cedar-whole-sample "$CEDAR_WHOLE_SAMPLE"
run audit      bench/audit.py --events "$AUDIT_EVENTS"
run lifecycle  bench/lifecycle.py --counts "$LIFECYCLE_COUNTS"
run lifecycle-paced bench/lifecycle.py --counts "$LIFECYCLE_PACED" --rate 10
run database   bench/database.py --grants "${DATABASE_GRANTS:-40}" --rate "${DATABASE_RATE:-5}"
run envoy      bench/envoy.py --holds "${ENVOY_HOLDS:-10000}" --requests "${ENVOY_REQUESTS:-1000}"

echo
echo "bench: total $(( $(date +%s) - started )) s, load $(cut -d' ' -f1-3 /proc/loadavg); figures in $OUT"
if (( ${#failed[@]} )); then
    echo "bench: could not run: ${failed[*]}" >&2
    exit 1
fi
