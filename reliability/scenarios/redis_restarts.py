"""Redis restarts: Redis (AOF, `appendfsync everysec`) `kill -9`ed and restarted twice while clients post at full
rate. Every job the API answered 2xx for must still be in Redis and reach the cluster (or a terminal state); a body
the API refused (503 while Redis was down) is sent again by its client.

What the fsync policy can lose: with `everysec`, Redis `write(2)`s each command to the AOF before it answers the
client, and `fsync`s once a second. A killed Redis *process* loses nothing it acknowledged (the data is in the
kernel's page cache and reaches the file); a crash of the *machine* loses up to the last second (two, when the disk
stalls) of acknowledged writes. This scenario kills the process, so the count it reports is the process-crash
figure; the machine-crash window is stated beside it, not measured.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from reliability.checks import census
from reliability.scenarios.common import Clock, fill, orphans, post, wait_settled
from reliability.stack import Stack
from reliability.table import Row

DOWN_S = 2.0


def run(workdir: Path, quick: bool) -> Row:
    n = 100 if quick else 500
    clock = Clock()
    row = Row("Redis restarts", f"{n} jobs at full rate, Redis AOF everysec")
    with Stack(workdir / "redis-restarts", aof=True) as stack:
        stack.start_api()
        stack.start_worker(concurrency=4)
        stack.start_beat()
        loader = threading.Thread(target=lambda: setattr(row, "_load", post(stack, "redis", n, retries=60)))
        loader.start()
        restarts = 0
        for pause in (1.0, 2.5):
            time.sleep(pause)
            stack.redis_server.kill9()
            time.sleep(DOWN_S)
            stack.redis_server.start()
            restarts += 1
        loader.join()
        load = row._load  # type: ignore[attr-defined]
        names = list(load.accepted.values())
        settle_s = wait_settled(stack, names, 180)
        count = census(stack, names)
        fill(row, load, count, settle_s)
        row.faults = f"{restarts} × kill -9 of Redis, down {DOWN_S:g} s each"
        row.notes.append(f"acknowledged (2xx) but lost after a process kill: {count.lost}; a machine crash could "
                         "lose up to the last 1–2 s of acknowledged writes under everysec (not measured here)")
        row.problems += orphans(stack)
    row.elapsed_s = clock.elapsed()
    return row
