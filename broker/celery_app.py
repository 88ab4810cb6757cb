"""The Celery application: `celery -A broker.celery_app worker | beat | flower`.

Redis is broker and result store; JSON only; tasks take a job name and nothing else (Flower shows arguments).
`acks_late` with prefetch 1: a task is acknowledged only after it ran, so a worker killed mid-task (`kill -9`)
loses nothing — Redis delivers the message again after the visibility timeout (`TRAINER_VISIBILITY_TIMEOUT_S`,
longer than any task), and every task is idempotent (it re-reads the job and does nothing if it moved on).

Beat: one schedule entry, the periodic sync (`broker.sync`), every `TRAINER_SYNC_INTERVAL_S`. Exactly one beat may
run: deploy it as its own Deployment with `replicas: 1` and `strategy: Recreate`, never as `worker -B`; the sync also
takes a Redis lock per cycle, so an accidental second beat does no harm.

Flower: never without authentication. `FLOWER_BASIC_AUTH=user:password` is read by Flower itself (it maps `FLOWER_*`
environment variables to its options) and by `make flower` / the compose service, which refuse to start it unset.
"""

from __future__ import annotations

import sys

from celery import Celery

from broker.settings import BrokerSettings

SUBMIT_TASK = "broker.submit_job"
CANCEL_TASK = "broker.cancel_job"
SYNC_TASK = "broker.sync_jobs"
#: Its argument is a token naming the parked request (`broker.dryrun`), not a job name.
DRY_RUN_TASK = "broker.dry_run"


def refuse_unauthenticated_flower(settings: BrokerSettings, argv: list[str]) -> None:
    """Exit when this process is `celery … flower` and no credentials are configured: never an open dashboard."""
    program = argv[0].replace("\\", "/") if argv else ""
    is_celery = program.endswith(("/celery", "/celery/__main__.py")) or program == "celery"
    if is_celery and "flower" in argv[1:] and not settings.flower_basic_auth:
        raise SystemExit("FLOWER_BASIC_AUTH=user:password is required: Flower never runs without authentication")


def make_app(settings: BrokerSettings | None = None) -> Celery:
    settings = settings or BrokerSettings.from_env()
    refuse_unauthenticated_flower(settings, sys.argv)
    celery = Celery("broker", broker=settings.redis_url, backend=settings.redis_url, include=["broker.tasks"])
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
        },
        result_backend_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        result_expires=3600,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        beat_schedule={
            "sync-jobs": {
                "task": SYNC_TASK,
                "schedule": settings.sync_interval_s,
                # A sync that could not run within its interval is superseded by the next one.
                "options": {"expires": max(settings.sync_interval_s, 1.0)},
            },
        },
    )
    return celery


app = make_app()
