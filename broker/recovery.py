"""Automatic recovery: when an attempt fails for a reason another attempt can fix, start the next one after a backoff,
resuming from the latest complete checkpoint, until the job's recovery policy is used up.

The policy is the request's `recovery` (`{"max_attempts": n, "backoff_s": s}`: attempts in all, the first included)
or the namespace's default (`TRAINER_RECOVERY`). Which failures are recovered:

- recovered: the PyTorchJob failed (its pod restarts ran out, nodes were preempted, the trainer crashed or was
  killed), its object vanished from the cluster, or the cluster did not answer the create through every retry;
- not recovered: the trainer's own "invalid settings or dataset" exit (status 2, recorded by the trainer in
  `logs/failure.json`, see `trainer.failure`), and a create the cluster refused with a 4xx. The detail says why.

The next attempt is the state machine's retry (`failed` → `queued`, attempt + 1, which resumes from the latest
checkpoint), taken at once with `not_before` set to the end of the backoff: the job is `queued` during the backoff,
so a cancel ends it at once and nothing is submitted (`broker.submit` skips a job whose `not_before` is ahead).
The key `p recovery:due` (sorted set, name → epoch ms) tells the periodic sync when to enqueue the submission; the
move to `queued` and the due entry are one atomic step (`JobStore.transition(due_ms=…)`), and a sync cycle claims
due names atomically (`JobStore.claim_due`).
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from broker.context import BrokerContext
from broker.errors import StoreError
from broker.jobs import JobRecord, JobSpec, JobStatus, now_iso, parse_iso
from broker.names import SUBMIT_TASK
from broker.run_files import Outside, StorageUnavailable, TooLarge, read_bounded
from broker.settings import BrokerSettings, Recovery

S = JobStatus
log = logging.getLogger(__name__)

#: What made an attempt fail, as the broker saw it.
CLUSTER_FAILED, VANISHED, SUBMIT_GAVE_UP, SUBMIT_REFUSED = "cluster_failed", "vanished", "submit_gave_up", "refused"
#: The most bytes of `logs/failure.json` read: the trainer writes a few hundred; a larger file is not read at all.
FAILURE_MAX_BYTES = 64 * 1024
_EXIT_2 = re.compile(r"exit(?:ed)? (?:with )?(?:code|status) 2\b")


def policy_for(spec: JobSpec, settings: BrokerSettings) -> Recovery:
    """The job's recovery policy: its request's `recovery`, else the namespace's default."""
    default = settings.recovery_for(spec.namespace)
    given = spec.recovery or {}
    return Recovery(max_attempts=int(given.get("max_attempts", default.max_attempts)),
                    backoff_s=float(given.get("backoff_s", default.backoff_s)))


def _epoch(stamp: str | None) -> float:
    return (parse_iso(stamp) or 0.0) if stamp else 0.0


def in_backoff(record: JobRecord, now: float | None = None) -> bool:
    """The job waits out a recovery backoff: queued, and not to be submitted yet."""
    return record.status == S.QUEUED and _epoch(record.not_before) > (time.time() if now is None else now)


def failure_file(record: JobRecord) -> dict[str, Any] | None:
    """This attempt's `logs/failure.json` as the trainer wrote it, or None (none, unreadable, too large, a local file
    that resolves outside the job's prefix, another attempt's). One bounded read, inside the job's own prefix."""
    uri = record.layout.failure
    try:
        data = json.loads(read_bounded(uri, FAILURE_MAX_BYTES, record.layout.prefix))
    except (FileNotFoundError, StorageUnavailable, TooLarge, Outside, ValueError) as exc:
        log.debug("no failure record for %s at %s: %s", record.name, uri, exc)
        return None
    if not isinstance(data, dict):
        return None
    attempt = data.get("attempt")
    if attempt is not None and attempt != record.attempt:
        return None
    if attempt is None and _epoch(str(data.get("at") or "")) < _epoch(record.submitted_at):
        return None
    return data


