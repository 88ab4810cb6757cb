"""`cancel_job(name)`: delete the attempt's PyTorchJob (background propagation; already gone is fine), then
`cancelled`, and give back the quota. Works from every non-terminal state.

The API moves `queued`/`waiting_quota` jobs to `cancelled` itself and others to `cancelling` before enqueueing this
task; a job still in a cluster state when the task runs is moved to `cancelling` here first. A submission that was
in flight notices the cancel when it records `submitted` and deletes what it created (`broker.submit`).
"""

from __future__ import annotations

from broker.context import BrokerContext
from broker.jobs import CANCEL_AT_ONCE, TERMINAL, JobRecord, JobStatus, cancels_at_once
from broker.store import IllegalTransition

S = JobStatus


def cancel_job(ctx: BrokerContext, name: str) -> str:
    """Cancel job `name`. Returns `cancelled` or `skipped: <why>`."""
    record = ctx.store.get(name)
    if record is None:
        return "skipped: no such job"
    if record.status in TERMINAL:
        return f"skipped: job is {record.status}"
    try:
        if cancels_at_once(record.status, record.cluster_object):
            ctx.store.transition(name, S.CANCELLED, reason="cancelled before it reached the cluster",
                                 expect_from={record.status} & CANCEL_AT_ONCE, expect_attempt=record.attempt)
            ctx.quota.release(record.namespace, name, record.attempt)
            return "cancelled"
        if record.status != S.CANCELLING:
            record = ctx.store.transition(name, S.CANCELLING, reason="cancel requested",
                                          expect_from={record.status}, expect_attempt=record.attempt)
    except IllegalTransition:
        return cancel_job(ctx, name)  # it moved meanwhile: decide again from its new state
    return finish_cancel(ctx, record)


def finish_cancel(ctx: BrokerContext, record: JobRecord, *, already_deleted: bool = False) -> str:
    """Delete a `cancelling` job's object, then `cancelled` and release its quota."""
    obj = record.object_name()
    if not already_deleted:
        ctx.with_retries(lambda: ctx.backend.delete(record.namespace, obj), f"delete PyTorchJob {obj}")
    ctx.quota.release(record.namespace, record.name, record.attempt)
    try:
        ctx.store.transition(record.name, S.CANCELLED, reason=f"cancelled; PyTorchJob {obj} deleted",
                             expect_from={S.CANCELLING}, expect_attempt=record.attempt)
    except IllegalTransition as stale:
        return f"skipped: job is {stale.current}"
    return "cancelled"
