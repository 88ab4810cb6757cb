"""Training data at scale: memory and time to the first step must not grow with the dataset, nor with the ranks.

One run measures, with the real trainer (`python -m trainer` / `torchrun ... trainer/train.py`, `meta` runner, the
tiny model, one step):
- peak RSS and peak anonymous RSS (RssAnon) of the largest rank and time to the end of step 1 for a generated
  dataset 1x and 20x (ratio <= 1.2, judged on RssAnon: RSS also counts the page cache of the memory-mapped Arrow
  files a process touched, shared by the node's ranks and evictable; both are reported);
- 2 processes on one node vs 1 on the 20x data, cold caches (ratio <= 1.3), and how many ranks tokenized (1);
- a restart on the same work dir and 20x data vs the cold start (ratio <= 0.3), the logs saying the cold run
  tokenized and the restart reused the cache (asserted);
- the pipeline's tokenization throughput / the tokenizer's own batched call on the same texts (>= 0.8);
- streaming mode (`dataset_streaming`, 2 processes): peak RssAnon (and RSS) per rank, 20x data / 1x (<= 1.2).

`.venv/bin/python -m bench.data_scale [--rows 20000] [--scale 20] [--quick]`; `main(argv)` returns the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.core import Figure
from devstack import free_port
from trainer.tiny import build_tiny_model, write_sample_dataset

ROOT = Path(__file__).resolve().parents[1]
TRAINING = ["--max-steps", "1", "--save-steps", "1000", "--logging-steps", "1", "--eval-steps", "0",
            "--block-size", "128", "--batch-size", "4"]


def launch(argv: list[str], work: Path, log: Path) -> dict[str, Any]:
    """Run the trainer to the end of step 1; wall seconds and, over its processes (each rank, and any worker a rank
    forks), the peak RSS and the peak anonymous RSS (RssAnon) of the largest, polled every 50 ms."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRAINER_WORK_DIR": str(work), "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "true"}
    started = time.monotonic()
    peak = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        parent = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                for p in [parent, *parent.children(recursive=True)]:
                    if "python" in p.name().lower() or "torchrun" in p.name().lower():
                        for key, kib in rss_kib(p.pid).items():
                            peak[key] = max(peak[key], kib)
            except (psutil.Error, OSError):
                pass
            time.sleep(0.05)
    wall = time.monotonic() - started
    text = log.read_text(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"trainer exited {proc.returncode}: {text[-2000:]}")
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(peak["VmRSS"] / 2**10, 1),
            "peak_anon_mb": round(peak["RssAnon"] / 2**10, 1), "peak_file_mb": round(peak["RssFile"] / 2**10, 1),
            "tokenized": text.count("data: tokenizing"), "cache_hit": "skipping tokenization" in text}


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS and its anonymous and file-backed parts (KiB) from /proc/<pid>/status: file-backed pages are the page
    cache of mapped files (the Arrow cache, libraries), shared by the node's processes and evictable."""
    out = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0])
    return out


def trainer_argv(nproc: int, dataset: Path, model: Path, runs: Path, run_id: str, stream: bool = False) -> list[str]:
    args = ["--framework", "meta", "--run-id", run_id, "--checkpoint-base-uri", str(runs), "--dataset-uri",
            str(dataset), "--model-id", str(model), *TRAINING, *(["--dataset-streaming"] if stream else [])]
    if nproc == 1:
        return [sys.executable, "-m", "trainer", *args]
    torchrun = str(Path(sys.executable).parent / "torchrun")
    return [torchrun, f"--nproc_per_node={nproc}", "--nnodes=1", "--master_addr=127.0.0.1",
            f"--master_port={free_port()}", str(ROOT / "trainer" / "train.py"), *args]


