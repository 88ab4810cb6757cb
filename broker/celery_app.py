"""The Celery application: `celery -A broker.celery_app worker | beat | flower`.

Redis is broker and result store; JSON only; tasks take a job name and nothing else (Flower shows arguments).
"""

from __future__ import annotations

from celery import Celery

from broker.settings import BrokerSettings

SUBMIT_TASK = "broker.submit_job"
CANCEL_TASK = "broker.cancel_job"
SYNC_TASK = "broker.sync_jobs"


def make_app(settings: BrokerSettings | None = None) -> Celery:
    settings = settings or BrokerSettings.from_env()
    celery = Celery("broker", broker=settings.redis_url, backend=settings.redis_url, include=["broker.tasks"])
    celery.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": 3600},
        result_expires=3600,
        broker_connection_retry_on_startup=True,
        beat_schedule={
            "sync-jobs": {"task": SYNC_TASK, "schedule": settings.sync_interval_s},
        },
    )
    return celery


app = make_app()
