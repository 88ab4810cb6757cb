"""Launching the real trainer from a benchmark and reading back what the run left: shared by `bench.model_scale`
(CPU, 1 vs 2 processes) and `bench._gpu_check` (one GPU, `bench/gpu_check.sh`).

- `save_model` writes a random-weight model of a given shape (GPT-2 or Llama) beside the tiny BPE tokenizer of
  `trainer.tiny`, as safetensors, so every runner loads it with `from_pretrained` like a hub model (no hub here).
- `launch` runs `python -m trainer` (1 process) or `torchrun ... trainer/train.py` (N processes) to its end and
  samples every rank's RSS with psutil; `peak_rss` is per rank (torchrun's own small process is left out), and
  `peak_anon` the same for anonymous memory alone (RSS less its file-backed and shared pages, psutil's `shared`:
  /proc's RssFile + RssShmem), which leaves out memory-mapped weights and dataset pages the kernel can drop.
- `metrics`, `checkpoint_bytes_by_rank` read `logs/metrics.jsonl` and the checkpoints' manifests (and, for sharded
  checkpoints, each rank's `_ranks/rank-XXXXX.json` upload report) from the local run folder.

Only the standard library, psutil and the trainer are imported at the top: this module runs on the GPU machine too.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TRAIN_PY = ROOT / "trainer" / "train.py"

#: GPT-2 small: 124M parameters with GPT-2's 50257-row embedding (wider than the tiny tokenizer; rows it never uses).
GPT2_SMALL = {"n_layer": 12, "n_embd": 768, "n_head": 12, "n_positions": 1024, "vocab_size": 50257}
#: Llama 3.2 1B's blocks (hidden 2048, 16 layers, GQA 32/8 heads, MLP 8192) with the tiny tokenizer: ~0.98B.
LLAMA_1B = {"hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
            "intermediate_size": 8192, "max_position_embeddings": 2048}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def save_model(out: Path, family: str, shape: dict[str, Any], seed: int = 0) -> tuple[Path, int]:
    """A random-weight causal LM of `family` ("gpt2" | "llama") and `shape` with the tiny tokenizer, saved to
    `out`; returns (out, parameter count). A `vocab_size` in `shape` wider than the tokenizer pads the embedding."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    from trainer.tiny import build_tokenizer, sample_texts

    tokenizer = build_tokenizer(sample_texts(500, seed=seed + 1))
    shape = {**shape, "vocab_size": max(len(tokenizer), int(shape.get("vocab_size", 0)))}
    ids = {"bos_token_id": tokenizer.eos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.eos_token_id}
    torch.manual_seed(seed)
    model: torch.nn.Module
    if family == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(**shape, **ids))
    elif family == "llama":
        model = LlamaForCausalLM(LlamaConfig(**shape, **ids, tie_word_embeddings=False))
    else:
        raise ValueError(f"unknown model family {family!r}")
    params = sum(p.numel() for p in model.parameters())
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    del model
    return out, params


def trainer_argv(nproc: int, framework: str, run_id: str, runs: Path, dataset: Path, model: Path,
                 settings: dict[str, Any], resume: bool = False) -> list[str]:
    args = ["--framework", framework, "--run-id", run_id, "--checkpoint-base-uri", str(runs), "--dataset-uri",
            str(dataset), "--model-id", str(model)]
    for key, value in settings.items():
        args += [f"--{key.replace('_', '-')}", str(value).lower() if isinstance(value, bool) else str(value)]
    if resume:
        args.append("--resume")
    if nproc == 1:
        return [sys.executable, "-m", "trainer", *args]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
            "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(TRAIN_PY), *args]


@dataclass
class Launch:
    """One finished trainer launch: wall seconds, each rank's peak RSS and peak anonymous RSS (bytes, largest rank
    first, each list sorted on its own), the log's text."""

    wall_s: float
    rank_peaks: list[int] = field(default_factory=list)
    log: str = ""
    rank_anon_peaks: list[int] = field(default_factory=list)

    @property
    def peak_rss(self) -> int:
        return max(self.rank_peaks, default=0)

    @property
    def peak_anon(self) -> int:
        return max(self.rank_anon_peaks, default=0)


def launch(argv: Sequence[str], work: Path, log: Path, threads: int = 1, timeout: float = 3600,
           env: dict[str, str] | None = None) -> Launch:
    """Run the trainer to its end (raises `RuntimeError` with the log's tail when it fails), sampling RSS."""
    import psutil

    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               "TRAINER_WORK_DIR": str(work), "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false",
               "PYTHONUNBUFFERED": "1", **(env or {})}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        environ.pop(key, None)
    started = time.monotonic()
    peaks: dict[int, int] = {}
    anon: dict[int, int] = {}
    torchrun = len(argv) > 2 and argv[2] == "torch.distributed.run"
    with log.open("wb") as out:
        proc = subprocess.Popen(list(argv), env=environ, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                start_new_session=True)
        parent = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                ranks = parent.children() if torchrun else [parent]
                for p in ranks:
                    info = p.memory_info()
                    peaks[p.pid] = max(peaks.get(p.pid, 0), info.rss)
                    anon[p.pid] = max(anon.get(p.pid, 0), info.rss - getattr(info, "shared", 0))
            except psutil.Error:
                pass
            if time.monotonic() - started > timeout:
                os.killpg(proc.pid, 9)
            time.sleep(0.05)
    text = log.read_text(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"trainer exited {proc.returncode}: {' '.join(argv)}\n{text[-3000:]}")
    return Launch(round(time.monotonic() - started, 2), sorted(peaks.values(), reverse=True), text,
                  sorted(anon.values(), reverse=True))


def run_prefix(runs: Path, run_id: str) -> Path:
    """The run's folder under the checkpoint base (`<base>/<run_id>/framework=<f>/`, from its `config/run.json`)."""
    found = sorted((runs / run_id).glob("*/config/run.json")) or sorted((runs / run_id).glob("config/run.json"))
    if not found:
        raise FileNotFoundError(f"no config/run.json under {runs / run_id}")
    return found[0].parent.parent


def metrics(runs: Path, run_id: str) -> list[dict[str, Any]]:
    """The run's train rows of `logs/metrics.jsonl` (rank 0's), in step order."""
    path = run_prefix(runs, run_id) / "logs" / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("kind", "train") == "train" and r.get("loss") is not None]


def manifests(runs: Path, run_id: str) -> list[dict[str, Any]]:
    folder = run_prefix(runs, run_id) / "checkpoints"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("step-*.json"))]


def checkpoint_bytes_by_rank(runs: Path, run_id: str, world_size: int) -> list[int]:
    """Bytes each rank wrote for the run's last complete checkpoint: from every rank's upload report when the
    checkpoint is sharded, else every listed file counts for rank 0 (the one that wrote and uploaded it)."""
    last = manifests(runs, run_id)[-1]
    folder = run_prefix(runs, run_id) / "checkpoints"
    reports = sorted((folder / last["name"] / "_ranks").glob("rank-*.json"))
    per_rank = [0] * world_size
    if reports:
        for report in reports:
            data = json.loads(report.read_text())
            per_rank[int(data["rank"])] = sum(int(v) for v in data["files"].values())
    else:
        per_rank[0] = sum(int(f["size"]) for f in last["files"])
    return per_rank
