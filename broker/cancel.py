"""The cancel task's logic: `cancel_job(name)` decides with `broker.lifecycle.request_cancel` (as the API does),
then deletes the attempt's PyTorchJob (background propagation; already gone is fine), records `cancelled` and gives
back the quota. Works from every non-terminal state.

A submission that was in flight notices the cancel when it records `submitted` and deletes what it created
(`broker.submit`).
"""

from __future__ import annotations

from broker.context import BrokerContext
from broker.errors import IllegalTransition, JobNotFound
from broker.jobs import JobRecord, JobStatus
from broker.lifecycle import CancelOutcome, request_cancel
from broker.ownership import ForeignObject, delete_own

S = JobStatus


def cancel_job(ctx: BrokerContext, name: str) -> str:
    """Cancel job `name`. Returns `cancelled` or `skipped: <why>`."""
    try:
        decision = request_cancel(ctx.store, ctx.quota, name)
    except JobNotFound:
        return "skipped: no such job"
    if decision.outcome == CancelOutcome.ENDED:
        return f"skipped: job is {decision.record.status}"
    if decision.outcome == CancelOutcome.CANCELLED:
        return "cancelled"
    return finish_cancel(ctx, decision.record)


def finish_cancel(ctx: BrokerContext, record: JobRecord, *, already_deleted: bool = False) -> str:
    """Delete a `cancelling` job's object, then `cancelled` and release its quota."""
    obj = record.object_name()
    reason = f"cancelled; PyTorchJob {obj} deleted"
    if not already_deleted:
        try:
            delete_own(ctx, record.namespace, obj, record.name, record.attempt)
        except ForeignObject as exc:
            reason = f"cancelled; {exc}"
    ctx.quota.release(record.namespace, record.name, record.attempt)
    try:
        ctx.store.transition(record.name, S.CANCELLED, reason=reason,
                             expect_from={S.CANCELLING}, expect_attempt=record.attempt)
    except IllegalTransition as stale:
        return f"skipped: job is {stale.current}"
    return "cancelled"
