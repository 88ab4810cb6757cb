"""The `meta` runner's checkpoints: sharded, through PyTorch Distributed Checkpoint (DCP).

One checkpoint is the folder `checkpoints/dcp-XXXXXX/`:
    __<rank>_0.distcp     each rank's shard of the model and optimizer state, written by that rank
    .metadata             DCP's index of every shard (rank 0)
    trainer_state.pt      step, scheduler, data position, metrics window, every rank's RNG state (rank 0)
    _ranks/rank-XXXXX.json  each rank's "uploaded" report (see `CheckpointManager.save_shard`)

Saving: every rank takes its sharded state dict (no gather), `dcp.async_save` copies it to CPU memory (the only
stall) and writes in a background thread; the rank's upload thread then uploads its own files and reports them, and
rank 0 writes the manifest once every rank has reported. `async_save=false` writes in the foreground.

Resuming: every rank loads from the node's downloaded folder; DCP reads the parts of every shard that this rank's
layout needs, so a checkpoint written by N processes resumes on M (reshards; with M != N the RNG is reseeded, as
dropout masks cannot be carried over). With the same world size the resumed run continues bitwise on CPU.
A full-state `step-XXXXXX.pt` file from before DCP still loads.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from trainer.context import RunContext
from trainer.runners._loop import gather_rng_states, restore_rng_states

if TYPE_CHECKING:
    from trainer.runners.meta import Loop

FORMAT = "meta-dcp-v1"
LEGACY_FORMAT = "meta-full-state-dict-v1"
STATE_FILE = "trainer_state.pt"


def checkpoint_name(step: int) -> str:
    return f"dcp-{step:06d}"


def checkpoint_group(distributed: bool) -> Any:
    """A gloo group for checkpoint collectives, which run in DCP's writer thread beside training (also on GPU,
    where the default group is NCCL and DCP's async save needs a CPU backend)."""
    if not distributed:
        return None
    import torch.distributed as torch_dist

    return torch_dist.new_group(backend="gloo")


def save_checkpoint(ctx: RunContext, loop: Loop) -> None:
    """Every rank: stage its shard, write it (in the background by default), upload its own files, report."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    ctx.checkpoints.wait_previous()  # the previous save's DCP collectives and uploads are over on this rank
    started = time.monotonic()
    rank = ctx.dist.rank
    folder = ctx.output_dir / checkpoint_name(loop.step)
    model_sd, optim_sd = get_state_dict(loop.model, loop.optimizer)
    rng = gather_rng_states(ctx.dist)
    sampler = loop.sampler.state_dict()  # on every rank: a streaming sampler gathers every rank's position
    if ctx.dist.is_main:
        write_atomic({"format": FORMAT, "step": loop.step, "total_steps": loop.total,
                      "scheduler": loop.scheduler.state_dict(), "sampler": sampler,
                      "window": loop.window.state_dict(), "last_loss": loop.last_loss, "rng": rng,
                      "world_size": ctx.dist.world_size}, folder / STATE_FILE)
    state = {"model": model_sd, "optimizer": optim_sd}
    if ctx.config.training.async_save:
        future: Any = dcp.async_save(state, checkpoint_id=str(folder), process_group=loop.ckpt_group)

        def collect() -> Mapping[str, Path]:
            future.result()
            return own_files(folder, rank)
    else:
        dcp.save(state, checkpoint_id=str(folder), process_group=loop.ckpt_group)

        def collect() -> Mapping[str, Path]:
            return own_files(folder, rank)

    stall = time.monotonic() - started
    loop.save_stall_s += stall
    ctx.checkpoints.save_shard(loop.step, folder.name, collect, rank=rank, world_size=ctx.dist.world_size,
                               metadata={"framework": "meta", "format": FORMAT})
    ctx.logger.info("meta: checkpoint step %d staged in %.3fs; %s and uploading in the background", loop.step,
                    stall, "writing" if ctx.config.training.async_save else "written")
    remove_older(ctx.output_dir, keep=folder, rank=rank)


def own_files(folder: Path, rank: int) -> dict[str, Path]:
    """The files of `folder` this rank wrote: its DCP shard(s); rank 0 also DCP's index and the trainer state."""
    files = {p.name: p for p in folder.glob(f"__{rank}_*.distcp")}
    if rank == 0:
        files.update({name: folder / name for name in (".metadata", STATE_FILE)})
    return files


def write_atomic(payload: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(payload, partial)
    os.replace(partial, path)


def remove_older(output_dir: Path, keep: Path, rank: int) -> None:
    """This rank's files of older local checkpoints (their uploads finished before this save started)."""
    for old in output_dir.glob("dcp-*"):
        if old == keep or not old.is_dir():
            continue
        for path in own_files(old, rank).values():
            path.unlink(missing_ok=True)
        try:
            old.rmdir()  # the last rank of the node to clean up removes the folder
        except OSError:
            pass


def load_checkpoint(ctx: RunContext, loop: Loop, path: Path) -> None:
    """Restore everything `save_checkpoint` wrote, resharding to this run's world size."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    if path.is_file():
        payload = load_legacy(loop, path)
    else:
        payload = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
        if payload.get("format") != FORMAT:
            raise RuntimeError(f"{path} is not a meta runner checkpoint (format {payload.get('format')!r})")
        model_sd, optim_sd = get_state_dict(loop.model, loop.optimizer)  # this run's layout, to be filled
        state: dict[str, Any] = {"model": model_sd, "optimizer": optim_sd}
        dcp.load(state, checkpoint_id=str(path), process_group=loop.ckpt_group)
        set_state_dict(loop.model, loop.optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optimizer"])
    loop.scheduler.load_state_dict(payload["scheduler"])
    loop.sampler.load_state_dict(payload["sampler"])
    loop.window.load_state_dict(payload["window"])
    loop.step, loop.last_loss = int(payload["step"]), payload["last_loss"]
    restore_rng_states(payload["rng"], ctx.dist, ctx.config.training.seed, ctx.logger)
    ctx.logger.info("meta: resumed from %s at step %d (data epoch %d, position %d; written by %d processes, "
                    "now %d)", path.name, loop.step, loop.sampler.epoch, loop.sampler.position,
                    int(payload.get("world_size", 1)), ctx.dist.world_size)


def load_legacy(loop: Loop, path: Path) -> dict[str, Any]:
    """A full-state-dict `.pt` (every rank reads the whole file and keeps its shard)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    payload: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != LEGACY_FORMAT:
        raise RuntimeError(f"{path} is not a meta runner checkpoint (format {payload.get('format')!r})")
    set_state_dict(loop.model, loop.optimizer, model_state_dict=payload["model"],
                   optim_state_dict=payload["optimizer"], options=StateDictOptions(full_state_dict=True))
    return payload
