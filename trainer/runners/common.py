"""What every runner needs, whatever its framework: tokenizing texts in batches, the model's position limit, the
evaluation cadence, tokens per optimizer step and its throughput meter, a sum over ranks, and the one mapping from
the request's `precision` to what the run computes in.

Light on purpose: torch is imported only inside the functions that need it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from trainer.config import ConfigError, TrainingParams
from trainer.dist import DistInfo


def encode_all(tokenizer: Any, texts: Sequence[str], batch: int = 1000) -> Iterator[list[int]]:
    """Token ids per text, tokenized in batches (the fast tokenizer parallelizes within a batch)."""
    for start in range(0, len(texts), batch):
        yield from tokenizer(list(texts[start:start + batch]), add_special_tokens=False, verbose=False)["input_ids"]


def max_positions(model_config: Any) -> int | None:
    """The longest sequence the model takes (GPT-2 calls it `n_positions`), or None when it does not say."""
    return getattr(model_config, "max_position_embeddings", None) or getattr(model_config, "n_positions", None)


def check_block_size(block_size: int, model_config: Any) -> None:
    limit = max_positions(model_config)
    if limit and block_size > limit:
        raise ConfigError(f"block_size {block_size} exceeds the model's {limit} positions")


def eval_every(t: TrainingParams) -> int:
    """Steps between evaluations: `eval_steps`, or `save_steps` when unset; 0 disables evaluation."""
    return t.save_steps if t.eval_steps is None else t.eval_steps


def tokens_per_step(t: TrainingParams, dist: DistInfo) -> int:
    """Tokens one optimizer step consumes over all ranks."""
    return t.batch_size * t.gradient_accumulation * dist.world_size * t.block_size


def all_ranks_sum(dist: DistInfo, values: list[float]) -> list[float]:
    """Element-wise sum of `values` over every rank (a collective: call on all ranks), in float64."""
    if not dist.distributed:
        return values
    import torch
    import torch.distributed as torch_dist

    tensor = torch.tensor(values, dtype=torch.float64)
    torch_dist.all_reduce(tensor)
    return [float(v) for v in tensor]


def resolve_precision(precision: str, use_cuda: bool, fp16: bool = True) -> str:
    """`fp32`, `bf16` or `fp16` for the request's `precision`.

    `auto`: bf16 on a GPU that has it (else fp16 where the runner supports it, else fp32), fp32 on CPU. fp16 needs a
    GPU; a runner without a loss scaler passes `fp16=False` and refuses it.
    """
    if precision == "fp16" and not fp16:
        raise ConfigError("precision=fp16 is not supported by this runner (use bf16 or fp32)")
    if precision == "fp16" and not use_cuda:
        raise ConfigError("precision=fp16 needs a GPU (use fp32 or bf16 on CPU)")
    if precision != "auto":
        return precision
    if not use_cuda:
        return "fp32"
    import torch

    if torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp16" if fp16 else "fp32"


class Throughput:
    """Tokens/s between two logged steps of this attempt (wall clock)."""

    def __init__(self, tokens_per_step: int, step: int) -> None:
        self.tokens_per_step = tokens_per_step
        self.first = self.last = (step, time.monotonic())

    def restart(self, step: int) -> None:
        """Measure from `step` now (a resumed run's first step)."""
        self.first = self.last = (step, time.monotonic())

    def tokens_per_s(self, step: int) -> float | None:
        now = time.monotonic()
        (prev_step, prev_time), self.last = self.last, (step, now)
        if step <= prev_step or now <= prev_time:
            return None
        return round((step - prev_step) * self.tokens_per_step / (now - prev_time), 1)

    def summary(self, step: int) -> tuple[float, float]:
        """(steps/s, seconds) over this attempt."""
        elapsed = time.monotonic() - self.first[1]
        steps = step - self.first[0]
        return (round(steps / elapsed, 3) if elapsed > 0 else 0.0), round(elapsed, 3)
