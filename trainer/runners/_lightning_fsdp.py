"""The `nemo` runner's sharding: which Lightning strategy `extra_args.sharding` gives, and its sharded checkpoints.

- `fsdp` (the default with more than one process): Lightning's `FSDPStrategy` (torch FSDP, `use_orig_params`) with
  the auto-wrap policy on the classes the model names in `_no_split_modules`, `state_dict_type="sharded"` (a folder
  per checkpoint, written by DCP: one `__<rank>_0.distcp` per rank, DCP's `.metadata`, Lightning's `meta.pt`), and
  with bf16 parameters in bf16 and gradients reduced in fp32, and no gradient sync on accumulation micro-steps
  (FSDP's `no_sync`). Lightning's accelerator connector refuses
  `FSDPStrategy` itself on CPU (`type(strategy) is FSDPStrategy and accelerator not cuda`, lightning 2.6); torch's
  FSDP runs on CPU with gloo, so `CPUCapableFSDPStrategy` (a subclass, which that check does not match) runs the
  same strategy code here as on a GPU.
- `ddp`: Lightning's `DDPStrategy` (gloo on CPU, NCCL on GPU); `none`: one process.

Checkpoints: Lightning's sharded save does not go through the `CheckpointIO`; `CPUCapableFSDPStrategy.save_checkpoint`
lets it write the folder, then every rank hands its own files of it (`own_files`) to
`CheckpointManager.save_shard`: rank 0 writes the manifest once every rank reported its upload.

Resume: a sharded checkpoint resumes under `fsdp` (DCP reads it; exact on the same world size). Lightning 2.6 cannot
load it into one process or DDP, nor a full `.ckpt` (one process, DDP) with its optimizer state into FSDP: both are
refused before training starts (`check_resume`), naming the sharding that continues it. A full `.ckpt` resumes on
one process or under DDP on any world size.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy

from trainer.config import ConfigError
from trainer.context import RunContext
from trainer.runners.common import resolve_precision
from trainer.runners.sharding import block_types, own_files, resolve_sharding

SHARDED_FORMAT = "lightning-fsdp-sharded"


def strategy(ctx: RunContext, model: torch.nn.Module, use_cuda: bool, nemo: bool = False) -> Any:
    """The Lightning strategy for `extra_args.sharding` in this run's world (see the module docstring)."""
    chosen = resolve_sharding(ctx.config.training.sharding, ctx.dist)
    backend = "nccl" if use_cuda else "gloo"
    if chosen == "ddp":
        return DDPStrategy(process_group_backend=backend, find_unused_parameters=False)
    if chosen != "fsdp":
        return "auto"
    names = block_types(model)
    wrap = {type(m) for m in model.modules() if type(m).__name__ in names}
    mixed = None
    if resolve_precision(ctx.config.training.precision, use_cuda) == "bf16":
        from torch.distributed.fsdp import MixedPrecision

        mixed = MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return CPUCapableFSDPStrategy(ctx, nemo, process_group_backend=backend, auto_wrap_policy=wrap or None,
                                  state_dict_type="sharded", mixed_precision=mixed)


def check_resume(ctx: RunContext, strategy: Any) -> None:
    """Refuse, before training, a checkpoint the chosen strategy cannot continue from (Lightning 2.6):
    a sharded folder outside FSDP (it loads one only into FSDP), and a full `.ckpt` into FSDP (it loads the weights
    but not the optimizer state: the first step fails on the moments' shapes)."""
    if ctx.resume is None:
        return
    sharded, fsdp = ctx.resume.path.is_dir(), isinstance(strategy, FSDPStrategy)
    if sharded == fsdp:
        return
    written = ctx.resume.manifest.metadata.get("world_size", 1)
    chosen = resolve_sharding(ctx.config.training.sharding, ctx.dist)
    kind = f"sharded (FSDP over {written} processes)" if sharded else "a full one (one process or DDP)"
    hint = "resume it with sharding=fsdp on several processes" if sharded else "resume it with sharding=ddp"
    raise ConfigError(f"checkpoint step {ctx.resume.step} is {kind}: Lightning cannot continue it with "
                      f"sharding={chosen} on {ctx.dist.world_size} process(es); {hint}")


