"""The invariants, counted from the systems' own state: the emulator's objects and request log, and Redis.

Never from the broker's view of itself (no task result, no log line, no API answer is trusted): a job "reached the
cluster exactly once" when the emulator acted on exactly one create of each of its attempts' objects and holds the
current attempt's object; a "duplicate" is a second create the emulator acted on for the same object; "lost" is an
accepted job with no record in Redis, or a record that says it is on the cluster while the emulator never created
its object; "stuck" is a job still queued, waiting, admitted or cancelling when the scenario's time is up.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from typing import Any

from broker.jobs import ON_CLUSTER, TERMINAL, JobRecord, JobStatus, object_name
from broker.store import JobStore
from reliability.stack import PREFIX, Stack

S = JobStatus
UNSETTLED = frozenset({S.QUEUED, S.WAITING_QUOTA, S.ADMITTED, S.CANCELLING})


@dataclasses.dataclass
class Census:
    accepted: int = 0
    exactly_once: int = 0
    duplicates: int = 0
    lost: int = 0
    stuck: int = 0
    failed: int = 0
    expired: int = 0  # finished and removed by the retention policy (their object shows they ran, once)
    by_status: Counter[str] = dataclasses.field(default_factory=Counter)
    problems: list[str] = dataclasses.field(default_factory=list)


def keys(stack: Stack) -> JobStore:
    """Only for the names of the keys: records are read from Redis directly."""
    return JobStore(stack.redis, PREFIX)


def records(stack: Stack, names: list[str]) -> dict[str, JobRecord]:
    pipe = stack.redis.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(keys(stack).keys.job(name))
    return {name: JobRecord.from_redis(raw) for name, raw in zip(names, pipe.execute(), strict=True) if raw}


def acted_creates(stack: Stack) -> Counter[tuple[str, str]]:
    """`(namespace, name)` → creates the emulator acted on (201 sent, or acted and then dropped)."""
    return Counter((e.namespace, e.name) for e in list(stack.emulator.requests)
                   if e.verb == "create" and e.code in (201, -201))


def unsettled(stack: Stack, names: list[str]) -> list[str]:
    found = records(stack, names)
    return [n for n in names if n in found and found[n].status in UNSETTLED]


def census(stack: Stack, names: list[str], *, allow_failed: bool = False, object_may_vanish: bool = False,
           namespace_if_expired: str | None = None) -> Census:
    """Count the invariants for the accepted jobs `names` (job names). With `namespace_if_expired`, a job Redis no
    longer holds counts as removed by the retention policy — not lost — when the emulator created its first
    attempt's object in that namespace exactly once and that object finished (the soak's jobs, one attempt each)."""
    out = Census(accepted=len(names))
    found = records(stack, names)
    creates = acted_creates(stack)
    objects = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in stack.emulator.objects()}
    for name in names:
        record = found.get(name)
        if record is None and namespace_if_expired is not None:
            obj_key = (namespace_if_expired, object_name(name, 1))
            conditions = ((objects.get(obj_key) or {}).get("status") or {}).get("conditions") or []
            if creates[obj_key] == 1 and any(c.get("type") == "Succeeded" for c in conditions):
                out.expired += 1
                out.exactly_once += 1
                out.by_status["expired (retention)"] += 1
                continue
        if record is None:
            out.lost += 1
            out.problems.append(f"{name}: accepted, but Redis has no record")
            continue
        out.by_status[record.status.value] += 1
        ns = record.namespace
        dup = sum(max(0, creates[(ns, object_name(name, a))] - 1) for a in range(1, record.attempt + 1))
        out.duplicates += dup
        if dup:
            out.problems.append(f"{name}: {dup} duplicate create(s) acted on")
        if record.status in UNSETTLED:
            out.stuck += 1
            out.problems.append(f"{name}: stuck in {record.status} ({record.detail})")
            continue
        current = (ns, record.object_name())
        created_once = creates[current] == 1
        present = current in objects
        if record.status in ON_CLUSTER and not created_once:
            out.lost += 1
            out.problems.append(f"{name}: {record.status} in Redis, but the cluster never created {current[1]}")
        elif record.status in ON_CLUSTER and not present and not object_may_vanish:
            out.lost += 1
            out.problems.append(f"{name}: {record.status} in Redis, but {current[1]} is not on the cluster")
        elif record.status in ON_CLUSTER or (record.status in TERMINAL and record.submitted_at and created_once):
            out.exactly_once += 1 if not dup else 0
        elif record.status == S.FAILED:
            out.failed += 1
            if not allow_failed:
                out.problems.append(f"{name}: failed: {record.detail}")
    return out


def event_duplicates(stack: Stack, names: list[str]) -> int:
    """Events recorded twice in a job's history (the same move of the same attempt)."""
    pipe = stack.redis.pipeline(transaction=False)
    for name in names:
        pipe.lrange(keys(stack).keys.events(name), 0, -1)
    dup = 0
    for events in pipe.execute():
        moves = Counter((e.get("from"), e.get("to"), e.get("attempt")) for e in map(json.loads, events))
        dup += sum(n - 1 for n in moves.values() if n > 1)
    return dup


def describe(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in values.items() if v)
