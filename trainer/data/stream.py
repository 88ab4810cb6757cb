"""Streaming mode (`extra_args.dataset_streaming: true`), for datasets larger than a node's disk: the shards are read
as a `datasets.IterableDataset` of packed blocks, never downloaded or cached whole.

Each shard is read in chunks of whole JSON lines (`json_batches`: pyarrow, from the file or straight from the S3
object's body), tokenized in batches and packed into `block_size` blocks (EOS after every document; a shard's tail
shorter than a block is dropped). The generator takes the shard list as its `gen_kwargs`, so `split_dataset_by_node`
hands every rank its own shards (with a shard count divisible by the world size) or, otherwise, every `world_size`-th
block: either way the ranks read disjoint blocks. The position is the `IterableDataset`'s own `state_dict()` (shard
index and blocks into it) plus the data epoch; the `meta` and `nemo` runners gather every rank's position into their
checkpoints and restore it exactly; the `hf` Trainer skips the batches already seen on resume. There is no eval split in
this mode. Memory is one JSON chunk and one batch of tokens, whatever the dataset's size.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from trainer.data.build import encode_batch
from trainer.data.source import DatasetError, fingerprint, json_batches, list_shards
from trainer.storage import LocalStorage, S3Storage, split_s3, storage_for

if TYPE_CHECKING:
    from trainer.context import RunContext
    from trainer.dist import DistInfo

STREAM_JSON_BLOCK_BYTES = 1 << 20
TOKENIZE_BATCH = 1000


def stream_blocks(shards: list[str], field: str, block_size: int, tokenizer: Any,
                  eos: int | None) -> Iterator[dict[str, Any]]:
    """The packed blocks of `shards`, in order (the `IterableDataset` generator; `shards` is what it splits)."""
    for uri in shards:
        carry = np.zeros(0, dtype=np.int32)
        for texts in shard_texts(uri, field):
            for start in range(0, len(texts), TOKENIZE_BATCH):
                ids = encode_batch({field: texts[start:start + TOKENIZE_BATCH]}, tokenizer, field, eos)["input_ids"]
                carry = np.concatenate([carry, *(np.asarray(seq, dtype=np.int32) for seq in ids)])
                full = len(carry) // block_size
                for row in carry[:full * block_size].reshape(full, block_size):
                    yield {"input_ids": row}
                carry = carry[full * block_size:]


def shard_texts(uri: str, field: str) -> Iterator[list[str]]:
    """One shard's `field` values, a JSON chunk at a time (raises `DatasetError` naming the shard and line)."""
    import pyarrow as pa
    import pyarrow.json as pa_json

    invalid = pa.ArrowInvalid  # bound here: a generator closed at interpreter exit outlives the module's globals
    schema = pa.schema([pa.field(field, pa.string())])
    options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    line = 0
    with open_shard(uri) as body:
        try:
            for batch in json_batches(body, options, STREAM_JSON_BLOCK_BYTES):
                column = batch.column(0)
                if column.null_count:
                    first = column.is_null().to_pylist().index(True)
                    raise DatasetError(f"{uri} line {line + first + 1}: no field {field!r} (set dataset_text_field)")
                line += batch.num_rows
                yield column.to_pylist()
        except invalid as exc:
            raise DatasetError(f"{uri} after line {line}: {str(exc).splitlines()[0]}") from exc


def open_shard(uri: str) -> Any:
    """A readable binary file object over the shard (an S3 object's body is streamed, not downloaded)."""
    storage = storage_for(uri)
    if isinstance(storage, S3Storage):
        bucket, key = split_s3(uri)
        return storage.client.get_object(Bucket=bucket, Key=key)["Body"]
    return LocalStorage.path(uri).open("rb")


def block_stream(ctx: RunContext, tokenizer: Any) -> Any:
    """The run's blocks as one `datasets.IterableDataset` over all its shards (not yet split by rank)."""
    import datasets
    from datasets import Features, IterableDataset, List, Value

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    t = ctx.config.training
    storage = storage_for(ctx.config.dataset_uri)
    listed = list_shards(ctx.config.dataset_uri, storage)
    shards = [s.uri for s in listed]
    ctx.reporter.write_run_config({"dataset": {"uri": ctx.config.dataset_uri, "fingerprint": fingerprint(listed),
                                               "shards": len(shards), "block_size": t.block_size,
                                               "streaming": True}})
    ctx.logger.info("data: streaming %d shard(s) of %s (block_size %d, text field %r, %d process(es))", len(shards),
                    ctx.config.dataset_uri, t.block_size, t.dataset_text_field, ctx.dist.world_size)
    return IterableDataset.from_generator(
        stream_blocks, features=Features({"input_ids": List(Value("int32"), length=t.block_size)}),
        gen_kwargs={"shards": shards, "field": t.dataset_text_field, "block_size": t.block_size,
                    "tokenizer": tokenizer, "eos": tokenizer.eos_token_id})


