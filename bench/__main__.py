"""`python -m bench [--quick] [--only NAME …] [--results PATH]`: every benchmark in one run (`make bench`).

A module of `bench/` takes part when it defines `run(quick: bool) -> list[bench.core.Figure]`; modules are run in
name order, each one's figures printed as it finishes, then one table of all of them, and one JSON line per figure
is appended to the results file. The exit status is 1 when a benchmark raised (its error is printed and the others
still run); a figure missing its target is shown in the table, not turned into a failure.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time
import traceback
from pathlib import Path

import bench
from bench.core import ROOT, Figure, append_results, commit, table, utc_now

SKIP = {"core", "__main__"}


def discover() -> list[str]:
    names = []
    for info in sorted(pkgutil.iter_modules(bench.__path__), key=lambda i: i.name):
        if info.name in SKIP or info.name.startswith("_") or info.ispkg:
            continue
        names.append(info.name)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run every benchmark of bench/ and record the figures.")
    parser.add_argument("--quick", action="store_true", help="small sizes and short runs (a few minutes)")
    parser.add_argument("--only", nargs="+", default=None, help="module names to run (default: all)")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results.jsonl")
    args = parser.parse_args(argv)
    wanted = args.only or discover()
    figures: list[Figure] = []
    failed: list[str] = []
    started = time.monotonic()
    for name in wanted:
        module = importlib.import_module(f"bench.{name}")
        run = getattr(module, "run", None)
        if run is None:
            continue
        print(f"== bench.{name} ({'quick' if args.quick else 'full'})", flush=True)
        t0 = time.monotonic()
        try:
            got = list(run(args.quick))
        except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others' figures
            traceback.print_exc()
            failed.append(name)
            continue
        print(table(got), f"\n({time.monotonic() - t0:.0f} s)\n", flush=True)
        figures.extend(got)
    print(f"## make bench{' --quick' if args.quick else ''} — {utc_now()}, commit {commit()}, "
          f"{time.monotonic() - started:.0f} s\n")
    print(table(figures))
    append_results(args.results, figures, args.quick)
    print(f"\n{len(figures)} figures appended to {args.results}")
    if failed:
        print(f"benchmarks that raised: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
