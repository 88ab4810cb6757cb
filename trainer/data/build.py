"""Building a dataset's packed blocks once: load the JSONL shards with `datasets` (Arrow on disk), tokenize them with
a batched `map` over `num_proc` processes, split documents into train/eval deterministically for a seed, and pack
each side's token stream (EOS after every document) into `block_size` blocks, vectorised over Arrow batches.

The result is a folder of two Arrow files (`train.arrow`, `eval.arrow`: one fixed-size list column `input_ids`) and
`meta.json`; everything is written into a temporary sibling and renamed into place, so a killed build leaves no
half-written cache behind. Peak memory is one Arrow batch, whatever the dataset's size.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer.data.source import DatasetError, json_batches, locate_problem

ROWS_PER_PROCESS = 50_000  # fewer rows than this per extra process: forking costs more than it saves


@dataclass(frozen=True)
class BuildSpec:
    """What the blocks depend on (all of it is in the cache key)."""

    text_field: str
    block_size: int
    eval_fraction: float
    seed: int
    eos: int | None


def pod_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota (a pod's `limits.cpu`)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def num_proc_for(rows: int, cpus: int) -> int:
    return max(1, min(cpus, rows // ROWS_PER_PROCESS))


def build(sources: list[tuple[str, Path]], spec: BuildSpec, tokenizer: Any, target: Path, log: Any) -> dict[str, Any]:
    """Write the packed blocks of `sources` ((uri, local path) pairs, in order) into `target`; returns meta.json."""
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        started = time.monotonic()
        raw = load_rows(sources, spec.text_field, partial / "raw")
        rows = raw.num_rows
        num_proc = num_proc_for(rows, pod_cpus())
        log.info("data: tokenizing %d documents with %d process(es) (block_size %d, text field %r)", rows, num_proc,
                 spec.block_size, spec.text_field)
        tokenized = raw.map(encode_batch, batched=True, batch_size=1000, num_proc=num_proc if num_proc > 1 else None,
                            remove_columns=raw.column_names, features=token_features(),
                            fn_kwargs={"tokenizer": tokenizer, "field": spec.text_field, "eos": spec.eos},
                            cache_file_name=str(partial / "tokens" / "tokens.arrow"), new_fingerprint="tokens",
                            desc=None)
        tokenized_s = time.monotonic() - started
        meta = pack_split(tokenized, spec, partial)
        meta.update(documents=rows, num_proc=num_proc, tokenize_s=round(tokenized_s, 3),
                    build_s=round(time.monotonic() - started, 3))
        del tokenized, raw
        shutil.rmtree(partial / "raw", ignore_errors=True)
        shutil.rmtree(partial / "tokens", ignore_errors=True)
        (partial / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if target.exists():  # another launch built the same key meanwhile: keep theirs
            shutil.rmtree(partial, ignore_errors=True)
        else:
            os.replace(partial, target)
        return meta
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def load_rows(sources: list[tuple[str, Path]], text_field: str, folder: Path) -> Any:
    """The shards' `text_field` as one memory-mapped `datasets.Dataset` (raises `DatasetError`).

    pyarrow's JSON reader parses each shard a chunk of whole lines at a time (`json_batches`) against a one-column
    schema (other fields are ignored), so memory stays one chunk; a chunk it refuses, or a null (missing) value,
    sends `locate_problem` to name the line.
    """
    import pyarrow as pa
    import pyarrow.json as pa_json
    from datasets import Dataset

    schema = pa.schema([pa.field(text_field, pa.string())])
    options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "rows.arrow"
    rows = 0
    with pa.ipc.new_stream(str(path), schema) as writer:
        for uri, local in sources:
            try:
                with local.open("rb") as body:
                    for batch in json_batches(body, options):
                        if batch.column(0).null_count:
                            raise ValueError("null")
                        writer.write_batch(batch)
                        rows += batch.num_rows
            except (pa.ArrowInvalid, ValueError) as exc:
                problem = locate_problem([(uri, local)], text_field)
                if problem is not None:
                    raise problem from exc
                raise DatasetError(f"{uri}: {str(exc).splitlines()[0]}") from exc
    pa.default_memory_pool().release_unused()  # the parse's freed pages, back to the OS before tokenizing
    if rows == 0:
        raise DatasetError(f"dataset {_named(sources)} is empty (no rows with {text_field!r})")
    return Dataset.from_file(str(path))


def _named(sources: list[tuple[str, Path]]) -> str:
    return sources[0][0] if len(sources) == 1 else f"{sources[0][0]} (+{len(sources) - 1} more)"


def token_features() -> Any:
    from datasets import Features, List, Value

    return Features({"input_ids": List(Value("int32"))})


def encode_batch(batch: dict[str, list[str]], tokenizer: Any, field: str, eos: int | None) -> dict[str, Any]:
    """Token ids of a batch of texts (EOS appended). A fast tokenizer's Rust backend is called directly (no offsets,
    no per-text `BatchEncoding` conversion): the same ids as `tokenizer(texts, add_special_tokens=False)`."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        ids = [e.ids for e in backend.encode_batch_fast(batch[field], add_special_tokens=False)]
    else:
        ids = tokenizer(batch[field], add_special_tokens=False, verbose=False)["input_ids"]
    if eos is not None:
        ids = [seq + [eos] for seq in ids]
    return {"input_ids": ids}


