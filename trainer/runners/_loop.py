"""Pieces the `meta` and `nemo` runners share (both drive their own data): packed token blocks, a resumable
sampler over them, the learning-rate schedule, RNG capture/restore, and the metrics window — everything a resumed
run needs to continue exactly.

Resuming exactly (losses equal to an uninterrupted run's) takes four things in the checkpoint: model and optimizer
state, scheduler state, the data position (`BlockSampler.state_dict()`), and every rank's RNG state (dropout draws
from it). The sampler never touches the global torch RNG: each data epoch's order comes from its own generator
seeded with `seed + epoch`, so the position is two integers and evaluation cannot shift it.

Imported only by the runners (torch and transformers are heavy).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from trainer.context import RunContext
from trainer.data import DatasetError, TokenBlocks, prepare
from trainer.dist import DistInfo
from trainer.runners.common import check_block_size


@dataclass
class Blocks:
    """The packed dataset: memory-mapped blocks of shape [n, block_size] (eval may hold one shorter block)."""

    train: TokenBlocks
    eval: TokenBlocks


def load_data(ctx: RunContext, tokenizer: Any, model_config: Any) -> tuple[Blocks, Any]:
    """The run's blocks and the sampler that hands this rank its micro-batches (raises DatasetError/ConfigError):
    packed blocks and a `BlockSampler`, or with `dataset_streaming` no blocks and a `StreamSampler`."""
    t = ctx.config.training
    check_block_size(t.block_size, model_config)
    if t.dataset_streaming:
        from trainer.data.stream import EmptyBlocks, StreamSampler, block_stream

        none: Any = EmptyBlocks()
        sampler = StreamSampler(block_stream(ctx, tokenizer), t.batch_size, ctx.dist, ctx.logger)
        return Blocks(none, none), sampler
    data = prepare(ctx, tokenizer)
    return Blocks(data.train, data.eval), BlockSampler(len(data.train), t.batch_size, ctx.dist, t.seed)


class BlockSampler:
    """Which train blocks each rank reads, as a resumable position.

    A global micro-batch is `batch_size * world_size` blocks of one epoch's permutation; rank r takes the r-th
    `batch_size` of them. An epoch ends when fewer than a global micro-batch remain (the rest is dropped). The state
    is `(epoch, position)`, position counting blocks of the epoch already handed out, so it survives a change of
    world size.
    """

    def __init__(self, num_blocks: int, batch_size: int, dist: DistInfo, seed: int) -> None:
        self.num_blocks = num_blocks
        self.batch_size = batch_size
        self.rank = dist.rank
        self.global_batch = batch_size * dist.world_size
        if self.global_batch > num_blocks:
            raise DatasetError(f"the dataset packs into {num_blocks} train blocks, fewer than one global batch "
                               f"(batch_size {batch_size} x {dist.world_size} processes); lower batch_size or "
                               "block_size")
        self.seed = seed
        self.epoch = 0
        self.position = 0
        self._order: tuple[int, torch.Tensor] | None = None

    @property
    def batches_per_epoch(self) -> int:
        return self.num_blocks // self.global_batch

    def next_indices(self) -> torch.Tensor:
        """This rank's block indices for the next micro-batch; advances the position."""
        if self.position + self.global_batch > self.num_blocks:
            self.epoch, self.position = self.epoch + 1, 0
        start = self.position + self.rank * self.batch_size
        indices = self._epoch_order()[start:start + self.batch_size]
        self.position += self.global_batch
        return indices

    def batch(self, blocks: TokenBlocks) -> torch.Tensor:
        """The next micro-batch's blocks (`[batch_size, block_size]`)."""
        result: torch.Tensor = blocks[self.next_indices()]
        return result

    def seek(self, micro_batch: int) -> None:
        """Jump to the `micro_batch`-th global micro-batch of the run (0-based)."""
        self.epoch, index = divmod(micro_batch, self.batches_per_epoch)
        self.position = index * self.global_batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position, self.seed = int(state["epoch"]), int(state["position"]), int(state["seed"])

    def _epoch_order(self) -> torch.Tensor:
        if self._order is None or self._order[0] != self.epoch:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            self._order = (self.epoch, torch.randperm(self.num_blocks, generator=generator))
        return self._order[1]


