"""The periodic work of celery beat's one schedule entry: status sync, quota admission, re-enqueue, clean-up.

Exactly one beat runs: the deployment runs the beat as its own Deployment with `replicas: 1` and
`strategy: Recreate` (the old pod is gone before a new one starts), and beat is never embedded in a worker
(`worker -B`). Even so, a sync that overlaps another (a slow cycle, or a second beat by mistake) is harmless: each
cycle takes a Redis lock and a cycle that finds it held does nothing, and every write is a conditional transition.

Per cycle:
1. One LIST of this system's PyTorchJobs per namespace that has jobs on the cluster (label selector, paginated) —
   never one GET per job. Conditions map onto the lifecycle (Failed and Succeeded are final; then Suspended,
   Restarting, Running; Created alone leaves a job `submitted`), with `replicaStatuses` in the detail and the
   cluster's `startTime`/`completionTime`; only changes are written, in one pipeline (`transition_many`), with
   events. Quota is released for jobs that ended.
2. A job whose object is missing from its LIST for `vanished_grace_cycles` cycles in a row is `failed` with a clear
   detail (its history stays in Redis).
3. `waiting_quota` jobs are admitted in FIFO order as capacity frees; admitted jobs get a submit task.
4. Jobs stuck in `queued` (a lost message) are enqueued again; jobs stuck in `cancelling` get a cancel task again.
5. The quota ledger is reconciled: reservations of ended jobs or old attempts are given back, and jobs that no longer
   wait leave the line.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from redis.exceptions import LockError

from broker import kueue, recovery
from broker.admission import admit
from broker.backends.errors import ClusterError
from broker.context import BrokerContext
from broker.errors import StoreError
from broker.jobs import ON_CLUSTER, TERMINAL, JobRecord, JobStatus, parse_iso
from broker.keys import member, parse_member
from broker.names import CANCEL_TASK, DEFAULT_QUEUE, SUBMIT_TASK
from broker.render import MANAGED_SELECTOR
from broker.retention import purge_expired
from broker.store import Change

S = JobStatus
log = logging.getLogger(__name__)

#: Condition types in the order they decide the job's status (the first one that is True wins).
PRECEDENCE = (("Failed", S.FAILED), ("Succeeded", S.SUCCEEDED), ("Suspended", S.SUSPENDED),
              ("Restarting", S.RESTARTING), ("Running", S.RUNNING), ("Created", S.SUBMITTED))


@dataclasses.dataclass
class SyncReport:
    listed_namespaces: list[str] = dataclasses.field(default_factory=list)
    changed: dict[str, str] = dataclasses.field(default_factory=dict)
    vanished: list[str] = dataclasses.field(default_factory=list)
    admitted: list[str] = dataclasses.field(default_factory=list)
    requeued: list[str] = dataclasses.field(default_factory=list)
    recovering: list[str] = dataclasses.field(default_factory=list)
    skipped: bool = False
    expired: int = 0


def map_status(obj: dict[str, Any]) -> tuple[JobStatus, str] | None:
    """The lifecycle status and a detail for a PyTorchJob's `.status`, or None when it has no True condition."""
    status = obj.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    for kind, target in PRECEDENCE:
        if kind in conditions:
            cond = conditions[kind]
            detail = cond.get("message") or cond.get("reason") or kind
            replicas = _replica_summary(status.get("replicaStatuses") or {})
            return target, f"{detail} ({replicas})" if replicas else detail
    return None


def _replica_summary(statuses: dict[str, Any]) -> str:
    parts = []
    for kind in sorted(statuses):
        counts = statuses[kind] or {}
        shown = ", ".join(f"{counts[k]} {k}" for k in ("active", "succeeded", "failed") if counts.get(k))
        if shown:
            parts.append(f"{kind}: {shown}")
    return "; ".join(parts)


def cycle_due(ctx: BrokerContext) -> bool:
    """Whether one of beat's sync messages should run a cycle: at most one per half interval. Beat sends one message
    per interval; when a worker was busy, several arrive at once (each still within its expiry) and all but the
    first skip at the cost of one Redis command."""
    window_ms = max(1, int(ctx.settings.sync_interval_s * 500))
    return bool(ctx.redis.set(ctx.keys.sync_recent, "1", px=window_ms, nx=True))


