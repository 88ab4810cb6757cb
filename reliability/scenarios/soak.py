"""Soak (full run only): a steady 5 submissions/s for `DURATION_S` (an hour by default), every job finishing in the
emulator a few seconds after it was created. The memory (RSS, process tree) of the API, the worker and the beat is
sampled every 10 s and its slope reported; so is the number of Redis keys, which the retention policy bounds: finished
jobs are removed `RETENTION_S` after they end (`TRAINER_JOB_RETENTION_S`), so the key count must level off after the
first few minutes — its slope over the second half of the run is the figure. A job Redis no longer holds counts as
removed by retention (not lost) only when the emulator shows its object created once and finished."""

from __future__ import annotations

import threading
import time
from collections import deque
from pathlib import Path

import psutil

from devstack import Service
from reliability.checks import census
from reliability.load import job_body, post_all
from reliability.scenarios.common import Clock, fill, wait_settled
from reliability.stack import Stack
from reliability.table import Row

DURATION_S = 3600.0
RATE_PER_S = 5.0
#: Finished jobs are kept this long (at most a sixth of the run, so a short `--soak-s` run sees them go too).
RETENTION_S = 300


def tree_rss_mb(pid: int) -> float:
    try:
        root = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20
    except psutil.Error:
        return 0.0


def slope_per_hour(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, in MB per hour."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mx, my = sum(t for t, _ in samples) / n, sum(v for _, v in samples) / n
    var = sum((t - mx) ** 2 for t, _ in samples)
    return 3600 * sum((t - mx) * (v - my) for t, v in samples) / var if var else 0.0


def run(workdir: Path, quick: bool) -> Row:
    n = int(DURATION_S * RATE_PER_S)
    retention_s = int(min(RETENTION_S, max(10, DURATION_S / 6)))
    clock = Clock()
    row = Row("soak", f"{DURATION_S / 60:g} min at {RATE_PER_S:g} submissions/s ({n} jobs)")
    with Stack(workdir / "soak", env={"TRAINER_JOB_RETENTION_S": str(retention_s)}) as stack:
        api = stack.start_api()
        worker = stack.start_worker()
        beat = stack.start_beat()
        done = threading.Event()
        samples: dict[str, list[tuple[float, float]]] = {"API": [], "worker": [], "beat": [], "redis keys": []}

        def operator() -> None:  # plays the Training Operator: every job succeeds a few seconds after creation
            # It follows the emulator's request log (each create, once) rather than copying every object of the
            # namespace each second: that copy ran under the emulator's lock and grew with the objects kept.
            read, pending, waiting = 0, [], deque[tuple[float, str]]()
            while not done.is_set():
                now = time.monotonic()
                with stack.emulator.lock:
                    new = stack.emulator.requests[read:]
                read += len(new)
                pending += [e for e in new if e.verb == "create" and e.namespace == "rel"]
                answered = [e for e in pending if e.done is not None]  # the code is set once the answer is sent
                pending = [e for e in pending if e.done is None]
                waiting.extend((now, e.name) for e in answered if e.code in (200, 201))
                while waiting and now - waiting[0][0] > 3:
                    stack.emulator.set_condition("rel", waiting.popleft()[1], "Succeeded")
                time.sleep(1)

        def sampler() -> None:
            procs: dict[str, Service | None] = {"API": api, "beat": beat}
            while not done.wait(10):
                t = clock.elapsed()
                for role, proc in procs.items():
                    if proc is not None and proc.proc is not None:
                        samples[role].append((t, tree_rss_mb(proc.proc.pid)))
                if worker.proc is not None:
                    samples["worker"].append((t, tree_rss_mb(worker.proc.pid)))
                samples["redis keys"].append((t, float(stack.redis.dbsize())))

        threads = [threading.Thread(target=operator), threading.Thread(target=sampler)]
        for thread in threads:
            thread.start()
        try:
            load = post_all(stack.api_url, [job_body("soak", i) for i in range(n)], rate_per_s=RATE_PER_S)
            names = list(load.accepted.values())
            settle_s = wait_settled(stack, names, 120)
        finally:
            done.set()
            for thread in threads:
                thread.join()
        count = census(stack, names, object_may_vanish=True, namespace_if_expired="rel")
        fill(row, load, count, settle_s)
        half = clock.elapsed() / 2
        for role, series in samples.items():
            if series:
                unit = "keys" if role == "redis keys" else "MB"
                late = [s for s in series if s[0] >= half]
                row.notes.append(f"{role}: {series[0][1]:.0f} → {series[-1][1]:.0f} {unit}, slope "
                                 f"{slope_per_hour(series):+.0f} {unit}/h over {len(series)} samples, "
                                 f"{slope_per_hour(late):+.0f} {unit}/h over the second half")
        row.notes.append(f"retention {retention_s} s: {count.expired} finished jobs removed by it during the run")

    row.elapsed_s = clock.elapsed()
    return row
