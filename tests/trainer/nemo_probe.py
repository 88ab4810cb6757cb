"""Run under torchrun by `test_nemo_sharding.py`: builds the nemo runner's Lightning Trainer from the same flags
`train.py` takes, trains its few steps, and writes what the live objects ended up configured with to
`$NEMO_PROBE_OUT/rank-<r>.json`.

`python -m tests.trainer.nemo_probe <train.py flags>` (PYTHONPATH at the repository root).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import lightning.pytorch as pl
import torch

from tests.trainer.probe_report import write_probe_report
from trainer.config import parse_config
from trainer.context import build_context, close_context
from trainer.runners.nemo import build


class Recorder(pl.Callback):
    """The dtype the first block's attention computes in, the dtype of the gradients, and how often FSDP's
    `no_sync()` was entered (once per accumulation micro-step but the last)."""

    def __init__(self) -> None:
        self.compute_dtypes: set[str] = set()
        self.reduce_dtypes: set[str] = set()
        self.no_sync_entries = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        root: Any = trainer.strategy.model
        original = root.no_sync

        def record() -> Any:
            self.no_sync_entries += 1
            return original()

        root.no_sync = record
        linear = pl_module.model.transformer.h[0].attn.c_attn  # type: ignore[union-attr, index]
        linear.register_forward_pre_hook(lambda m, a: self.compute_dtypes.add(str(m.weight.dtype)))

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        self.reduce_dtypes |= {str(p.grad.dtype) for p in pl_module.parameters() if p.grad is not None}


def main(argv: list[str]) -> None:
    from torch.distributed.fsdp import FullyShardedDataParallel

    config = parse_config(argv, os.environ)
    ctx = build_context(config)
    trainer, module, fit_kwargs, _ = build(ctx)
    recorder = Recorder()
    trainer.callbacks.append(recorder)  # type: ignore[attr-defined]
    trainer.fit(module, **fit_kwargs)
    strategy: Any = trainer.strategy
    wrapped = [m for m in trainer.model.modules() if isinstance(m, FullyShardedDataParallel)]  # type: ignore[union-attr]
    block = next((m for m in wrapped if type(m.module).__name__ == "GPT2Block"), None)
    mixed = strategy.mixed_precision_config if hasattr(strategy, "mixed_precision_config") else None
    report = {
        "strategy": type(strategy).__name__,
        "strategy_bases": [c.__name__ for c in type(strategy).__mro__],
        "process_group_backend": strategy.process_group_backend,
        "state_dict_type": getattr(strategy, "_state_dict_type", None),
        "wrapped_modules": sorted({type(m.module).__name__ for m in wrapped}),
        "wrapped_blocks": sum(type(m.module).__name__ == "GPT2Block" for m in wrapped),
        "param_dtype": str(mixed.param_dtype) if mixed else None,
        "reduce_dtype": str(mixed.reduce_dtype) if mixed else None,
        "block_param_dtype": str(block.mixed_precision.param_dtype) if block is not None else None,
        "block_reduce_dtype": str(block.mixed_precision.reduce_dtype) if block is not None else None,
        "compute_dtypes": sorted(recorder.compute_dtypes),
        "grad_dtypes": sorted(recorder.reduce_dtypes),
        "local_numel": sum(p.numel() for p in module.parameters()),  # this rank's shard of every parameter
        "decay_group_sizes": [len(g["params"]) for g in trainer.optimizers[0].param_groups],
        "activation_checkpointing": [bool(b.gradient_checkpointing)
                                     for b in module.model.transformer.h],  # type: ignore[union-attr]
        "no_sync_entries": recorder.no_sync_entries,
        "global_step": trainer.global_step,
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "checkpoint_callbacks": sorted(type(c).__name__ for c in trainer.checkpoint_callbacks),
    }
    write_probe_report("NEMO_PROBE_OUT", ctx.dist.rank, report)
    close_context(ctx, succeeded=True)


if __name__ == "__main__":
    main(sys.argv[1:])