def sync_jobs(ctx: BrokerContext) -> SyncReport:
    """One cycle. Skips (report.skipped) when another cycle holds the lock (redis-py's `Lock`: a token per holder,
    released only by its holder; it expires after six intervals, at least a minute, should this process die)."""
    ttl = max(60, int(ctx.settings.sync_interval_s * 6))
    lock = ctx.redis.lock(ctx.keys.sync_lock, timeout=ttl, blocking=False)
    if not lock.acquire():
        return SyncReport(skipped=True)
    try:
        report = SyncReport()
        sync_cluster_status(ctx, report)
        reconcile_quota(ctx)  # before admission: a job that left the line no longer counts ahead of others
        report.requeued += recovery.start_due(ctx)
        admit_waiting(ctx, report)
        requeue_stuck(ctx, report)
        report.expired = purge_expired(ctx.store, ctx.settings.job_retention_s)
        return report
    finally:
        try:
            lock.release()
        except LockError:
            log.warning("status sync: the lock expired before the cycle ended; raise TRAINER_SYNC_INTERVAL_S")


def _tracked(record: JobRecord) -> bool:
    """The job has an object on the cluster to follow (a Kueue job waits with its object suspended)."""
    return record.status in ON_CLUSTER or (record.status == S.WAITING_QUOTA and bool(record.cluster_object))


def sync_cluster_status(ctx: BrokerContext, report: SyncReport) -> None:
    for namespace, names in ctx.store.by_namespace(*ON_CLUSTER, S.WAITING_QUOTA).items():
        records = [r for r in ctx.store.load(names) if _tracked(r)]
        if not records:
            continue
        try:
            objects = ctx.backend.list(namespace, MANAGED_SELECTOR,
                                       only={r.cluster_object or r.object_name() for r in records})
        except ClusterError as exc:
            log.warning("status sync: LIST in namespace %s failed, trying next cycle: %s", namespace, exc)
            continue
        report.listed_namespaces.append(namespace)
        by_name = {o["metadata"]["name"]: o for o in objects}
        changes = _changes(ctx, records, by_name, report)
        _apply(ctx, changes, report)


def _changes(ctx: BrokerContext, records: list[JobRecord], by_name: dict[str, Any],
             report: SyncReport) -> list[Change]:
    """The transitions the LIST implies, and the vanished-object counters kept up to date: one read of the
    counters and one pipeline of writes per namespace, whatever the job count."""
    changes: list[Change] = []
    missing_key = ctx.keys.sync_missing
    counted: dict[str, str] = ctx.redis.hgetall(missing_key)  # type: ignore[assignment]
    absent: list[JobRecord] = []
    seen_again: list[str] = []
    for record in records:
        attempt = member(record.name, record.attempt)
        obj = by_name.get(record.cluster_object or record.object_name())
        if obj is None:
            absent.append(record)
            continue
        if attempt in counted:
            seen_again.append(attempt)
        if kueue.is_suspended_by_kueue(obj) and record.status in (S.WAITING_QUOTA, S.SUBMITTED):
            continue  # still waiting for Kueue's admission (its detail was written when it was created)
        mapped = map_status(obj)
        if record.status == S.WAITING_QUOTA and (mapped is None or mapped[0] == S.SUBMITTED):
            detail = kueue.admitted_detail(obj)
            changes.append(Change(record.name, S.SUBMITTED, detail, frozenset({S.WAITING_QUOTA}), record.attempt))
            continue
        if mapped is None or mapped[0] in (record.status, S.SUBMITTED):  # Created alone never moves a job back
            continue
        target, detail = mapped
        status = obj.get("status") or {}
        fields: dict[str, Any] = {"detail": detail}
        if status.get("startTime") and target in (S.RUNNING, *TERMINAL) and not record.started_at:
            fields["started_at"] = status["startTime"]
        if status.get("completionTime") and target in TERMINAL:
            fields["finished_at"] = status["completionTime"]
        changes.append(Change(record.name, target, detail, frozenset({record.status}), record.attempt, fields))
    if not absent and not seen_again:
        return changes
    pipe = ctx.redis.pipeline(transaction=False)
    for record in absent:
        pipe.hincrby(missing_key, member(record.name, record.attempt), 1)
    if seen_again:
        pipe.hdel(missing_key, *seen_again)
    counts = pipe.execute()
    for record, seen_missing in zip(absent, counts, strict=False):
        if int(seen_missing) >= ctx.settings.vanished_grace_cycles:
            report.vanished.append(record.name)
            changes.append(Change(record.name, S.FAILED, _vanished_detail(record, int(seen_missing)),
                                  frozenset({record.status}), record.attempt))
    return changes


def _vanished_detail(record: JobRecord, cycles: int) -> str:
    return (f"PyTorchJob {record.namespace}/{record.cluster_object or record.object_name()} vanished from the "
            f"cluster before it finished (deleted by hand or by its TTL): missing in {cycles} status syncs in a row")


