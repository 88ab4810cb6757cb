"""Enqueueing broker tasks by name, from the API.

The API never imports the broker's task code: it sends a Celery message naming the task (`SUBMIT_TASK`,
`CANCEL_TASK`) with the job's name as the only argument. A failed send is logged and reported, never raised: the
job is already stored, and the broker's periodic re-enqueue of stale queued jobs picks it up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from celery import Celery

from broker.celery_config import make_app
from broker.settings import BrokerSettings

log = logging.getLogger(__name__)

#: `enqueue(task_name, job_name) -> bool`: True when the message reached the broker.
Enqueue = Callable[[str, str], bool]

#: Give up quickly: the request is waiting, and a missed message is re-sent by the broker's periodic re-enqueue.
_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}


class CeleryEnqueuer:
    """Sends task messages through a Celery client configured like the broker's own app."""

    def __init__(self, settings: BrokerSettings, celery: Celery | None = None) -> None:
        self.celery = celery or make_app(settings, include_tasks=False)
        options = dict(self.celery.conf.broker_transport_options or {})
        options.setdefault("socket_connect_timeout", 2)
        options.setdefault("socket_timeout", 5)
        self.celery.conf.broker_transport_options = options

    def __call__(self, task_name: str, job_name: str) -> bool:
        """Send the task. Results are ignored: the job's state lives in the job store, and waiting on the result
        backend would make a request hang for as long as Redis does."""
        try:
            self.celery.send_task(
                task_name, args=[job_name], ignore_result=True, retry=True, retry_policy=_RETRY_POLICY
            )
        except Exception as exc:  # noqa: BLE001 - any broker failure leaves the job queued for the re-enqueue
            log.warning("could not enqueue %s for job %s: %s", task_name, job_name, exc)
            return False
        return True
