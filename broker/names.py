"""The broker's task names: the contract between whoever sends a task (the API, the sync) and the worker.

A module of constants only, so the API can name a task without importing the Celery app or the task code.
"""

from __future__ import annotations

SUBMIT_TASK = "broker.submit_job"
CANCEL_TASK = "broker.cancel_job"
SYNC_TASK = "broker.sync_jobs"
#: Its argument is a token naming the parked request (`broker.dryrun`), not a job name.
DRY_RUN_TASK = "broker.dry_run"
