"""What a GPU user asks for reaches the objects it configures, checked on CPU in a one-process gloo group: which
strategy `sharding` picks, FSDP2 on the model's own blocks with bf16 compute and fp32 gradient reduction, activation
checkpointing, `torch.compile` per block, no gradient sync on accumulation micro-steps, and loading each rank's
share of the weights from safetensors into an empty, sharded model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as torch_dist

from trainer.config import ConfigError
from trainer.dist import DistInfo
from trainer.runners.sharding import (
    empty_model,
    fully_shard_model,
    load_shares,
    materialize,
    no_gradient_sync,
    prepare,
    resolve_sharding,
    safetensors_files,
)


@pytest.fixture
def group(tmp_path: Path) -> Iterator[Any]:
    """A real one-process gloo group (FSDP2 and DDP need one), torn down afterwards."""
    from torch.distributed.device_mesh import init_device_mesh

    torch_dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        torch_dist.destroy_process_group()


def tiny_gpt2(folder: Path | None = None) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, GPT2Config

    torch.manual_seed(0)
    model: torch.nn.Module = AutoModelForCausalLM.from_config(
        GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=101, n_positions=16))
    if folder is not None:
        model.save_pretrained(folder)
    return model


def test_auto_is_fsdp_with_several_processes_and_nothing_with_one() -> None:
    two, one = DistInfo(world_size=2, local_world_size=2), DistInfo()
    assert [resolve_sharding(s, two) for s in ("auto", "fsdp", "ddp")] == ["fsdp", "fsdp", "ddp"]
    assert [resolve_sharding(s, one) for s in ("auto", "fsdp", "ddp", "none")] == ["none"] * 4
    with pytest.raises(ConfigError, match="sharding=none trains one process, this run has 2"):
        resolve_sharding("none", two)


def test_fsdp_wraps_the_models_own_blocks_in_bf16_and_reduces_gradients_in_fp32(group: Any) -> None:
    model = tiny_gpt2()
    assert fully_shard_model(model, group, bf16=True) == 2  # GPT2Block x 2, from _no_split_modules
    policy = model.transformer.h[0]._get_fsdp_state()._mp_policy  # type: ignore[operator]
    assert (policy.param_dtype, policy.reduce_dtype) == (torch.bfloat16, torch.float32)
    seen: list[torch.dtype] = []
    model.transformer.h[0].attn.c_attn.register_forward_pre_hook(lambda m, args: seen.append(m.weight.dtype))
    ids = torch.randint(0, 101, (2, 8))
    model(input_ids=ids, labels=ids).loss.backward()
    assert seen == [torch.bfloat16]  # computed in bf16 ...
    weight = model.transformer.h[0].attn.c_attn.weight
    assert weight.dtype == torch.float32 and weight.grad is not None and weight.grad.dtype == torch.float32  # ...
    # ... while the sharded master weights and their reduced gradients stay fp32


def test_activation_checkpointing_and_compile_reach_the_model_and_its_blocks() -> None:
    model = tiny_gpt2()
    prepare(model, activation_checkpointing=True, compile_blocks=True)
    assert all(block.gradient_checkpointing for block in model.transformer.h)
    assert all(block._compiled_call_impl is not None for block in model.transformer.h)
    plain = tiny_gpt2()
    prepare(plain, activation_checkpointing=False, compile_blocks=False)
    assert not plain.transformer.h[0].gradient_checkpointing and plain.transformer.h[0]._compiled_call_impl is None


def test_gradients_sync_only_on_the_last_accumulation_micro_step(group: Any, monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    from trainer.runners._loop import Blocks, BlockSampler
    from trainer.runners.meta import Loop, train_step

    model = tiny_gpt2()
    fully_shard_model(model, group, bf16=False)
    calls: list[bool] = []
    original = model.set_requires_gradient_sync  # type: ignore[operator]
    monkeypatch.setattr(model, "set_requires_gradient_sync", lambda flag: (calls.append(flag), original(flag)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    blocks = Blocks(torch.randint(0, 101, (8, 16)), torch.randint(0, 101, (1, 16)))
    loop = Loop(model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0),
                BlockSampler(8, 2, DistInfo(), seed=1), blocks, torch.device("cpu"), total=1, autocast=None)
    train_step(loop, accumulation=3, max_grad_norm=1.0)
    assert calls == [False, False, True]

    from torch.nn.parallel import DistributedDataParallel

    replica = DistributedDataParallel(tiny_gpt2())
    with no_gradient_sync(replica, last_micro_step=False):
        assert not replica.require_backward_grad_sync
    with no_gradient_sync(replica, last_micro_step=True):
        assert replica.require_backward_grad_sync


def test_an_empty_sharded_model_reads_its_share_of_the_safetensors_weights(group: Any, tmp_path: Path) -> None:
    reference = tiny_gpt2(tmp_path / "model")
    files = safetensors_files(str(tmp_path / "model"))
    model = empty_model(str(tmp_path / "model"))
    assert all(p.is_meta for p in model.parameters())  # nothing allocated before sharding
    fully_shard_model(model, group, bf16=False)
    materialize(model, torch.device("cpu"))
    read = load_shares(model, files)
    assert model.lm_head.weight is model.transformer.wte.weight  # tied weights stay tied, read once
    expected = reference.state_dict()
    got = {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in model.state_dict().items()}
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    unique = {id(p): p for p in reference.parameters()}.values()
    assert read >= sum(p.numel() * p.element_size() for p in unique)
