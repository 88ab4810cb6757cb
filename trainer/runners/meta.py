"""The `meta` runner: a plain PyTorch training loop, FSDP when `world_size > 1`, exact resume.

Read it top to bottom like nanoGPT's: build → (resume) → for each step: accumulate, clip, step, schedule; log every
`logging_steps`, evaluate every `eval_steps`, checkpoint every `save_steps` and at the end.

- Multi-process (torchrun): FSDP2 `fully_shard` on every transformer block and the root, over gloo on CPU or NCCL
  on GPU (the process group comes from the run context).
- Checkpoints: one `checkpoints/step-XXXXXX.pt` per save — a full (unsharded) state dict gathered on every rank,
  written by rank 0 — holding model, optimizer, scheduler, step, the sampler's data position, the metrics window and
  every rank's RNG state. Uploaded in the background by the run's `CheckpointManager`, manifest last.
- Resume: every rank loads the node's downloaded `.pt` and shards it locally (no broadcast), so a resumed run's
  losses equal an uninterrupted run's bitwise on CPU under the same thread settings.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainer.context import RunContext
from trainer.runners._loop import (
    Blocks,
    BlockSampler,
    LossWindow,
    causal_lm_batch,
    decay_groups,
    eval_indices,
    gather_rng_states,
    linear_schedule,
    load_blocks,
    restore_rng_states,
    total_steps,
)
from trainer.runners.common import Throughput, all_ranks_sum, eval_every, resolve_precision, tokens_per_step

FORMAT = "meta-full-state-dict-v1"


@dataclass
class Loop:
    """Everything the training loop mutates; `checkpoint_state()` is what a checkpoint holds besides RNG."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sampler: BlockSampler
    blocks: Blocks
    device: torch.device
    total: int
    autocast: torch.dtype | None
    step: int = 0
    window: LossWindow = field(default_factory=LossWindow)
    last_loss: float | None = None


def run(ctx: RunContext) -> None:
    """Train `ctx.model_path` with the plain loop (see the module docstring)."""
    loop = build(ctx)
    if ctx.resume is not None:
        load_checkpoint(ctx, loop, ctx.resume.path)
    train(ctx, loop)


def build(ctx: RunContext) -> Loop:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t = ctx.config.training
    device = pick_device(ctx)
    autocast = autocast_dtype(t.precision, device.type == "cuda")
    tokenizer = AutoTokenizer.from_pretrained(ctx.model_path)
    torch.manual_seed(t.seed + ctx.dist.rank)  # dropout: reproducible, and different masks on each rank
    loaded: torch.nn.Module = AutoModelForCausalLM.from_pretrained(ctx.model_path, dtype=torch.float32)
    blocks = load_blocks(ctx, tokenizer, getattr(loaded, "config", None))
    sampler = BlockSampler(len(blocks.train), t.batch_size, ctx.dist, t.seed)
    total = total_steps(t.max_steps, t.num_epochs, sampler.batches_per_epoch, t.gradient_accumulation)
    # Shard before moving: with a CUDA mesh FSDP2 moves one block at a time, never the whole model onto one GPU.
    model = shard(loaded, ctx, device).to(device)
    model.train()  # transformers 5 loads in eval mode
    optimizer = torch.optim.AdamW(decay_groups(model, t.weight_decay), lr=t.lr, foreach=False)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(t.warmup_steps, total))
    ctx.logger.info("meta: %d train blocks, %d eval blocks of %d tokens, %d steps (%d micro-batches/epoch), %s%s",
                    len(blocks.train), len(blocks.eval), t.block_size, total, sampler.batches_per_epoch,
                    device, f", FSDP over {ctx.dist.world_size} processes" if ctx.dist.distributed else "")
    return Loop(model, optimizer, scheduler, sampler, blocks, device, total, autocast)


def autocast_dtype(precision: str, use_cuda: bool) -> torch.dtype | None:
    """The autocast dtype for `precision` (None = fp32). fp16 needs a loss scaler this loop does not carry."""
    return torch.bfloat16 if resolve_precision(precision, use_cuda, fp16=False) == "bf16" else None


