"""The `meta` runner: a plain PyTorch training loop, sharded over the run's processes, exact resume.

Read it top to bottom like nanoGPT's: build → (resume) → for each step: accumulate, clip, step, schedule; log every
`logging_steps`, evaluate every `eval_steps`, checkpoint every `save_steps` and at the end.

- Sharding (`extra_args.sharding`, see `trainer.runners.sharding`): FSDP2 `fully_shard` on every block the model
  names in `_no_split_modules`, then the root (the default with more than one process), DDP, or none; over gloo on
  CPU or NCCL on GPU (the process group comes from the run context). With FSDP each rank starts from an empty
  (meta-device) model and reads only its share of the safetensors weights.
- Gradient accumulation: the gradient reduction runs on the last micro-batch only.
- Checkpoints: sharded DCP folders, every rank writing and uploading its own files (`trainer.runners.meta_checkpoint`).
- Resume: on the same world size the losses equal an uninterrupted run's bitwise on CPU under the same thread
  settings; on another world size DCP reshards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from trainer.context import RunContext
from trainer.data.stream import StreamSampler
from trainer.runners._loop import (
    Blocks,
    BlockSampler,
    LossWindow,
    causal_lm_batch,
    decay_groups,
    eval_indices,
    linear_schedule,
    load_data,
    total_steps,
)
from trainer.runners.common import Throughput, all_ranks_sum, eval_every, resolve_precision, tokens_per_step
from trainer.runners.meta_checkpoint import checkpoint_group, load_checkpoint, save_checkpoint
from trainer.runners.sharding import (
    block_types,
    ddp,
    empty_model,
    fully_shard_model,
    load_shares,
    materialize,
    no_gradient_sync,
    prepare,
    resolve_sharding,
    safetensors_files,
)


@dataclass
class Loop:
    """Everything the training loop mutates; `checkpoint_state()` is what a checkpoint holds besides RNG."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sampler: BlockSampler | StreamSampler
    blocks: Blocks
    device: torch.device
    total: int
    autocast: torch.dtype | None
    ckpt_group: Any = None  # the gloo group DCP coordinates over (None: one process)
    step: int = 0
    window: LossWindow = field(default_factory=LossWindow)
    last_loss: float | None = None
    save_stall_s: float = 0.0  # training time spent staging checkpoints


def run(ctx: RunContext) -> None:
    """Train `ctx.model_path` with the plain loop (see the module docstring)."""
    loop = build(ctx)
    if ctx.resume is not None:
        load_checkpoint(ctx, loop, ctx.resume.path)
    train(ctx, loop)


def build(ctx: RunContext) -> Loop:
    from transformers import AutoTokenizer

    t = ctx.config.training
    device = pick_device(ctx)
    strategy = resolve_sharding(t.sharding, ctx.dist)
    bf16 = resolve_precision(t.precision, device.type == "cuda", fp16=False) == "bf16"
    tokenizer = AutoTokenizer.from_pretrained(ctx.model_path)
    torch.manual_seed(t.seed + ctx.dist.rank)  # dropout: reproducible, and different masks on each rank
    model, model_config = load_model(ctx, strategy, device, bf16)
    blocks, sampler = load_data(ctx, tokenizer, model_config)
    total = total_steps(t.max_steps, t.num_epochs, sampler.batches_per_epoch, t.gradient_accumulation)
    optimizer = torch.optim.AdamW(decay_groups(model, t.weight_decay), lr=t.lr, foreach=False)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(t.warmup_steps, total))
    ctx.logger.info("meta: %d train blocks, %d eval blocks of %d tokens, %d steps (%d micro-batches/epoch), %s%s",
                    len(blocks.train), len(blocks.eval), t.block_size, total, sampler.batches_per_epoch,
                    device, f", {strategy.upper()} over {ctx.dist.world_size} processes" if ctx.dist.distributed
                    else "")
    # FSDP's policy casts to bf16 itself; autocast covers the unsharded strategies.
    autocast = torch.bfloat16 if bf16 and strategy != "fsdp" else None
    return Loop(model, optimizer, scheduler, sampler, blocks, device, total, autocast,
                checkpoint_group(ctx.dist.distributed))


def load_model(ctx: RunContext, strategy: str, device: torch.device, bf16: bool) -> tuple[torch.nn.Module, Any]:
    """The model, prepared (activation checkpointing, compile), wrapped for `strategy` and on `device`.

    With FSDP and safetensors weights every rank builds an empty model, shards it and reads only its share; without
    safetensors each rank loads the whole model first.
    """
    from transformers import AutoModelForCausalLM

    t = ctx.config.training
    files = safetensors_files(ctx.model_path) if strategy == "fsdp" else []
    model: torch.nn.Module = (empty_model(ctx.model_path) if files else
                              AutoModelForCausalLM.from_pretrained(ctx.model_path, dtype=torch.float32))
    config = getattr(model, "config", None)
    prepare(model, activation_checkpointing=t.activation_checkpointing, compile_blocks=t.compile)
    if strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh

        # Shard before moving: with a CUDA mesh FSDP2 moves one block at a time, never the whole model onto a GPU.
        wrapped = fully_shard_model(model, init_device_mesh(device.type, (ctx.dist.world_size,)), bf16)
        ctx.logger.info("meta: FSDP2 sharded %d blocks (%s) + root over %s%s", wrapped,
                        ",".join(sorted(block_types(model))) or "none", device.type,
                        ", bf16 parameters, fp32 reduction" if bf16 else "")
        if files:
            materialize(model, device)
            read = load_shares(model, files)
            ctx.logger.info("meta: rank %d read its share of the weights: %.1f MiB from %d safetensors file(s)",
                            ctx.dist.rank, read / 2**20, len(files))
        else:
            model.to(device)
    elif strategy == "ddp":
        model = ddp(model.to(device), device)
        ctx.logger.info("meta: DDP over %d processes", ctx.dist.world_size)
    else:
        model.to(device)
    model.train()  # transformers 5 loads in eval mode
    return model, config


def autocast_dtype(precision: str, use_cuda: bool) -> torch.dtype | None:
    """The autocast dtype for `precision` (None = fp32). fp16 needs a loss scaler this loop does not carry."""
    return torch.bfloat16 if resolve_precision(precision, use_cuda, fp16=False) == "bf16" else None


def pick_device(ctx: RunContext) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", ctx.dist.local_rank)
    return torch.device("cpu")


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
    ctx.logger.info("meta: done at step %d: %.2f steps/s over %.1fs (%.3fs staging checkpoints)", loop.step,
                    steps_per_s, runtime, loop.save_stall_s)


def train_step(loop: Loop, accumulation: int, max_grad_norm: float) -> tuple[float, torch.Tensor | None]:
    """One optimizer step over `accumulation` micro-batches; returns (this rank's mean loss, grad norm)."""
    total = torch.zeros((), dtype=torch.float64)
    for micro in range(accumulation):
        batch = causal_lm_batch(loop.sampler.batch(loop.blocks.train), loop.device)
        with no_gradient_sync(loop.model, last_micro_step=micro == accumulation - 1), \
                torch.autocast(loop.device.type, dtype=loop.autocast or torch.float32,
                               enabled=loop.autocast is not None):
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
