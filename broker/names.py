"""The broker's task names: the contract between whoever sends a task (the API, the sync) and the worker.

A module of constants only, so the API can name a task without importing the Celery app or the task code.
"""

from __future__ import annotations

SUBMIT_TASK = "broker.submit_job"
CANCEL_TASK = "broker.cancel_job"
SYNC_TASK = "broker.sync_jobs"
#: Celery's default queue: submit, cancel and dry-run tasks.
DEFAULT_QUEUE = "celery"
#: The periodic sync's own queue (every worker consumes both): behind a backlog of submits in one FIFO queue the
#: sync — status, admission, re-enqueueing stuck jobs — would wait for the whole backlog, and its messages expire.
SYNC_QUEUE = "broker.sync"
#: Its argument is a token naming the parked request (`broker.dryrun`), not a job name.
DRY_RUN_TASK = "broker.dry_run"
