"""Enqueueing broker tasks by name, from the API.

The API never imports the broker's task code: it sends a Celery message naming the task (`SUBMIT_TASK`,
`CANCEL_TASK`) with the job's name as the only argument. A failed send is logged and reported, never raised: the
job is already stored, and the broker's periodic re-enqueue of stale queued jobs picks it up.

When the Celery broker is the job store's own Redis (the same URL, as `broker.celery_config` configures it),
`POST /train` does not send the message itself: `CeleryEnqueuer.prepare` builds it through kombu's own publish path
(a `Producer.batch()` that is discarded instead of flushed) and hands back the Redis commands that would deliver it
(`LPUSH <queue> <message>`, plus `PEXPIRE` for queues with an expiry); the job store's create script runs them only
when it created the job. One round trip instead of two, and the record and its message land atomically.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Celery

from broker.celery_config import make_app
from broker.settings import BrokerSettings

log = logging.getLogger(__name__)

#: `enqueue(task_name, job_name) -> bool`: True when the message reached the broker.
Enqueue = Callable[[str, str], bool]

#: Give up quickly: the request is waiting, and a missed message is re-sent by the broker's periodic re-enqueue.
_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}

#: The only commands kombu's Redis transport uses to deliver a message to a queue that `prepare` hands on.
DELIVERY_COMMANDS = frozenset({"LPUSH", "PEXPIRE"})


class _Discard(Exception):
    """Raised inside the publish batch so that kombu discards the buffered delivery instead of sending it."""


class CeleryEnqueuer:
    """Sends task messages through a Celery client configured like the broker's own app."""

    def __init__(self, settings: BrokerSettings, celery: Celery | None = None) -> None:
        self.celery = celery or make_app(settings, include_tasks=False)
        self.broker_url = str(self.celery.conf.broker_url)
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

    def delivers_to(self, redis_url: str) -> bool:
        """True when this sender's messages go to the Redis at `redis_url` (so `prepare`'s commands can run there)."""
        options = self.celery.conf.broker_transport_options or {}
        return self.broker_url == redis_url and not options.get("global_keyprefix")

    def prepare(self, task_name: str, job_name: str) -> list[tuple[str, str, Any]] | None:
        """The Redis commands `(command, key, argument)` that deliver the task message, without sending them; None
        when they cannot be taken from kombu (then `__call__` sends it)."""
        commands: list[tuple[str, str, Any]] = []
        try:
            with self.celery.producer_or_acquire() as producer:
                try:  # the discard stays inside the producer's context: the pooled producer is released as usual
                    with producer.batch() as batch:
                        self.celery.send_task(task_name, args=[job_name], ignore_result=True, producer=producer)
                        commands += [tuple(args) for args, _ in batch.state.session.pipeline.command_stack]
                        raise _Discard
                except _Discard:
                    pass
        except Exception as exc:  # noqa: BLE001 - kombu's internals moved: send the usual way
            log.warning("cannot prepare %s for job %s in the create script (%s); sending it separately",
                        task_name, job_name, exc)
            return None
        if not commands or any(len(c) != 3 or c[0] not in DELIVERY_COMMANDS for c in commands):
            return None
        return commands
