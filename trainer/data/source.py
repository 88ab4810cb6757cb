"""Where a dataset's rows come from: the `.jsonl` objects a URI names (one file, a folder, an S3 prefix of shards),
their content fingerprint, a node-local copy to load from, and the user errors (one line naming file and line).

The happy path never parses JSON in Python: `datasets`' json builder (pyarrow) reads the shards. When it refuses a
file, or the text field is missing, null or not a string somewhere, `locate_problem` scans the files line by line to
name the first bad line, so the user gets the same one-line message whatever went wrong.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.storage import LocalStorage, Storage

HASH_CHUNK = 8 << 20
JSON_CHUNK_BYTES = 2 << 20  # whole lines parsed per call: the JSON side's memory is one chunk and its batch


class DatasetError(ValueError):
    """The dataset is missing, empty or malformed; the message says where."""


@dataclass(frozen=True)
class Shard:
    uri: str  # as the user named it (s3://... or a local path)
    tag: str  # content tag: S3 ETag + size, or a hash of the local file's bytes


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


def list_shards(uri: str, storage: Storage) -> list[Shard]:
    return [Shard(u, storage.content_tag(u)) for u in dataset_files(uri, storage)]


def fingerprint(shards: list[Shard]) -> str:
    """The dataset's content fingerprint: its shards' names (relative to the dataset) and content tags, in order."""
    import xxhash

    digest = xxhash.xxh3_128()
    for shard in shards:
        digest.update(f"{shard.uri.rsplit('/', 1)[-1]}\0{shard.tag}\n".encode())
    return digest.hexdigest()


def local_copies(shards: list[Shard], storage: Storage, folder: Path) -> list[Path]:
    """Paths `datasets` can open: local shards as they are, S3 shards downloaded into `folder` (node-local)."""
    paths = []
    for index, shard in enumerate(shards):
        if shard.uri.startswith("s3://"):
            path = folder / f"{index:06d}-{shard.uri.rsplit('/', 1)[-1]}"
            storage.get_file(shard.uri, path)
            paths.append(path)
        else:
            paths.append(LocalStorage.path(shard.uri))
    return paths


def json_batches(body: Any, options: Any, chunk_bytes: int = JSON_CHUNK_BYTES) -> Iterator[Any]:
    """The record batches of a JSONL byte stream (`body.read(n)`: a file, an S3 object's body), parsed by pyarrow
    one chunk of whole lines at a time, in the calling thread.

    Not `pyarrow.json.open_json`: its streaming reader reads up to 32 blocks ahead of the consumer on a background
    thread (a 40 MB file sat whole in Arrow's pool at the first batch), so its memory grew with the file up to
    32 blocks. Raises `pyarrow.ArrowInvalid` for what pyarrow refuses (the callers name the line).
    """
    import pyarrow as pa
    import pyarrow.json as pa_json

    carry = b""
    while True:
        data = body.read(chunk_bytes)
        if data:
            data = carry + data if carry else data
            cut = data.rfind(b"\n") + 1
            if cut == 0:  # one line longer than a chunk so far: read on
                carry = data
                continue
            chunk, carry = pa.py_buffer(data).slice(0, cut), data[cut:]
        else:
            chunk, carry = pa.py_buffer(carry), b""
        if chunk.size:  # (blank lines parse to no rows; only empty input is an error)
            read = pa_json.ReadOptions(use_threads=False, block_size=chunk.size + 1)
            yield from pa_json.read_json(pa.BufferReader(chunk), read_options=read, parse_options=options).to_batches()
        if not data:
            return


def locate_problem(sources: list[tuple[str, Path]], text_field: str) -> DatasetError | None:
    """The first line that breaks the contract (malformed JSON, not an object, no field, not a string), or None."""
    for uri, path in sources:
        for number, line in _lines(path):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                return DatasetError(f"{uri} line {number}: malformed JSON ({exc.msg})")
            if not isinstance(row, dict):
                return DatasetError(f"{uri} line {number}: expected a JSON object")
            if text_field not in row:
                return DatasetError(f"{uri} line {number}: no field {text_field!r} (set dataset_text_field)")
            if not isinstance(row[text_field], str):
                return DatasetError(f"{uri} line {number}: field {text_field!r} is not a string")
    return None


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        yield from enumerate(fh, start=1)
