"""The baselines of `bench/runner_bench.py`: a bare PyTorch loop and a bare `transformers.Trainer` on the tiny model.

`python -m bench._bare_loop {loop|trainer} MODEL_DIR STEPS WARMUP` trains STEPS steps of batch 4 × 128 tokens with
AdamW (lr 3e-4, gradients clipped at 1.0), one process, and prints one JSON line: `{"step_s": …}`, the mean seconds
per step from the end of step WARMUP to the end of step STEPS (the same window the runner's metrics give).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import torch

BATCH, BLOCK, LR = 4, 128, 3e-4


def _blocks(vocab: int, steps: int) -> torch.Tensor:
    return torch.randint(0, vocab, (steps * BATCH, BLOCK), generator=torch.Generator().manual_seed(0))


def bare_loop(model: Any, steps: int, warmup: int) -> float:
    data = _blocks(model.config.vocab_size, steps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    model.train()
    marks: dict[int, float] = {}
    for step in range(1, steps + 1):
        batch = data[(step - 1) * BATCH: step * BATCH]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        float(loss)  # the value is read, as a loop that logs it would
        marks[step] = time.monotonic()
    return (marks[steps] - marks[warmup]) / (steps - warmup)


def bare_trainer(model: Any, steps: int, warmup: int, out_dir: str) -> float:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    data = _blocks(model.config.vocab_size, steps)
    rows = [{"input_ids": row, "labels": row} for row in data]
    marks: dict[int, float] = {}

    class Marks(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            marks[state.global_step] = time.monotonic()

    args = TrainingArguments(output_dir=out_dir, max_steps=steps, per_device_train_batch_size=BATCH,
                             learning_rate=LR, max_grad_norm=1.0, logging_steps=1, save_strategy="no",
                             report_to=[], use_cpu=True, dataloader_num_workers=0, disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=rows, callbacks=[Marks()]).train()
    return (marks[steps] - marks[warmup]) / (steps - warmup)


def main(argv: list[str]) -> None:
    from transformers import AutoModelForCausalLM

    kind, model_dir, steps, warmup = argv[0], argv[1], int(argv[2]), int(argv[3])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if kind == "loop":
        step_s = bare_loop(model, steps, warmup)
    else:
        step_s = bare_trainer(model, steps, warmup, argv[4])
    print(json.dumps({"step_s": step_s}))


if __name__ == "__main__":
    main(sys.argv[1:])
