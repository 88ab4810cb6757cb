"""Quota admission of one job, shared by `submit_job` (first try) and the periodic sync (waiting jobs).

The reservation (`broker.quota`) and the job's transition are two steps: the reservation comes first, and when the
transition finds the job has moved on (cancelled meanwhile), the reservation is given back. A crash between the two
leaves a reservation for a job still `queued`; the next try finds it held (idempotent per attempt).
"""

from __future__ import annotations

import json

from broker.context import BrokerContext
from broker.errors import IllegalTransition
from broker.jobs import TERMINAL, JobRecord, JobStatus, parse_iso

S = JobStatus
ADMISSIBLE = frozenset({S.QUEUED, S.WAITING_QUOTA})


def cluster_gpus_free(ctx: BrokerContext, namespace: str, cache: dict[str, int | None] | None = None) -> int | None:
    """Free GPUs under the namespace's ResourceQuota (None: no such quota), asked once per namespace per cycle."""
    if cache is not None and namespace in cache:
        return cache[namespace]
    free = ctx.with_retries(lambda: ctx.backend.gpu_quota_free(namespace), f"read ResourceQuota of {namespace}")
    if cache is not None:
        cache[namespace] = free
    return free


def admit(ctx: BrokerContext, record: JobRecord, cache: dict[str, int | None] | None = None) -> JobRecord | None:
    """Admit a `queued`/`waiting_quota` job: the `admitted` record, or None when it waits (or has moved on).

    A job that does not fit goes (or stays) `waiting_quota` with a detail that says why and where it is in line.
    """
    spec = record.spec
    gpus = spec.total_gpus
    free = cluster_gpus_free(ctx, spec.namespace, cache) if gpus > 0 else None
    decision = ctx.quota.admit(spec.namespace, record.name, record.attempt, gpus,
                               ctx.settings.quota_for(spec.namespace), free, _joins_line_at(record))
    try:
        if decision.admitted:
            return ctx.store.transition(record.name, S.ADMITTED, reason=decision.detail,
                                        expect_from={record.status}, expect_attempt=record.attempt)
        info = json.dumps(decision.queue, sort_keys=True) if decision.queue else ""
        if record.status == S.QUEUED:
            ctx.store.transition(record.name, S.WAITING_QUOTA, reason=decision.detail,
                                 expect_from={S.QUEUED}, expect_attempt=record.attempt, queue_info=info)
        elif record.detail != decision.detail or (record.queue_info or "") != info:
            ctx.store.update(record.name, detail=decision.detail, queue_info=info)
    except IllegalTransition:
        _release_if_moved_on(ctx, record)
    return None


def _release_if_moved_on(ctx: BrokerContext, record: JobRecord) -> None:
    """Give the reservation back only when this attempt no longer needs it. A duplicate task that lost the race to
    its twin finds the job admitted (or waiting) for the same attempt: the twin's reservation and place stay."""
    current = ctx.store.get(record.name)
    if current is None or current.attempt != record.attempt or current.status in TERMINAL:
        ctx.quota.release(record.namespace, record.name, record.attempt)


def _joins_line_at(record: JobRecord) -> float | None:
    """When the attempt was queued (after its recovery backoff, if any): its place in the namespace's FIFO line."""
    stamps = [t for t in (parse_iso(record.enqueued_at or ""), parse_iso(record.not_before or "")) if t is not None]
    return max(stamps) if stamps else None
