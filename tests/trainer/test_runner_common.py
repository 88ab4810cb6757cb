"""The pieces every runner shares: one precision mapping (what each framework's flag becomes), the eval cadence and
tokens per step, and batched tokenizing that keeps the order of the texts."""

from __future__ import annotations

import pytest

from trainer.config import ConfigError, TrainingParams
from trainer.dist import DistInfo
from trainer.runners.common import (
    check_block_size,
    encode_all,
    eval_every,
    resolve_precision,
    tokens_per_step,
)


@pytest.mark.parametrize(("precision", "cuda", "expected"), [
    ("auto", False, "fp32"), ("fp32", False, "fp32"), ("bf16", False, "bf16"), ("fp32", True, "fp32"),
    ("bf16", True, "bf16"), ("fp16", True, "fp16"),
])
def test_precision_resolves_the_same_way_for_every_runner(precision: str, cuda: bool, expected: str) -> None:
    assert resolve_precision(precision, cuda) == expected


def test_fp16_is_refused_on_cpu_and_by_runners_without_a_loss_scaler() -> None:
    with pytest.raises(ConfigError, match="needs a GPU"):
        resolve_precision("fp16", use_cuda=False)
    with pytest.raises(ConfigError, match="not supported by this runner"):
        resolve_precision("fp16", use_cuda=True, fp16=False)


def test_framework_flags_follow_the_shared_mapping() -> None:
    pytest.importorskip("lightning")
    from trainer.runners._lightning import lightning_precision
    from trainer.runners.hf import precision_flags
    from trainer.runners.meta import autocast_dtype

    assert lightning_precision("bf16", False) == "bf16-mixed" and lightning_precision("auto", False) == "32-true"
    assert precision_flags("bf16", False) == (True, False) and precision_flags("auto", False) == (False, False)
    import torch

    assert autocast_dtype("bf16", False) is torch.bfloat16 and autocast_dtype("auto", False) is None


def test_eval_cadence_tokens_per_step_and_block_size_limit() -> None:
    assert eval_every(TrainingParams(save_steps=7)) == 7
    assert eval_every(TrainingParams(save_steps=7, eval_steps=0)) == 0
    t = TrainingParams(batch_size=4, gradient_accumulation=2, block_size=16)
    assert tokens_per_step(t, DistInfo(world_size=3)) == 4 * 2 * 3 * 16

    class Config:
        n_positions = 32

    check_block_size(32, Config())
    with pytest.raises(ConfigError, match="block_size 33 exceeds the model's 32 positions"):
        check_block_size(33, Config())


def test_encode_all_tokenizes_in_batches_keeping_order() -> None:
    calls: list[int] = []

    def tokenizer(texts: list[str], **kwargs: object) -> dict[str, list[list[int]]]:
        calls.append(len(texts))
        return {"input_ids": [[len(t)] for t in texts]}

    texts = ["a" * n for n in range(1, 6)]
    assert list(encode_all(tokenizer, texts, batch=2)) == [[1], [2], [3], [4], [5]]
    assert calls == [2, 2, 1]
