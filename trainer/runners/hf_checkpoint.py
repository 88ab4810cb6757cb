"""The `hf` runner's checkpoints: the Trainer's own `checkpoint-<step>/` folders, uploaded by every rank.

Two formats, as the Trainer writes them:
- full (one process, DDP): `model.safetensors`, `optimizer.pt`, `scheduler.pt`, `trainer_state.json`,
  `rng_state.pth` (or `rng_state_<rank>.pth` per rank);
- sharded (FSDP, `SHARDED_STATE_DICT`): accelerate's DCP folders `pytorch_model_fsdp_0/` and `optimizer_0/`, each
  with one `__<rank>_0.distcp` per rank and DCP's `.metadata`, beside `scheduler.pt`, `trainer_state.json` and the
  ranks' `rng_state_<rank>.pth`.

Uploading (`trainer.runners.sharding.own_files`): each rank uploads the files it wrote itself, its
`__<rank>_*.distcp` shards and its `rng_state_<rank>.pth`; rank 0 uploads everything else. They go through
`CheckpointManager.save_shard`, so the manifest is written last, by rank 0, after every rank reported its upload: a
checkpoint some rank did not finish uploading is never resumed from.

Resuming (`ShardAwareTrainer`): the Trainer loads its own format natively (a sharded checkpoint through DCP, on the
same world size). Across formats it cannot, so this subclass does it with torch's distributed state-dict API:
- sharded -> one process or DDP (e.g. 2 -> 1): DCP reads every shard into the full model and optimizer state;
- full -> FSDP (e.g. 1 -> 2): every rank reads the full files and keeps its shard.
Model, optimizer moments and scheduler carry over; the RNG state only when the world size is the same (the Trainer
looks for the file of its own rank layout and logs that it reseeds otherwise).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer  # this module is imported only when framework=hf

log = logging.getLogger("trainer")

SHARDED_FORMAT = "hf-trainer-fsdp-sharded"
FULL_FORMAT = "hf-trainer"
MODEL_DIR, OPTIMIZER_DIR = "pytorch_model_fsdp_0", "optimizer_0"  # accelerate's names (model/optimizer index 0)


def checkpoint_format(folder: Path) -> str:
    return SHARDED_FORMAT if (folder / MODEL_DIR).is_dir() else FULL_FORMAT


def prune_local(output_dir: Path, keep: int) -> None:
    """Remove all but the newest `keep` local `checkpoint-<step>/` folders (their uploads are over)."""
    folders = sorted((p for p in output_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                     key=lambda p: int(p.name.split("-")[-1]))
    for old in folders[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


class ShardAwareTrainer(Trainer):  # type: ignore[misc]
    """`Trainer` that also resumes from the other checkpoint format (see the module docstring), and runs FSDP on CPU.

    accelerate (1.15, `AcceleratorState`) turns an FSDP plugin into FSDP only for multi-accelerator worlds (GPU, XPU,
    NPU, ...); a multi-process CPU (gloo) world silently gets DDP. On CPU this class sets the FSDP distributed type
    and plugin itself, so the same accelerate FSDP2 path (wrapping, sharded DCP checkpoints) runs as on a GPU.
    """

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        if self.args.fsdp_plugin_args is None or self.is_fsdp_enabled:
            return
        from accelerate.state import PartialState
        from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

        state = self.accelerator.state
        state.fsdp_plugin = FullyShardedDataParallelPlugin(**self.args.fsdp_plugin_args)
        # Both shared states, as accelerate itself does on GPU (a later AcceleratorState() copies PartialState's).
        state.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        self.is_fsdp_enabled = True

    def _cross_format(self, checkpoint: str) -> bool:
        return (checkpoint_format(Path(checkpoint)) == SHARDED_FORMAT) != bool(self.is_fsdp_enabled)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        if not self._cross_format(resume_from_checkpoint):
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            return
        target: Any = model if model is not None else self.model
        load_model_across(target, Path(resume_from_checkpoint), sharded_source=not self.is_fsdp_enabled)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if checkpoint is None or not self._cross_format(checkpoint):
            super()._load_optimizer_and_scheduler(checkpoint)
            return
        optimizer: Any = self.optimizer  # created by now (Trainer loads after preparing the model and optimizer)
        scheduler: Any = self.lr_scheduler
        load_optimizer_across(self.model_wrapped, optimizer, Path(checkpoint), sharded_source=not self.is_fsdp_enabled)
        scheduler.load_state_dict(torch.load(Path(checkpoint) / "scheduler.pt", weights_only=True))
        log.info("hf: resumed model, optimizer and scheduler from the %s checkpoint %s",
                 "sharded (FSDP)" if not self.is_fsdp_enabled else "full", Path(checkpoint).name)


def load_model_across(model: torch.nn.Module, folder: Path, sharded_source: bool) -> None:
    """Weights from the other format: DCP shards into a full model, or full safetensors into an FSDP model."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, set_model_state_dict

    if sharded_source:
        state = {"model": get_model_state_dict(model)}  # this run's layout, filled from every shard it needs
        dcp.load(state, checkpoint_id=str(folder / MODEL_DIR))
        set_model_state_dict(model, state["model"])
        return
    from safetensors.torch import load_file

    full: Any = load_file(str(folder / "model.safetensors"))
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, strict=False))


def load_optimizer_across(model: torch.nn.Module, optimizer: torch.optim.Optimizer, folder: Path,
                          sharded_source: bool) -> None:
    """AdamW state from the other format. Both runs build the optimizer the same way (Trainer's parameter groups in
    the model's order), so the full `optimizer.pt` (indexed by position) maps to parameter names by position."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )

    current: Any = get_optimizer_state_dict(model, optimizer)  # named by parameter, state initialised to fill in
    if sharded_source:
        state = {"optimizer": current}
        dcp.load(state, checkpoint_id=str(folder / OPTIMIZER_DIR))
        set_optimizer_state_dict(model, optimizer, state["optimizer"])
        return
    saved = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
    names = [name for group in current["param_groups"] for name in group["params"]]
    positions = [index for group in saved["param_groups"] for index in group["params"]]
    if len(names) != len(positions):
        raise RuntimeError(f"{folder.name}: the optimizer holds {len(positions)} parameters, this model "
                           f"{len(names)}; cannot resume")
    by_position = dict(zip(positions, names, strict=True))
    named: Any = {"state": {by_position[i]: value for i, value in saved["state"].items()},
             "param_groups": [{**group, "params": [by_position[i] for i in group["params"]]}
                              for group in saved["param_groups"]]}
    set_optimizer_state_dict(model, optimizer, named, options=StateDictOptions(full_state_dict=True))