def _apply(ctx: BrokerContext, changes: list[Change], report: SyncReport) -> None:
    ended: list[str] = []
    for change, result in zip(changes, ctx.store.transition_many(changes), strict=True):
        if isinstance(result, StoreError):
            log.info("status sync: %s not moved to %s: %s", change.name, change.to, result)
            continue
        report.changed[change.name] = change.to.value
        if change.to in TERMINAL:
            ctx.quota.release(result.namespace, result.name, result.attempt)
            ended.append(member(result.name, result.attempt))
        if change.to == S.FAILED:
            cause = recovery.VANISHED if change.name in report.vanished else recovery.CLUSTER_FAILED
            if recovery.after_failure(ctx, result, cause, change.reason) == "recovering":
                report.recovering.append(change.name)
    if ended:
        ctx.redis.hdel(ctx.keys.sync_missing, *ended)


def admit_waiting(ctx: BrokerContext, report: SyncReport) -> None:
    """Try every waiting job, first in line first; the quota's FIFO keeps later jobs behind earlier ones."""
    cache: dict[str, int | None] = {}
    for record in ctx.store.load(ctx.store.names_in(S.WAITING_QUOTA)):
        name = record.name
        if record.status != S.WAITING_QUOTA or record.cluster_object:
            continue  # a job with an object waits for Kueue, not for our quota
        try:
            admitted = admit(ctx, record, cache)
        except ClusterError as exc:
            log.warning("admission of %s: cannot read the namespace's ResourceQuota: %s", name, exc)
            continue
        if admitted is not None:
            report.admitted.append(name)
            ctx.enqueue(SUBMIT_TASK, name)


def requeue_stuck(ctx: BrokerContext, report: SyncReport) -> None:
    """Enqueue again what a lost message left behind: `queued` jobs (submit), `admitted` jobs (submit) and
    `cancelling` jobs (cancel) untouched for `requeue_after_s`. Tasks are idempotent, so a duplicate is harmless —
    one is. So nothing is re-sent while Celery's queue still holds messages: behind a backlog older than
    `requeue_after_s` every waiting job looks stuck, its own message is still in the queue, and re-sending each one
    every cycle grew the backlog faster than the workers drained it (the hour-long soak of `make reliability`:
    from minute 26 on, tens of thousands of duplicate submits and 9,358 jobs left `queued`). A message really lost
    is re-sent once the queue has drained."""
    if ctx.redis.llen(DEFAULT_QUEUE):
        return
    stale = ctx.store.stale_queued(ctx.settings.requeue_after_s)
    for name in stale:
        ctx.enqueue(SUBMIT_TASK, name)
    ctx.store.mark_requeued(stale)
    report.requeued = list(stale)
    now = time.time()
    cutoff = now - ctx.settings.requeue_after_s
    nudged_key = ctx.keys.sync_nudged
    nudged: dict[str, str] = ctx.redis.hgetall(nudged_key)  # type: ignore[assignment]
    stuck = ctx.store.load(ctx.store.names_in(S.CANCELLING, S.ADMITTED))
    for record in stuck:
        last = max(parse_iso(record.updated_at) or 0.0, float(nudged.get(record.name, 0)))
        if last < cutoff:
            ctx.enqueue(CANCEL_TASK if record.status == S.CANCELLING else SUBMIT_TASK, record.name)
            ctx.redis.hset(nudged_key, record.name, str(now))
            report.requeued.append(record.name)
    gone = set(nudged) - {r.name for r in stuck}
    if gone:
        ctx.redis.hdel(nudged_key, *gone)


def reconcile_quota(ctx: BrokerContext) -> None:
    """Give back reservations nobody holds any more; take jobs that stopped waiting out of the line. The records
    behind each namespace's reservations and line are read in one round trip."""
    for namespace in ctx.quota.namespaces_held():
        held = [parse_member(m) for m in ctx.quota.held(namespace)]
        for (job, attempt), now in zip(held, ctx.store.status_many(j for j, _ in held), strict=True):
            if now is None or now[1] != attempt or now[0] in TERMINAL:
                ctx.quota.release(namespace, job, attempt)
    for namespace in ctx.quota.namespaces_waiting():
        line = ctx.quota.line(namespace)
        for job, now in zip(line, ctx.store.status_many(line), strict=True):
            if now is None or now[0] not in (S.QUEUED, S.WAITING_QUOTA):
                ctx.quota.leave_line(namespace, job)

