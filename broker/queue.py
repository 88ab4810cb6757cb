"""Where a waiting job stands and why: the structured `queue` object of its status, and a preview for dry runs.

`queue_info` is computed by the quota admission (`broker.quota`) each time a job tries to get in — at submission and
in every sync cycle — and stored on the record (`queue_info`) while it is `waiting_quota`, so it stays current:

    {"admission": "builtin", "namespace": "ml", "position": 2, "ahead": 1, "ahead_jobs": ["hf-run-1"],
     "waiting_for": "gpus", "gpus": {"requested": 8, "free": 4, "limit": 16},
     "jobs": {"running": 3, "limit": 4}, "resource_quota": {"gpus_free": 6} | null}

`position` 1 is next in the namespace's line; `ahead` counts the jobs ahead that can ever fit (a job asking for more
than the namespace's limit waits without blocking others, and has no position: `waiting_for` is `over_limit`).
`waiting_for` is the first reason that holds: `over_limit`, `resource_quota` (the namespace's Kubernetes
ResourceQuota has fewer GPUs free), `jobs` (no job slot), `gpus`, else `line` (it would fit, but jobs are ahead).
"""

from __future__ import annotations

import json
from typing import Any

import redis

from broker.keys import Keys
from broker.settings import Quota


def queue_info(namespace: str, gpus: int, limit: Quota, used: int, jobs: int, position: int, ahead_jobs: list[str],
               cluster_free: int | None) -> dict[str, Any]:
    over = gpus > limit.gpus
    free = max(limit.gpus - used, 0)
    if over:
        reason = "over_limit"
    elif cluster_free is not None and gpus > cluster_free:
        reason = "resource_quota"
    elif jobs >= limit.jobs:
        reason = "jobs"
    elif used + gpus > limit.gpus:
        reason = "gpus"
    else:
        reason = "line"
    return {
        "admission": "builtin",
        "namespace": namespace,
        "position": None if over else position,
        "ahead": max(position - 1, 0),
        "ahead_jobs": ahead_jobs,
        "waiting_for": reason,
        "gpus": {"requested": gpus, "free": free, "limit": limit.gpus},
        "jobs": {"running": jobs, "limit": limit.jobs},
        "resource_quota": None if cluster_free is None else {"gpus_free": cluster_free},
    }


def parse(raw: str | None) -> dict[str, Any] | None:
    """A record's stored `queue_info`, or None."""
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def preview(client: redis.Redis, keys: Keys, namespace: str, gpus: int, limit: Quota,
            cluster_free: int | None) -> dict[str, Any]:
    """The admission verdict a new job would get now, read-only: it would join the end of the line.

    `{"verdict": "would_start" | "would_wait", "queue": <queue object> | None}`."""
    held_key, line_key, need_key = keys.quota(namespace)
    pipe = client.pipeline(transaction=False)
    pipe.hvals(held_key)
    pipe.zrange(line_key, 0, -1)
    pipe.hgetall(need_key)
    held, line, need = pipe.execute()
    used, jobs = sum(int(g) for g in held), len(held)
    ahead_jobs = [name for name in line if int(need.get(name, 0)) <= limit.gpus]
    fits = jobs + 1 <= limit.jobs and used + gpus <= limit.gpus and (cluster_free is None or gpus <= cluster_free)
    if fits and not ahead_jobs:
        return {"verdict": "would_start", "queue": None}
    info = queue_info(namespace, gpus, limit, used, jobs, len(ahead_jobs) + 1, ahead_jobs[:10], cluster_free)
    return {"verdict": "would_wait", "queue": info}
