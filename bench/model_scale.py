"""Models that do not fit one device: does sharding cut each rank's memory and checkpoint writes, and does a save stall
training? For each runner, the same 124M-parameter GPT-2-small-shaped model on CPU (gloo), 1 vs 2 processes.

One launch per (runner, processes): the real trainer (`python -m trainer` / `torchrun ... trainer/train.py`), fp32,
`sharding=auto` (FSDP with 2 processes where the runner has it), 6 steps logged one by one, a checkpoint at step 3
(and the last step). Figures, per runner:
- peak RSS per rank (psutil, the largest rank) with 2 processes / with 1 (target <= 0.65), and beside it (no target)
  the same for peak anonymous RSS (RSS less file-backed pages: memory-mapped safetensors and Arrow pages are page
  cache the kernel can drop, anonymous memory is what the process holds);
- checkpoint bytes each rank wrote and uploaded (its `_ranks/` upload report; for an unsharded checkpoint, rank 0 wrote
  every file) vs total / world size: the worst rank's deviation (target <= 0.10, on the value);
- training time lost to the step-3 save beyond its staging copy, with 2 processes: the two steps after the save minus
  two ordinary steps minus the staging time the runner logs (0 for a runner that saves in the foreground), over one
  ordinary step (target <= 0.10).

`.venv/bin/python -m bench.model_scale [--quick] [--runners meta hf nemo]` (or `make bench`); `--quick` uses a
~0.1M-parameter model (checks the bench runs, not the targets).
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench._trainer_runs import GPT2_SMALL, checkpoint_bytes_by_rank, launch, metrics, save_model, trainer_argv
from bench.core import Figure, table
from trainer.tiny import write_sample_dataset

RUNNERS = ("meta", "hf", "nemo")
TINY_GPT2 = {"n_layer": 2, "n_embd": 64, "n_head": 2, "n_positions": 256}
STEPS, SAVE_AT = 6, 3
STAGED = re.compile(rf"checkpoint step {SAVE_AT} staged in ([0-9.]+)s")


def settings(quick: bool) -> dict[str, Any]:
    return {"max_steps": STEPS, "save_steps": SAVE_AT, "logging_steps": 1, "eval_steps": 0,
            "block_size": 32 if quick else 128, "batch_size": 1, "precision": "fp32", "warmup_steps": 0}


def measure(runner: str, nproc: int, base: Path, model: Path, dataset: Path, quick: bool) -> dict[str, Any]:
    """One launch to its end: per-rank peak RSS, per-rank checkpoint bytes, step durations, staging seconds."""
    runs, run_id = base / f"runs-{runner}-{nproc}", f"{runner}-{nproc}"
    done = launch(trainer_argv(nproc, runner, run_id, runs, dataset, model, settings(quick)),
                  base / f"w-{run_id}", base / f"{run_id}.log")
    rows = {r["step"]: float(r["elapsed_s"]) for r in metrics(runs, run_id)}
    durations = {s: rows[s] - rows[s - 1] for s in range(2, STEPS + 1) if s in rows and s - 1 in rows}
    staged = STAGED.search(done.log)
    result = {"peak_rss": done.peak_rss, "rank_peaks": done.rank_peaks, "wall_s": done.wall_s,
              "peak_anon": done.peak_anon, "rank_anon_peaks": done.rank_anon_peaks,
              "ckpt_bytes": checkpoint_bytes_by_rank(runs, run_id, nproc), "durations": durations,
              "staging_s": float(staged.group(1)) if staged else 0.0}
    shutil.rmtree(runs, ignore_errors=True)
    shutil.rmtree(base / f"w-{run_id}", ignore_errors=True)
    return result


def save_cost(run: dict[str, Any]) -> tuple[float, float]:
    """(seconds the save at SAVE_AT cost beyond staging, one ordinary step's seconds), from the logged steps:
    steps SAVE_AT+1 and +2 run after (and beside) the save; the others before it are ordinary."""
    d = run["durations"]
    ordinary = statistics.median([d[s] for s in range(2, SAVE_AT + 1) if s in d])
    after = d.get(SAVE_AT + 1, 0.0) + d.get(SAVE_AT + 2, 0.0)
    return max(0.0, after - 2 * ordinary - run["staging_s"]), ordinary


def runner_figures(runner: str, one: dict[str, Any], two: dict[str, Any]) -> list[Figure]:
    mb = 2**20
    per_rank = two["ckpt_bytes"]
    share = sum(per_rank) / len(per_rank)
    worst = max(abs(b / share - 1) for b in per_rank) if share else 0.0
    lost, step = save_cost(two)
    return [
        Figure(f"{runner}: peak RSS per rank, 2 procs vs 1", two["peak_rss"] / mb, "MB", one["peak_rss"] / mb,
               target="<= 0.65", note="ranks: " + ", ".join(f"{p / mb:.0f}" for p in two["rank_peaks"]) + " MB"),
        Figure(f"{runner}: peak anonymous RSS per rank, 2 procs vs 1", two["peak_anon"] / mb, "MB",
               one["peak_anon"] / mb, note="RSS less file-backed pages; ranks: "
               + ", ".join(f"{p / mb:.0f}" for p in two["rank_anon_peaks"]) + " MB"),
        Figure(f"{runner}: checkpoint bytes per rank vs total/world, 2 procs", worst, "", target="<= 0.1",
               target_on="value", note="MB by rank: " + ", ".join(f"{b / mb:.0f}" for b in per_rank)
               + f"; 1 proc wrote {sum(one['ckpt_bytes']) / mb:.0f} MB"),
        Figure(f"{runner}: training time lost to a save beyond staging, 2 procs", lost, "s", step,
               target="<= 0.1", note=f"staging {two['staging_s']:.2f}s; one step {step:.2f}s; the 2 after the save "
               + " + ".join(f"{two['durations'].get(s, 0):.2f}" for s in (SAVE_AT + 1, SAVE_AT + 2)) + "s"),
    ]


def figures(quick: bool, runners: list[str] | None = None) -> list[Figure]:
    base = Path(tempfile.mkdtemp(prefix="model-scale-"))
    out: list[Figure] = []
    try:
        model, params = save_model(base / "model", "gpt2", TINY_GPT2 if quick else GPT2_SMALL)
        dataset = write_sample_dataset(base / "train.jsonl", rows=200)
        for runner in runners or list(RUNNERS):
            one = measure(runner, 1, base, model, dataset, quick)
            two = measure(runner, 2, base, model, dataset, quick)
            got = runner_figures(runner, one, two)
            got[0].note += f"; {params / 1e6:.1f}M parameters"
            out.extend(got)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return out


def run(quick: bool) -> list[Figure]:
    return figures(quick)


def main(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a ~0.1M-parameter model (checks the bench runs)")
    parser.add_argument("--runners", nargs="+", choices=RUNNERS, default=list(RUNNERS))
    args = parser.parse_args(argv)
    got = figures(args.quick, args.runners)
    print(table(got))
    print("\n".join(f"- {f.name}: {f.note}" for f in got))
    return got


if __name__ == "__main__":
    main()