def causal_lm_batch(ids: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
    """Inputs and labels for a causal LM from a micro-batch of blocks (the model shifts the labels itself)."""
    ids = ids.to(device, non_blocking=True)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def eval_indices(num_blocks: int, dist: DistInfo, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's share of the eval blocks (round-robin) as (indices, weights) batches.

    Every rank gets the same number of rows (collectives inside the forward need that): the last round is padded
    by wrapping around, with weight 0, so each block counts exactly once over all ranks.
    """
    per_rank = -(-num_blocks // dist.world_size)
    slots = torch.arange(dist.rank, per_rank * dist.world_size, dist.world_size)
    weights = (slots < num_blocks).to(torch.float64)
    return list(zip((slots % max(1, num_blocks)).split(batch_size), weights.split(batch_size), strict=True))


def total_steps(max_steps: int, num_epochs: float, batches_per_epoch: int, accumulation: int) -> int:
    """`max_steps` when > 0, else the optimizer steps in `num_epochs` epochs (at least 1)."""
    if max_steps > 0:
        return max_steps
    return max(1, int(num_epochs * batches_per_epoch) // accumulation)


def linear_schedule(warmup_steps: int, total: int) -> Any:
    """The HF default: linear warmup to the peak lr, then linear decay to 0 at `total` (a LambdaLR factor)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return float(step + 1) / float(max(1, warmup_steps))
        return max(0.0, float(total - step) / float(max(1, total - warmup_steps)))

    return factor


def decay_groups(model: torch.nn.Module, weight_decay: float,
                 matrices: set[str] | None = None) -> list[dict[str, Any]]:
    """Weight decay on matrices only (not biases, norms): nanoGPT's split.

    `matrices`: the names of the matrices, taken before wrapping, for a model whose parameters no longer show their
    shape (torch FSDP1 with `use_orig_params` flattens each to its 1-D local shard, names prefixed by its wrappers).
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if matrices is None:
        is_matrix = [p.dim() >= 2 for _, p in named]
    else:
        is_matrix = [n.replace("_fsdp_wrapped_module.", "") in matrices for n, _ in named]
    return [{"params": [p for (_, p), m in zip(named, is_matrix, strict=True) if m], "weight_decay": weight_decay},
            {"params": [p for (_, p), m in zip(named, is_matrix, strict=True) if not m], "weight_decay": 0.0}]


# -- RNG --------------------------------------------------------------------------------------------------------

def rng_state() -> dict[str, Any]:
    """This process's RNG state: torch CPU, CUDA (all devices) and Python's `random`."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_python_state(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_python_state(value: Any) -> Any:
    """`random.setstate` wants tuples; a checkpoint may hand back lists."""
    if isinstance(value, list | tuple):
        return tuple(_as_python_state(v) for v in value)
    return value


def gather_rng_states(dist: DistInfo) -> list[dict[str, Any]]:
    """Every rank's RNG state, in rank order (a collective: call on all ranks)."""
    mine = rng_state()
    if not dist.distributed:
        return [mine]
    import torch.distributed as torch_dist

    states: list[Any] = [None] * dist.world_size
    torch_dist.all_gather_object(states, mine)
    return states


def restore_rng_states(states: Sequence[dict[str, Any]], dist: DistInfo, seed: int, log: Any) -> None:
    """Restore this rank's saved RNG state; with a different world size, reseed instead (logged)."""
    if len(states) == dist.world_size:
        set_rng_state(states[dist.rank])
        return
    log.warning("checkpoint holds RNG states of %d ranks, this run has %d: reseeding (dropout differs)",
                len(states), dist.world_size)
    torch.manual_seed(seed + dist.rank)


# -- metrics ----------------------------------------------------------------------------------------------------

@dataclass
class LossWindow:
    """Train losses since the last logged step. Saved in checkpoints, so a resumed run logs the same averages."""

    loss_sum: float = 0.0
    steps: int = 0

    def add(self, loss: float) -> None:
        self.loss_sum += loss
        self.steps += 1

    def take(self) -> float | None:
        mean = self.loss_sum / self.steps if self.steps else None
        self.loss_sum, self.steps = 0.0, 0
        return mean

    def state_dict(self) -> dict[str, float]:
        return {"loss_sum": self.loss_sum, "steps": self.steps}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.loss_sum, self.steps = float(state["loss_sum"]), int(state["steps"])
