"""What `bench/gpu_check.sh` runs: each runner and a bare loop on one ~1B-parameter Llama-shaped model, one table.

On one NVIDIA GPU (no network, local storage): a Llama 3.2 1B-shaped model (`bench._trainer_runs.LLAMA_1B`, random
weights, the tiny tokenizer of `trainer.tiny`) is saved as safetensors; each runner (`meta`, `hf`, `nemo`) trains it
in bf16 for half the steps and saves, then a second launch resumes from that checkpoint and trains to the end (so
every runner saves and resumes once). Tokens/s is the median of the runs' logged windows (the first window of each
launch, which holds the warm-up, left out); MFU = tokens/s x FLOPs per token / the GPU's peak dense bf16 FLOP/s,
FLOPs per token = 6 x (parameters outside the input embedding) + 12 x layers x hidden x block (attention). The bare
loop is the same model, fp32 weights under bf16 autocast, fused AdamW, random tokens, no data pipeline and no
checkpoints: the ceiling the runners are compared with.

The trainer's data pipeline needs `datasets`, which that machine lacks: `gpu_check.sh --wheels DIR` installs wheels
that travel with the script (`gpu_check.sh --fetch-wheels DIR` downloads them where there is a network). Without
them the runners' rows say "not run" and why, and the bare loop still runs. `boto3` is imported only for s3:// URIs,
so local storage needs none.

`--dry-run`: the same steps on CPU with a tiny Llama (2 layers, hidden 64), 4 steps in fp32; MFU is not computed
(no peak for a CPU). `tests/bench/test_gpu_check.py` runs it so the script cannot rot.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._trainer_runs import LLAMA_1B, launch, metrics, save_model, trainer_argv

RUNNERS = ("meta", "hf", "nemo")
TINY_LLAMA = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "intermediate_size": 128, "max_position_embeddings": 256}
#: Peak dense bf16 tensor FLOP/s by device name (vendor data sheets, SXM parts).
#: Local disk the resumed launch of one runner can hold at once with the 1B model: the first checkpoint in storage and
#: its downloaded copy, the new checkpoint written and its upload (~12 GB each: fp32 weights + AdamW state).
DISK_NEEDED = 50 * 2**30
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12}


@dataclass(frozen=True)
class Plan:
    device: str
    shape: dict[str, Any]
    steps: int
    block_size: int
    batch_size: int
    precision: str
    rows: int


def plan(dry_run: bool, steps: int | None) -> Plan:
    if dry_run:
        return Plan("cpu", TINY_LLAMA, steps or 4, 64, 2, "fp32", 200)
    return Plan("cuda", LLAMA_1B, steps or 50, 1024, 8, "bf16", 4000)


@dataclass
class Row:
    name: str
    tokens_per_s: float | None = None
    mfu: float | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "tokens_per_s": self.tokens_per_s, "mfu": self.mfu, "note": self.note}


def peak_flops(device: str) -> tuple[float | None, str]:
    if device != "cuda":
        return None, "cpu"
    import torch

    name = torch.cuda.get_device_name(0)
    for key, value in PEAK_BF16.items():
        if key in name:
            return value, name
    return None, name


def flops_per_token(model_dir: Path, block_size: int) -> tuple[float, int]:
    """(training FLOPs per token, parameter count) of the saved model, from its config and weights' shapes."""
    from safetensors import safe_open
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    total = embed = 0
    for path in model_dir.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (not a dict)
                numel = 1
                for dim in handle.get_slice(key).get_shape():
                    numel *= dim
                total += numel
                embed += numel if key.endswith("embed_tokens.weight") else 0
    attention = 12 * config.num_hidden_layers * config.hidden_size * block_size
    return 6 * (total - embed) + attention, total


