"""Trainer killed mid-upload: real meta runs of the tiny model checkpointing to S3 (moto), each `kill -9`ed (the
whole process tree, torchrun and every rank, as a pod's end kills its container) at a random moment of a random
checkpoint's upload, then resumed.

The kill comes from the S3 proxy, on the j-th upload of checkpoint k (j and k drawn at random: a file of the
checkpoint, a rank's "done" report, the manifest or the pointer), and that request then reaches S3 or is dropped
(drawn too), so the crash lands before, during and after the manifest. Right after the crash the scenario reads S3
itself: the checkpoints whose manifest exists and whose listed files are all there with their sizes. Must hold:

- the resumed attempt starts from the newest of those (from scratch when there is none), never from a checkpoint
  some rank did not finish (its manifest lists every rank's report);
- it finishes, and its train rows (loss, lr, grad norm) equal an uninterrupted run's bitwise: none lost, none
  duplicated, none different.

Every other run goes through `torchrun` with two processes (FSDP over gloo, each rank uploads its own shard).
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from pathlib import Path

from reliability.scenarios.common import Clock
from reliability.table import Row
from reliability.trainer_runs import CHECKPOINT_STEPS as STEPS
from reliability.trainer_runs import MAX_STEPS, SAVE_STEPS, TrainerLab, check_finished, each_run, fill, kill_tree, runs
from tests.trainer.runs import start

_RESUMED = re.compile(r"resuming from step (\d+)")


class Killer:
    """The proxy's hook: kill the trainer's process group on the j-th checkpoint upload at or after checkpoint k."""

    def __init__(self, step: int, nth: int, forward: bool) -> None:
        self.step = step
        self.marker, self.nth, self.forward = f"/checkpoints/dcp-{step:06d}/", nth, forward
        self.pid = 0
        self.seen = 0
        self.killed_on = ""
        self.lock = threading.Lock()

    def __call__(self, key: str) -> bool:
        with self.lock:
            if self.killed_on:
                return True  # uploads already in flight from other ranks when the group died may land
            if "/checkpoints/" not in key or (self.seen == 0 and self.marker not in key):
                return True
            self.seen += 1
            if self.seen <= self.nth and not key.endswith("/checkpoints/latest.json"):
                return True
            kill_tree(self.pid)
            self.killed_on = key
            return self.forward


def run(workdir: Path, quick: bool) -> Row:
    n = runs(20, quick)
    clock = Clock()
    row = Row("trainer killed mid-upload", f"{n} meta runs ({MAX_STEPS} steps, a checkpoint every "
              f"{SAVE_STEPS}; every other one 2 processes under torchrun), S3 on moto")
    rng = random.Random(14)
    resumed_ok = duplicated = lost = unfinished = 0
    before_manifest = 0
    settle: list[float] = []
    kills: list[str] = []
    with TrainerLab(workdir / "trainer-killed") as lab:
        for _, run_id, nproc, ref in each_run(lab, n, "killed"):
            killer = Killer(rng.choice(STEPS), rng.randint(0, 7), rng.random() < 0.5)
            lab.proxy.on_upload = killer
            proc = start(lab.argv(run_id, nproc), lab.env(), lab.workdir / f"{run_id}.log")
            killer.pid = proc.pid
            proc.wait(600)
            lab.proxy.on_upload = None
            if not killer.killed_on:
                row.problems.append(f"{run_id}: ended ({proc.returncode}) without being killed")
                continue
            killed_at = time.monotonic()
            time.sleep(1.0)  # requests in flight when the group died land or fail now
            complete = lab.complete_steps(run_id)
            expected = complete[-1] if complete else None
            before_manifest += killer.step not in complete
            code, output = lab.run(run_id, nproc, resume=True)
            settle.append(time.monotonic() - killed_at)
            starts = {int(s) for s in _RESUMED.findall(output)}
            problems = []
            if starts != ({expected} if expected is not None else set()):
                problems.append(f"resumed from {sorted(starts) or 'scratch'}, the newest complete checkpoint in S3 "
                                f"was {expected or 'none'} (killed on {killer.killed_on})")
            if expected is not None and not reports_complete(lab, run_id, expected, nproc):
                problems.append(f"checkpoint {expected} resumed from lacks a rank's report")
            end, finished, dup, gone = check_finished(lab, run_id, code, ref)
            problems += end
            unfinished += not finished
            duplicated, lost = duplicated + dup, lost + gone
            row.problems += [f"{run_id}: {p}" for p in problems]
            kills.append(f"{nproc}p: checkpoint {killer.step}, on {killer.killed_on.split('/checkpoints/')[1]} "
                         f"({'stored' if killer.forward else 'dropped'}) → resumed from {expected or 'scratch'}")
            resumed_ok += not problems and not dup and not gone
    row.faults = f"{n} × kill -9 during a checkpoint's upload ({before_manifest} before its manifest was sent)"
    fill(row, n, resumed_ok, duplicated, lost, unfinished, settle,
         "“reached the cluster exactly once” counts runs resumed from the newest complete checkpoint with the "
         "uninterrupted run's losses; duplicates / lost count train rows; time to settle is the longest from a kill "
         "to the resumed attempt's end")
    row.notes.append("kills: " + "; ".join(kills))
    row.elapsed_s = clock.elapsed()
    return row


def reports_complete(lab: TrainerLab, run_id: str, step: int, nproc: int) -> bool:
    """The manifest of `step` lists a "done" report for every rank, and S3 holds each."""
    root = f"{lab.prefix(run_id)}/checkpoints"
    manifest = json.loads(lab.get(f"{root}/step-{step:06d}.json") or b"{}")
    listed = {f["path"] for f in manifest.get("files", [])}
    wanted = {f"dcp-{step:06d}/_ranks/rank-{r:05d}.json" for r in range(nproc)}
    return wanted <= listed and all(lab.get(f"{root}/{path}") is not None for path in wanted)
