"""Datasets: JSONL rows from one file or a prefix/folder of `.jsonl` shards, a deterministic train/eval split, and
packing of token ids into fixed-length blocks (no padding to the longest sequence).

Errors a user can fix raise `DatasetError` with the file and line number; `train.py` turns it into exit status 2.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from trainer.storage import Storage, storage_for


class DatasetError(ValueError):
    """The dataset is missing, empty or malformed; the message says where."""


@dataclass(frozen=True)
class Split:
    train: list[str]
    eval: list[str]


def dataset_files(uri: str, storage: Storage) -> list[str]:
    """The `.jsonl` objects a dataset URI names: itself when it is one object, else every `.jsonl` under it, sorted."""
    if uri.endswith(".jsonl") and storage.exists(uri):
        return [uri]
    prefix = uri if uri.endswith("/") else uri + "/"
    files = [u for u in storage.list(prefix) if u.endswith(".jsonl")]
    if not files:
        if storage.exists(uri):
            return [uri]
        raise DatasetError(f"dataset {uri}: no such file and no .jsonl files under it")
    return files


def read_texts(uri: str, storage: Storage | None = None, text_field: str = "text") -> list[str]:
    """Every row's `text_field` value, in file order then line order. Blank lines are skipped."""
    storage = storage or storage_for(uri)
    texts: list[str] = []
    for file_uri in dataset_files(uri, storage):
        texts.extend(parse_jsonl(storage.get_bytes(file_uri), file_uri, text_field))
    if not texts:
        raise DatasetError(f"dataset {uri} is empty (no rows with {text_field!r})")
    return texts


def parse_jsonl(raw: bytes, source: str, text_field: str) -> list[str]:
    texts = []
    for number, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{source} line {number}: malformed JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise DatasetError(f"{source} line {number}: expected a JSON object")
        if text_field not in row:
            raise DatasetError(f"{source} line {number}: no field {text_field!r} (set dataset_text_field)")
        value = row[text_field]
        if not isinstance(value, str):
            raise DatasetError(f"{source} line {number}: field {text_field!r} is not a string")
        texts.append(value)
    return texts


def split_texts(texts: Sequence[str], eval_fraction: float, seed: int) -> Split:
    """A deterministic shuffle-split (same seed, same rows -> same split), with at least one row on each side."""
    if len(texts) < 2:
        raise DatasetError(f"dataset has {len(texts)} row(s); at least 2 are needed (one train, one eval)")
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    n_eval = min(len(texts) - 1, max(1, round(len(texts) * eval_fraction)))
    eval_idx = set(order[:n_eval])
    return Split(train=[t for i, t in enumerate(texts) if i not in eval_idx],
                 eval=[t for i, t in enumerate(texts) if i in eval_idx])


def pack(sequences: Iterable[Sequence[int]], block_size: int, separator: int | None = None,
         keep_short: bool = False) -> list[list[int]]:
    """Concatenate token sequences (with `separator` after each, e.g. EOS) and cut into `block_size` blocks.

    The trailing remainder is dropped, except when no full block exists and `keep_short` is true: then the whole
    stream is one shorter block (so a tiny eval split still yields something to evaluate).
    """
    if block_size < 1:
        raise ValueError("block_size must be >= 1")
    stream: list[int] = []
    for seq in sequences:
        stream.extend(seq)
        if separator is not None:
            stream.append(separator)
    blocks = [stream[i:i + block_size] for i in range(0, len(stream) - block_size + 1, block_size)]
    if not blocks and keep_short and stream:
        blocks = [stream]
    return blocks


def tokenize_and_pack(texts: Sequence[str], encode: Callable[[str], Sequence[int]], block_size: int,
                      separator: int | None, keep_short: bool = False) -> list[list[int]]:
    """`encode` each text (e.g. `lambda t: tokenizer(t)["input_ids"]`) and `pack` the ids."""
    return pack((encode(t) for t in texts), block_size, separator, keep_short)


def load_split(dataset_uri: str, text_field: str, eval_fraction: float, seed: int) -> Split:
    """Read the dataset (S3 or local) and split it; the one call a runner needs."""
    return split_texts(read_texts(dataset_uri, storage_for(dataset_uri), text_field), eval_fraction, seed)