def pick_device(ctx: RunContext) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", ctx.dist.local_rank)
    return torch.device("cpu")


def shard(model: torch.nn.Module, ctx: RunContext, device: torch.device) -> torch.nn.Module:
    """FSDP2 (`fully_shard`) on each transformer block, then the root, when there is more than one process."""
    if not ctx.dist.distributed:
        return model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (ctx.dist.world_size,))
    block_types = set(getattr(model, "_no_split_modules", None) or [])
    blocks = [m for m in model.modules() if type(m).__name__ in block_types]
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    ctx.logger.info("meta: FSDP2 sharded %d blocks (%s) + root over %s", len(blocks),
                    ",".join(sorted(block_types)) or "none", device.type)
    return model


def train(ctx: RunContext, loop: Loop) -> None:
    t = ctx.config.training
    meter = Throughput(tokens_per_step(t, ctx.dist), loop.step)
    every = eval_every(t)
    ctx.reporter.progress(loop.step, loop.total, loop.last_loss)
    ctx.logger.info("meta: training steps %d..%d", loop.step + 1, loop.total)
    while loop.step < loop.total:
        lr = float(loop.scheduler.get_last_lr()[0])
        loss, grad_norm = train_step(loop, t.gradient_accumulation, t.max_grad_norm)
        loop.step += 1
        loop.window.add(loss)
        step = loop.step
        if step % t.logging_steps == 0 or step == loop.total:
            log_train(ctx, loop, lr, grad_norm, meter)
        ctx.reporter.progress(step, loop.total, loop.last_loss)
        if every > 0 and len(loop.blocks.eval) and (step % every == 0 or step == loop.total):
            log_eval(ctx, loop, t.batch_size)
        if step % t.save_steps == 0 or step == loop.total:
            save_checkpoint(ctx, loop)
    steps_per_s, runtime = meter.summary(loop.step)
    ctx.reporter.metrics(step=loop.step, loss=loop.last_loss, lr=None, tokens_per_s=None, kind="summary",
                         steps_per_s=steps_per_s, train_runtime=runtime)
    ctx.logger.info("meta: done at step %d: %.2f steps/s over %.1fs", loop.step, steps_per_s, runtime)


def train_step(loop: Loop, accumulation: int, max_grad_norm: float) -> tuple[float, torch.Tensor | None]:
    """One optimizer step over `accumulation` micro-batches; returns (this rank's mean loss, grad norm)."""
    total = torch.zeros((), dtype=torch.float64)
    for _ in range(accumulation):
        batch = causal_lm_batch(loop.blocks.train, loop.sampler.next_indices(), loop.device)
        with torch.autocast(loop.device.type, dtype=loop.autocast or torch.float32, enabled=loop.autocast is not None):
            loss = loop.model(**batch).loss / accumulation
        loss.backward()
        total += loss.detach().to("cpu", torch.float64)
    norm = None
    if max_grad_norm > 0:
        norm = torch.nn.utils.clip_grad_norm_(loop.model.parameters(), max_grad_norm)
    loop.optimizer.step()
    loop.scheduler.step()
    loop.optimizer.zero_grad(set_to_none=True)
    return float(total), norm


def log_train(ctx: RunContext, loop: Loop, lr: float, grad_norm: torch.Tensor | None, meter: Throughput) -> None:
    """Mean train loss over ranks and the steps since the last log (a collective on every rank)."""
    window = all_ranks_sum(ctx.dist, [loop.window.loss_sum, float(loop.window.steps)])
    loop.window.take()
    loop.last_loss = window[0] / window[1] if window[1] else None
    norm = float(full_tensor(grad_norm)) if grad_norm is not None else None
    epoch = loop.sampler.epoch + loop.sampler.position / max(1, loop.sampler.num_blocks)
    ctx.reporter.metrics(step=loop.step, loss=loop.last_loss, lr=lr, tokens_per_s=meter.tokens_per_s(loop.step),
                         grad_norm=norm, epoch=round(epoch, 4), kind="train")


