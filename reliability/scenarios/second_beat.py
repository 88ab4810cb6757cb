"""A second beat: two `celery beat` processes started at once over jobs being submitted and running. No job may be
created twice, and no job's history may hold the same event twice (each sync cycle takes the Redis lock; every
write is a conditional transition)."""

from __future__ import annotations

import time
from pathlib import Path

from reliability.checks import census, event_duplicates, records
from reliability.scenarios.common import Clock, fill, orphans, post, wait_settled
from reliability.stack import Stack, settle
from reliability.table import Row


def run(workdir: Path, quick: bool) -> Row:
    n = 30 if quick else 100
    clock = Clock()
    row = Row("a second beat", f"{n} jobs submitted, then running and finishing")
    # Stale queued jobs are re-enqueued after 2 s, by both beats: the workers see each submission several times.
    env = {"TRAINER_REQUEUE_AFTER_S": "2", "TRAINER_SYNC_INTERVAL_S": "0.5"}
    with Stack(workdir / "second-beat", env=env) as stack:
        stack.start_api()
        beats = [stack.start_beat(), stack.start_beat()]
        load = post(stack, "beats", n)
        names = list(load.accepted.values())
        time.sleep(4)  # no worker yet: the beats re-enqueue the queued jobs meanwhile
        stack.start_worker(concurrency=4)
        settle_s = wait_settled(stack, names, 120)
        emu = stack.emulator
        for obj in emu.objects("rel"):
            emu.set_condition("rel", obj["metadata"]["name"], "Running")
        _wait_for(stack, names, {"running"}, 60)
        for i, obj in enumerate(emu.objects("rel")):
            emu.set_condition("rel", obj["metadata"]["name"], "Succeeded" if i % 2 else "Failed",
                              message="finished by the operator")
        finished = _wait_for(stack, names, {"succeeded", "failed"}, 60)
        count = census(stack, names, allow_failed=True)
        fill(row, load, count, settle_s)
        row.faults = f"{len(beats)} beats at once ({sum(b.alive() for b in beats)} alive at the end)"
        dup = event_duplicates(stack, names)
        if dup:
            row.problems.append(f"{dup} duplicate events in job histories")
        if not finished:
            row.problems.append("the jobs' end on the cluster did not reach Redis in time")
        ticks = sum(b.output().count("Scheduler: Sending due task") for b in beats)
        row.notes.append(f"{ticks} sync ticks sent by the two beats; {dup} duplicate events; every job ran, then "
                         "ended (half succeeded, half failed by the operator)")
        row.problems += orphans(stack)
    row.elapsed_s = clock.elapsed()
    return row


def _wait_for(stack: Stack, names: list[str], statuses: set[str], timeout: float) -> bool:
    return settle(lambda: all(r.status in statuses for r in records(stack, names).values()), timeout) is not None
