"""The Lightning half of the `nemo` runner, plain Lightning with nothing NeMo-specific: the module around
`AutoModelForCausalLM`, its seekable loaders, the callback that writes the shared layout, the checkpoint IO that hands
every `.ckpt` to the uploader, and the `Trainer` they run in. `trainer.runners.nemo` wires NeMo's `exp_manager` on top.

Resuming exactly: Lightning restores model, optimizer, scheduler and loop state from `ckpt_path`; the module adds
the data position (the train loader seeks to `global_step x gradient_accumulation` micro-batches), every rank's RNG
state (dropout) and, through the callback's state, the metrics window.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from trainer.context import RunContext
from trainer.data import TokenBlocks
from trainer.data.stream import StreamSampler
from trainer.runners._loop import (
    Blocks,
    BlockSampler,
    LossWindow,
    causal_lm_batch,
    decay_groups,
    eval_indices,
    gather_rng_states,
    linear_schedule,
    restore_rng_states,
)
from trainer.runners.common import Throughput, all_ranks_sum, eval_every, resolve_precision, tokens_per_step

FORMAT = "lightning-ckpt"
CHECKPOINT_FILENAME = "step-{step:06d}"  # -> checkpoints/step-000010.ckpt beside its manifest step-000010.json


def checkpoint_dir(ctx: RunContext) -> Path:
    return ctx.output_dir / "checkpoints"


def build_trainer(ctx: RunContext, total: int, layout: LightningLayoutCallback, has_eval: bool,
                  strategy: Any = "auto", nemo: bool = False) -> pl.Trainer:
    """The Lightning Trainer for this run on `strategy` (`trainer.runners._lightning_fsdp.strategy`). `nemo`: NeMo's
    exp_manager will add its own checkpoint callback."""
    t = ctx.config.training
    use_cuda = torch.cuda.is_available()
    every = eval_every(t)
    do_eval = has_eval and every > 0
    callbacks: list[Callback] = [layout]
    if not nemo:
        callbacks.append(step_checkpoint(checkpoint_dir(ctx), t.save_steps))
    return pl.Trainer(
        accelerator="gpu" if use_cuda else "cpu",
        devices=ctx.dist.local_world_size,
        num_nodes=max(1, ctx.dist.world_size // ctx.dist.local_world_size),
        strategy=strategy,
        precision=lightning_precision(t.precision, use_cuda),  # type: ignore[arg-type]
        max_steps=total,
        max_epochs=-1,
        accumulate_grad_batches=t.gradient_accumulation,
        gradient_clip_val=t.max_grad_norm if t.max_grad_norm > 0 else None,
        val_check_interval=(every if do_eval else t.save_steps) * t.gradient_accumulation,
        check_val_every_n_epoch=None,
        limit_val_batches=None if do_eval else 0,
        num_sanity_val_steps=0,
        logger=False,  # metrics go to the shared layout (LightningLayoutCallback); exp_manager refuses a preset logger
        enable_checkpointing=not nemo,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,  # the loaders shard by rank themselves
        default_root_dir=str(ctx.output_dir),
        plugins=[UploadingCheckpointIO(ctx, nemo)],
        callbacks=callbacks,
    )


def lightning_precision(precision: str, use_cuda: bool) -> str:
    """Lightning's precision flag for the request's precision (mixed precision on GPU)."""
    return {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}[resolve_precision(precision, use_cuda)]


def step_checkpoint(dirpath: Path, save_steps: int) -> ModelCheckpoint:
    """Lightning's own checkpoint callback with NeMo's cadence: every `save_steps` steps, all kept."""
    return ModelCheckpoint(dirpath=str(dirpath), filename=CHECKPOINT_FILENAME, auto_insert_metric_name=False,
                           every_n_train_steps=save_steps, every_n_epochs=None, save_top_k=-1, save_last=False,
                           save_on_train_epoch_end=False)


# -- the module and its data -----------------------------------------------------------------------------------

class CausalLMModule(pl.LightningModule):
    """The causal LM, its AdamW + linear schedule, per-block eval losses, and the RNG/data state in checkpoints."""

    def __init__(self, model: torch.nn.Module, ctx: RunContext, total: int, train_loader: TrainLoader) -> None:
        super().__init__()
        self.model = model
        self.model.train()  # transformers 5 loads in eval mode
        self.ctx = ctx
        self.total = total
        self.train_loader = train_loader
        self.micro_losses: list[torch.Tensor] = []
        self.eval_sums = torch.zeros(2, dtype=torch.float64)
        self._pending_rng: list[dict[str, Any]] | None = None
        self.matrices = {n for n, p in model.named_parameters() if p.dim() >= 2}  # before any FSDP flattening

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.model(**batch).loss
        self.micro_losses.append(loss.detach())
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        ids, weights = batch["input_ids"], batch["weights"]
        logits = self.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, :-1].float()
        losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none").mean(1)
        self.eval_sums += torch.stack([(losses.double().cpu() * weights.cpu()).sum(), weights.sum().cpu()])

    def on_validation_epoch_start(self) -> None:
        self.eval_sums = torch.zeros(2, dtype=torch.float64)

    def configure_optimizers(self) -> Any:
        t = self.ctx.config.training
        optimizer = torch.optim.AdamW(decay_groups(self.model, t.weight_decay, self.matrices), lr=t.lr, foreach=False)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(t.warmup_steps, self.total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer: Any, gradient_clip_val: Any = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        # Lightning refuses norm clipping under FSDP (its plugin has no root module); FSDP's own clips over all shards.
        clip = getattr(self.trainer.model, "clip_grad_norm_", None)
        if clip is not None and gradient_clip_val:
            clip(gradient_clip_val)
        else:
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Called on every rank (a collective here is safe): rank 0 writes every rank's RNG state.
        checkpoint["trainer_rng"] = gather_rng_states(self.ctx.dist)
        # Informational: on resume the loader seeks to global_step x accumulation itself.
        checkpoint["trainer_data"] = {"micro_batches": self.trainer.global_step * self.trainer.accumulate_grad_batches,
                                      "world_size": self.ctx.dist.world_size}
        if self.ctx.config.training.dataset_streaming:  # every rank's stream position (a collective)
            checkpoint["trainer_data"]["stream"] = self.train_loader.sampler.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Seek here, not in on_train_start: Lightning's fetcher pulls the first batch before that hook runs.
        micro_batch = int(checkpoint["global_step"]) * self.ctx.config.training.gradient_accumulation
        stream = checkpoint.get("trainer_data", {}).get("stream")
        if stream is not None:
            self.train_loader.sampler.load_state_dict(stream)
        else:
            self.train_loader.seek(micro_batch)
        self._pending_rng = checkpoint.get("trainer_rng")
        if not hasattr(self.trainer.fit_loop.epoch_loop, "restarted_on_train_batch_end"):
            count_saving_batch_as_completed(checkpoint)
        self.ctx.logger.info("nemo: resuming at step %d (data micro-batch %d)", checkpoint["global_step"], micro_batch)

    def on_train_start(self) -> None:
        if self._pending_rng is not None:  # after Lightning's restore, right before the first resumed batch
            restore_rng_states(self._pending_rng, self.ctx.dist, self.ctx.config.training.seed, self.ctx.logger)
            self._pending_rng = None
            self.ctx.logger.info("nemo: resumed at step %d (RNG restored)", self.trainer.global_step)


def count_saving_batch_as_completed(checkpoint: dict[str, Any]) -> None:
    """Lightning < 2.5 (NeMo 3.0 pins <= 2.4) replays the batch whose `on_train_batch_end` saved the checkpoint:
    its batch index repeats and gradient accumulation shifts by one micro-batch. Count that batch completed, as
    Lightning 2.5+ does itself on restart."""
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress")
    for part in ("total", "current") if progress else ():
        counts = progress[part]
        counts["completed"] = max(counts["completed"], counts["processed"])


class TrainLoader:
    """An endless, seekable stream of this rank's train micro-batches (data epochs roll over inside it), so one
    Lightning epoch is the whole run and a resumed run picks up at the checkpoint's data position."""

    def __init__(self, blocks: TokenBlocks, sampler: BlockSampler | StreamSampler) -> None:
        self.blocks = blocks
        self.sampler = sampler

    def seek(self, micro_batch: int) -> None:
        self.sampler.seek(micro_batch)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            yield causal_lm_batch(self.sampler.batch(self.blocks), torch.device("cpu"))


