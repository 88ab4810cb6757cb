"""Storage faults: real meta runs of the tiny model checkpointing to S3 (moto) through a proxy that answers a share
of every upload (checkpoint files, ranks' reports, manifests, pointer, logs and metrics) with `500 InternalError` or
`503 SlowDown`, and holds others back for up to a few seconds (a slow S3).

Checked from the proxy's record of what S3 answered and from S3's own objects at the end:

- training continues: every run ends with exit 0 at its last step, its train rows equal an uninterrupted run's
  bitwise (none lost, duplicated or different), and every checkpoint is complete in S3;
- uploads are retried: every upload S3 was kept from (a fault) reached S3 later under the same key;
- no manifest before its files are complete: each manifest was sent to S3 only after S3 had answered 2xx for every
  file it lists (the ranks' reports included).

Every other run goes through `torchrun` with two processes.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from reliability.s3_proxy import Faults, Request
from reliability.scenarios.common import Clock
from reliability.table import Row
from reliability.trainer_runs import CHECKPOINT_STEPS, MAX_STEPS, TrainerLab, check_finished, each_run, fill, runs

ERROR_RATE, SLOW_RATE = 0.25, 0.3


def run(workdir: Path, quick: bool) -> Row:
    n = runs(10, quick)
    slow_s = 1.0 if quick else 3.0
    clock = Clock()
    row = Row("storage faults", f"{n} meta runs ({MAX_STEPS} steps; every other one 2 processes under torchrun), "
              "S3 on moto behind a faulting proxy")
    finished = held = duplicated = lost = 0
    kinds: Counter[str] = Counter()
    durations: list[float] = []
    with TrainerLab(workdir / "storage-faults") as lab:
        for i, run_id, nproc, ref in each_run(lab, n, "faulted"):
            lab.proxy.faults = Faults(ERROR_RATE, SLOW_RATE, slow_s, seed=15 + i)
            mark = len(lab.proxy.requests())
            started = Clock()
            code, output = lab.run(run_id, nproc)
            durations.append(started.elapsed())
            lab.proxy.faults = Faults()
            log = [r for r in lab.proxy.requests()[mark:] if f"/{run_id}/" in r.key]
            kinds.update(str(r.status) for r in log if r.injected)
            kinds["slow"] += sum(1 for r in log if r.delayed_s > 0)
            problems = [*unretried(log), *early_manifests(lab, run_id, log)]
            end, done, dup, gone = check_finished(lab, run_id, code, ref)
            problems += end if done else [*end, output[-1500:]]
            finished += done
            duplicated, lost = duplicated + dup, lost + gone
            row.problems += [f"{run_id}: {p}" for p in problems]
            held += not problems and not dup and not gone
    row.faults = (f"{kinds['500'] + kinds['503']} uploads refused (500×{kinds['500']}, 503×{kinds['503']}), "
                  f"{kinds['slow']} held up to {slow_s:g} s")
    fill(row, n, held, duplicated, lost, n - finished, durations,
         f"{ERROR_RATE:.0%} of uploads answered 500/503, {SLOW_RATE:.0%} of the rest delayed; “reached the cluster "
         "exactly once” counts runs that held every invariant; duplicates / lost count train rows; time to settle "
         "is the longest run")
    row.elapsed_s = clock.elapsed()
    return row


def unretried(log: list[Request]) -> list[str]:
    """Uploads S3 was kept from that never reached it afterwards under the same key."""
    out = []
    for fault in (r for r in log if r.injected and r.upload):
        if not any(r.key == fault.key and r.upload and not r.injected and 200 <= r.status < 300 and r.at > fault.at
                   for r in log):
            out.append(f"the upload of {fault.key} answered {fault.status} was never retried to success")
    return out


def early_manifests(lab: TrainerLab, run_id: str, log: list[Request]) -> list[str]:
    """Manifests sent to S3 before S3 had stored every file they list."""
    root = f"{lab.bucket}/{lab.prefix(run_id)}/checkpoints/"
    stored: dict[str, float] = {}
    for r in log:
        if r.upload and not r.injected and 200 <= r.status < 300:
            stored.setdefault(r.key, r.at)
    out, checked = [], set()
    for r in log:
        name = r.key[len(root):] if r.key.startswith(root) else ""
        if not (r.upload and not r.injected and name.startswith("step-") and name.endswith(".json")):
            continue
        checked.add(name)
        manifest = json.loads(lab.get(r.key.split("/", 1)[1]) or b"{}")
        for item in manifest.get("files", []):
            at = stored.get(root + item["path"])
            if at is None or at > r.sent:
                out.append(f"manifest {name} was sent before {item['path']} was stored")
    if len(checked) != len(CHECKPOINT_STEPS):
        out.append(f"{len(checked)} manifests seen being stored, not {len(CHECKPOINT_STEPS)}")
    return out
