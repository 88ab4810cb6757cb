"""What the trainer scenarios share: moto's S3 server behind the fault proxy, the tiny model and dataset, real
trainer processes (`python -m trainer`, or `torchrun … trainer/train.py` for two processes) and what a run left in
S3, read with boto3 straight from moto (never through the trainer's own code).

The trainer runs as the PyTorchJob runs it (the same flags the broker renders, `--resume` for a later attempt);
the broker is not involved, so these scenarios read S3's state only, not Redis.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devstack.s3 import DUMMY_CREDENTIALS, S3Server
from reliability.s3_proxy import Faults, S3Proxy
from reliability.table import Row as Table
from tests.trainer.runs import python_m_trainer, torchrun_train_py, trainer_args, trainer_env
from trainer.tiny import write_sample_dataset

#: Small and deterministic: the resumed losses must equal the uninterrupted run's bitwise (dropout on, so the RNG
#: state in the checkpoint matters). A checkpoint every 5 steps gives each run several uploads to be killed in.
SAVE_STEPS = 5
TRAINING = {"save_steps": SAVE_STEPS, "logging_steps": 5, "batch_size": 4, "gradient_accumulation": 2, "block_size": 64,
            "lr": 1e-3, "warmup_steps": 2, "weight_decay": 0.01, "seed": 3}
MAX_STEPS = 20
CHECKPOINT_STEPS = list(range(SAVE_STEPS, MAX_STEPS + 1, SAVE_STEPS))
RUN_TIMEOUT_S = 400
#: `--trainer-runs`: how many runs each trainer scenario makes, instead of its full or quick count.
RUNS: int | None = None
#: A train row of `logs/metrics.jsonl`: step, loss, lr, grad norm.
TrainRow = tuple[int, float, float, float]


class TrainerLab:
    """`with TrainerLab(workdir) as lab:` moto's S3, a proxy in front of it, a bucket, the tiny model, a dataset."""

    def __init__(self, workdir: Path, faults: Faults | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.s3 = S3Server()
        self.faults = faults

    def __enter__(self) -> TrainerLab:
        self.s3.start()
        self.proxy = S3Proxy(self.s3.endpoint_url, self.faults).start()
        self.bucket = self.s3.new_bucket("rel")
        self.client = self.s3.client()
        self.model = tiny_model(self.workdir.parent)
        self.dataset = write_sample_dataset(self.workdir / "train.jsonl", rows=200)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proxy.stop()
        self.s3.stop()

    def base(self) -> str:
        return f"s3://{self.bucket}/runs"

    def prefix(self, run_id: str) -> str:
        """The run's key prefix in the bucket."""
        return f"runs/{run_id}/framework=meta"

    def argv(self, run_id: str, nproc: int, *, resume: bool = False) -> list[str]:
        args = trainer_args("meta", run_id, self.base(), str(self.dataset), str(self.model), max_steps=MAX_STEPS,
                            **TRAINING, **({"resume": True} if resume else {}))
        return python_m_trainer(args) if nproc == 1 else torchrun_train_py(nproc, args)

    def env(self) -> dict[str, str]:
        return trainer_env(self.workdir / "work", {"AWS_ENDPOINT_URL": self.proxy.url, **DUMMY_CREDENTIALS})

    def run(self, run_id: str, nproc: int, *, resume: bool = False, log: Path | None = None) -> tuple[int, str]:
        """Run the trainer to its end; `(exit status, its output)`."""
        log = log or self.workdir / f"{run_id}{'-resume' if resume else ''}.log"
        with log.open("wb") as out:
            done = subprocess.run(self.argv(run_id, nproc, resume=resume), env=self.env(), stdout=out,
                                  stderr=subprocess.STDOUT, timeout=RUN_TIMEOUT_S, start_new_session=True)
        return done.returncode, log.read_text(errors="replace")

    # --- what S3 holds ----------------------------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()  # type: ignore[no-any-return]
        except self.client.exceptions.NoSuchKey:
            return None

    def sizes(self, prefix: str) -> dict[str, int]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}

    def complete_steps(self, run_id: str) -> list[int]:
        """Steps whose manifest exists in S3 and lists only files present there with the listed sizes."""
        root = f"{self.prefix(run_id)}/checkpoints"
        present = self.sizes(root + "/")
        steps = []
        for key in present:
            name = key.rsplit("/", 1)[1]
            if key.count("/") == root.count("/") + 1 and name.startswith("step-") and name.endswith(".json"):
                manifest = json.loads(self.get(key) or b"{}")
                if all(present.get(f"{root}/{f['path']}") == f["size"] for f in manifest.get("files", [])):
                    steps.append(int(manifest["step"]))
        return sorted(steps)

    def train_rows(self, run_id: str) -> list[TrainRow]:
        """`(step, loss, lr, grad_norm)` of every train row in the run's `logs/metrics.jsonl`, in file order."""
        raw = self.get(f"{self.prefix(run_id)}/logs/metrics.jsonl") or b""
        rows = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
        return [(int(r["step"]), r["loss"], r["lr"], r["grad_norm"]) for r in rows if r.get("kind") == "train"]

    def progress(self, run_id: str) -> dict[str, Any]:
        return json.loads(self.get(f"{self.prefix(run_id)}/logs/progress.json") or b"{}")  # type: ignore[no-any-return]