def eval_mask(rows: int, eval_fraction: float, seed: int) -> np.ndarray:
    """Which documents are eval: a seeded choice of `round(rows * eval_fraction)` (at least one each side)."""
    if rows < 2:
        raise DatasetError(f"dataset has {rows} row(s); at least 2 are needed (one train, one eval)")
    n_eval = min(rows - 1, max(1, round(rows * eval_fraction)))
    mask = np.zeros(rows, dtype=bool)
    mask[np.random.default_rng(seed).permutation(rows)[:n_eval]] = True
    return mask


def pack_split(tokenized: Any, spec: BuildSpec, folder: Path) -> dict[str, Any]:
    """Route each document to its side and pack both streams into Arrow files of fixed-size blocks."""
    mask = eval_mask(tokenized.num_rows, spec.eval_fraction, spec.seed)
    train = BlockWriter(folder / "train.arrow", spec.block_size)
    evals = BlockWriter(folder / "eval.arrow", spec.block_size)
    for start, values, lengths in _token_batches(tokenized):
        side = mask[start:start + len(lengths)]
        ends = np.cumsum(lengths)
        starts = ends - lengths
        train.add(_take_rows(values, starts[~side], lengths[~side]))
        evals.add(_take_rows(values, starts[side], lengths[side]))
    train_blocks = train.close(keep_short=False)
    eval_blocks = evals.close(keep_short=True)
    if train_blocks == 0:
        raise DatasetError(f"the dataset is too small for one block of {spec.block_size} tokens")
    return {"train_blocks": train_blocks, "eval_blocks": eval_blocks, "block_size": spec.block_size,
            "train_tokens": train.tokens, "eval_tokens": evals.tokens}


def _token_batches(tokenized: Any) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(first row, flat token ids, per-row lengths) per Arrow batch of the tokenized table's cache files, read
    with plain reads one batch at a time, not through the memory map: touched pages of a map count in the RSS,
    which would then grow with the dataset."""
    import pyarrow as pa

    start = 0
    for cache in tokenized.cache_files:
        with pa.OSFile(cache["filename"]) as source:
            for batch in pa.ipc.open_stream(source):
                column = batch.column("input_ids")
                offsets = column.offsets.to_numpy()
                values = column.values.to_numpy()[offsets[0]:offsets[-1]]
                yield start, values, np.diff(offsets)
                start += len(column)


def _take_rows(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenated token ids of the given rows, without a Python loop over rows."""
    if len(lengths) == 0:
        return values[:0]
    total = int(lengths.sum())
    row_of = np.repeat(np.arange(len(lengths)), lengths)
    within = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return values[starts[row_of] + within]


class BlockWriter:
    """Cuts a token stream into `block_size` blocks and appends them to an Arrow IPC stream file as they fill."""

    def __init__(self, path: Path, block_size: int) -> None:
        self.path = path
        self.block_size = block_size
        self.carry = np.zeros(0, dtype=np.int32)
        self.blocks = 0
        self.tokens = 0
        self._writer: Any = None

    def add(self, tokens: np.ndarray) -> None:
        stream = np.concatenate([self.carry, tokens.astype(np.int32, copy=False)])
        full = len(stream) // self.block_size * self.block_size
        if full:
            self._write(stream[:full], self.block_size)
        self.carry = stream[full:].copy()

    def close(self, keep_short: bool) -> int:
        """Drop the trailing remainder, except when no full block exists and `keep_short`: then it is one block."""
        if self.blocks == 0 and keep_short and len(self.carry):
            self._write(self.carry, len(self.carry))
        if self._writer is None:  # an empty file with the schema, so it opens like any other
            self._open(self.block_size)
        self._writer.close()
        return self.blocks

    def _open(self, width: int) -> None:
        import pyarrow as pa

        schema = pa.schema([pa.field("input_ids", pa.list_(pa.int32(), width))])
        self._writer = pa.ipc.new_stream(str(self.path), schema)

    def _write(self, flat: np.ndarray, width: int) -> None:
        import pyarrow as pa

        if self._writer is None:
            self._open(width)
        array = pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.int32()), width)
        self._writer.write_batch(pa.record_batch([array], names=["input_ids"]))
        self.blocks += len(array)
        self.tokens += len(flat)
