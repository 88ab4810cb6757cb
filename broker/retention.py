"""Finished jobs expire: `TRAINER_JOB_RETENTION_S` after a job reached `succeeded`, `failed` or `cancelled`, its
record, its events, its index entries and what the sync and recovery keep by its name (`recovery:due`,
`sync:nudged`) are removed, so Redis holds what runs plus a bounded history.

The store's transition script records every job entering a terminal state in `p finished` (name → ms); a retry takes
it out again. Each sync cycle purges at most `batch` jobs whose time is up, oldest first: one pipelined read of
their index fields names every key (`broker.keys`), then one atomic script per job removes them (a job that moved
meanwhile — retried, finished again — is left alone: the script re-checks its finish time and status).
"""

from __future__ import annotations

import time

from broker.store import JobStore
from broker.store_scripts import PURGE

PURGE_BATCH = 500
_FIELDS = ("status", "sort_key", "framework", "run_id", "namespace", "tenant")


def purge_expired(store: JobStore, retention_s: float, *, batch: int = PURGE_BATCH, now: float | None = None) -> int:
    """Remove finished jobs older than `retention_s`; returns how many were removed."""
    cutoff_ms = int(((time.time() if now is None else now) - retention_s) * 1000)
    k = store.keys
    names: list[str] = store.redis.zrangebyscore(k.finished, "-inf", cutoff_ms, start=0, num=batch)  # type: ignore[assignment]
    if not names:
        return 0
    read = store.redis.pipeline(transaction=False)
    for name in names:
        read.hmget(k.job(name), _FIELDS)
    rows = read.execute()
    script = store.redis.register_script(PURGE)
    pipe = store.redis.pipeline(transaction=False)
    for name, row in zip(names, rows, strict=True):
        status, sort_key, framework, run_id, namespace, tenant = (v or "" for v in row)
        keys = [k.job(name), k.events(name), k.finished, k.index(), k.index("status", status),
                k.index("framework", framework), k.index("run_id", run_id), k.index("namespace", namespace),
                k.index("tenant", tenant or "default"), k.entered(status) if status else k.index("status", ""),
                k.recovery_due, k.sync_nudged]
        script(keys=keys, args=[name, cutoff_ms, status, sort_key], client=pipe)
    return sum(int(n) for n in pipe.execute())
