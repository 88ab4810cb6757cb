"""Packed blocks as the runners read them: a memory-mapped Arrow file, indexed by block number. Nothing is loaded up
front; a batch reads only its own blocks' pages. (Opening reads every record batch's header through the map, and
Linux maps up to 64 KB of already-cached pages around each page a read faults in: RssFile then shows most of a file
that was just written or is in the page cache. Those pages are clean, shared by the node's ranks and evictable;
RssAnon does not grow.)

Opening needs only pyarrow and numpy (`import datasets` costs seconds: pandas, fsspec, the hub client; so would
pyarrow's `Array.to_numpy`, which imports pandas); the `datasets.Dataset` view the `hf` runner hands to the Trainer
is opened on first use of `.dataset`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


class TokenBlocks:
    """Fixed-length token blocks (`[n, block_size]`); `blocks[indices]` is a `torch.long` tensor of those rows."""

    def __init__(self, path: Path) -> None:
        import pyarrow as pa

        self.path = path
        self._source = pa.memory_map(str(path))
        reader = pa.ipc.open_stream(self._source)
        self.block_size = int(reader.schema.field("input_ids").type.list_size)
        # zero-copy [rows, block_size] views of each record batch's values, over the memory map
        self._chunks = [_int32_view(batch.column(0).values).reshape(-1, self.block_size)
                        for batch in reader if batch.num_rows]
        self._starts = np.cumsum([0] + [len(c) for c in self._chunks])
        self._dataset: Any = None

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def dataset(self) -> Any:
        """The same file as a `datasets.Dataset` (torch format), for the HF Trainer."""
        if self._dataset is None:
            from datasets import Dataset

            self._dataset = Dataset.from_file(str(self.path)).with_format("torch")
        return self._dataset

    def __getitem__(self, indices: Any) -> Any:
        import torch

        rows = np.asarray(indices.tolist() if hasattr(indices, "tolist") else indices, dtype=np.int64).reshape(-1)
        out = np.empty((len(rows), self.block_size), dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"block index out of range (0..{len(self) - 1})")
        chunks = (np.searchsorted(self._starts, rows, side="right") - 1).tolist()
        starts = self._starts.tolist()
        for i, (row, c) in enumerate(zip(rows.tolist(), chunks, strict=True)):  # a batch is a few rows: copy each
            out[i] = self._chunks[c][row - starts[c]]
        return torch.from_numpy(out)


def _int32_view(values: Any) -> np.ndarray:
    """A read-only numpy view of an int32 Arrow array's data buffer (no nulls), without `Array.to_numpy`: that
    imports pandas (pyarrow's pandas shim) on first use, about a second and 30 MB on a start that needs neither."""
    return np.frombuffer(values.buffers()[1], dtype=np.int32, count=len(values), offset=values.offset * 4)


def causal_lm_collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack blocks into a causal-LM batch: labels are the inputs (the model shifts them), no padding, no masking
    (EOS separators stay targets even when the tokenizer's pad token is EOS)."""
    import torch

    ids = torch.stack([torch.as_tensor(e["input_ids"], dtype=torch.long) for e in examples])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
