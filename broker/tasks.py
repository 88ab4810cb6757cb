"""The broker's Celery tasks: thin. Each takes a job name, builds nothing itself and calls the logic
(`broker.submit`, `broker.cancel`, `broker.sync`) with this process's context.

No Celery retries: the one retry layer is `broker.retry`, inside the logic, around each cluster call. A task that
still fails (the cluster kept failing, Redis is unreachable) leaves its job where it was, and the periodic sync sends
the task again after `TRAINER_REQUEUE_AFTER_S` (every task is idempotent). The context (Redis client, cluster
backend) is built lazily in each worker process, after the fork.
"""

from __future__ import annotations

import logging
import os

from broker.backends import make_backend
from broker.cancel import cancel_job as cancel_logic
from broker.celery_app import app
from broker.context import BrokerContext
from broker.dryrun import dry_run as dry_run_logic
from broker.names import CANCEL_TASK, DRY_RUN_TASK, SUBMIT_TASK, SYNC_TASK
from broker.settings import BrokerSettings
from broker.submit import submit_job as submit_logic
from broker.sync import SyncReport, cycle_due
from broker.sync import sync_jobs as sync_logic

log = logging.getLogger(__name__)
_context: tuple[int, BrokerContext] | None = None


def enqueue(task_name: str, job_name: str) -> None:
    app.send_task(task_name, args=[job_name])


def context() -> BrokerContext:
    """This process's context (rebuilt in a forked child: clients must not cross a fork)."""
    global _context
    if _context is None or _context[0] != os.getpid():
        settings = BrokerSettings.from_env()
        _context = (os.getpid(), BrokerContext.build(settings, make_backend(settings), enqueue))
    return _context[1]


@app.task(name=SUBMIT_TASK, acks_late=True, max_retries=0)
def submit_job(name: str) -> str:
    outcome = submit_logic(context(), name)
    log.info("submit %s: %s", name, outcome)
    return outcome


@app.task(name=CANCEL_TASK, acks_late=True, max_retries=0)
def cancel_job(name: str) -> str:
    outcome = cancel_logic(context(), name)
    log.info("cancel %s: %s", name, outcome)
    return outcome


@app.task(name=DRY_RUN_TASK, acks_late=True, max_retries=0)
def dry_run(token: str) -> str:
    return dry_run_logic(context(), token)


@app.task(name=SYNC_TASK, acks_late=True, max_retries=0)
def sync_jobs() -> dict[str, object]:
    ctx = context()
    report = sync_logic(ctx) if cycle_due(ctx) else SyncReport(skipped=True)
    return {"changed": report.changed, "vanished": report.vanished, "admitted": report.admitted,
            "requeued": report.requeued, "recovering": report.recovering, "skipped": report.skipped}