def describe(chosen: Any, world_size: int) -> str:
    if isinstance(chosen, FSDPStrategy):
        return f"FSDP over {world_size} processes (sharded checkpoints)"
    return f"DDP over {world_size} processes" if isinstance(chosen, DDPStrategy) else "one process"


def remove_own_files(folder: Path, rank: int) -> None:
    """Delete this rank's files of an older local checkpoint folder (their upload finished before this rank's
    `save_shard()` returned; another rank's may still be uploading, so only ours), then the folder once empty."""
    for path in own_files(folder, rank).values():
        path.unlink(missing_ok=True)
    # Deepest first; the other ranks prune the same folder at the same time, so a subfolder may vanish under the
    # walk (os.walk skips it, where rglob raised FileNotFoundError: a fresh-clone `make test` lost rank 1 to it).
    for root, _dirs, _files in os.walk(folder, topdown=False):
        with contextlib.suppress(OSError):
            os.rmdir(root)


class CPUCapableFSDPStrategy(FSDPStrategy):
    """Lightning's `FSDPStrategy`, allowed on CPU (see the module docstring), uploading each sharded checkpoint."""

    def __init__(self, ctx: RunContext, nemo: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ctx = ctx
        self.nemo = nemo

    def _setup_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Lightning's wrapping, with the device given as a `torch.device`: Lightning passes its index (None for the
        CPU), and torch's FSDP then looks for an accelerator and refuses ("FSDP needs a non-CPU accelerator")."""
        from torch.distributed.fsdp import FullyShardedDataParallel

        if self.root_device.type == "cpu" and not isinstance(model, FullyShardedDataParallel):
            model = FullyShardedDataParallel(module=model, cpu_offload=self.cpu_offload,
                                             mixed_precision=self.mixed_precision_config,
                                             sharding_strategy=self.sharding_strategy, device_id=self.root_device,
                                             **self.kwargs)
            self.kwargs.pop("auto_wrap_policy", None)  # applied: Lightning's own step below would warn about it
        return super()._setup_model(model)

    @contextlib.contextmanager
    def block_backward_sync(self) -> Iterator[None]:
        """No gradient reduce-scatter on accumulation micro-steps (Lightning's own applies DDP's `no_sync` only):
        FSDP's `no_sync()`, which keeps the micro-steps' gradients unsharded until the last one."""
        from torch.distributed.fsdp import FullyShardedDataParallel

        if isinstance(self.model, FullyShardedDataParallel):
            with self.model.no_sync():
                yield
        else:
            yield

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: Any, storage_options: Any | None = None) -> None:
        started = time.monotonic()
        step = int(checkpoint["global_step"])
        super().save_checkpoint(checkpoint, filepath, storage_options)  # every rank: its DCP shard; rank 0 meta.pt
        folder = Path(self.broadcast(filepath))
        if folder.stem.endswith("-last"):  # NeMo's rolling copy of the newest step checkpoint
            return
        ctx = self.ctx
        files = own_files(folder, ctx.dist.rank)  # listed now: the save is over on this rank
        ctx.checkpoints.save_shard(step, folder.name, lambda: files, rank=ctx.dist.rank,
                                   world_size=ctx.dist.world_size,
                                   metadata={"framework": "nemo", "format": SHARDED_FORMAT,
                                             "nemo_exp_manager": self.nemo})
        for older in folder.parent.glob("step-*.ckpt"):
            if older != folder and older.is_dir():
                remove_own_files(older, ctx.dist.rank)
        ctx.logger.info("nemo: checkpoint step %d written in %.2fs (%d files of rank %d); uploading", step,
                        time.monotonic() - started, len(files), ctx.dist.rank)