def log_eval(ctx: RunContext, loop: Loop, batch_size: int) -> None:
    """Mean eval loss over every eval block (each rank its share; FSDP forwards are collectives, so every rank runs
    the same number of batches, padding with weight 0)."""
    loss_sum, count = 0.0, 0.0
    loop.model.eval()
    with torch.no_grad():
        for indices, weights in eval_indices(len(loop.blocks.eval), ctx.dist, batch_size):
            ids = loop.blocks.eval[indices].to(loop.device)
            loss_sum += float((per_block_loss(loop.model, ids).double().cpu() * weights).sum())
            count += float(weights.sum())
    loop.model.train()
    total = all_ranks_sum(ctx.dist, [loss_sum, float(count)])
    eval_loss = total[0] / total[1] if total[1] else None
    ctx.reporter.metrics(step=loop.step, loss=None, lr=None, tokens_per_s=None, eval_loss=eval_loss, kind="eval")
    ctx.logger.info("meta: step %d eval_loss %.4f", loop.step, eval_loss or float("nan"))


def per_block_loss(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Each block's mean next-token loss (so padding blocks can be weighted out)."""
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, :-1].float()
    losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
    return losses.mean(dim=1)


def full_tensor(value: torch.Tensor) -> torch.Tensor:
    """A DTensor's (FSDP2) global value; a plain tensor as is."""
    getter: Callable[[], torch.Tensor] | None = getattr(value, "full_tensor", None)
    return getter() if getter is not None else value


# -- checkpoints ------------------------------------------------------------------------------------------------

def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}.pt"


def save_checkpoint(ctx: RunContext, loop: Loop) -> None:
    """Gather a full state dict on every rank (a collective), write it on rank 0, hand it to the uploader."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    # Offload to CPU (rank 0 alone then holds the full dict) only on GPU, where a full copy would not fit beside the
    # model; on gloo/CPU offloading full state dicts crashed ranks at exit, and every rank gathers the dict instead.
    offload = loop.device.type == "cuda"
    model_sd, optim_sd = get_state_dict(loop.model, loop.optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=offload))
    rng = gather_rng_states(ctx.dist)
    if not ctx.dist.is_main:
        return
    payload = {"format": FORMAT, "step": loop.step, "total_steps": loop.total, "model": model_sd,
               "optimizer": optim_sd, "scheduler": loop.scheduler.state_dict(), "sampler": loop.sampler.state_dict(),
               "window": loop.window.state_dict(), "last_loss": loop.last_loss, "rng": rng,
               "world_size": ctx.dist.world_size}
    path = ctx.output_dir / checkpoint_name(loop.step)
    write_atomic(payload, path)
    ctx.checkpoints.save(loop.step, path, metadata={"framework": "meta", "format": FORMAT})
    ctx.logger.info("meta: checkpoint step %d saved; uploading", loop.step)
    remove_older(ctx.output_dir, keep=path)  # their uploads finished before save() returned


def write_atomic(payload: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(payload, partial)
    os.replace(partial, path)


def remove_older(folder: Path, keep: Path) -> None:
    for old in folder.glob("step-*.pt"):
        if old != keep:
            old.unlink(missing_ok=True)


def load_checkpoint(ctx: RunContext, loop: Loop, path: Path) -> None:
    """Restore everything `save_checkpoint` wrote; every rank reads the node's local copy."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != FORMAT:
        raise RuntimeError(f"{path} is not a meta runner checkpoint (format {payload.get('format')!r})")
    set_state_dict(loop.model, loop.optimizer, model_state_dict=payload["model"],
                   optim_state_dict=payload["optimizer"], options=StateDictOptions(full_state_dict=True))
    loop.scheduler.load_state_dict(payload["scheduler"])
    loop.sampler.load_state_dict(payload["sampler"])
    loop.window.load_state_dict(payload["window"])
    loop.step, loop.last_loss = int(payload["step"]), payload["last_loss"]
    restore_rng_states(payload["rng"], ctx.dist, ctx.config.training.seed, ctx.logger)
    ctx.logger.info("meta: resumed from %s at step %d (data epoch %d, position %d)", path.name, loop.step,
                    loop.sampler.epoch, loop.sampler.position)
