"""Datasets: JSONL from a file or a folder/prefix of shards, clear errors, a deterministic split, packing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.data import DatasetError, load_split, pack, read_texts, split_texts
from trainer.storage import S3Storage


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_reads_one_file_or_every_shard_of_a_folder_in_order(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "ds" / "part-0.jsonl", [{"text": "a"}, {"text": "b"}])
    write_jsonl(tmp_path / "ds" / "part-1.jsonl", [{"text": "c"}, "", {"text": "d", "other": 1}])
    (tmp_path / "ds" / "README.md").write_text("not data")
    assert read_texts(str(tmp_path / "ds")) == ["a", "b", "c", "d"]
    assert read_texts(str(tmp_path / "ds" / "part-1.jsonl")) == ["c", "d"]
    assert read_texts("file://" + str(tmp_path / "ds")) == ["a", "b", "c", "d"]


def test_a_custom_text_field(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"body": "x"}, {"body": "y"}])
    assert read_texts(str(path), text_field="body") == ["x", "y"]


@pytest.mark.parametrize(("rows", "message"), [
    ([{"text": "a"}, {"body": "b"}], r"d.jsonl line 2: no field 'text'"),
    ([{"text": "a"}, "{broken"], r"d.jsonl line 2: malformed JSON"),
    ([{"text": 3}], r"line 1: field 'text' is not a string"),
    (["[1, 2]"], r"line 1: expected a JSON object"),
    (["", "  "], r"is empty"),
])
def test_bad_rows_raise_errors_naming_the_line(tmp_path: Path, rows: list[object], message: str) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DatasetError, match=message):
        read_texts(str(path))


def test_a_missing_dataset_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file and no .jsonl files"):
        read_texts(str(tmp_path / "nothing"))


def test_split_is_deterministic_and_keeps_one_eval_row() -> None:
    texts = [f"row {i}" for i in range(50)]
    first, again = split_texts(texts, 0.1, seed=7), split_texts(texts, 0.1, seed=7)
    assert first == again and len(first.eval) == 5 and len(first.train) == 45
    assert sorted(first.train + first.eval) == sorted(texts)
    assert split_texts(texts, 0.1, seed=8).eval != first.eval
    tiny = split_texts(["a", "b", "c"], 0.01, seed=0)
    assert len(tiny.eval) == 1 and len(tiny.train) == 2
    with pytest.raises(DatasetError, match="at least 2"):
        split_texts(["only"], 0.1, seed=0)


def test_pack_cuts_a_stream_into_full_blocks() -> None:
    assert pack([[1, 2, 3], [4, 5]], block_size=2, separator=0) == [[1, 2], [3, 0], [4, 5]]
    assert pack([[1, 2, 3]], block_size=2) == [[1, 2]]
    assert pack([[1]], block_size=4) == []
    assert pack([[1]], block_size=4, separator=0, keep_short=True) == [[1, 0]]


def test_shards_under_an_s3_prefix(s3_bucket: str, tmp_path: Path) -> None:
    storage = S3Storage()
    for i in range(3):
        shard = write_jsonl(tmp_path / f"s{i}.jsonl", [{"text": f"{i}-{j}"} for j in range(4)])
        storage.put_file(shard, f"s3://{s3_bucket}/data/v1/shard-{i}.jsonl")
    split = load_split(f"s3://{s3_bucket}/data/v1", "text", 0.25, seed=1)
    assert len(split.train) == 9 and len(split.eval) == 3