class EvalLoader:
    """This rank's eval batches (the same count on every rank, padding weighted 0; see `eval_indices`)."""

    def __init__(self, blocks: Blocks, ctx: RunContext, batch_size: int) -> None:
        self.blocks = blocks.eval
        self.batches = eval_indices(len(blocks.eval), ctx.dist, batch_size) if len(blocks.eval) else []

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for indices, weights in self.batches:
            yield {"input_ids": self.blocks[indices], "weights": weights}


# -- the shared layout -----------------------------------------------------------------------------------------

class LightningLayoutCallback(Callback):
    """Metrics and progress into the shared layout, the same rows as the other runners; a final checkpoint when the
    last step is not a multiple of `save_steps`. Its loss window is saved in checkpoints (exact resumed averages)."""

    def __init__(self, ctx: RunContext, total: int) -> None:
        self.ctx = ctx
        self.total = total
        t = ctx.config.training
        self.window = LossWindow()
        self.meter = Throughput(tokens_per_step(t, ctx.dist), 0)
        self.last_step = 0
        self.last_loss: float | None = None
        self.lr: float | None = None
        self.grad_norm: float | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"window": self.window.state_dict(), "last_loss": self.last_loss}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.window.load_state_dict(state_dict["window"])
        self.last_loss = state_dict["last_loss"]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.last_step = trainer.global_step
        self.meter.restart(trainer.global_step)
        self.ctx.reporter.progress(trainer.global_step, self.total, self.last_loss)
        self.ctx.logger.info("nemo: training steps %d..%d", trainer.global_step + 1, self.total)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        self.lr = float(optimizer.param_groups[0]["lr"])
        step = trainer.global_step + 1
        if self._logs_at(step):  # the pre-clipping norm, as clip_grad_norm_ reports it in the meta runner
            grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
            norm = float(torch.nn.utils.get_total_norm(grads)) if grads else None
            if hasattr(trainer.model, "clip_grad_norm_"):  # FSDP: each rank holds a shard of every gradient
                norm = all_ranks_sum(self.ctx.dist, [(norm or 0.0) ** 2])[0] ** 0.5
            self.grad_norm = norm

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step == self.last_step:  # mid-accumulation
            return
        module: Any = pl_module
        self.window.add(float(torch.stack(module.micro_losses).double().mean()))
        module.micro_losses.clear()
        self.last_step = step
        if self._logs_at(step):
            sums = all_ranks_sum(self.ctx.dist, [self.window.loss_sum, float(self.window.steps)])
            self.window.take()
            self.last_loss = sums[0] / sums[1] if sums[1] else None
            epoch = module.train_loader.sampler.epoch
            self.ctx.reporter.metrics(step=step, loss=self.last_loss, lr=self.lr,
                                      tokens_per_s=self.meter.tokens_per_s(step), grad_norm=self.grad_norm,
                                      epoch=epoch, kind="train")
        self.ctx.reporter.progress(step, self.total, self.last_loss)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        module: Any = pl_module
        sums = all_ranks_sum(self.ctx.dist, [float(v) for v in module.eval_sums])
        eval_loss = sums[0] / sums[1] if sums[1] else None
        self.ctx.reporter.metrics(step=trainer.global_step, loss=None, lr=None, tokens_per_s=None,
                                  eval_loss=eval_loss, kind="eval")
        self.ctx.logger.info("nemo: step %d eval_loss %.4f", trainer.global_step, eval_loss or float("nan"))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step = trainer.global_step
        if step % self.ctx.config.training.save_steps != 0:  # the cadence missed the last step
            trainer.save_checkpoint(checkpoint_dir(self.ctx) / f"step-{step:06d}.ckpt")
        steps_per_s, runtime = self.meter.summary(step)
        self.ctx.reporter.metrics(step=step, loss=self.last_loss, lr=None, tokens_per_s=None, kind="summary",
                                  steps_per_s=steps_per_s, train_runtime=runtime)
        self.ctx.logger.info("nemo: done at step %d: %.2f steps/s over %.1fs", step, steps_per_s, runtime)

    def _logs_at(self, step: int) -> bool:
        return step % self.ctx.config.training.logging_steps == 0 or step == self.total


class UploadingCheckpointIO(TorchCheckpointIO):
    """Lightning's `.ckpt` writer, then the upload: every step checkpoint (whichever callback saved it) goes to the
    run's `CheckpointManager`, which uploads it in the background and writes its manifest last. Rank 0 only (the
    strategy calls the checkpoint IO on the global zero rank)."""

    def __init__(self, ctx: RunContext, nemo: bool = False) -> None:
        super().__init__()
        self.ctx = ctx
        self.nemo = nemo

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        started = time.monotonic()
        super().save_checkpoint(checkpoint, path, storage_options=storage_options)
        local = Path(path)
        if local.stem.endswith("-last"):  # NeMo's rolling copy of the newest step checkpoint
            return
        step = int(checkpoint["global_step"])
        self.ctx.checkpoints.save(step, local, metadata={"framework": "nemo", "format": FORMAT,
                                                         "nemo_exp_manager": self.nemo})
        for older in local.parent.glob("step-*.ckpt"):  # their uploads finished before save() returned
            if older != local:
                older.unlink(missing_ok=True)
        self.ctx.logger.info("nemo: checkpoint step %d written in %.2fs; uploading %s", step,
                             time.monotonic() - started, local.name)
