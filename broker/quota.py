"""Per-namespace quota admission: GPUs (num_nodes × gpus_per_node) and concurrent jobs, with a FIFO line.

The ledger lives in Redis and every decision is one Lua script, so two workers admitting at once can never
overbook. Per namespace (keys in `broker.keys`): `held` reservations `<job>#<attempt>` → GPUs, the FIFO `line` of
waiting jobs and what each `need`s. A reservation is idempotent per job and attempt (a redelivered submit finds it
held) and is released when the attempt ends, is cancelled or fails to submit. The `namespaces` set registers every
namespace that asked for admission, so the sync's reconciliation finds the ledgers without scanning the keyspace
(whose size grows with the jobs stored).

FIFO: a job is admitted only when no job that queued earlier in the same namespace is still waiting, so a later
(smaller) job never jumps ahead of an earlier one. A job that needs more GPUs than the namespace's limit can never
fit: it waits (the broker never fails a job for lack of quota) but does not block the line behind it.
A namespace's Kubernetes ResourceQuota on GPUs, when present, is a second limit: the caller passes its free GPUs.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import redis

from broker.keys import Keys, member
from broker.queue import queue_info
from broker.settings import Quota

#: How many names of the jobs ahead a waiting job's `queue` object lists (the count is always exact).
AHEAD_SHOWN = 10

_ADMIT = """
-- KEYS: held, line, need, namespaces
-- ARGV: member, job, gpus, gpu_limit, job_limit, cluster_free (-1 = none), now_ms, names_ahead_shown, namespace
local held, line, need = KEYS[1], KEYS[2], KEYS[3]
redis.call('SADD', KEYS[4], ARGV[9])
local member, job, gpus = ARGV[1], ARGV[2], tonumber(ARGV[3])
local gpu_limit, job_limit, cluster_free = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local used, jobs = 0, 0
local all = redis.call('HGETALL', held)
for i = 2, #all, 2 do used = used + tonumber(all[i]); jobs = jobs + 1 end
if redis.call('HEXISTS', held, member) == 1 then return {'held', used, jobs, 0, 0, {}} end
redis.call('ZADD', line, 'NX', tonumber(ARGV[7]), job)
redis.call('HSET', need, job, gpus)
local ahead, names = 0, {}
for _, other in ipairs(redis.call('ZRANGE', line, 0, -1)) do
  if other == job then break end
  if tonumber(redis.call('HGET', need, other) or '0') <= gpu_limit then
    ahead = ahead + 1
    if ahead <= tonumber(ARGV[8]) then names[#names + 1] = other end
  end
end
local cluster_ok = cluster_free < 0 or gpus <= cluster_free
if ahead == 0 and jobs + 1 <= job_limit and used + gpus <= gpu_limit and cluster_ok then
  redis.call('HSET', held, member, gpus)
  redis.call('ZREM', line, job)
  redis.call('HDEL', need, job)
  return {'ok', used + gpus, jobs + 1, 0, 0, {}}
end
return {'wait', used, jobs, ahead + 1, cluster_ok and 1 or 0, names}
"""


@dataclasses.dataclass(frozen=True)
class Admission:
    """The outcome of one admission attempt. `detail` says, for a person, why a job waits."""

    admitted: bool
    detail: str
    position: int = 0
    #: The structured `queue` object of a job that waits (`broker.queue.queue_info`); None when admitted.
    queue: dict[str, Any] | None = None


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class QuotaLedger:
    """GPU and job reservations per namespace. `redis_client` must decode responses."""

    def __init__(self, redis_client: redis.Redis, prefix: str = "tb:") -> None:
        self.redis = redis_client
        self.keys = Keys(prefix)
        self._admit = redis_client.register_script(_ADMIT)
        self._registry = f"{prefix}quota:namespaces"

    def _keys(self, namespace: str) -> tuple[str, str, str]:
        return self.keys.quota(namespace)

    def admit(
        self, namespace: str, job: str, attempt: int, gpus: int, limit: Quota, cluster_free: int | None = None,
        queued_at: float | None = None,
    ) -> Admission:
        """Reserve `gpus` and one job slot for this attempt, or put the job in line. Idempotent per attempt.

        `queued_at` (epoch seconds, default now) places a job joining the line: when its attempt was queued, so two
        submissions that run out of order still keep the order of the requests."""
        joined_ms = int((time.time() if queued_at is None else queued_at) * 1000)
        args: list[str | int] = [member(job, attempt), job, gpus, limit.gpus, limit.jobs,
                -1 if cluster_free is None else cluster_free, joined_ms, AHEAD_SHOWN, namespace]
        keys = [*self._keys(namespace), self.keys.quota_namespaces]
        outcome, used, jobs, position, cluster_ok, ahead = self._admit(keys=keys, args=args)
        if outcome in ("ok", "held"):
            return Admission(True, f"admitted: {used} of {limit.gpus} GPUs, {jobs} of {limit.jobs} jobs in use "
                                   f"in namespace {namespace}")
        info = queue_info(namespace, gpus, limit, int(used), int(jobs), int(position), list(ahead), cluster_free)
        return Admission(False, _wait_detail(namespace, gpus, limit, int(used), int(jobs), int(position),
                                             cluster_free if not cluster_ok else None), int(position), info)

    def release(self, namespace: str, job: str, attempt: int) -> bool:
        """Give back this attempt's reservation and leave the line. Idempotent; True when something was held."""
        held, line, need = self._keys(namespace)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(held, member(job, attempt))
        pipe.zrem(line, job)
        pipe.hdel(need, job)
        return bool(pipe.execute()[0])

    def leave_line(self, namespace: str, job: str) -> None:
        """Take a job that no longer waits out of the line (its reservations, if any, stay)."""
        _, line, need = self._keys(namespace)
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(line, job)
        pipe.hdel(need, job)
        pipe.execute()

    def line(self, namespace: str) -> list[str]:
        """The jobs waiting in the namespace, first in line first."""
        return list(self.redis.zrange(self._keys(namespace)[1], 0, -1))  # type: ignore[arg-type]

    def namespaces_waiting(self) -> list[str]:
        return self._namespaces("line")

    def held(self, namespace: str) -> dict[str, int]:
        """`<job>#<attempt>` → GPUs currently reserved in the namespace."""
        raw: dict[str, str] = self.redis.hgetall(self._keys(namespace)[0])  # type: ignore[assignment]
        return {held_by: int(gpus) for held_by, gpus in raw.items()}

    def namespaces_held(self) -> list[str]:
        return self._namespaces("held")

    def _namespaces(self, kind: str) -> list[str]:
        """Registered namespaces whose `kind` key exists: two round trips, whatever the number of keys stored. A
        ledger written before the registry existed is registered from one SCAN, once."""
        namespaces: set[str] = self.redis.smembers(self.keys.quota_namespaces)  # type: ignore[assignment]
        if not namespaces:
            namespaces = self._register_from_scan()
        ordered = sorted(namespaces)
        pipe = self.redis.pipeline(transaction=False)
        for namespace in ordered:
            pipe.exists(self.keys.quota_key(kind, namespace))
        return [ns for ns, present in zip(ordered, pipe.execute(), strict=True) if present]

    def _register_from_scan(self) -> set[str]:
        found: set[str] = set()
        for kind in ("held", "line"):
            keys = self.redis.scan_iter(match=self.keys.quota_pattern(kind), count=1000)
            found.update(self.keys.quota_namespace(kind, key) for key in keys)
        if found:
            self.redis.sadd(self.keys.quota_namespaces, *found)
        return found


def _wait_detail(
    namespace: str, gpus: int, limit: Quota, used: int, jobs: int, position: int, cluster_free: int | None
) -> str:
    place = f"{ordinal(position)} in line"
    if gpus > limit.gpus:
        return (f"needs {gpus} GPUs, more than the limit of {limit.gpus} in namespace {namespace}: "
                f"waits until the limit is raised")
    if cluster_free is not None:
        return f"needs {gpus} GPUs, {cluster_free} free under the ResourceQuota of namespace {namespace}; {place}"
    if jobs >= limit.jobs:
        return f"needs a job slot, {jobs} of {limit.jobs} jobs running in namespace {namespace}; {place}"
    return f"needs {gpus} GPUs, {max(limit.gpus - used, 0)} of {limit.gpus} free in namespace {namespace}; {place}"
