"""The loop pieces the meta and nemo runners share, without training: the data position a checkpoint stores, the
eval split across ranks, the learning-rate schedule, the RNG round trip and the metrics window."""

from __future__ import annotations

import random

import pytest
import torch

from trainer.data import DatasetError
from trainer.dist import DistInfo
from trainer.runners._loop import (
    BlockSampler,
    LossWindow,
    eval_indices,
    linear_schedule,
    rng_state,
    set_rng_state,
    total_steps,
)


def draw(sampler: BlockSampler, n: int) -> list[list[int]]:
    return [sampler.next_indices().tolist() for _ in range(n)]


def test_a_restored_sampler_hands_out_the_same_batches_as_one_that_never_stopped() -> None:
    uninterrupted = BlockSampler(10, 3, DistInfo(), seed=7)
    expected = draw(uninterrupted, 12)  # 3 batches per epoch: crosses three epoch boundaries
    first = BlockSampler(10, 3, DistInfo(), seed=7)
    draw(first, 5)
    resumed = BlockSampler(10, 3, DistInfo(), seed=0)
    resumed.load_state_dict(first.state_dict())
    assert draw(resumed, 7) == expected[5:]


def test_seek_to_a_micro_batch_equals_drawing_up_to_it() -> None:
    drawn = BlockSampler(10, 3, DistInfo(), seed=1)
    draw(drawn, 7)
    sought = BlockSampler(10, 3, DistInfo(), seed=1)
    sought.seek(7)
    assert draw(sought, 4) == draw(drawn, 4)


def test_ranks_read_disjoint_blocks_of_each_epoch_and_every_epoch_is_reshuffled() -> None:
    ranks = [BlockSampler(12, 2, DistInfo(rank=r, world_size=3), seed=5) for r in range(3)]
    epoch = [draw(s, 2) for s in ranks]  # 12 // 6 = 2 micro-batches per epoch
    blocks = [b for rank in epoch for batch in rank for b in batch]
    assert sorted(blocks) == list(range(12))
    assert [draw(s, 2) for s in ranks] != epoch


def test_a_dataset_smaller_than_one_global_batch_is_a_clear_error() -> None:
    with pytest.raises(DatasetError, match="fewer than one global batch"):
        BlockSampler(5, 4, DistInfo(rank=0, world_size=2), seed=0)


@pytest.mark.parametrize("blocks, world, batch", [(5, 1, 2), (5, 2, 2), (3, 4, 1), (7, 3, 4)])
def test_eval_counts_every_block_once_and_gives_every_rank_the_same_batches(blocks: int, world: int,
                                                                              batch: int) -> None:
    shares = [eval_indices(blocks, DistInfo(rank=r, world_size=world), batch) for r in range(world)]
    assert len({tuple(len(i) for i, _ in share) for share in shares}) == 1  # collectives line up
    counted = [int(i) for share in shares for idx, w in share for i, wt in zip(idx, w, strict=True) if wt == 1]
    assert sorted(counted) == list(range(blocks))


def test_the_schedule_warms_up_then_decays_linearly_to_zero() -> None:
    factor = linear_schedule(warmup_steps=4, total=12)
    assert [factor(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(8) == 0.5 and factor(12) == 0.0
    assert total_steps(-1, 2.0, batches_per_epoch=10, accumulation=4) == 5
    assert total_steps(30, 2.0, batches_per_epoch=10, accumulation=4) == 30


def test_rng_state_round_trips_torch_and_python() -> None:
    state = rng_state()
    expected = (torch.rand(3), random.random())
    set_rng_state(state)
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]


def test_the_loss_window_restores_into_the_same_average() -> None:
    window = LossWindow()
    window.add(2.0)
    restored = LossWindow()
    restored.load_state_dict(window.state_dict())
    restored.add(4.0)
    assert restored.take() == 3.0 and restored.take() is None
