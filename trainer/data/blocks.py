"""Packed blocks as the runners read them: a memory-mapped Arrow file, indexed by block number. Nothing is loaded up
front; a batch reads only its own blocks' pages.

Opening needs only pyarrow (`import datasets` costs seconds: pandas, fsspec, the hub client); the `datasets.Dataset`
view the `hf` runner hands to the Trainer is opened on first use of `.dataset`.
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
        self._chunks = [batch.column(0).values.to_numpy(zero_copy_only=True).reshape(-1, self.block_size)
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
        chunk = np.searchsorted(self._starts, rows, side="right") - 1
        for c in np.unique(chunk):
            chosen = chunk == c
            out[chosen] = self._chunks[c][rows[chosen] - self._starts[c]]
        return torch.from_numpy(out)


def causal_lm_collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack blocks into a causal-LM batch: labels are the inputs (the model shifts them), no padding, no masking
    (EOS separators stay targets even when the tokenizer's pad token is EOS)."""
    import torch

    ids = torch.stack([torch.as_tensor(e["input_ids"], dtype=torch.long) for e in examples])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