def tokenizer_ratio(dataset: Path, model: Path, work: Path) -> dict[str, float]:
    """Pipeline build (load, tokenize, pack, write) vs `tokenizer(texts)` on the same texts, same process."""
    from transformers import AutoTokenizer

    from trainer.data.build import BuildSpec, build

    tokenizer = AutoTokenizer.from_pretrained(model)
    texts = [json.loads(line)["text"] for line in dataset.read_text().splitlines()]
    started = time.monotonic()
    for i in range(0, len(texts), 1000):
        tokenizer(texts[i:i + 1000], add_special_tokens=False, verbose=False)
    direct = time.monotonic() - started
    spec = BuildSpec("text", 128, 0.1, 0, tokenizer.eos_token_id)
    started = time.monotonic()
    build([(str(dataset), dataset)], spec, tokenizer, work / "ratio-cache", logging.getLogger("bench"))
    pipeline = time.monotonic() - started
    return {"tokenizer_s": round(direct, 2), "pipeline_s": round(pipeline, 2),
            "throughput_ratio": round(direct / pipeline, 2)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows of the 1x dataset")
    parser.add_argument("--scale", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (checks the bench runs, not the targets)")
    args = parser.parse_args(argv)
    rows = 200 if args.quick else args.rows
    base = Path(tempfile.mkdtemp(prefix="data-scale-"))
    sizes: dict[str, float] = {}
    try:
        model = build_tiny_model(base / "model")
        small = write_sample_dataset(base / "small.jsonl", rows=rows)
        large = write_sample_dataset(base / "large.jsonl", rows=rows * args.scale)
        sizes = {"1x": round(small.stat().st_size / 2**20, 2), "20x": round(large.stat().st_size / 2**20, 2)}
        runs = base / "runs"
        one_small = launch(trainer_argv(1, small, model, runs, "s1"), base / "w-small", base / "s1.log")
        one_large = launch(trainer_argv(1, large, model, runs, "l1"), base / "w-large", base / "l1.log")
        warm = launch(trainer_argv(1, large, model, runs, "l1w"), base / "w-large", base / "l1w.log")
        # like with like: the same 20x data and work dir; the cold run tokenized, the warm one reused its cache
        if one_large["tokenized"] != 1 or one_large["cache_hit"] or warm["tokenized"] or not warm["cache_hit"]:
            raise RuntimeError(f"warm/cold runs are not a cold build and a cache hit: {one_large}, {warm}")
        two_large = launch(trainer_argv(2, large, model, runs, "l2"), base / "w-two", base / "l2.log")
        stream_small = launch(trainer_argv(2, small, model, runs, "s2s", stream=True), base / "w-ss", base / "ss.log")
        stream_large = launch(trainer_argv(2, large, model, runs, "l2s", stream=True), base / "w-ls", base / "ls.log")
        ratio = tokenizer_ratio(large, model, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    figures = {
        "data_mb": sizes,
        "runs": {"1x": one_small, "20x": one_large, "20x_warm": warm, "20x_2proc": two_large,
                 "1x_stream": stream_small, "20x_stream": stream_large},
        "rss_ratio_20x_vs_1x": round(one_large["peak_rss_mb"] / one_small["peak_rss_mb"], 2),
        "anon_ratio_20x_vs_1x": round(one_large["peak_anon_mb"] / one_small["peak_anon_mb"], 2),
        "time_ratio_2proc_vs_1": round(two_large["wall_s"] / one_large["wall_s"], 2),
        "ranks_tokenized_2proc": two_large["tokenized"],
        "time_ratio_warm_vs_cold": round(warm["wall_s"] / one_large["wall_s"], 2),
        "stream_rss_ratio_20x_vs_1x": round(stream_large["peak_rss_mb"] / stream_small["peak_rss_mb"], 2),
        "stream_anon_ratio_20x_vs_1x": round(stream_large["peak_anon_mb"] / stream_small["peak_anon_mb"], 2),
        **ratio,
    }
    print_table(figures, rows, args.scale)
    return figures


def as_figures(f: dict[str, Any]) -> list[Figure]:
    """The ratios as `make bench` figures (one JSON line each in its results file)."""
    runs = f["runs"]
    return [
        Figure("data: peak RssAnon per rank, 20x vs 1x data", runs["20x"]["peak_anon_mb"], "MB",
               runs["1x"]["peak_anon_mb"], target="<= 1.2", note="the target's figure: anonymous memory"),
        Figure("data: peak RSS per rank, 20x vs 1x data", runs["20x"]["peak_rss_mb"], "MB", runs["1x"]["peak_rss_mb"],
               note="includes the memory-mapped cache's page-cache pages"),
        Figure("data: time to step 1, 2 procs vs 1 (20x)", runs["20x_2proc"]["wall_s"], "s", runs["20x"]["wall_s"],
               target="<= 1.3"),
        Figure("data: ranks that tokenized, 2 procs", f["ranks_tokenized_2proc"], "ranks", target="<= 1",
               target_on="value"),
        Figure("data: time to step 1, warm restart vs cold (20x)", runs["20x_warm"]["wall_s"], "s",
               runs["20x"]["wall_s"], target="<= 0.3", note="same data and work dir; the warm run's cache hit checked"),
        Figure("data: tokenization throughput, pipeline vs tokenizer", f["throughput_ratio"], "", target=">= 0.8",
               target_on="value", note=f"tokenizer {f['tokenizer_s']} s, pipeline {f['pipeline_s']} s"),
        Figure("data: streaming peak RssAnon per rank, 20x vs 1x (2 procs)", runs["20x_stream"]["peak_anon_mb"], "MB",
               runs["1x_stream"]["peak_anon_mb"], target="<= 1.2"),
    ]


def run(quick: bool) -> list[Figure]:
    """`make bench`'s entry: the default sizes (20,000 vs 400,000 rows), or the tiny ones with `quick`."""
    return as_figures(main(["--quick"] if quick else []))


def print_table(f: dict[str, Any], rows: int, scale: int) -> None:
    print(f"| run ({rows} rows = 1x) | processes | peak RSS per rank (MB) | peak RssAnon per rank (MB) "
          "| peak RssFile (MB) | wall to end of step 1 (s) | tokenized |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, procs in (("1x", 1), ("20x", 1), ("20x_warm", 1), ("20x_2proc", 2), ("1x_stream", 2),
                        ("20x_stream", 2)):
        r = f["runs"][name]
        label = name.replace("20x", f"{scale}x")
        print(f"| {label} | {procs} | {r['peak_rss_mb']} | {r['peak_anon_mb']} | {r['peak_file_mb']} | {r['wall_s']} "
              f"| {r['tokenized']} rank(s){' (cache hit)' if r['cache_hit'] else ''} |")
    print()
    print("| ratio | measured | target |")
    print("| --- | --- | --- |")
    print(f"| RssAnon {scale}x / 1x (the target's figure) | {f['anon_ratio_20x_vs_1x']} | <= 1.2 |")
    print(f"| RSS {scale}x / 1x (incl. mapped cache pages) | {f['rss_ratio_20x_vs_1x']} | (<= 1.2) |")
    print(f"| time to step 1, 2 procs / 1 | {f['time_ratio_2proc_vs_1']} ({f['ranks_tokenized_2proc']} tokenized) "
          "| <= 1.3, 1 rank |")
    print(f"| time to step 1, warm restart / cold ({scale}x, same work dir) | {f['time_ratio_warm_vs_cold']} "
          "| <= 0.3 |")
    print(f"| tokenizer throughput, pipeline / tokenizer | {f['throughput_ratio']} | >= 0.8 |")
    print(f"| streaming: RssAnon per rank {scale}x / 1x (2 procs) | {f['stream_anon_ratio_20x_vs_1x']} | <= 1.2 |")
    print(f"| streaming: RSS per rank {scale}x / 1x (2 procs) | {f['stream_rss_ratio_20x_vs_1x']} | (<= 1.2) |")


if __name__ == "__main__":
    main()
