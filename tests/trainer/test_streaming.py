"""Streaming mode (`dataset_streaming`): shards read as a `datasets.IterableDataset` of packed blocks. Each rank's
share is disjoint from the others' and together they are the whole dataset (split by shard, and by block when the
shard count does not divide), the position resumes exactly, bad rows are one line naming shard and line, and real
runs under `torchrun --nproc_per_node=2`: `meta` resumes after `kill -9` with the losses of an uninterrupted run;
`hf` and `nemo` train on the stream. Memory flat in the dataset's size is measured in bench/data_scale.py."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.trainer.runs import (
    kill_group,
    read_jsonl,
    run,
    start,
    torchrun_train_py,
    trainer_args,
    trainer_env,
    wait_for,
)
from tests.trainer.test_data import context, expected_blocks, write_jsonl
from tests.trainer.test_meta_runner import drop_checkpoints_after
from trainer.checkpoints import CheckpointManager
from trainer.data import DatasetError
from trainer.data.stream import StreamSampler, block_stream
from trainer.dist import DistInfo
from trainer.storage import LocalStorage
from trainer.tiny import sample_texts, write_sample_dataset


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def shards(folder: Path, count: int, rows: int = 40) -> list[list[str]]:
    texts = [sample_texts(rows, seed=i) for i in range(count)]
    for i, part in enumerate(texts):
        write_jsonl(folder / f"part-{i:02d}.jsonl", [{"body": t, "id": n} for n, t in enumerate(part)])
    return texts


def drain(sampler: StreamSampler, batches: int) -> list[list[int]]:
    return [list(map(int, row)) for _ in range(batches) for row in sampler.batch()]


@pytest.mark.parametrize("count", [4, 3])  # 4 shards: 2 per rank; 3: every 2nd block
def test_two_ranks_read_disjoint_parts_that_make_up_the_whole_dataset(tmp_path: Path, tokenizer: Any,
                                                                      count: int) -> None:
    texts = shards(tmp_path / "data", count)
    block = 8
    whole = [b for part in texts for b in expected_blocks(tokenizer, part, block)]  # each shard packed on its own
    ranks = []
    for rank in (0, 1):
        ctx = context(tmp_path, str(tmp_path / "data"), dist=DistInfo(rank=rank, world_size=2), block_size=block,
                      dataset_text_field="body", dataset_streaming="true")
        sampler = StreamSampler(block_stream(ctx, tokenizer), 1, ctx.dist)
        epoch: list[list[int]] = []
        while sampler.epoch == 0:  # one data epoch of this rank's share (the last draw is the next epoch's first)
            epoch.append(sampler.batch()[0].tolist())
        ranks.append(epoch[:-1])
    first, second = ranks
    assert first and second
    assert not {tuple(b) for b in first} & {tuple(b) for b in second}
    assert sorted(first + second) == sorted(whole)


def test_the_position_resumes_exactly_across_data_epochs(tmp_path: Path, tokenizer: Any) -> None:
    shards(tmp_path / "data", 2, rows=20)

    def sampler() -> StreamSampler:
        ctx = context(tmp_path, str(tmp_path / "data"), dist=DistInfo(), block_size=8, dataset_text_field="body",
                      dataset_streaming="true")
        return StreamSampler(block_stream(ctx, tokenizer), 4, ctx.dist)

    uninterrupted = sampler()
    reference = drain(uninterrupted, 60)
    assert uninterrupted.epoch >= 1  # the 60 batches cross a data epoch
    first = sampler()
    head = drain(first, 23)
    state = first.state_dict()
    resumed = sampler()
    resumed.load_state_dict(state)
    assert head + drain(resumed, 37) == reference
    with pytest.raises(DatasetError, match="resumes only on as many"):
        StreamSampler(block_stream(context(tmp_path, str(tmp_path / "data"), dist=DistInfo(rank=0, world_size=2),
                                           dataset_text_field="body", dataset_streaming="true"), tokenizer), 4,
                      DistInfo(rank=0, world_size=2)).load_state_dict(state)


def test_bad_rows_and_too_little_data_are_one_line_errors(tmp_path: Path, tokenizer: Any) -> None:
    bad = write_jsonl(tmp_path / "bad" / "a.jsonl", [{"text": "fine"}, {"other": "x"}])
    ctx = context(tmp_path, str(bad.parent), block_size=2, dataset_streaming="true")
    with pytest.raises(DatasetError, match=rf"^{bad} line 2: no field 'text'"):
        StreamSampler(block_stream(ctx, tokenizer), 1, ctx.dist).batch()
    tiny = write_jsonl(tmp_path / "tiny.jsonl", [{"text": "a"}])
    ctx = context(tmp_path, str(tiny), block_size=64, dataset_streaming="true")
    with pytest.raises(DatasetError, match="packs into no block of 64 tokens"):
        StreamSampler(block_stream(ctx, tokenizer), 1, ctx.dist).batch()
    with pytest.raises(DatasetError, match="no such file"):
        block_stream(context(tmp_path, str(tmp_path / "missing"), dataset_streaming="true"), tokenizer)


STREAM = {"dataset_streaming": True, "dataset_text_field": "body", "save_steps": 4, "logging_steps": 2,
          "batch_size": 2, "block_size": 32, "lr": 1e-3, "seed": 3}


def train_rows(rows: list[dict[str, Any]]) -> dict[int, tuple[float, float]]:
    return {int(r["step"]): (r["loss"], r["lr"]) for r in rows if r.get("kind") == "train"}


@pytest.mark.slow
def test_meta_streams_under_torchrun_and_resumes_after_kill_9_exactly(tiny_model: Path, tmp_path: Path) -> None:
    shards(tmp_path / "data", 4, rows=60)
    runs = tmp_path / "runs"

    def args(run_id: str) -> list[str]:
        return trainer_args("meta", run_id, str(runs), str(tmp_path / "data"), str(tiny_model), max_steps=16,
                            **STREAM)

    whole = run(torchrun_train_py(2, args("ref")), trainer_env(tmp_path / "w-ref"), timeout=600)
    assert "data: rank 0 streams shards 0/2: 2 of 4" in whole.stderr
    assert "data: rank 1 streams shards 1/2: 2 of 4" in whole.stderr
    assert "tokenizing" not in whole.stderr  # no cache build in streaming mode
    reference = train_rows(read_jsonl(LocalStorage(), str(runs / "ref" / "framework=meta" / "logs" /
                                                           "metrics.jsonl")))
    assert sorted(reference) == [2, 4, 6, 8, 10, 12, 14, 16]

    prefix = runs / "crash" / "framework=meta"
    env = trainer_env(tmp_path / "w-crash")
    proc = start(torchrun_train_py(2, args("crash")), env, tmp_path / "first.log")
    wait_for(lambda: (prefix / "checkpoints" / "step-000004.json").exists(), timeout=400, proc=proc)
    workers = psutil.Process(proc.pid).children(recursive=True)
    kill_group(proc)
    for worker in workers:  # torchrun's workers too, and wait until they are gone (no late checkpoint appears)
        with contextlib.suppress(psutil.NoSuchProcess):
            worker.kill()
    psutil.wait_procs(workers, timeout=30)
    if (prefix / "checkpoints" / "step-000016.json").exists():  # the killed run got further: resume from step 4
        drop_checkpoints_after(prefix, 4)
    killed_at = CheckpointManager(LocalStorage(), str(prefix / "checkpoints")).latest()
    assert killed_at is not None and killed_at.step < 16
    result = run(torchrun_train_py(2, [*args("crash"), "--resume"]), env, timeout=600)
    assert f"meta: resumed from dcp-{killed_at.step:06d} at step {killed_at.step}" in result.stderr, \
        result.stderr[-3000:]
    assert train_rows(read_jsonl(LocalStorage(), str(prefix / "logs" / "metrics.jsonl"))) == reference


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["hf", "nemo"])
def test_hf_and_nemo_train_on_the_stream_under_torchrun(framework: str, tiny_model: Path, tmp_path: Path) -> None:
    shards(tmp_path / "data", 2, rows=60)
    runs = tmp_path / "runs"
    args = trainer_args(framework, "s", str(runs), str(tmp_path / "data"), str(tiny_model), max_steps=6,
                        **{**STREAM, "save_steps": 6})
    result = run(torchrun_train_py(2, args), trainer_env(tmp_path / "work"), timeout=600)
    assert "data: streaming 2 shard(s)" in result.stderr
    rows = train_rows(read_jsonl(LocalStorage(), str(runs / "s" / f"framework={framework}" / "logs" /
                                                      "metrics.jsonl")))
    assert max(rows) == 6


def test_streaming_needs_max_steps(tmp_path: Path) -> None:
    from trainer.config import ConfigError, parse_config

    write_sample_dataset(tmp_path / "d.jsonl")
    with pytest.raises(ConfigError, match="dataset_streaming needs max_steps > 0"):
        parse_config(["--framework", "meta", "--run-id", "r", "--checkpoint-base-uri", str(tmp_path),
                      "--dataset-uri", str(tmp_path / "d.jsonl"), "--model-id", "m", "--num-epochs", "1",
                      "--dataset-streaming=true"], {})
