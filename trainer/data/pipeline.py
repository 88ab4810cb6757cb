"""The one data path every runner calls: `prepare(ctx, tokenizer)` -> packed train/eval blocks.

Once per node: local rank 0 lists the shards, computes the dataset's content fingerprint and the cache key
(fingerprint, tokenizer, block size, text field, split), and builds the cache under the work dir if it is missing
(downloading S3 shards to the node first); every other rank of the node waits for its note in the launch's scratch
dir and opens the same files. A restarted attempt (or a pod with a persistent work dir) finds the cache and skips
tokenization, and says so in the log. A user error found by local rank 0 reaches every rank as the same
`DatasetError`, so each exits with status 2 and the same line.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.data.blocks import TokenBlocks
from trainer.data.build import BuildSpec, build
from trainer.data.source import DatasetError, fingerprint, list_shards, local_copies
from trainer.storage import storage_for

if TYPE_CHECKING:
    from trainer.context import RunContext

CACHE_FORMAT = "packed-blocks-v1"
NOTE = "data-ready.json"
POLL_S = 0.1


@dataclass
class PackedData:
    train: TokenBlocks
    eval: TokenBlocks
    fingerprint: str
    cache_dir: Path
    built: bool  # this process tokenized (False: opened a cache another process or attempt built)


def cache_root(ctx: RunContext) -> Path:
    from trainer.context import work_root

    return work_root(ctx.config) / "datasets"


def tokenizer_tag(tokenizer: Any) -> str:
    """A hash of what the tokenizer maps text to: its full serialised form (fast tokenizers) plus its class."""
    import xxhash

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        body = backend.to_str()
    else:
        from datasets.fingerprint import Hasher

        body = Hasher.hash(tokenizer)
    return xxhash.xxh3_128(f"{type(tokenizer).__name__}\0{tokenizer.eos_token_id}\0{body}".encode()).hexdigest()


def cache_key(data_fingerprint: str, tokenizer: str, spec: BuildSpec) -> str:
    import xxhash

    parts = [CACHE_FORMAT, data_fingerprint, tokenizer, str(spec.block_size), spec.text_field,
             repr(spec.eval_fraction), str(spec.seed), str(spec.eos)]
    return xxhash.xxh3_128("\0".join(parts).encode()).hexdigest()


def prepare(ctx: RunContext, tokenizer: Any) -> PackedData:
    """The run's packed blocks (raises `DatasetError` for what the user can fix). Call on every rank."""
    note = ctx.work_dir / NOTE
    if ctx.dist.is_local_main:
        try:
            data = build_or_open(ctx, tokenizer)
        except DatasetError as exc:
            write_note(note, {"error": str(exc), "kind": "dataset"})
            raise
        except BaseException as exc:
            write_note(note, {"error": f"local rank 0 failed to prepare the data: {exc}", "kind": "other"})
            raise
        write_note(note, {"cache_dir": str(data.cache_dir), "fingerprint": data.fingerprint})
    else:
        ctx.logger.info("data: waiting for local rank 0 to prepare the dataset")
        info = wait_for_note(note)
        if "error" in info:
            raise (DatasetError if info.get("kind") == "dataset" else RuntimeError)(info["error"])
        cache_dir = Path(info["cache_dir"])
        data = PackedData(TokenBlocks(cache_dir / "train.arrow"), TokenBlocks(cache_dir / "eval.arrow"),
                          info["fingerprint"], cache_dir, built=False)
        ctx.logger.info("data: opened the node's cache %s (tokenized by local rank 0)", cache_dir)
    record_fingerprint(ctx, data)
    return data


def build_or_open(ctx: RunContext, tokenizer: Any) -> PackedData:
    from filelock import FileLock

    t = ctx.config.training
    uri = ctx.config.dataset_uri
    storage = storage_for(uri)
    shards = list_shards(uri, storage)
    data_fp = fingerprint(shards)
    spec = BuildSpec(t.dataset_text_field, t.block_size, t.eval_fraction, t.seed, tokenizer.eos_token_id)
    root = cache_root(ctx)
    target = root / cache_key(data_fp, tokenizer_tag(tokenizer), spec)
    root.mkdir(parents=True, exist_ok=True)
    built = False
    with FileLock(str(target) + ".lock"):  # two launches on one node with the same key build it once
        if (target / "meta.json").is_file():
            meta = json.loads((target / "meta.json").read_text())
            ctx.logger.info("data: cache hit %s: skipping tokenization (%d train / %d eval blocks of dataset %s)",
                            target, meta["train_blocks"], meta["eval_blocks"], data_fp)
        else:
            started = time.monotonic()
            download = root / f"{target.name}.download"
            try:
                paths = local_copies(shards, storage, download)
                meta = build(list(zip([s.uri for s in shards], paths, strict=True)), spec, tokenizer, target,
                             ctx.logger)
            finally:
                shutil.rmtree(download, ignore_errors=True)
            built = True
            ctx.logger.info("data: tokenized %d documents of %d shard(s) into %d train / %d eval blocks in %.1fs "
                            "(dataset %s); cache %s", meta["documents"], len(shards), meta["train_blocks"],
                            meta["eval_blocks"], time.monotonic() - started, data_fp, target)
    return PackedData(TokenBlocks(target / "train.arrow"), TokenBlocks(target / "eval.arrow"), data_fp, target,
                      built=built)


def record_fingerprint(ctx: RunContext, data: PackedData) -> None:
    """`config/run.json` gains the dataset's fingerprint and block counts (rank 0)."""
    ctx.reporter.write_run_config({"dataset": {"uri": ctx.config.dataset_uri, "fingerprint": data.fingerprint,
                                               "train_blocks": len(data.train), "eval_blocks": len(data.eval),
                                               "block_size": ctx.config.training.block_size,
                                               "streaming": False}})


def write_note(path: Path, info: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(info))
    os.replace(partial, path)


def wait_for_note(path: Path) -> dict[str, Any]:
    """Local rank 0's note (no timeout: torchrun stops the whole node's group if rank 0 dies)."""
    while not path.is_file():
        time.sleep(POLL_S)
    result: dict[str, Any] = json.loads(path.read_text())
    return result
