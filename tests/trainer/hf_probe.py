"""Run under torchrun by `test_hf_sharding.py`: builds the hf runner's Trainer from the same flags `train.py`
takes, trains its few steps, and writes what the objects ended up configured with to `$HF_PROBE_OUT/rank-<r>.json`.

`python -m tests.trainer.hf_probe <train.py flags>` (PYTHONPATH at the repository root).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch
from transformers import TrainerCallback

from tests.trainer.probe_report import write_probe_report
from trainer.config import parse_config
from trainer.context import build_context, close_context
from trainer.runners.hf import build_trainer


class Recorder(TrainerCallback):  # type: ignore[misc]
    """Records, on the prepared model, gradient-sync switches per micro-step and the dtype a block computes in."""

    def __init__(self) -> None:
        self.sync_calls: list[bool] = []
        self.compute_dtypes: set[str] = set()

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        original = model.set_requires_gradient_sync

        def record(flag: bool, **kw: Any) -> None:
            self.sync_calls.append(flag)
            original(flag, **kw)

        model.set_requires_gradient_sync = record
        linear = model.transformer.h[0].attn.c_attn
        linear.register_forward_pre_hook(lambda m, a: self.compute_dtypes.add(str(m.weight.dtype)))


def main(argv: list[str]) -> None:
    config = parse_config(argv, os.environ)
    ctx = build_context(config)
    trainer = build_trainer(ctx)
    recorder = Recorder()
    trainer.add_callback(recorder)
    trainer.train()
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    plugin = trainer.accelerator.state.fsdp_plugin
    model = trainer.model
    block = model.transformer.h[0]
    weight = block.attn.c_attn.weight
    policy = block._get_fsdp_state()._mp_policy
    report = {
        "is_fsdp_enabled": trainer.is_fsdp_enabled,
        "distributed_type": str(trainer.accelerator.state.distributed_type),
        "fsdp_version": plugin.fsdp_version,
        "state_dict_type": str(plugin.state_dict_type),
        "wrap_classes": plugin.transformer_cls_names_to_wrap,
        "plugin_param_dtype": str(plugin.mixed_precision_policy.param_dtype),
        "plugin_reduce_dtype": str(plugin.mixed_precision_policy.reduce_dtype),
        "block_param_dtype": str(policy.param_dtype),
        "block_reduce_dtype": str(policy.reduce_dtype),
        "fsdp_modules": sorted({type(m).__name__ for m in model.modules() if isinstance(m, FSDPModule)}),
        "weight_is_dtensor": isinstance(weight, DTensor),
        "weight_placements": [str(p) for p in weight.placements] if isinstance(weight, DTensor) else [],
        "weight_local_rows": weight.to_local().shape[0] if isinstance(weight, DTensor) else None,
        "weight_rows": weight.shape[0],
        "master_dtype": str(weight.dtype),
        "compute_dtypes": sorted(recorder.compute_dtypes),
        "activation_checkpointing": [bool(b.gradient_checkpointing) for b in model.transformer.h],
        "sync_calls": recorder.sync_calls,
        "global_step": trainer.state.global_step,
        "torch": torch.__version__,
    }
    write_probe_report("HF_PROBE_OUT", ctx.dist.rank, report)
    close_context(ctx, succeeded=True)


if __name__ == "__main__":
    main(sys.argv[1:])
