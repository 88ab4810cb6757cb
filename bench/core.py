"""What every benchmark module hands back, and how a run is shown and recorded.

A benchmark module in `bench/` exposes `run(quick: bool) -> list[Figure]`; `python -m bench` (`make bench`) finds
every such module, runs them one after another, prints one table and appends one JSON line per figure to the
results file. A figure carries its baseline measured in the same run, so `ratio` compares like with like on a
shared, noisy machine; absolute values are shown but are not the targets.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Figure:
    """One measured figure. `ratio` is `value / baseline` unless given; `target` reads like `>= 0.5` or `<= 2`
    (applied to the ratio, or to the value when `target_on == "value"`); `ok` is None when there is no target."""

    name: str
    value: float
    unit: str = ""
    baseline: float | None = None
    ratio: float | None = None
    target: str = ""
    target_on: str = "ratio"
    note: str = ""

    def __post_init__(self) -> None:
        if self.ratio is None and self.baseline:
            self.ratio = self.value / self.baseline

    @property
    def ok(self) -> bool | None:
        if not self.target:
            return None
        op, _, bound = self.target.partition(" ")
        subject = self.value if self.target_on == "value" else self.ratio
        if subject is None:
            return None
        limit = float(bound)
        return subject >= limit if op == ">=" else subject <= limit if op == "<=" else None

    def record(self, commit: str, date: str, quick: bool) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "unit": self.unit, "baseline": self.baseline,
                "ratio": self.ratio, "target": self.target, "target_on": self.target_on, "ok": self.ok,
                "note": self.note, "commit": commit, "date": date, "quick": quick}


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _num(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def table(figures: Sequence[Figure]) -> str:
    """A Markdown table of the figures (what `make bench` prints and docs/PERFORMANCE.md shows)."""
    lines = ["| figure | value | baseline | ratio | target | ok |", "| --- | --- | --- | --- | --- | --- |"]
    for f in figures:
        unit = f" {f.unit}" if f.unit else ""
        mark = {True: "yes", False: "**no**", None: ""}[f.ok]
        target = f"{f.target} ({f.target_on})" if f.target and f.target_on == "value" else f.target
        base = _num(f.baseline) + (unit if f.baseline is not None else "")
        lines.append(f"| {f.name} | {_num(f.value)}{unit} | {base} | {_num(f.ratio)} | {target} | {mark} |")
    return "\n".join(lines)


def append_results(path: Path, figures: Iterable[Figure], quick: bool) -> None:
    sha, date = commit(), utc_now()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        for f in figures:
            out.write(json.dumps(f.record(sha, date, quick)) + "\n")


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100) of samples, interpolated; 0.0 for no samples."""
    if not samples:
        return 0.0
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[max(0, min(98, round(q) - 1))]


def best_of(repeats: int, fn: Callable[[], float]) -> float:
    """The smallest of `repeats` timings (the least disturbed by the other work on a shared machine)."""
    return min(fn() for _ in range(repeats))


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
