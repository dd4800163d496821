"""Medians of several runs: reads the JSON lines the benchmarks append (`--json FILE`, or `make bench`'s
$BENCH_JSON) and prints, per benchmark and figure, the median of every numeric figure with its lowest and
highest value and the load averages the runs started and ended at. Runs are grouped by file and benchmark:
keep one file per configuration (sizes, options).

    for i in 1 2 3; do .venv/bin/python bench/cpu.py --json /tmp/cpu.jsonl; done
    .venv/bin/python bench/medians.py /tmp/cpu.jsonl

Nested figures (a capacity step, a kind of lifecycle) are flattened to "step / figure". A figure that is
"never" in some run (a request that never finished) counts as infinite.
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from typing import Any

from _common import command_line, median


def flatten(figures: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in figures.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key} / ")
        else:
            flat[prefix + key] = value
    return flat


def number(value: Any) -> float | None:
    if value == "never":
        return math.inf
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def main(argv: list[str] | None = None) -> int:
    parser = command_line(__doc__)
    parser.add_argument("files", nargs="+", help="JSON-lines files written by the benchmarks")
    args = parser.parse_args(argv)
    runs: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for path in args.files:
        with open(path) as lines:
            for line in lines:
                if line.strip():
                    run = json.loads(line)
                    runs[(path, run["bench"])].append(run)
    for (path, bench), found in runs.items():
        loads = ", ".join(f"{r['figures'].get('load at start', '?')} -> {r['figures'].get('load at end', '?')}"
                          for r in found)
        print(f"# {bench} ({path}): {len(found)} run(s); load (1/5/15 min) at start -> end: {loads}")
        values: dict[str, list[float]] = defaultdict(list)
        for run in found:
            for key, value in flatten(run["figures"]).items():
                if (n := number(value)) is not None:
                    values[key].append(n)
        for key, numbers in values.items():
            shown = "never" if math.isinf(median(numbers)) else f"{median(numbers):,.3f}"
            spread = f"  [{min(numbers):,.3f} .. {max(numbers):,.3f}]" if len(numbers) > 1 else ""
            print(f"  {key:<60} {shown}{spread}")
    if not runs:
        print("no runs found", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
