"""API restarts: gunicorn's workers `kill -9`ed at random moments while clients post (gunicorn's master starts new
ones). A client that gets no answer sends the same body again. No accepted job may be lost, and a body sent twice
must never make a second job: Redis must hold exactly one job per distinct body.

A kill comes 0.05–0.4 s after the previous one, but never before the API has answered some request since then:
gunicorn's new worker needs a second or more (several on a loaded machine) to import the app, and killing workers
faster than they boot stops every request, not one mid-flight (the first full run on a loaded machine livelocked:
8 of 300 jobs in 12 minutes, ~5,800 workers booted)."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

from reliability.checks import census, keys
from reliability.load import LoadResult
from reliability.scenarios.common import Clock, fill, orphans, post, wait_settled
from reliability.stack import Stack
from reliability.table import Row


def run(workdir: Path, quick: bool) -> Row:
    n = 60 if quick else 300
    clock = Clock()
    row = Row("API restarts", f"{n} posts from 8 clients, gunicorn -w 2")
    with Stack(workdir / "api-restarts") as stack:
        api = stack.start_api(workers=2)
        stack.start_worker(concurrency=4)
        stack.start_beat()
        done = threading.Event()
        kills = 0
        rng = random.Random(14)  # noqa: S311 - when to kill, not cryptography

        result = LoadResult()

        def answered() -> int:
            with result.lock:
                return sum(count for answer, count in result.answers.items() if answer != "no answer")

        def killer() -> None:
            nonlocal kills
            last = 0  # requests answered when the last kill was sent
            while not done.is_set():
                time.sleep(rng.uniform(0.05, 0.4))
                now = answered()
                if now == last:
                    continue  # nothing answered since the last kill: the workers are still booting
                children = api.children()
                if children:
                    try:
                        os.kill(rng.choice(children), signal.SIGKILL)
                        kills += 1
                        last = now
                    except ProcessLookupError:
                        pass

        thread = threading.Thread(target=killer)
        thread.start()
        try:
            load = post(stack, "restarts", n, retries=50, result=result)
        finally:
            done.set()
            thread.join()
        names = list(load.accepted.values())
        settle_s = wait_settled(stack, names, 120)
        count = census(stack, names)
        fill(row, load, count, settle_s)
        row.faults = f"{kills} × kill -9 of a gunicorn worker"
        jobs = sum(1 for _ in stack.redis.scan_iter(match=keys(stack).keys.job("*"), count=1000))
        if jobs != n:
            row.problems.append(f"Redis holds {jobs} jobs for {n} distinct bodies")
        row.notes.append(f"{load.repeats} bodies sent again after no answer or a 5xx; Redis holds {jobs} jobs for "
                         f"{n} bodies")
        row.problems += orphans(stack)
    row.elapsed_s = clock.elapsed()
    return row
