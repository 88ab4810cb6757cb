"""Packed blocks as the runners read them: a memory-mapped Arrow file opened with `datasets`, indexed by block
number. Nothing is loaded up front; a batch reads only its own blocks' pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class TokenBlocks:
    """Fixed-length token blocks (`[n, block_size]`); `blocks[indices]` is a `torch.long` tensor of those rows."""

    def __init__(self, path: Path) -> None:
        from datasets import Dataset

        self.path = path
        self.dataset: Any = Dataset.from_file(str(path)).with_format("torch")

    def __len__(self) -> int:
        return int(self.dataset.num_rows)

    @property
    def block_size(self) -> int:
        return int(self.dataset.features["input_ids"].length)

    def __getitem__(self, indices: Any) -> Any:
        import torch

        rows = indices.tolist() if hasattr(indices, "tolist") else list(indices)
        if isinstance(rows, int):
            rows = [rows]
        if not rows:
            return torch.zeros((0, self.block_size), dtype=torch.long)
        return self.dataset[rows]["input_ids"].to(torch.long)


def causal_lm_collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack blocks into a causal-LM batch: labels are the inputs (the model shifts them), no padding, no masking
    (EOS separators stay targets even when the tokenizer's pad token is EOS)."""
    import torch

    ids = torch.stack([torch.as_tensor(e["input_ids"], dtype=torch.long) for e in examples])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
