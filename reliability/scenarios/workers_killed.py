"""Workers killed: jobs posted at full rate while Celery workers are `kill -9`ed at random moments (the whole process
tree, like a lost node) and a new one is started each time. Every job must end with exactly one PyTorchJob per
attempt: 0 duplicates, 0 stuck once the visibility timeout has passed."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

from reliability.checks import census
from reliability.scenarios.common import Clock, fill, orphans, post, wait_settled
from reliability.stack import Stack
from reliability.table import Row
from tests.support.k8s_chaos import Chaos

VISIBILITY_TIMEOUT_S = 10


def run(workdir: Path, quick: bool) -> Row:
    n, kills, latency = (40, 5, 1.0) if quick else (200, 50, 1.5)
    clock = Clock()
    row = Row("workers killed", f"{n} jobs at full rate, API server latency {latency:g} s")
    with Stack(workdir / "workers-killed", env={"TRAINER_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S)}) as stack:
        stack.emulator.chaos = Chaos(0.0, latency_s=latency)
        stack.start_api()
        stack.start_worker()
        stack.start_worker()
        stack.start_beat()
        loader = threading.Thread(target=lambda: setattr(row, "_load", post(stack, "killed", n)))
        loader.start()
        rng = random.Random(14)  # noqa: S311 - when to kill, not cryptography
        killed = 0
        for _ in range(kills):
            time.sleep(rng.uniform(0.5, 2.5))
            alive = [w for w in stack.workers if w.proc is not None and w.proc.poll() is None]
            victim = rng.choice(alive)
            victim.kill9()
            killed += 1
            stack.start_worker(wait=False)
        loader.join()
        load = row._load  # type: ignore[attr-defined]
        names = list(load.accepted.values())
        # Bounded, not tight: on the loaded 2-core machine a replacement worker needs 20-60 s to be ready (most of the
        # 50 are killed before they are), so the 200 creates at 1.5 s each start draining only after the kills.
        settle_s = wait_settled(stack, names, VISIBILITY_TIMEOUT_S * 6 + 240)
        count = census(stack, names)
        fill(row, load, count, settle_s)
        row.faults = f"{killed} × kill -9 of a worker"
        row.problems += orphans(stack)
        row.notes.append(f"visibility timeout {VISIBILITY_TIMEOUT_S} s; settle time counted from the last kill")
    row.elapsed_s = clock.elapsed()
    return row
