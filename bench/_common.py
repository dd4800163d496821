"""What every benchmark shares: percentiles, peak memory, the machine, and how figures are printed."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as `python bench/x.py` from anywhere


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) by linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": model or platform.processor(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg": os.getloadavg(),
    }


class Report:
    """Figures of one benchmark: printed as they come, and as one JSON line at the end."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.figures: dict[str, Any] = {}
        self.notes: list[str] = []
        self.started = time.perf_counter()
        m = machine()
        print(f"# bench {name}: {m['cpus']} cpus ({m['cpu']}), Python {m['python']}, load {m['loadavg']}")

    def figure(self, key: str, value: Any, unit: str = "", target: str = "") -> None:
        self.figures[key] = value
        shown = f"{value:,.3f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else value
        suffix = f"  (target {target})" if target else ""
        print(f"  {key:<44} {shown} {unit}{suffix}".rstrip())

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}")

    def done(self, json_path: str | None = None) -> None:
        elapsed = time.perf_counter() - self.started
        self.figures["benchWallSeconds"] = round(elapsed, 2)
        line = {"bench": self.name, "machine": machine(), "figures": self.figures, "notes": self.notes}
        print(f"  wall time {elapsed:.1f} s")
        print("JSON " + json.dumps(line, default=str))
        if json_path:
            with open(json_path, "a") as f:
                f.write(json.dumps(line, default=str) + "\n")
