"""Runner overhead: the `meta` runner against a bare PyTorch loop, the `hf` runner against a bare `Trainer`.

Same tiny model (`trainer.tiny`), batch 4 × 128 tokens, the same number of steps, one process each,
`OMP_NUM_THREADS=1`. The figure is seconds per step in steady state: from the end of step WARMUP to the end of the
last step — for the runners from `elapsed_s` of their `logs/metrics.jsonl` (logged every step), for the baselines
(`bench/_bare_loop.py`) from their own clock over the same window. Start-up, data preparation and the final
checkpoint are outside the window. The runner and its baseline run one after the other, three times, alternating; the
best of each is kept. Target ≤ 1.05.

Run: `.venv/bin/python -m bench.runner_bench [--steps 200] [--warmup 20]`, or through `make bench`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.core import ROOT, Figure, table
from trainer.tiny import build_tiny_model, write_sample_dataset

BASELINE = {"meta": "loop", "hf": "trainer"}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def runner_step_s(framework: str, model: Path, dataset: Path, work: Path, steps: int, warmup: int) -> float:
    runs = work / "runs"
    argv = [sys.executable, "-m", "trainer", "--framework", framework, "--run-id", f"bench-{framework}",
            "--checkpoint-base-uri", str(runs), "--dataset-uri", str(dataset), "--model-id", str(model),
            "--max-steps", str(steps), "--save-steps", str(10 * steps), "--logging-steps", "1", "--eval-steps", "0",
            "--block-size", "128", "--batch-size", "4"]
    env = {**_env(), "TRAINER_WORK_DIR": str(work / "work")}
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{framework} runner exited {done.returncode}: {done.stdout[-1500:]}{done.stderr[-1500:]}")
    [metrics] = runs.rglob("metrics.jsonl")
    elapsed = {}
    for line in metrics.read_text().splitlines():
        row = json.loads(line)
        if row.get("loss") is not None:
            elapsed[int(row["step"])] = float(row["elapsed_s"])
    return (elapsed[steps] - elapsed[warmup]) / (steps - warmup)


def bare_step_s(kind: str, model: Path, work: Path, steps: int, warmup: int) -> float:
    argv = [sys.executable, "-m", "bench._bare_loop", kind, str(model), str(steps), str(warmup), str(work / "bare")]
    done = subprocess.run(argv, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"bare {kind} exited {done.returncode}: {done.stderr[-2000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["step_s"])


def figures(steps: int, warmup: int, repeats: int = 2, frameworks: tuple[str, ...] = ("meta", "hf")) -> list[Figure]:
    out = []
    with tempfile.TemporaryDirectory(prefix="tb-bench-runner-") as tmp:
        root = Path(tmp)
        model = build_tiny_model(root / "model")
        dataset = write_sample_dataset(root / "data.jsonl", rows=max(400, steps * 8))
        for framework in frameworks:
            ours, bare = [], []
            for i in range(repeats):
                ours.append(runner_step_s(framework, model, dataset, root / f"{framework}-{i}", steps, warmup))
                bare.append(bare_step_s(BASELINE[framework], model, root / f"bare-{framework}-{i}", steps, warmup))
            base = "a bare 30-line PyTorch loop" if framework == "meta" else "a bare transformers.Trainer"
            out.append(Figure(f"{framework} runner: s/step (steps {warmup}-{steps})", min(ours), "s", min(bare), None,
                              "<= 1.05", note=f"baseline: {base}, same model and batch; best of {repeats}"))
    return out


def run(quick: bool) -> list[Figure]:
    return figures(12, 4, repeats=1) if quick else figures(200, 20, repeats=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(table(figures(args.steps, args.warmup, args.repeats)))


if __name__ == "__main__":
    main()
