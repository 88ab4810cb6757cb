"""Finished jobs expire: `TRAINER_JOB_RETENTION_S` after a job reached `succeeded`, `failed` or `cancelled`, its
record, its events and its index entries are removed, so Redis holds what runs plus a bounded history.

The store's transition script records every job entering a terminal state in `p finished` (name → ms); a retry takes
it out again. Each sync cycle purges at most `batch` jobs whose time is up, oldest first, one atomic script each
(a job retried meanwhile is left alone: the script re-checks its finish time).
"""

from __future__ import annotations

import time

from broker.store import JobStore
from broker.store_scripts import PURGE

PURGE_BATCH = 500


def purge_expired(store: JobStore, retention_s: float, *, batch: int = PURGE_BATCH, now: float | None = None) -> int:
    """Remove finished jobs older than `retention_s`; returns how many were removed."""
    cutoff_ms = int(((time.time() if now is None else now) - retention_s) * 1000)
    finished = f"{store.prefix}finished"
    names: list[str] = store.redis.zrangebyscore(finished, "-inf", cutoff_ms, start=0, num=batch)  # type: ignore[assignment]
    if not names:
        return 0
    script = store.redis.register_script(PURGE)
    pipe = store.redis.pipeline(transaction=False)
    for name in names:
        script(keys=[store.job_key(name), store.events_key(name), finished], args=[store.prefix, name, cutoff_ms],
               client=pipe)
    return sum(int(n) for n in pipe.execute())
