"""`python -m reliability [--quick] [--only NAME …] [--write docs/RELIABILITY.md]` — see reliability/__init__.py."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile
import traceback
from datetime import UTC, datetime
from pathlib import Path

from reliability.table import Row, render

#: In the order they run. Each module's `run(workdir, quick)` returns its row.
SCENARIOS = ["cluster_faults", "workers_killed", "second_beat", "objects_changed", "api_restarts",
             "redis_restarts", "trainer_killed", "storage_faults", "fuzz", "soak"]
FULL_ONLY = {"soak"}
#: Left out of `--quick` (and so of `make test`): real trainer processes cost about a minute each on the shared
#: 2-core machine, several minutes per scenario even at the quick size. `--quick --only NAME` runs them small.
NOT_QUICK = FULL_ONLY | {"trainer_killed", "storage_faults"}


def run_one(name: str, workdir: Path, quick: bool) -> Row:
    module = importlib.import_module(f"reliability.scenarios.{name}")
    try:
        return module.run(workdir, quick)  # type: ignore[no-any-return]
    except Exception as exc:  # noqa: BLE001 - a scenario that crashed is a row that does not hold
        traceback.print_exc()
        return Row(name.replace("_", " "), "—", problems=[f"the scenario crashed: {exc!r}"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reliability", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller loads, a few minutes in all (make test)")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, help="run these scenarios only")
    parser.add_argument("--soak-s", type=float, help="length of the soak in seconds (default 3600)")
    parser.add_argument("--trainer-runs", type=int, help="runs of each trainer scenario (default 20 and 10; quick 2)")
    parser.add_argument("--write", type=Path, help="write the table into this Markdown file")
    parser.add_argument("--workdir", type=Path, help="keep the logs here (default: a temporary directory)")
    args = parser.parse_args(argv)
    chosen = args.only or [s for s in SCENARIOS if not (args.quick and s in NOT_QUICK)]
    if args.soak_s:
        from reliability.scenarios import soak

        soak.DURATION_S = args.soak_s
    if args.trainer_runs:
        from reliability import trainer_runs

        trainer_runs.RUNS = args.trainer_runs
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="reliability-"))
    rows = []
    for name in chosen:
        print(f"== {name} …", file=sys.stderr, flush=True)
        row = run_one(name, workdir, args.quick)
        print(f"== {name}: {'holds' if row.holds else 'DOES NOT HOLD'} ({row.elapsed_s:.0f} s)", file=sys.stderr,
              flush=True)
        for problem in row.problems[:10]:  # now, not only in the table at the end of a run that may last an hour
            print(f"   VIOLATED: {problem}", file=sys.stderr, flush=True)
        rows.append(row)
    table = render(rows)
    print(table)
    print(f"logs: {workdir}", file=sys.stderr)
    if args.write:
        write_doc(args.write, table, quick=args.quick)
    return 0 if all(r.holds for r in rows) else 1


def write_doc(path: Path, table: str, *, quick: bool) -> None:
    """Replace the generated block of `path` (between the markers) with this run's table, date and commit."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = " (quick mode)" if quick else ""
    block = (f"<!-- reliability:begin -->\nRun of {stamp} at commit `{commit or 'unknown'}`{mode}, on this "
             f"project's 2-core machine:\n\n{table}<!-- reliability:end -->")
    text = path.read_text() if path.exists() else "<!-- reliability:begin -->\n<!-- reliability:end -->\n"
    head, _, rest = text.partition("<!-- reliability:begin -->")
    _, _, tail = rest.partition("<!-- reliability:end -->")
    path.write_text(head + block + tail)


if __name__ == "__main__":
    sys.exit(main())
