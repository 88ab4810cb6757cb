"""The worker entry: `celery -A broker.celery_app worker | beat | flower`.

Importing this module builds the Celery app from the environment (`BrokerSettings.from_env()`), with the
configuration of `broker.celery_config`. Only the worker, beat and Flower import it; the API never does.

Flower: never without authentication. `FLOWER_BASIC_AUTH=user:password` is read by Flower itself (it maps `FLOWER_*`
environment variables to its options) and by `make flower` / the compose service, which refuse to start it unset.
"""

from __future__ import annotations

import logging
import sys

from celery import Celery

from broker.celery_config import make_app as _configured_app
from broker.names import CANCEL_TASK, SUBMIT_TASK, SYNC_TASK
from broker.settings import BrokerSettings

log = logging.getLogger(__name__)
__all__ = ["CANCEL_TASK", "SUBMIT_TASK", "SYNC_TASK", "app", "make_app", "refuse_unauthenticated_flower"]


def refuse_unauthenticated_flower(settings: BrokerSettings, argv: list[str]) -> None:
    """Exit when this process is `celery … flower` and no credentials are configured: never an open dashboard."""
    program = argv[0].replace("\\", "/") if argv else ""
    is_celery = program.endswith(("/celery", "/celery/__main__.py")) or program == "celery"
    if is_celery and "flower" in argv[1:] and not settings.flower_basic_auth:
        raise SystemExit("FLOWER_BASIC_AUTH=user:password is required: Flower never runs without authentication")


def make_app(settings: BrokerSettings | None = None) -> Celery:
    settings = settings or BrokerSettings.from_env()
    refuse_unauthenticated_flower(settings, sys.argv)
    if settings.visibility_timeout_s <= settings.worst_case_task_s:
        log.warning("TRAINER_VISIBILITY_TIMEOUT_S=%s is not above the longest task (%.0f s): a slow task may be "
                    "delivered twice", settings.visibility_timeout_s, settings.worst_case_task_s)
    return _configured_app(settings)


app = make_app()