def runner_rows(p: Plan, work: Path, model: Path, dataset: Path, fpt: float, peak: float | None,
                runners: list[str]) -> list[Row]:
    missing = [m for m in ("datasets", "lightning") if importlib.util.find_spec(m) is None]
    if missing:
        why = f"not run: {', '.join(missing)} not installed (gpu_check.sh --wheels DIR carries them)"
        return [Row(name, note=why) for name in runners]
    rows = []
    half = max(1, p.steps // 2)
    log_every = max(1, half // 5)
    threads = 1 if p.device == "cpu" else 8
    for name in runners:
        runs = work / f"runs-{name}"
        settings = {"block_size": p.block_size, "batch_size": p.batch_size, "precision": p.precision,
                    "logging_steps": log_every, "eval_steps": 0, "save_steps": half, "lr": 1e-4,
                    "warmup_steps": 0}
        try:
            first = launch(trainer_argv(1, name, "r", runs, dataset, model, {**settings, "max_steps": half}),
                           work / f"w-{name}-1", work / f"{name}-1.log", threads=threads)
            second = launch(trainer_argv(1, name, "r", runs, dataset, model, {**settings, "max_steps": p.steps},
                                         resume=True), work / f"w-{name}-2", work / f"{name}-2.log", threads=threads)
        except RuntimeError as exc:
            rows.append(Row(name, note=f"failed: {str(exc).splitlines()[0][:160]}"))
            continue
        train = metrics(runs, "r")
        resumed = [r for r in train if r["step"] > half]
        windows = _steady([r for r in train if r["step"] <= half]) + _steady(resumed)
        tps = statistics.median(windows) if windows else None
        resumed_ok = "resum" in second.log.lower() and resumed and train[-1]["step"] == p.steps
        note = (f"{p.steps} steps in 2 launches, resumed at step {half}" if resumed_ok
                else "resume NOT seen in the second launch's log")
        rows.append(Row(name, tps, tps * fpt / peak if tps and peak else None,
                        f"{note}; launches {first.wall_s:.0f}s + {second.wall_s:.0f}s wall"))
        shutil.rmtree(runs, ignore_errors=True)  # a 1B checkpoint is ~12 GB: keep the disk free for the next
    return rows


def _steady(rows: list[dict[str, Any]]) -> list[float]:
    """Tokens/s of a launch's logged windows but its first (model load, warm-up, CUDA init)."""
    return [float(r["tokens_per_s"]) for r in rows[1:] if r.get("tokens_per_s")]


def bare_loop(p: Plan, model_dir: Path, fpt: float, peak: float | None) -> Row:
    """The same model and batch shape, nothing around it: fp32 weights, bf16 autocast, (fused) AdamW."""
    import torch
    from transformers import AutoModelForCausalLM

    device = torch.device(p.device)
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.to(device)  # Any: transformers types `.to` as a decorated method mypy cannot call with a device
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    vocab = int(model.config.vocab_size)
    generator = torch.Generator().manual_seed(0)
    bf16 = p.precision == "bf16"

    def step() -> None:
        ids = torch.randint(0, vocab, (p.batch_size, p.block_size), generator=generator).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    warmup = max(1, p.steps // 10)
    for _ in range(warmup):
        step()
    sync()
    started = time.perf_counter()
    for _ in range(p.steps - warmup):
        step()
    sync()
    tps = (p.steps - warmup) * p.batch_size * p.block_size / (time.perf_counter() - started)
    return Row("bare loop", tps, tps * fpt / peak if peak else None,
               f"{p.steps - warmup} timed steps after {warmup} warm-up; no data pipeline, no checkpoints")


def table(rows: list[Row], header: str) -> str:
    lines = [header, "", "| run | tokens/s | MFU | note |", "| --- | --- | --- | --- |"]
    for r in rows:
        tps = f"{r.tokens_per_s:,.0f}" if r.tokens_per_s else "—"
        mfu = f"{100 * r.mfu:.1f} %" if r.mfu is not None else "—"
        lines.append(f"| {r.name} | {tps} | {mfu} | {r.note} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny model on CPU (what the test suite runs)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per runner (default 50; dry 4)")
    parser.add_argument("--work", type=Path, default=None, help="local folder for models, data and runs")
    parser.add_argument("--runners", nargs="+", choices=RUNNERS, default=list(RUNNERS))
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    p = plan(args.dry_run, args.steps)
    if p.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("gpu_check: no CUDA device (use --dry-run for the CPU path)")
    started = time.monotonic()
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(work).free
    if p.device == "cuda" and free < DISK_NEEDED:
        print(f"gpu_check: warning: {free / 2**30:.0f} GiB free under {work}; a runner's resumed launch holds up "
              f"to ~{DISK_NEEDED / 2**30:.0f} GiB of 1B checkpoints at once (--work picks the folder)", flush=True)
    try:
        from trainer.tiny import write_sample_dataset

        model, params = save_model(work / "model", "llama", p.shape)
        dataset = write_sample_dataset(work / "train.jsonl", rows=p.rows)
        fpt, _ = flops_per_token(model, p.block_size)
        peak, device_name = peak_flops(p.device)
        rows = runner_rows(p, work, model, dataset, fpt, peak, args.runners)
        rows.append(bare_loop(p, model, fpt, peak))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    header = (f"gpu_check: {device_name}, Llama-shaped {params / 1e9:.2f}B parameters, block {p.block_size} x batch "
              f"{p.batch_size}, {p.precision}, {p.steps} steps; peak {peak / 1e12:.0f} TFLOP/s"
              if peak else f"gpu_check: {device_name}, Llama-shaped {params / 1e6:.2f}M parameters, block "
              f"{p.block_size} x batch {p.batch_size}, {p.precision}, {p.steps} steps; no peak FLOP/s known: no MFU")
    elapsed = time.monotonic() - started
    print(table(rows, header) + f"\n\n({elapsed:.0f} s in all)", flush=True)
    result = {"device": device_name, "params": params, "plan": p.__dict__, "elapsed_s": round(elapsed, 1),
              "rows": [r.as_dict() for r in rows]}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
