"""Training data at scale, the one way every runner reads it: JSONL shards (a file, a folder or an S3 prefix) loaded
with Hugging Face `datasets` (Arrow, memory-mapped), tokenized once per node into a cache keyed by content, packed
into fixed-length blocks; or, with `dataset_streaming`, read shard by shard and split across ranks.

Errors a user can fix raise `DatasetError` naming the file and line; `train.py` turns it into exit status 2.
"""

from trainer.data.blocks import TokenBlocks, causal_lm_collate
from trainer.data.pipeline import PackedData, prepare
from trainer.data.source import DatasetError

__all__ = ["DatasetError", "PackedData", "TokenBlocks", "causal_lm_collate", "prepare"]
