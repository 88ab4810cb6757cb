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


#: Common words: never accepted as a password.
KNOWN_DEMO_SECRETS = frozenset({"password", "password123", "admin", "administrator", "changeme", "letmein",
                                "change-me", "secret", "demo", "flower", "qwerty123456", "123456789012"})
#: Parts of the demo and placeholder values this repository once shipped or shows in its docs: a password holding one
#: is refused (scripts/build_and_deploy.sh refuses the same parts in any value of the Secret).
DEMO_PARTS = ("demo-password", "demo-token", "replace-me", "changeme", "change-me")
MIN_PASSWORD = 12
#: A password of fewer distinct characters is trivial whatever its length (`aaaaaaaaaaaa`, `abababababab`).
MIN_DISTINCT = 5


def weak_basic_auth(value: str | None) -> str | None:
    """Why `user:password[,user:password]` may not protect Flower (None: it may)."""
    if not value or not value.strip():
        return "FLOWER_BASIC_AUTH=user:password is required: Flower never runs without authentication"
    for pair in value.split(","):
        user, sep, password = pair.strip().partition(":")
        if not sep or not user.strip() or not password.strip():
            return "FLOWER_BASIC_AUTH needs a user and a password in every user:password pair"
        lowered = password.lower()
        if (len(password) < MIN_PASSWORD or lowered in KNOWN_DEMO_SECRETS or password == user
                or any(part in lowered for part in DEMO_PARTS) or len(set(password)) < MIN_DISTINCT):
            return (f"FLOWER_BASIC_AUTH holds a trivial or known demo password for {user!r}: use at least "
                    f"{MIN_PASSWORD} random characters")
    return None


def refuse_unauthenticated_flower(settings: BrokerSettings, argv: list[str]) -> None:
    """Exit when this process is `celery … flower` and its credentials are missing, empty or trivial."""
    program = argv[0].replace("\\", "/") if argv else ""
    is_celery = program.endswith(("/celery", "/celery/__main__.py")) or program == "celery"
    if is_celery and "flower" in argv[1:]:
        why = weak_basic_auth(settings.flower_basic_auth)
        if why:
            raise SystemExit(why)


def make_app(settings: BrokerSettings | None = None) -> Celery:
    settings = settings or BrokerSettings.from_env()
    refuse_unauthenticated_flower(settings, sys.argv)
    if settings.visibility_timeout_s <= settings.worst_case_task_s:
        log.warning("TRAINER_VISIBILITY_TIMEOUT_S=%s is not above the longest task (%.0f s): a slow task may be "
                    "delivered twice", settings.visibility_timeout_s, settings.worst_case_task_s)
    return _configured_app(settings)


app = make_app()
