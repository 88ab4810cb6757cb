"""How a Celery app of this system is configured: `make_app(settings)`, with no side effect at import.

Redis is broker and result store; JSON only; tasks take a job name and nothing else (Flower shows arguments).
`acks_late` with prefetch 1: a task is acknowledged only after it ran, so a worker killed mid-task (`kill -9`)
loses nothing — Redis delivers the message again after the visibility timeout (`TRAINER_VISIBILITY_TIMEOUT_S`,
longer than any task: see `BrokerSettings.worst_case_task_s`), and every task is idempotent (it re-reads the job and
does nothing if it moved on).

Queues: submit, cancel and dry-run tasks go to Celery's default queue, the periodic sync to a queue of its own, and
every worker consumes both (no `-Q` needed); Redis hands a worker the two queues in turn, so a backlog of submits
(hundreds of jobs posted at once, each waiting on the API server) does not hold back the sync that admits, re-enqueues
and records status. kombu's restore of dead workers' messages runs under a Redis mutex that a worker killed while
holding it leaves locked for `unacked_mutex_expire` (kombu's default: 300 s); it is bounded by the visibility timeout
here, so no restore waits longer than a redelivery would.

Beat: one schedule entry, the periodic sync (`broker.sync`), every `TRAINER_SYNC_INTERVAL_S`. Exactly one beat may
run: deploy it as its own Deployment with `replicas: 1` and `strategy: Recreate`, never as `worker -B`; the sync also
takes a Redis lock per cycle, so an accidental second beat does no harm.

The worker entry `broker.celery_app` builds the app the worker, beat and Flower run; the API builds a sending-only
client from the same configuration (`api.enqueue`).
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from broker.names import DEFAULT_QUEUE, SYNC_QUEUE, SYNC_TASK
from broker.settings import BrokerSettings


def make_app(settings: BrokerSettings, *, include_tasks: bool = True) -> Celery:
    """A Celery app on `settings.redis_url`. `include_tasks=False` gives a client that only sends by name."""
    include = ["broker.tasks"] if include_tasks else []
    celery = Celery("broker", broker=settings.redis_url, backend=settings.redis_url, include=include)
    celery.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            # Sweep for messages of dead workers every tenth of the timeout (at most every 10 s, at least 1 s).
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout_s // 10)),
            "unacked_restore_throttle": 1,
            "unacked_mutex_expire": min(300, max(1, settings.visibility_timeout_s // 2)),
        },
        task_default_queue=DEFAULT_QUEUE,
        task_queues=(Queue(DEFAULT_QUEUE), Queue(SYNC_QUEUE)),
        task_routes={SYNC_TASK: {"queue": SYNC_QUEUE}},
        result_backend_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        result_expires=3600,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        beat_schedule={
            "sync-jobs": {
                "task": SYNC_TASK,
                "schedule": settings.sync_interval_s,
                # A message a busy worker reads late still runs a cycle (up to ten intervals, at least 10 s, late);
                # of several read at once, the first runs and the others skip (`broker.sync.cycle_due`).
                "options": {"expires": max(settings.sync_interval_s * 10, 10.0)},
            },
        },
    )
    return celery
