"""The `hf` runner: `transformers.Trainer` on the packed blocks of the run's dataset (memory-mapped `datasets`).

Every `checkpoint-<step>/` the Trainer saves (each `save_steps` and at the last step) is handed to the run's
`CheckpointManager` from `on_save`: uploaded in the background to `checkpoints/checkpoint-<step>/`, then its manifest.
Resume passes the downloaded latest checkpoint to `Trainer.train(resume_from_checkpoint=...)`, which restores model,
optimizer, scheduler, trainer state and RNG state, and skips the batches already seen.

Sharding (`extra_args.sharding`, see `trainer.runners.sharding`): with more than one process the default is the
Trainer's own FSDP through accelerate: FSDP2 `fully_shard` on every block the model names in `_no_split_modules`
(passed as `transformer_layer_cls_to_wrap`), `SHARDED_STATE_DICT` checkpoints (DCP: every rank writes its own shard),
and with bf16 parameters in bf16 and gradients reduced in fp32. Only rank 0 reads the weights
(`cpu_ram_efficient_loading`: the others start on the meta device and receive their shard by broadcast).
`sharding=ddp` keeps DDP (gloo on CPU, NCCL on GPU). Activation checkpointing is the model's own (non-reentrant).

Checkpoints and resume on another world size: `trainer.runners.hf_checkpoint`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from transformers import TrainerCallback  # this module is imported only when framework=hf

from trainer.context import RunContext
from trainer.data import causal_lm_collate, prepare
from trainer.runners.common import (
    Throughput,
    check_block_size,
    eval_every,
    resolve_precision,
    tokens_per_step,
)
from trainer.runners.hf_checkpoint import ShardAwareTrainer, checkpoint_format, prune_local
from trainer.runners.sharding import block_types, mixed_precision, own_files, resolve_sharding

LOCAL_CHECKPOINTS_KEPT = 3  # local scratch copies; the store keeps what `keep_checkpoints` says


def run(ctx: RunContext) -> None:
    """Train `ctx.model_path` on `ctx.config.dataset_uri` with the HF Trainer (see the module docstring)."""
    trainer = build_trainer(ctx)
    resume_dir = str(ctx.resume.path) if ctx.resume else None
    if ctx.resume:
        ctx.logger.info("hf: resuming Trainer from %s (step %d)", resume_dir, ctx.resume.step)
    trainer.train(resume_from_checkpoint=resume_dir)


def build_trainer(ctx: RunContext) -> Any:
    """The Trainer with its data, model and arguments; FSDP wrapping happens in `train()` (accelerate's prepare)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    t = ctx.config.training
    use_cuda = torch.cuda.is_available()
    strategy = resolve_sharding(t.sharding, ctx.dist)
    model_config = AutoConfig.from_pretrained(ctx.model_path)
    check_block_size(t.block_size, model_config)
    tokenizer = AutoTokenizer.from_pretrained(ctx.model_path)
    if t.dataset_streaming:  # a datasets.IterableDataset; accelerate splits it by shard (or by batch) over ranks
        from trainer.data.stream import block_stream

        train_set, eval_set = block_stream(ctx, tokenizer).with_format("torch"), []
    else:
        data = prepare(ctx, tokenizer)  # dataset errors surface before the model loads
        train_set, eval_set = data.train.dataset, data.eval.dataset
    if strategy == "fsdp":
        # Read by transformers' from_pretrained: ranks other than local rank 0 build the model on the meta device;
        # accelerate then broadcasts rank 0's weights into each rank's shard.
        os.environ["ACCELERATE_USE_FSDP"] = os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] = "true"
    model = AutoModelForCausalLM.from_pretrained(ctx.model_path, dtype=torch.float32)
    model.train()  # transformers 5 returns models in eval mode
    args = training_arguments(ctx, use_cuda, len(eval_set) > 0, strategy, sorted(block_types(model)))
    if t.dataset_streaming:
        args.accelerator_config.dispatch_batches = False  # each rank reads its own part, not rank 0 for all
    ctx.logger.info("hf: %s train blocks, %d eval blocks of %d tokens; %s%s",
                    "streamed" if t.dataset_streaming else len(train_set), len(eval_set),
                    t.block_size, "cuda" if use_cuda else "cpu",
                    f", {strategy.upper()} over {ctx.dist.world_size} processes" if ctx.dist.distributed else "")
    return ShardAwareTrainer(model=model, args=args, train_dataset=train_set,
                             eval_dataset=eval_set if len(eval_set) else None, data_collator=causal_lm_collate,
                             callbacks=[TrainerLayoutCallback(ctx)])


def precision_flags(precision: str, use_cuda: bool) -> tuple[bool, bool]:
    """TrainingArguments' (bf16, fp16) for the request's precision."""
    resolved = resolve_precision(precision, use_cuda)
    return resolved == "bf16", resolved == "fp16"


