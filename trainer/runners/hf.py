"""The `hf` runner: `transformers.Trainer` on packed blocks of the run's JSONL dataset.

Every `checkpoint-<step>/` the Trainer saves (each `save_steps` and at the last step) is handed to the run's
`CheckpointManager` from `on_save`: uploaded in the background to `checkpoints/checkpoint-<step>/`, then its manifest.
Resume passes the downloaded latest checkpoint to `Trainer.train(resume_from_checkpoint=...)`, which restores model,
optimizer, scheduler, trainer state and RNG state, and skips the batches already seen.

Multi-process runs (torchrun) use DDP (gloo on CPU, NCCL on GPU); rank 0 uploads each checkpoint folder after a
barrier, so the RNG files of the ranks on its node are included. The RNG files of ranks on other nodes are not
uploaded (on resume those ranks log a warning and reseed; data order does not depend on them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainerCallback  # this module is imported only when framework=hf

from trainer.context import RunContext
from trainer.data import DatasetError, Split, pack
from trainer.runners.common import (
    Throughput,
    check_block_size,
    encode_all,
    eval_every,
    resolve_precision,
    tokens_per_step,
)

LOCAL_CHECKPOINTS_KEPT = 3  # local scratch copies; the store keeps what `keep_checkpoints` says


def run(ctx: RunContext) -> None:
    """Train `ctx.model_path` on `ctx.config.dataset_uri` with the HF Trainer (see the module docstring)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, default_data_collator

    t = ctx.config.training
    use_cuda = torch.cuda.is_available()
    split = ctx.load_split()  # dataset errors surface before the model loads
    tokenizer = AutoTokenizer.from_pretrained(ctx.model_path)
    model = AutoModelForCausalLM.from_pretrained(ctx.model_path, dtype=torch.float32)
    model.train()  # transformers 5 returns models in eval mode
    check_block_size(t.block_size, model.config)
    train_set, eval_set = build_datasets(ctx, split, tokenizer)
    ctx.logger.info("hf: %d train blocks, %d eval blocks of %d tokens; %s", len(train_set), len(eval_set),
                    t.block_size, "cuda" if use_cuda else "cpu")
    trainer = Trainer(model=model, args=training_arguments(ctx, use_cuda, bool(eval_set)),
                      train_dataset=train_set, eval_dataset=eval_set or None, data_collator=default_data_collator,
                      callbacks=[TrainerLayoutCallback(ctx)])
    resume_dir = str(ctx.resume.path) if ctx.resume else None
    if ctx.resume:
        ctx.logger.info("hf: resuming Trainer from %s (step %d)", resume_dir, ctx.resume.step)
    trainer.train(resume_from_checkpoint=resume_dir)


class BlockDataset:
    """Fixed-length token blocks as causal-LM examples (labels = inputs; the model shifts them)."""

    def __init__(self, blocks: list[list[int]]) -> None:
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        ids = torch.tensor(self.blocks[index], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def build_datasets(ctx: RunContext, split: Split, tokenizer: Any) -> tuple[BlockDataset, BlockDataset]:
    block, eos = ctx.config.training.block_size, tokenizer.eos_token_id
    train = pack(encode_all(tokenizer, split.train), block, eos)
    evals = pack(encode_all(tokenizer, split.eval), block, eos, keep_short=True)
    if not train:
        raise DatasetError(f"dataset {ctx.config.dataset_uri} is too small for one block of {block} tokens")
    return BlockDataset(train), BlockDataset(evals)


def precision_flags(precision: str, use_cuda: bool) -> tuple[bool, bool]:
    """TrainingArguments' (bf16, fp16) for the request's precision."""
    resolved = resolve_precision(precision, use_cuda)
    return resolved == "bf16", resolved == "fp16"


def training_arguments(ctx: RunContext, use_cuda: bool, has_eval: bool) -> Any:
    from transformers import TrainingArguments

    t = ctx.config.training
    eval_steps = eval_every(t)
    do_eval = has_eval and eval_steps > 0
    bf16, fp16 = precision_flags(t.precision, use_cuda)
    return TrainingArguments(
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
    )


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
        self.ctx.barrier()  # every rank of this node has written its files (RNG state) into the folder
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        self.ctx.checkpoints.save(state.global_step, folder, metadata={"framework": "hf", "format": "hf-trainer"})
        self.ctx.logger.info("hf: checkpoint step %d saved; uploading", state.global_step)
