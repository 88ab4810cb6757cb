"""A tiny causal LM for tests and the demo (there is no model hub here).

`build_tiny_model(out_dir)` trains a byte-level BPE tokenizer with `tokenizers` on generated sample text, builds a
GPT-2 config (2 layers, n_embd 64, random weights) and saves both with `save_pretrained`, so
`AutoTokenizer` / `AutoModelForCausalLM.from_pretrained(out_dir)` load it like any hub model.
`write_sample_dataset(path)` writes a JSONL dataset of the same kind of text.

CLI: `python -m trainer.tiny --out DIR [--dataset FILE] [--rows N]`.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Sequence
from pathlib import Path

EOS = "<|endoftext|>"
_SUBJECTS = ["the broker", "a trainer", "the cluster", "every replica", "the queue", "a worker", "the job",
             "our model", "the operator", "a checkpoint"]
_VERBS = ["schedules", "resumes", "uploads", "trains", "admits", "watches", "saves", "restores", "packs", "retries"]
_OBJECTS = ["the next step", "a tiny model", "the latest manifest", "every shard", "the eval split", "the logs",
            "one more batch", "the learning rate", "a new attempt", "the optimizer state"]
_TAILS = ["before noon", "on the cpu", "without stalling", "after a crash", "in order", "quickly", "again",
          "under quota", "with care", "at step {n}"]


def sample_texts(rows: int, seed: int = 0) -> list[str]:
    """Deterministic, loosely structured English-like lines (a model can lower its loss on them)."""
    rng = random.Random(seed)
    lines = []
    for _ in range(rows):
        parts = [f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} "
                 f"{rng.choice(_TAILS).format(n=rng.randint(1, 99))}." for _ in range(rng.randint(1, 3))]
        lines.append(" ".join(parts).capitalize())
    return lines


def write_sample_dataset(path: Path, rows: int = 200, seed: int = 0, text_field: str = "text") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for text in sample_texts(rows, seed):
            fh.write(json.dumps({text_field: text}) + "\n")
    return path


def build_tokenizer(texts: Sequence[str], vocab_size: int = 512):  # type: ignore[no-untyped-def]
    """A byte-level BPE `PreTrainedTokenizerFast` trained on `texts`, EOS doubling as pad."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, unk_token=EOS, pad_token=EOS)


def build_tiny_model(out_dir: Path, seed: int = 0, n_layer: int = 2, n_embd: int = 64, n_positions: int = 256) -> Path:
    """Save a random-weight GPT-2 (≈130k parameters) and its tokenizer to `out_dir`; returns `out_dir`."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = build_tokenizer(sample_texts(500, seed=seed + 1))
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                        n_head=2, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.tiny", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for the model + tokenizer")
    parser.add_argument("--dataset", type=Path, help="also write a sample JSONL dataset here")
    parser.add_argument("--rows", type=int, default=200, help="rows in the sample dataset")
    args = parser.parse_args(argv)
    build_tiny_model(args.out)
    print(f"tiny model: {args.out}")
    if args.dataset:
        write_sample_dataset(args.dataset, rows=args.rows)
        print(f"sample dataset: {args.dataset} ({args.rows} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
