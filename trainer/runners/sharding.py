"""How a model is spread over a run's processes, and how it is loaded without a full copy on every rank.

`extra_args.sharding` picks the strategy: `auto` (FSDP when the world has more than one process, nothing
otherwise), `fsdp`, `ddp` or `none` (one process only). The unit FSDP wraps is the model's own: the classes named
in its `_no_split_modules` (GPT-2's `GPT2Block`, Llama's `LlamaDecoderLayer`, ...), never a hard-coded class.

GPU settings, applied here so a test can see them on the objects they configure: bf16 mixed precision for FSDP
(`MixedPrecisionPolicy`: parameters in bf16 for compute, gradients reduced in fp32), activation checkpointing (the
model's own, non-reentrant), and `torch.compile` per block (before wrapping, so
compiled code stays inside each FSDP unit).

Loading (`load_shares`): with FSDP the model is first built on the meta device (no memory), sharded, materialised
as empty local shards, and each rank then copies in only ITS rows of each weight from the memory-mapped safetensors
files (`safe_open(...).get_slice`): peak host memory per rank is its share of the model plus one tensor slice.
"""

from __future__ import annotations

import logging
import os
import re
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch

from trainer.config import ConfigError
from trainer.dist import DistInfo

log = logging.getLogger("trainer")
# A file one rank wrote itself in a sharded checkpoint folder: its DCP shard, or (hf) its RNG state.
_RANK_FILE = re.compile(r"(?:^|/)(?:__(\d+)_\d+\.distcp|rng_state_(\d+)\.pth)$")


def resolve_sharding(sharding: str, dist: DistInfo) -> str:
    """`fsdp`, `ddp` or `none` for `extra_args.sharding` in a world of `dist.world_size` processes."""
    if sharding == "auto":
        return "fsdp" if dist.distributed else "none"
    if sharding == "none" and dist.distributed:
        raise ConfigError(f"sharding=none trains one process, this run has {dist.world_size}: use fsdp or ddp")
    return sharding if dist.distributed else "none"


def block_types(model: torch.nn.Module) -> set[str]:
    """The class names the model says must not be split (its transformer blocks)."""
    return set(getattr(model, "_no_split_modules", None) or [])


def blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    names = block_types(model)
    return [m for m in model.modules() if type(m).__name__ in names]