def runs(full: int, quick: bool) -> int:
    """How many runs a trainer scenario makes: `--trainer-runs` if given, else 2 in quick mode, else `full`."""
    return RUNS or (2 if quick else full)


def each_run(lab: TrainerLab, n: int, tag: str) -> Iterator[tuple[int, str, int, list[TrainRow]]]:
    """`(index, run id, processes, the uninterrupted reference's train rows)` of a scenario's `n` runs: every other
    one two processes under torchrun."""
    for i in range(n):  # n: the scenario's count, `RUNS` applied (see `runs`)
        nproc = 1 if i % 2 == 0 else 2
        yield i, f"{tag}-{i}", nproc, reference(lab, nproc)


def tiny_model(root: Path) -> Path:
    """The tiny GPT-2 and its tokenizer, built once per reliability run through `python -m trainer.tiny`."""
    out = root / "tiny-model"
    if not (out / "config.json").exists():
        subprocess.run([sys.executable, "-m", "trainer.tiny", "--out", str(out)], check=True, timeout=600,
                       capture_output=True)
    return out


def compare(rows: list[TrainRow], reference: list[TrainRow]
            ) -> tuple[int, int, int]:
    """`(duplicated, lost, differing)` train rows of a run against the uninterrupted reference (by step)."""
    steps = Counter(r[0] for r in rows)
    duplicated = sum(n - 1 for n in steps.values() if n > 1)
    want = {r[0]: r for r in reference}
    got = {r[0]: r for r in rows}
    lost = len(want.keys() - got.keys())
    differing = sum(1 for step, row in got.items() if step in want and row != want[step])
    differing += len(got.keys() - want.keys())
    return duplicated, lost, differing


def reference(lab: TrainerLab, nproc: int) -> list[TrainRow]:
    """The train rows of one uninterrupted run on `nproc` processes without faults (kept for the other scenarios
    of this reliability run in the work folder's parent)."""
    cached = lab.workdir.parent / f"reference-meta-{nproc}.json"
    if cached.exists():
        return [tuple(r) for r in json.loads(cached.read_text())]  # type: ignore[misc]
    faults, lab.proxy.faults = lab.proxy.faults, Faults()
    try:
        code, output = lab.run(f"reference-{nproc}", nproc)
    finally:
        lab.proxy.faults = faults
    if code != 0:
        raise RuntimeError(f"the uninterrupted reference run on {nproc} processes exited {code}:\n{output[-3000:]}")
    rows = lab.train_rows(f"reference-{nproc}")
    cached.write_text(json.dumps(rows))
    return rows


def check_finished(lab: TrainerLab, run_id: str, code: int, ref: list[TrainRow]
                   ) -> tuple[list[str], bool, int, int]:
    """What S3 shows of a run that should have finished: `(problems, finished, duplicated rows, lost rows)`.
    Finished: exit 0 and `logs/progress.json` completed at the last step; its train rows must equal `ref`'s and
    every checkpoint be complete."""
    problems = []
    progress = lab.progress(run_id)
    finished = code == 0 and progress.get("state") == "completed" and progress.get("step") == MAX_STEPS
    if not finished:
        problems.append(f"the run exited {code}, progress {progress}")
    duplicated, lost, differing = compare(lab.train_rows(run_id), ref)
    if differing:
        problems.append(f"{differing} train rows differ from the uninterrupted run's")
    steps = lab.complete_steps(run_id)
    if steps != CHECKPOINT_STEPS:
        problems.append(f"complete checkpoints at the end: {steps}, not {CHECKPOINT_STEPS}")
    return problems, finished, duplicated, lost


def kill_tree(pid: int) -> None:
    """`kill -9` a process and every descendant, as the end of a pod's container does. Killing the process group
    is not enough under torchrun: its workers run in sessions of their own (torch's elastic `SubprocessHandler`
    starts them with `start_new_session`) and would carry on training after torchrun died."""
    pids = [pid]
    for parent in pids:  # grows while it is walked: breadth first over /proc's children lists
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                pids += [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                continue
    for target in pids:
        try:
            os.kill(target, signal.SIGKILL)
        except ProcessLookupError:
            continue


def fill(row: Table, runs: int, held: int, duplicated: int, lost: int, unfinished: int, times: list[float],
         meaning: str) -> Table:
    """The row's counts: runs, runs that held every invariant, train rows duplicated and lost, runs unfinished, the
    longest time (`meaning` says which columns mean what for this scenario)."""
    row.accepted, row.exactly_once, row.duplicates, row.lost, row.stuck = runs, held, duplicated, lost, unfinished
    row.settle_s = max(times) if times else None
    row.notes.append(meaning)
    if duplicated or lost:
        row.problems.append(f"{duplicated} train rows duplicated, {lost} lost")
    return row
