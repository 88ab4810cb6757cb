"""Automatic recovery's writes are atomic: two callers racing on a real redis-server produce exactly one effect.

- the move `failed` → `queued` (attempt + 1, its event) and the job's entry in `recovery:due` are one step: of two
  callers deciding on the same failure, one recovers the job (one event, one due entry) and the other finds it moved
  on; a refused move leaves no due entry;
- a sync cycle claims due names atomically: of two cycles racing over the same due set, each job's submission is
  enqueued exactly once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from broker import recovery
from broker.context import BrokerContext
from broker.jobs import JobRecord, JobStatus, parse_iso
from broker.names import SUBMIT_TASK
from tests.support.jobs import make_record

S = JobStatus
POLICY = {"max_attempts": 3, "backoff_s": 0.0}


def failed_job(ctx: BrokerContext, run_id: str, backoff_s: float = 0.0) -> JobRecord:
    record, _ = ctx.store.create(make_record(run_id, recovery={**POLICY, "backoff_s": backoff_s}))
    return ctx.store.transition(record.name, S.FAILED, reason="its object vanished")


def twin(ctx: BrokerContext, enqueued: list[tuple[str, str]]) -> BrokerContext:
    """A second broker process's context: its own Redis connection, the same Redis server and key prefix."""
    return BrokerContext.build(ctx.settings, ctx.backend, lambda task, name: enqueued.append((task, name)))


def race(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls in threads released at the same moment; their results in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def watch_for_torn_state(ctx: BrokerContext, name: str, torn: list[str]) -> None:
    """Read the job's status and its due entry together (MULTI/EXEC) until it is queued; note any moment where it
    is queued for a recovery's backoff but absent from `recovery:due` (no sync cycle would ever start it)."""
    for _ in range(2000):
        pipe = ctx.redis.pipeline(transaction=True)
        pipe.hmget(ctx.keys.job(name), "status", "not_before")
        pipe.zscore(ctx.keys.recovery_due, name)
        (status, not_before), score = pipe.execute()
        if status == S.QUEUED and not_before:
            if score is None:
                torn.append(name)
            return


def test_two_callers_recovering_one_failure_make_one_attempt_one_event_one_due_entry(
    ctx: BrokerContext, enqueued: list[tuple[str, str]]
) -> None:
    other = twin(ctx, enqueued)
    torn: list[str] = []
    for i in range(20):
        record = failed_job(ctx, f"race-{i}", backoff_s=30)
        decide = [partial(recovery.after_failure, c, record, recovery.VANISHED, "vanished") for c in (ctx, other)]
        outcomes = race([*decide, partial(watch_for_torn_state, ctx, record.name, torn)])[:2]
        assert sorted(outcomes) == ["moved_on", "recovering"]
        now = ctx.store.require(record.name)
        assert now.status == S.QUEUED and now.attempt == 2
        recoveries = [e for e in ctx.store.events(record.name) if e["reason"].startswith("automatic recovery")]
        assert len(recoveries) == 1 and recoveries[0]["attempt"] == 2
        score = ctx.redis.zscore(ctx.keys.recovery_due, record.name)
        assert score is not None and abs(score / 1000 - (parse_iso(now.not_before) or 0)) < 1.0
    assert ctx.redis.zcard(ctx.keys.recovery_due) == 20
    assert torn == []


def test_a_refused_recovery_leaves_no_due_entry(ctx: BrokerContext) -> None:
    record = failed_job(ctx, "moved")
    ctx.store.transition(record.name, S.QUEUED, reason="retried by hand")  # another caller retried it first
    assert recovery.after_failure(ctx, record, recovery.VANISHED, "vanished") == "moved_on"
    assert ctx.redis.zscore(ctx.keys.recovery_due, record.name) is None
    assert not ctx.store.require(record.name).not_before


def test_two_sync_cycles_racing_over_the_due_set_enqueue_each_recovery_once(
    ctx: BrokerContext, enqueued: list[tuple[str, str]]
) -> None:
    names = []
    for i in range(150):
        record = failed_job(ctx, f"due-{i}")
        assert recovery.after_failure(ctx, record, recovery.VANISHED, "vanished") == "recovering"
        names.append(record.name)
    other = twin(ctx, enqueued)
    started = race([lambda: recovery.start_due(ctx), lambda: recovery.start_due(other)])
    assert sorted(started[0] + started[1]) == sorted(names)
    assert sorted(enqueued) == sorted((SUBMIT_TASK, name) for name in names)
    assert ctx.redis.zcard(ctx.keys.recovery_due) == 0
    assert recovery.start_due(ctx) == [] and len(enqueued) == len(names)