def mixed_precision(bf16: bool) -> Any:
    """FSDP2's policy: bf16 parameters for compute with fp32 gradient reduction, or None (fp32 throughout)."""
    if not bf16:
        return None
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def prepare(model: torch.nn.Module, *, activation_checkpointing: bool, compile_blocks: bool) -> None:
    """Activation checkpointing and per-block `torch.compile`, before any wrapping."""
    if activation_checkpointing:
        enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5.2x
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        elif hasattr(model, "gradient_checkpointing_enable"):
            legacy: Any = model.gradient_checkpointing_enable
            legacy(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            raise ConfigError("activation_checkpointing: this model cannot checkpoint its activations")
    if compile_blocks:
        for block in blocks(model) or [model]:
            block.compile()


def fully_shard_model(model: torch.nn.Module, mesh: Any, bf16: bool) -> int:
    """FSDP2 on every block, then the root; returns the number of blocks wrapped."""
    from torch.distributed.fsdp import fully_shard

    policy = mixed_precision(bf16)
    kwargs: dict[str, Any] = {"mesh": mesh} if policy is None else {"mesh": mesh, "mp_policy": policy}
    wrapped = blocks(model)
    for block in wrapped:
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    return len(wrapped)


def ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def no_gradient_sync(model: torch.nn.Module, last_micro_step: bool) -> AbstractContextManager[Any]:
    """Skip the gradient all-reduce / reduce-scatter on accumulation micro-steps (all but the last).

    FSDP2: `set_requires_gradient_sync` (set back on the last micro-step); DDP: its `no_sync()` context.
    """
    setter = getattr(model, "set_requires_gradient_sync", None)
    if setter is not None:
        setter(last_micro_step)
        return nullcontext()
    no_sync = getattr(model, "no_sync", None)
    if no_sync is not None and not last_micro_step:
        return no_sync()  # type: ignore[no-any-return]
    return nullcontext()


# -- loading ----------------------------------------------------------------------------------------------------

def safetensors_files(model_path: str) -> list[Path]:
    folder = Path(model_path)
    return sorted(folder.glob("*.safetensors")) if folder.is_dir() else []


def empty_model(model_path: str) -> torch.nn.Module:
    """The model from its config with parameters on the meta device (no memory); buffers stay real, since
    non-persistent ones (e.g. rotary frequencies) are computed at construction and are not in the weights."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_path)
    with init_empty_weights(include_buffers=False):
        model: torch.nn.Module = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tie = getattr(model, "tie_weights", None)
    if tie is not None:  # from_pretrained ties (e.g. lm_head to the embeddings); from_config leaves it to us
        tie()
    return model


def materialize(model: torch.nn.Module, device: torch.device) -> None:
    """Allocate the (sharded) parameters on `device`, uninitialised, keeping the buffers' values."""
    buffers = {name: buf.detach().clone() for name, buf in model.named_buffers()}
    model.to_empty(device=device)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            buf.copy_(buffers[name])


def load_shares(model: torch.nn.Module, files: list[Path]) -> int:
    """Copy each parameter's local shard (or the whole tensor, when not sharded) from memory-mapped safetensors.

    Returns the bytes read. Tied weights (one tensor under two names) are read once. Raises `ValueError` when a
    tensor is missing from the files or its shard is not a block of rows.
    """
    from safetensors import safe_open

    read = 0
    done: set[int] = set()
    handles = [safe_open(str(f), framework="pt", device="cpu") for f in files]  # memory-mapped
    index = {key: handle for handle in handles for key in handle.keys()}  # noqa: SIM118 (not a dict)
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in done:
            continue
        if name not in index:
            raise ValueError(f"{name} is not in the model's safetensors files")
        local, start = _local_rows(tensor)
        source = index[name].get_slice(name)
        data = source[start:start + local.shape[0]] if local.dim() else index[name].get_tensor(name)
        with torch.no_grad():
            local.copy_(data.reshape(local.shape))
        read += data.numel() * data.element_size()
        done.add(id(tensor))
    return read


def _local_rows(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(this rank's local tensor, the global row it starts at). FSDP2 shards dim 0 like `torch.chunk`."""
    to_local = getattr(tensor, "to_local", None)
    if to_local is None:
        return tensor.data, 0
    from torch.distributed.tensor import Shard

    placements = tensor.placements  # type: ignore[attr-defined]
    mesh = tensor.device_mesh  # type: ignore[attr-defined]
    local = to_local()
    if len(placements) != 1 or not isinstance(placements[0], Shard) or placements[0].dim != 0:
        raise ValueError(f"unsupported placement {placements} (expected one Shard(0))")
    rows, world = tensor.shape[0], mesh.size()
    chunk = -(-rows // world)
    start = min(rows, mesh.get_local_rank() * chunk)
    if local.shape[0] != max(0, min(chunk, rows - start)):
        raise ValueError(f"local shard of {tuple(local.shape)} rows does not match a chunk of {rows}/{world}")
    return local, start


# -- sharded checkpoints ----------------------------------------------------------------------------------------

def own_files(folder: Path, rank: int) -> dict[str, Path]:
    """The files of a sharded checkpoint `folder` (relative path -> file) that `rank` uploads: those it wrote itself,
    its `__<rank>_*.distcp` DCP shards and (hf) its `rng_state_<rank>.pth`; rank 0 uploads everything else."""
    files = {}
    for root, _dirs, names in os.walk(folder):  # unlike rglob, skips a subfolder another rank removes meanwhile
        for name in names:
            path = Path(root) / name
            if not path.is_file():
                continue
            rel = path.relative_to(folder).as_posix()
            match = _RANK_FILE.search(rel)
            owner = int(match.group(1) or match.group(2)) if match else 0
            if owner == rank:
                files[rel] = path
    return dict(sorted(files.items()))
