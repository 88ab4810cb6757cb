"""The data pipeline without training: shards of a file, folder or S3 prefix loaded with `datasets`, the user errors
(one line naming file and line), the deterministic split, packing with EOS between documents, the cache keyed by
content (a restart reuses it and says so), and local rank 0 alone tokenizing for the ranks of its node."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from trainer.config import parse_config
from trainer.data import DatasetError, prepare
from trainer.data.build import eval_mask
from trainer.data.pipeline import NOTE
from trainer.dist import DistInfo
from trainer.reporting import Reporter
from trainer.storage import LocalStorage, S3Storage


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def context(tmp_path: Path, dataset: str, *, dist: DistInfo | None = None, launch: str = "launch-1",
            **training: object) -> Any:
    """What `prepare` reads from a run context: config, dist, the launch's scratch dir, logger, reporter."""
    settings = {"block_size": 8, "eval_fraction": 0.2, "seed": 1, **training}
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    config = parse_config(["--framework", "meta", "--run-id", "data", "--checkpoint-base-uri",
                           str(tmp_path / "runs"), "--dataset-uri", dataset, "--model-id", "m", "--work-dir",
                           str(tmp_path / "work"), "--max-steps", "1", *flags], {})
    dist = dist or DistInfo()
    logger = logging.getLogger(f"test-data-{dist.rank}")
    reporter = Reporter(LocalStorage(), config, dist, tmp_path / f"logs-{launch}-{dist.rank}")
    return SimpleNamespace(config=config, dist=dist, work_dir=tmp_path / "work" / launch, logger=logger,
                           reporter=reporter)


def rows_of(blocks: Any) -> list[list[int]]:
    return [list(map(int, row)) for row in blocks[list(range(len(blocks)))]] if len(blocks) else []


def expected_blocks(tokenizer: Any, texts: list[str], block: int) -> list[list[int]]:
    """The reference packing: each text's ids then EOS, one stream, cut into full blocks (remainder dropped)."""
    stream: list[int] = []
    for text in texts:
        stream += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return [stream[i:i + block] for i in range(0, len(stream) - block + 1, block)]


def test_one_file_and_every_shard_of_a_folder_in_order_with_eos_between_documents(tmp_path: Path,
                                                                                   tokenizer: Any) -> None:
    texts = [f"the scheduler runs job number {i} again" for i in range(40)]
    write_jsonl(tmp_path / "ds" / "part-0.jsonl", [{"text": t} for t in texts[:25]])
    write_jsonl(tmp_path / "ds" / "part-1.jsonl", [{"text": t, "other": 1} for t in texts[25:]] + [""])
    (tmp_path / "ds" / "README.md").write_text("not data")
    data = prepare(context(tmp_path, str(tmp_path / "ds")), tokenizer)
    mask = eval_mask(40, 0.2, seed=1)
    train = [t for t, is_eval in zip(texts, mask, strict=True) if not is_eval]
    assert rows_of(data.train) == expected_blocks(tokenizer, train, 8)
    evals = [t for t, is_eval in zip(texts, mask, strict=True) if is_eval]
    assert rows_of(data.eval) == expected_blocks(tokenizer, evals, 8)
    assert data.built and len(data.train) == len(rows_of(data.train))
    one = prepare(context(tmp_path / "one", "file://" + str(tmp_path / "ds" / "part-1.jsonl")), tokenizer)
    assert one.fingerprint != data.fingerprint and len(one.train) < len(data.train)


def test_the_split_is_deterministic_for_a_seed_and_keeps_one_row_each_side() -> None:
    first, again = eval_mask(50, 0.1, seed=7), eval_mask(50, 0.1, seed=7)
    assert (first == again).all() and int(first.sum()) == 5
    assert (eval_mask(50, 0.1, seed=8) != first).any()
    assert int(eval_mask(3, 0.01, seed=0).sum()) == 1 and int(eval_mask(3, 0.99, seed=0).sum()) == 2
    with pytest.raises(DatasetError, match="at least 2"):
        eval_mask(1, 0.1, seed=0)


def test_a_tiny_eval_split_is_one_shorter_block(tmp_path: Path, tokenizer: Any) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": f"job {i}"} for i in range(40)])
    data = prepare(context(tmp_path, str(path), block_size=32, eval_fraction=0.05), tokenizer)
    assert len(data.train) >= 2 and len(data.eval) == 1 and 0 < data.eval.block_size < 32


@pytest.mark.parametrize(("rows", "message"), [
    ([{"text": "a"}, {"body": "b"}], r"d.jsonl line 2: no field 'text' \(set dataset_text_field\)$"),
    ([{"text": "a"}, "{broken"], r"d.jsonl line 2: malformed JSON"),
    ([{"text": "a"}, {"text": 3}], r"d.jsonl line 2: field 'text' is not a string$"),
    ([{"text": "a"}, {"text": None}], r"d.jsonl line 2: field 'text' is not a string$"),
    (["[1, 2]"], r"d.jsonl line 1: expected a JSON object$"),
    (["", "  "], r"d.jsonl is empty"),
])
def test_bad_rows_raise_one_line_naming_the_file_and_line(tmp_path: Path, tokenizer: Any, rows: list[object],
                                                          message: str) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DatasetError, match=message) as info:
        prepare(context(tmp_path, str(path)), tokenizer)
    assert "\n" not in str(info.value)


def test_a_missing_dataset_and_a_prefix_without_jsonl_are_clear_errors(tmp_path: Path, tokenizer: Any) -> None:
    with pytest.raises(DatasetError, match="no such file and no .jsonl files"):
        prepare(context(tmp_path, str(tmp_path / "nothing")), tokenizer)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    with pytest.raises(DatasetError, match="no .jsonl files under it"):
        prepare(context(tmp_path, str(tmp_path / "notes")), tokenizer)