def sharding_arguments(strategy: str, blocks: list[str], activation_checkpointing: bool) -> dict[str, Any]:
    """TrainingArguments for `strategy`: FSDP2 on `blocks` with sharded checkpoints, or nothing (DDP / one process).

    Activation checkpointing is the model's own (non-reentrant, RNG preserved, so dropout masks match), not
    accelerate's FSDP wrapper (which does not preserve the RNG state).
    """
    kwargs: dict[str, Any] = {}
    if activation_checkpointing:
        kwargs.update(activation_checkpointing=True, activation_checkpointing_kwargs={"use_reentrant": False})
    if strategy != "fsdp":
        return kwargs
    config: dict[str, Any] = {"version": 2, "state_dict_type": "SHARDED_STATE_DICT", "reshard_after_forward": True,
                              "cpu_ram_efficient_loading": True}
    if blocks:
        config.update(auto_wrap_policy="TRANSFORMER_BASED_WRAP", transformer_layer_cls_to_wrap=blocks)
    else:  # nothing named: the root alone is one FSDP unit
        config.update(auto_wrap_policy="NO_WRAP")
    return {**kwargs, "fsdp": True, "fsdp_config": config}


def training_arguments(ctx: RunContext, use_cuda: bool, has_eval: bool, strategy: str = "none",
                       blocks: list[str] | None = None) -> Any:
    from transformers import TrainingArguments

    t = ctx.config.training
    eval_steps = eval_every(t)
    do_eval = has_eval and eval_steps > 0
    bf16, fp16 = precision_flags(t.precision, use_cuda)
    args = TrainingArguments(
        output_dir=str(ctx.output_dir),
        max_steps=t.max_steps,
        num_train_epochs=t.num_epochs,
        learning_rate=t.lr,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation,
        warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=LOCAL_CHECKPOINTS_KEPT,
        eval_strategy="steps" if do_eval else "no",
        eval_steps=eval_steps if do_eval else None,
        logging_strategy="steps",
        logging_steps=t.logging_steps,
        seed=t.seed,
        data_seed=t.seed,
        use_cpu=not use_cuda,
        ddp_backend=("nccl" if use_cuda else "gloo") if ctx.dist.distributed else None,
        ddp_find_unused_parameters=False,
        dataloader_num_workers=0,
        report_to="none",
        disable_tqdm=True,
        bf16=bf16,
        fp16=fp16,
        **sharding_arguments(strategy, blocks or [], t.activation_checkpointing),
    )
    if args.fsdp_plugin_args is not None and bf16:
        # TrainingArguments has no key for it; accelerate keeps a policy it is given (its own default reduces in
        # bf16): parameters in bf16 for compute, gradients reduced in fp32.
        args.fsdp_plugin_args["mixed_precision_policy"] = mixed_precision(True)
    return args


class TrainerLayoutCallback(TrainerCallback):  # type: ignore[misc]
    """Bridges Trainer events to the shared layout: metrics/progress on log, checkpoint upload on save."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.meter = Throughput(tokens_per_step(ctx.config.training, ctx.dist), 0)
        self._loss: float | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.meter.restart(state.global_step)
        self.ctx.reporter.progress(state.global_step, state.max_steps, None)
        self.ctx.logger.info("hf: training steps %d..%d", state.global_step, state.max_steps)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.ctx.reporter.progress(state.global_step, state.max_steps, self._loss)  # local write; uploaded later

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
               **kwargs: Any) -> None:
        logs = logs or {}
        step = state.global_step
        if "loss" in logs:
            self._loss = float(logs["loss"])
            self.ctx.reporter.metrics(step=step, loss=self._loss, lr=logs.get("learning_rate"),
                                      tokens_per_s=self.meter.tokens_per_s(step), grad_norm=logs.get("grad_norm"),
                                      epoch=logs.get("epoch"), kind="train")
            self.ctx.reporter.progress(step, state.max_steps, self._loss)
        elif "eval_loss" in logs:
            self.ctx.reporter.metrics(step=step, loss=None, lr=None, tokens_per_s=None,
                                      eval_loss=float(logs["eval_loss"]), kind="eval")
        elif "train_runtime" in logs:
            if self._loss is None and logs.get("train_loss") is not None:
                self._loss = float(logs["train_loss"])
                self.ctx.reporter.progress(step, state.max_steps, self._loss)
            self.ctx.reporter.metrics(step=step, loss=logs.get("train_loss"), lr=None, tokens_per_s=None,
                                      kind="summary", train_runtime=logs.get("train_runtime"),
                                      steps_per_s=logs.get("train_steps_per_second"))
            self.ctx.logger.info("hf: done at step %d: %.2f steps/s over %.1fs", step,
                                 logs.get("train_steps_per_second", 0.0), logs.get("train_runtime", 0.0))

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Every rank: upload the files it wrote (its shards, its RNG state; rank 0 also the rest) and report;
        rank 0 writes the manifest once every rank has reported (`CheckpointManager.save_shard`)."""
        ctx, step = self.ctx, state.global_step
        folder = Path(args.output_dir) / f"checkpoint-{step}"
        files = own_files(folder, ctx.dist.rank)  # listed now: Trainer writes nothing more into it
        ctx.checkpoints.save_shard(step, folder.name, lambda: files, rank=ctx.dist.rank,
                                   world_size=ctx.dist.world_size,
                                   metadata={"framework": "hf", "format": checkpoint_format(folder)})
        if ctx.dist.is_local_main and not ctx.dist.is_main:  # the Trainer prunes rank 0's node only
            prune_local(Path(args.output_dir), keep=LOCAL_CHECKPOINTS_KEPT)
        ctx.logger.info("hf: checkpoint step %d saved (%d files of rank %d); uploading", step, len(files),
                        ctx.dist.rank)
