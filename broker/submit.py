"""`submit_job(name)`: from `queued` to a PyTorchJob on the cluster, exactly once per attempt.

1. Re-read the record; do nothing when the job has moved on (already submitted, cancelled, a newer attempt).
2. Quota admission (`broker.admission`); a job that does not fit waits in `waiting_quota`.
3. For a retried attempt, delete the previous attempt's object if it is still there — only when its labels say it
   is that attempt's (`broker.ownership`); a foreign object of that name fails the job and is left alone.
4. Render (`broker.render`, pure) and create under the one retry loop (`broker.retry`). `AlreadyExists` for the
   object of this job and attempt (its labels say so) is success — a redelivered task or a create whose answer was
   lost never makes a duplicate; for anyone else's object it is a clear failure. Other 4xx fail at once with the
   API server's message; transient errors that outlast the retries fail the job with the last error.
5. Record `submitted` with the object's name. If a cancel arrived meanwhile, the object just created is deleted and
   the cancel finished, so a cancel during submission never leaves a running object behind.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from broker import kueue, recovery
from broker.admission import ADMISSIBLE, admit
from broker.backends.errors import AlreadyExists, ClusterError, TransientClusterError
from broker.cancel import finish_cancel
from broker.context import BrokerContext
from broker.errors import IllegalTransition
from broker.jobs import ON_CLUSTER, JobRecord, JobStatus, now_iso, object_name
from broker.ownership import ForeignObject, delete_own
from broker.render import attempt_selector, render_pytorchjob
from broker.retry import GaveUp

S = JobStatus
log = logging.getLogger(__name__)


def submit_job(ctx: BrokerContext, name: str) -> str:
    """Run the submission of job `name`. Returns what happened (for logs and tests): `submitted`, `waiting_quota`,
    `failed`, `cancelled` or `skipped: <why>`."""
    record = ctx.store.get(name)
    if record is None:
        return "skipped: no such job"
    if record.status == S.CANCELLING:
        finish_cancel(ctx, record)
        return "cancelled"
    if recovery.in_backoff(record):
        return f"skipped: automatic recovery starts at {record.not_before}"
    if record.status in ADMISSIBLE and kueue.enabled(ctx.settings):
        record = _delegate_to_kueue(ctx, record)
    elif record.status in ADMISSIBLE:
        admitted = admit(ctx, record)
        if admitted is None:
            return "waiting_quota"
        record = admitted
    if record.status != S.ADMITTED:
        return f"skipped: job is {record.status}"
    return _create(ctx, record)


def _delegate_to_kueue(ctx: BrokerContext, record: JobRecord) -> JobRecord:
    """Kueue mode: no quota of ours; the object is created suspended and Kueue admits it."""
    queue = kueue.queue_for(record.spec, ctx.settings)
    try:
        return ctx.store.transition(record.name, S.ADMITTED, reason=f"admission delegated to Kueue ({queue})",
                                    expect_from={record.status}, expect_attempt=record.attempt)
    except IllegalTransition:
        return ctx.store.get(record.name) or record


def _create(ctx: BrokerContext, record: JobRecord) -> str:
    namespace = record.namespace
    job = kueue.apply(render_pytorchjob(record, ctx.settings), record, ctx.settings)
    try:
        if record.attempt > 1:
            _delete_previous_attempt(ctx, record)
        ctx.with_retries(lambda: create_own(ctx, job, record), f"create PyTorchJob {namespace}/{record.object_name()}")
    except GaveUp as exc:
        return _fail(ctx, record, f"could not create the PyTorchJob: {exc}", recovery.SUBMIT_GAVE_UP)
    except ForeignObject as exc:
        return _fail(ctx, record, str(exc), recovery.SUBMIT_REFUSED)
    except ClusterError as exc:
        return _fail(ctx, record, f"the cluster refused the PyTorchJob: {exc}", recovery.SUBMIT_REFUSED)
    return _record_submitted(ctx, record)


def create_own(ctx: BrokerContext, job: dict[str, Any], record: JobRecord) -> dict[str, Any]:
    """Create `job`; an existing object counts as created only when it is this job's attempt."""
    try:
        return ctx.backend.create(job)
    except AlreadyExists as exc:
        existing = ctx.backend.get(record.namespace, record.object_name())
        if existing is None:  # deleted between our create and our read: try the create again
            raise TransientClusterError(f"{exc}, but it was gone when read back") from exc
        labels = existing.get("metadata", {}).get("labels") or {}
        wanted = attempt_selector(record.name, record.attempt)
        if all(labels.get(k) == v for k, v in wanted.items()):
            log.info("PyTorchJob %s already exists for this attempt: created before", record.object_name())
            return existing
        raise AlreadyExists(
            f"a PyTorchJob named {record.object_name()} already exists in namespace {record.namespace} and was not "
            f"created by this system for job {record.name} attempt {record.attempt}",
            status=409,
        ) from exc


