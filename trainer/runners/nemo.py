"""The `nemo` runner: a Lightning module around `AutoModelForCausalLM` (`trainer.runners._lightning`), checkpointing
to `.ckpt` every `save_steps`, with NeMo's `exp_manager` wired on top when NeMo is installed.

- NeMo's `exp_manager` owns the experiment folder and the checkpoint callback when NeMo is installed (the trainer
  image's `WITH_NEMO=1`); without NeMo a plain Lightning `ModelCheckpoint` with the same cadence and names does.
- Every `.ckpt` Lightning writes goes through `UploadingCheckpointIO`, which hands it to the run's
  `CheckpointManager` (background upload, manifest last) — whichever callback asked for the save. NeMo's rolling
  `*-last.ckpt` copy is not uploaded: the step checkpoints are.
- Resume passes the downloaded latest `.ckpt` to `Trainer.fit(ckpt_path=...)`. Lightning restores model,
  optimizer, scheduler and loop state; this runner adds what Lightning leaves out so the run continues exactly:
  the data position (the train loader seeks to `global_step x gradient_accumulation` micro-batches), every rank's
  RNG state (dropout) and the metrics window.
- Multi-process (torchrun), inside the process group the run context opened (gloo on CPU, NCCL on GPU):
  `extra_args.sharding` picks Lightning's FSDP (the default: blocks from the model's `_no_split_modules`, sharded
  checkpoint folders uploaded by every rank) or DDP; see `trainer.runners._lightning_fsdp`. Activation
  checkpointing, when asked, is the model's own (non-reentrant).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from trainer.context import RunContext
from trainer.runners._lightning import (
    CHECKPOINT_FILENAME,
    CausalLMModule,
    EvalLoader,
    LightningLayoutCallback,
    TrainLoader,
    build_trainer,
    checkpoint_dir,
)
from trainer.runners._lightning_fsdp import check_resume, describe, strategy
from trainer.runners._loop import load_data, total_steps
from trainer.runners.sharding import prepare


def run(ctx: RunContext) -> None:
    """Train `ctx.model_path` with Lightning (see the module docstring)."""
    trainer, module, fit_kwargs, exp_dir = build(ctx)
    try:
        trainer.fit(module, **fit_kwargs)
    finally:
        if exp_dir is not None:
            upload_exp_logs(ctx, exp_dir)


def build(ctx: RunContext) -> tuple[pl.Trainer, CausalLMModule, dict[str, Any], Path | None]:
    """The Trainer, the module, `fit()`'s other arguments (loaders, checkpoint to resume) and exp_manager's folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t = ctx.config.training
    pl.seed_everything(t.seed, workers=False, verbose=False)
    tokenizer = AutoTokenizer.from_pretrained(ctx.model_path)
    model = AutoModelForCausalLM.from_pretrained(ctx.model_path, dtype=torch.float32)
    blocks, sampler = load_data(ctx, tokenizer, getattr(model, "config", None))
    total = total_steps(t.max_steps, t.num_epochs, sampler.batches_per_epoch, t.gradient_accumulation)
    train_loader = TrainLoader(blocks.train, sampler)
    prepare(model, activation_checkpointing=t.activation_checkpointing, compile_blocks=False)
    module = CausalLMModule(model, ctx, total, train_loader)
    layout = LightningLayoutCallback(ctx, total)
    nemo = nemo_exp_manager() is not None
    chosen = strategy(ctx, model, torch.cuda.is_available(), nemo)
    check_resume(ctx, chosen)
    trainer = build_trainer(ctx, total, layout, has_eval=len(blocks.eval) > 0, strategy=chosen, nemo=nemo)
    exp_dir = attach_exp_manager(ctx, trainer)
    ctx.logger.info("nemo: %d train blocks, %d eval blocks of %d tokens, %d steps; %s; checkpoints by %s",
                    len(blocks.train), len(blocks.eval), t.block_size, total, describe(chosen, ctx.dist.world_size),
                    f"NeMo exp_manager ({exp_dir})" if exp_dir else "Lightning")
    ckpt_path = str(ctx.resume.path) if ctx.resume else None
    if ctx.resume:
        ctx.logger.info("nemo: resuming Lightning fit from %s (step %d)", ckpt_path, ctx.resume.step)
    loaders = {"train_dataloaders": train_loader, "val_dataloaders": EvalLoader(blocks, ctx, t.batch_size)}
    return trainer, module, {**loaders, "ckpt_path": ckpt_path}, exp_dir


def upload_exp_logs(ctx: RunContext, exp_dir: Path) -> None:
    """exp_manager's own logs (NeMo log per rank, command line) to `logs/nemo/` (each rank its own files)."""
    from trainer.config import join_uri
    from trainer.storage import storage_for

    storage = storage_for(ctx.config.logs_uri)
    for path in sorted(exp_dir.glob("*")):
        if path.is_file() and path.suffix in (".txt", ".log") and (ctx.dist.is_main or "globalrank" in path.name):
            try:
                storage.put_file(path, join_uri(ctx.config.logs_uri, "nemo", path.name))
            except Exception:  # logs are a courtesy; never fail a run on them
                ctx.logger.warning("nemo: could not upload %s", path, exc_info=True)


# -- NeMo -------------------------------------------------------------------------------------------------------

@functools.cache
def nemo_exp_manager() -> Any:
    """`nemo.utils.exp_manager.exp_manager` when NeMo is installed (and importable with this Lightning), else None."""
    try:
        from nemo.utils.exp_manager import exp_manager
    except Exception:  # ImportError, or NeMo built against another Lightning (e.g. missing NeptuneLogger)
        return None
    return exp_manager


def exp_manager_config(ctx: RunContext) -> dict[str, Any]:
    """exp_manager settings: its folder under the scratch dir, no loggers of its own, its checkpoint callback at
    `save_steps` with the runner's names. `every_n_epochs: None` beside `every_n_train_steps`, or Lightning refuses
    the callback. Resume stays ours (`ckpt_path` from the manifests), not exp_manager's folder scan."""
    return {
        "exp_dir": str(ctx.output_dir / "nemo"), "name": ctx.config.run_id, "version": "run",
        "use_datetime_version": False, "resume_if_exists": False,
        "create_tensorboard_logger": False, "create_wandb_logger": False, "create_mlflow_logger": False,
        "create_checkpoint_callback": True, "create_preemption_callback": False,  # SIGTERM is train.py's
        "create_early_stopping_callback": False, "log_step_timing": False, "log_tflops_per_sec_per_gpu": False,
        "seconds_to_sleep": 0,
        "checkpoint_callback_params": {
            "dirpath": str(checkpoint_dir(ctx)), "filename": CHECKPOINT_FILENAME, "auto_insert_metric_name": False,
            "every_n_train_steps": ctx.config.training.save_steps, "every_n_epochs": None,
            "monitor": "step", "mode": "max", "save_top_k": -1, "save_last": False,
            "always_save_nemo": False, "save_nemo_on_train_end": False, "save_on_train_epoch_end": False,
        },
    }


def attach_exp_manager(ctx: RunContext, trainer: pl.Trainer) -> Path | None:
    exp_manager = nemo_exp_manager()
    if exp_manager is None:
        ctx.logger.info("nemo: NeMo is not installed; plain Lightning checkpointing")
        return None
    from omegaconf import OmegaConf

    log_dir = exp_manager(trainer, OmegaConf.create(exp_manager_config(ctx)))
    return Path(log_dir) if log_dir else None