class StreamSampler:
    """This rank's train micro-batches from the stream (the `meta`/`nemo` counterpart of `BlockSampler`): an endless
    sequence of `[batch_size, block_size]` tensors, data epochs rolling over, resumable from `state_dict()`."""

    def __init__(self, stream: Any, batch_size: int, dist: DistInfo, log: Any = None) -> None:
        from datasets.distributed import split_dataset_by_node

        self.dist = dist
        self.batch_size = batch_size
        self.dataset = split_dataset_by_node(stream, rank=dist.rank, world_size=dist.world_size).with_format("numpy")
        if log is not None:
            split = (f"shards {dist.rank}/{dist.world_size}: {self.dataset.num_shards} of {stream.num_shards}"
                     if stream.num_shards % dist.world_size == 0 else
                     f"every {dist.world_size}th block from offset {dist.rank} (shard count not divisible)")
            log.info("data: rank %d streams %s", dist.rank, split)
        self.epoch = 0
        self.micro_batches = 0
        self._iterator: Iterator[dict[str, Any]] | None = None
        self._yielded = 0  # blocks this data epoch has given (none in a whole epoch: the share is empty)

    position = 0  # how far into the data epoch is unknown (the runners log `epoch + position / num_blocks`)
    num_blocks = 1
    batches_per_epoch = 0  # unknown: streaming needs max_steps

    def batch(self, blocks: Any = None) -> Any:
        """The next micro-batch (`blocks` is unused: the stream is the data)."""
        import torch

        rows: list[np.ndarray] = []
        while len(rows) < self.batch_size:
            if self._iterator is None:
                self.dataset.set_epoch(self.epoch)
                self._iterator = iter(self.dataset)
            try:
                rows.append(next(self._iterator)["input_ids"])
                self._yielded += 1
            except StopIteration:
                if not self._yielded:
                    raise DatasetError(f"rank {self.dist.rank}'s share of the streamed dataset packs into no block of "
                                       f"{self.dataset.features['input_ids'].length} tokens") from None
                self._iterator, self.epoch, self._yielded = None, self.epoch + 1, 0
        self.micro_batches += 1
        return torch.from_numpy(np.stack(rows).astype(np.int64))

    def local_state(self) -> dict[str, Any]:
        stream = self.dataset.state_dict() if self._iterator is not None else None
        return {"epoch": self.epoch, "micro_batches": self.micro_batches, "stream": stream}

    def state_dict(self) -> dict[str, Any]:
        """Every rank's position, in rank order (a collective: call on all ranks)."""
        mine = self.local_state()
        ranks: list[Any] = [mine]
        if self.dist.distributed:
            import torch.distributed as torch_dist

            ranks = [None] * self.dist.world_size
            torch_dist.all_gather_object(ranks, mine)
        return {"streaming": True, "ranks": ranks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ranks = state.get("ranks") or []
        if len(ranks) != self.dist.world_size:
            raise DatasetError(f"a streaming checkpoint of {len(ranks)} process(es) resumes only on as many "
                               f"(now {self.dist.world_size})")
        mine = ranks[self.dist.rank]
        self.epoch, self.micro_batches = int(mine["epoch"]), int(mine["micro_batches"])
        self._iterator = None
        if mine["stream"] is not None:
            self.dataset.set_epoch(self.epoch)
            self.dataset.load_state_dict(mine["stream"])
            self._iterator, self._yielded = iter(self.dataset), 1

    def seek(self, micro_batch: int) -> None:
        """Replay the stream to the `micro_batch`-th micro-batch (what a checkpoint without a position needs)."""
        while self.micro_batches < micro_batch:
            self.batch()


class EmptyBlocks:
    """No blocks (the eval side in streaming mode)."""

    block_size = 0

    def __len__(self) -> int:
        return 0