def _delete_previous_attempt(ctx: BrokerContext, record: JobRecord) -> None:
    previous = object_name(record.name, record.attempt - 1)
    if delete_own(ctx, record.namespace, previous, record.name, record.attempt - 1):
        log.info("deleted the previous attempt's PyTorchJob %s/%s", record.namespace, previous)


def _record_submitted(ctx: BrokerContext, record: JobRecord) -> str:
    obj = record.object_name()
    try:
        if kueue.enabled(ctx.settings):
            queue = kueue.queue_for(record.spec, ctx.settings)
            ctx.store.transition(record.name, S.WAITING_QUOTA, reason=kueue.waiting_detail(queue),
                                 expect_from={S.ADMITTED}, expect_attempt=record.attempt, cluster_object=obj,
                                 submitted_at=now_iso(),
                                 queue_info=json.dumps(kueue.queue_view(record, ctx.settings)))
            return "waiting_quota"
        ctx.store.transition(record.name, S.SUBMITTED, reason=f"created PyTorchJob {record.namespace}/{obj}",
                             expect_from={S.ADMITTED}, expect_attempt=record.attempt, cluster_object=obj)
        return "submitted"
    except IllegalTransition:
        pass
    current = ctx.store.get(record.name)
    if current is not None and _object_belongs(current, record.attempt):
        return f"skipped: job is already {current.status}"
    # The job moved on while we created its object (cancelled, failed before it was submitted, a newer attempt):
    # nothing will ever track that object, so it must go.
    try:
        delete_own(ctx, record.namespace, obj, record.name, record.attempt)
    except ForeignObject as exc:
        log.warning("%s", exc)
    if current is not None and current.status == S.CANCELLING and current.attempt == record.attempt:
        finish_cancel(ctx, current, already_deleted=True)
        return "cancelled"
    return f"skipped: job is {current.status if current else 'gone'}; deleted PyTorchJob {obj}"


def _object_belongs(current: JobRecord, attempt: int) -> bool:
    """The attempt's object is the one the job tracks (a duplicate task recorded it first, or it ran and ended)."""
    if current.attempt != attempt:
        return False
    ended_on_cluster = current.status in (S.SUCCEEDED, S.FAILED) and bool(current.submitted_at)
    waits_in_kueue = current.status == S.WAITING_QUOTA and bool(current.cluster_object)
    return current.status in ON_CLUSTER or ended_on_cluster or waits_in_kueue


def _fail(ctx: BrokerContext, record: JobRecord, detail: str, cause: str) -> str:
    log.warning("job %s attempt %d failed to submit: %s", record.name, record.attempt, detail)
    try:
        failed = ctx.store.transition(record.name, S.FAILED, reason=detail, expect_from={S.ADMITTED},
                                      expect_attempt=record.attempt)
        ctx.quota.release(record.namespace, record.name, record.attempt)
    except IllegalTransition as stale:
        current = ctx.store.get(record.name)
        if current is not None and current.status == S.CANCELLING and stale.attempt == record.attempt:
            finish_cancel(ctx, current)
            return "cancelled"
        return f"skipped: job is {stale.current}"
    return "recovering" if recovery.after_failure(ctx, failed, cause, detail) == "recovering" else "failed"