def test_shards_under_an_s3_prefix_with_another_text_field(s3_bucket: str, tmp_path: Path, tokenizer: Any) -> None:
    storage = S3Storage()
    texts = [f"shard {i} says row {j} is fine" for i in range(3) for j in range(10)]
    for i in range(3):
        shard = write_jsonl(tmp_path / f"s{i}.jsonl", [{"body": t} for t in texts[i * 10:(i + 1) * 10]])
        storage.put_file(shard, f"s3://{s3_bucket}/data/v1/shard-{i}.jsonl")
    storage.put_bytes(b"ignored", f"s3://{s3_bucket}/data/v1/_SUCCESS")
    ctx = context(tmp_path, f"s3://{s3_bucket}/data/v1", dataset_text_field="body")
    data = prepare(ctx, tokenizer)
    mask = eval_mask(30, 0.2, seed=1)
    assert rows_of(data.train) == expected_blocks(tokenizer, [t for t, e in zip(texts, mask, strict=True) if not e], 8)
    assert not list((tmp_path / "work" / "datasets").glob("*.download"))  # the node-local copies are gone
    run = json.loads(Path(ctx.config.config_uri, "run.json").read_text())
    assert run["dataset"]["fingerprint"] == data.fingerprint and run["dataset"]["train_blocks"] == len(data.train)
    write_jsonl(tmp_path / "s9.jsonl", [{"body": "a new shard changes the content"}])
    storage.put_file(tmp_path / "s9.jsonl", f"s3://{s3_bucket}/data/v1/shard-9.jsonl")
    assert prepare(context(tmp_path, f"s3://{s3_bucket}/data/v1", dataset_text_field="body"),
                   tokenizer).fingerprint != data.fingerprint


def test_a_restart_on_the_same_work_dir_reuses_the_cache_and_says_so(tmp_path: Path, tokenizer: Any,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": f"row {i} of the data"} for i in range(30)])
    first = prepare(context(tmp_path, str(path)), tokenizer)
    caplog.clear()  # only the restart's records (an earlier test may have left the root logger at INFO)
    caplog.set_level(logging.INFO)
    again = prepare(context(tmp_path, str(path), launch="launch-2"), tokenizer)
    assert first.built and not again.built and again.cache_dir == first.cache_dir
    assert "skipping tokenization" in caplog.text and "data: tokenizing" not in caplog.text
    assert rows_of(again.train) == rows_of(first.train)
    # Same bytes, new mtime: still a hit. Another block size or text field: another cache.
    path.write_text(path.read_text())
    assert not prepare(context(tmp_path, str(path), launch="launch-3"), tokenizer).built
    assert prepare(context(tmp_path, str(path), launch="launch-4", block_size=4), tokenizer).built


def test_only_local_rank_0_tokenizes_and_its_errors_reach_the_other_ranks(tmp_path: Path, tokenizer: Any) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": f"row {i} of the data"} for i in range(30)])
    results: dict[int, Any] = {}

    def rank(r: int, dataset: str, launch: str) -> None:
        ctx = context(tmp_path, dataset, dist=DistInfo(rank=r, local_rank=r, world_size=2, local_world_size=2),
                      launch=launch)
        try:
            results[r] = prepare(ctx, tokenizer)
        except DatasetError as exc:
            results[r] = exc

    follower = threading.Thread(target=rank, args=(1, str(path), "two"))
    follower.start()  # waits for local rank 0's note
    follower.join(0.5)
    assert follower.is_alive() and 1 not in results
    rank(0, str(path), "two")
    follower.join(30)
    assert results[0].built and not results[1].built and results[1].cache_dir == results[0].cache_dir
    assert rows_of(results[1].train) == rows_of(results[0].train)
    assert (tmp_path / "work" / "two" / NOTE).is_file()

    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "a"}, "{broken"])
    follower = threading.Thread(target=rank, args=(1, str(bad), "three"))
    follower.start()
    rank(0, str(bad), "three")
    follower.join(30)
    assert isinstance(results[1], DatasetError) and str(results[1]) == str(results[0])
    assert "bad.jsonl line 2: malformed JSON" in str(results[1])


def test_json_chunks_keep_lines_whole_and_arrow_memory_to_one_chunk(tmp_path: Path) -> None:
    """`json_batches` parses whole lines per chunk: a line longer than a chunk, blank lines, no final newline and an
    empty file all read right, and pyarrow's pool never holds more than about one chunk (the streaming reader it
    replaces read up to 32 blocks ahead, here the whole file)."""
    import io

    import pyarrow as pa
    import pyarrow.json as pa_json

    from trainer.data.source import json_batches

    options = pa_json.ParseOptions(explicit_schema=pa.schema([pa.field("text", pa.string())]),
                                   unexpected_field_behavior="ignore")
    texts = [f"row {i} " + "x" * (i % 97) for i in range(20_000)] + ["long " * 2000]
    body = "\n".join(json.dumps({"text": t, "other": 1}) + ("\n" if i % 1000 == 0 else "")
                     for i, t in enumerate(texts)).encode()  # some blank lines, no final newline
    got = [s for b in json_batches(io.BytesIO(body), options, chunk_bytes=4096) for s in b.column(0).to_pylist()]
    assert got == texts
    assert list(json_batches(io.BytesIO(b""), options)) == []
    big = tmp_path / "big.jsonl"
    big.write_bytes((body + b"\n") * 20)  # ~17 MB
    with big.open("rb") as fh:
        rows = 0
        for batch in json_batches(fh, options, chunk_bytes=1 << 20):
            rows += batch.num_rows
            assert pa.total_allocated_bytes() < 8 << 20
    assert rows == len(texts) * 20
