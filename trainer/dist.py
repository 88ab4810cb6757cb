"""Which process this is in the torchrun world, and the process group around it.

torchrun sets per-process `RANK`, `LOCAL_RANK`, `WORLD_SIZE`, `LOCAL_WORLD_SIZE` (the container-level `RANK` that
the Training Operator injects is the NODE rank and is consumed by torchrun's `--node_rank`; inside the workers torchrun
overwrites it). A plain `python -m trainer` run is rank 0 of 1. torch is imported only when a group is needed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: global `rank`, `local_rank` on its node, `world_size`, `local_world_size`."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that uploads shared files (config, logs, metrics, checkpoints)."""
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        """Local rank 0: the one process per node that fills the node's shared work dir (model, resume download)."""
        return self.local_rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def dist_info_from_env(environ: Mapping[str, str] | None = None) -> DistInfo:
    env = os.environ if environ is None else environ
    world = int(env.get("WORLD_SIZE", "1") or 1)
    return DistInfo(
        rank=int(env.get("RANK", "0") or 0) if world > 1 else 0,
        local_rank=int(env.get("LOCAL_RANK", "0") or 0),
        world_size=world,
        local_world_size=int(env.get("LOCAL_WORLD_SIZE", str(world)) or world),
    )


def init_process_group(info: DistInfo) -> None:
    """Join the default process group when `world_size > 1`: NCCL on GPU (one device per local rank), gloo on CPU.

    Idempotent; a no-op for a single process. Rendezvous uses torchrun's MASTER_ADDR/MASTER_PORT (env://).
    """
    if not info.distributed:
        return
    import torch
    import torch.distributed as torch_dist

    if torch_dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)
        torch_dist.init_process_group("nccl", rank=info.rank, world_size=info.world_size)
    else:
        torch_dist.init_process_group("gloo", rank=info.rank, world_size=info.world_size)


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op for one process or when no group is up)."""
    if not info.distributed:
        return
    import torch.distributed as torch_dist

    if torch_dist.is_initialized():
        torch_dist.barrier()


def broadcast_from_main(info: DistInfo, value: T) -> T:
    """Rank 0's `value` on every rank (picklable), so all ranks act on one decision (e.g. which checkpoint)."""
    if not info.distributed:
        return value
    import torch.distributed as torch_dist

    if not torch_dist.is_initialized():
        return value
    box: list[Any] = [value if info.is_main else None]
    torch_dist.broadcast_object_list(box, src=0)
    return cast(T, box[0])


def destroy_process_group() -> None:
    import sys

    if "torch" not in sys.modules:
        return
    import torch.distributed as torch_dist

    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