def classify(record: JobRecord, cause: str, detail: str) -> tuple[bool, str]:
    """`(fixable, why)` for a failed attempt."""
    if cause == SUBMIT_REFUSED:
        return False, "the cluster refused the PyTorchJob (a 4xx: the request itself must change)"
    if cause == VANISHED:
        return True, "its PyTorchJob vanished from the cluster"
    if cause == SUBMIT_GAVE_UP:
        return True, "the cluster did not answer the create"
    recorded = failure_file(record)
    if recorded is not None and recorded.get("kind") == "invalid_input":
        return False, f"the trainer exited with status 2 (invalid settings or dataset): {recorded.get('message', '')}"
    if recorded is None and _EXIT_2.search(detail):
        return False, "the trainer exited with status 2 (invalid settings or dataset)"
    if recorded is not None:
        return True, f"the trainer failed ({recorded.get('kind')}, exit {recorded.get('exit_code')})"
    return True, "the PyTorchJob failed (pod restarts used up, nodes lost or preempted, or the trainer killed)"


def after_failure(ctx: BrokerContext, record: JobRecord, cause: str, detail: str) -> str:
    """Decide on a job that just became `failed`: start the next attempt after the backoff, or say why not.
    Returns `recovering`, `not_fixable` or `used_up` (`disabled` when the policy allows one attempt only)."""
    policy = policy_for(record.spec, ctx.settings)
    fixable, why = classify(record, cause, detail)
    try:
        if policy.max_attempts <= 1:
            if not fixable:
                ctx.store.update(record.name, last_failure=why)
            return "disabled"
        if not fixable:
            ctx.store.update(record.name, detail=f"{detail} — not retried automatically: {why}", last_failure=why)
            return "not_fixable"
        if record.attempt >= policy.max_attempts:
            ctx.store.update(record.name, last_failure=why, detail=(
                f"{detail} — automatic recovery used up: {record.attempt} of {policy.max_attempts} attempts"))
            return "used_up"
        due = time.time() + policy.backoff_s
        nxt = record.attempt + 1
        reason = (f"automatic recovery: attempt {nxt} of {policy.max_attempts} because {why}; resumes from the "
                  f"latest checkpoint after a {policy.backoff_s:g}s backoff")
        ctx.store.transition(record.name, S.QUEUED, reason=reason, expect_from={S.FAILED},
                             expect_attempt=record.attempt, due_ms=int(due * 1000), not_before=now_iso(due),
                             last_failure=why)
    except StoreError as exc:
        log.info("recovery of %s: the job moved on (%s)", record.name, exc)
        return "moved_on"
    log.info("job %s: %s", record.name, reason)
    return "recovering"


def start_due(ctx: BrokerContext) -> list[str]:
    """Enqueue the submission of every recovery whose backoff is over (called by each sync cycle).

    The names are claimed out of `recovery:due` in one atomic step, so two callers never both enqueue one. Should
    this process die between the claim and the enqueue, the job is still `queued`: `broker.sync.requeue_stuck`
    sends it again once it has been queued for `requeue_after_s`."""
    names = ctx.store.claim_due()
    if not names:
        return []
    started = []
    for record in ctx.store.load(names):
        if record.status == S.QUEUED and record.not_before:
            ctx.enqueue(SUBMIT_TASK, record.name)
            started.append(record.name)
    return started


def recovery_view(record: JobRecord, settings: BrokerSettings) -> dict[str, Any]:
    """The `recovery` object of a job's status: policy, attempts used and left, the next one's start."""
    policy = policy_for(record.spec, settings)
    return {
        "max_attempts": policy.max_attempts,
        "backoff_s": policy.backoff_s,
        "attempts_used": record.attempt,
        "attempts_left": max(policy.max_attempts - record.attempt, 0),
        "next_attempt_at": record.not_before if in_backoff(record) else None,
        "last_failure": record.last_failure,
    }
