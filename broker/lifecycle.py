"""Cancel and retry, decided once: the API's views and the broker's tasks call these functions.

Both decide on the job's current record and write with the store's conditional transition (the expected status and
attempt are checked atomically in Redis). A write that finds the job moved on meanwhile re-reads it and decides
again, at most `MAX_TRIES` times, then raises `Busy`.

- `request_cancel`: `queued`/`waiting_quota` with no object on the cluster → `cancelled` at once (any reservation
  is given back; a job waiting out an automatic recovery's backoff is `queued`, so its recovery stops here); a job
  that may have an object on the cluster (in Kueue mode a waiting job has a suspended one) → `cancelling` (the
  caller deletes it: the API by enqueueing the cancel task, the task itself with `broker.cancel.finish_cancel`);
  `cancelling` stays; terminal: nothing.
- `request_retry`: `failed`/`cancelled` → `queued` with `attempt` + 1 (it resumes from the latest checkpoint).
"""

from __future__ import annotations

import dataclasses
from enum import StrEnum

from broker.errors import Busy, IllegalTransition, StaleTransition
from broker.jobs import CANCEL_AT_ONCE, RETRYABLE, TERMINAL, JobRecord, JobStatus, cancels_at_once
from broker.quota import QuotaLedger
from broker.store import JobStore

S = JobStatus
MAX_TRIES = 5


class CancelOutcome(StrEnum):
    CANCELLED = "cancelled"
    """It ended `cancelled` now: nothing was on the cluster."""
    CANCELLING = "cancelling"
    """It moved to `cancelling` now: its object must be deleted."""
    ALREADY_CANCELLING = "already_cancelling"
    """It was `cancelling` already: its object must (still) be deleted."""
    ENDED = "ended"
    """It had ended: nothing to do."""


@dataclasses.dataclass(frozen=True)
class CancelDecision:
    outcome: CancelOutcome
    record: JobRecord


def request_cancel(store: JobStore, quota: QuotaLedger, name: str) -> CancelDecision:
    """Decide and record the cancel of job `name`. Raises JobNotFound, or Busy after `MAX_TRIES` lost races."""
    for _ in range(MAX_TRIES):
        record = store.require(name)
        if record.status in TERMINAL:
            return CancelDecision(CancelOutcome.ENDED, record)
        if record.status == S.CANCELLING:
            return CancelDecision(CancelOutcome.ALREADY_CANCELLING, record)
        try:
            if cancels_at_once(record.status, record.cluster_object):
                reason = "cancelled before it reached the cluster"
                if record.not_before:
                    reason += " (automatic recovery stopped)"
                done = store.transition(name, S.CANCELLED, reason=reason,
                                        expect_from={record.status} & CANCEL_AT_ONCE, expect_attempt=record.attempt)
                quota.release(record.namespace, name, record.attempt)
                return CancelDecision(CancelOutcome.CANCELLED, done)
            cancelling = store.transition(name, S.CANCELLING, reason="cancel requested",
                                          expect_from={record.status}, expect_attempt=record.attempt)
            return CancelDecision(CancelOutcome.CANCELLING, cancelling)
        except IllegalTransition:
            continue  # it moved between our read and our write: decide again from its new state
    raise Busy(name)


def request_retry(store: JobStore, name: str) -> JobRecord:
    """Queue a `failed`/`cancelled` job again as its next attempt. Raises JobNotFound, or IllegalTransition when
    the job is in no state to be retried (or changed state while we looked)."""
    record = store.require(name)
    if record.status not in RETRYABLE:
        why = f"only failed or cancelled jobs can be retried; {name!r} is {record.status}"
        raise IllegalTransition(name, record.status, S.QUEUED, record.attempt, why)
    reason = f"retry requested (attempt {record.attempt + 1}, resuming from the latest checkpoint)"
    try:
        return store.transition(name, S.QUEUED, reason=reason, expect_from=RETRYABLE, expect_attempt=record.attempt)
    except StaleTransition as exc:
        why = f"job {name!r} changed state: it is now {exc.current}"
        raise IllegalTransition(name, exc.current, S.QUEUED, exc.attempt, why) from exc
