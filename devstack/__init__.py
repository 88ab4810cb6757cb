"""Start, health-check and stop the local services — Redis, the API under gunicorn, Celery's worker, beat and Flower,
an S3 endpoint (moto) — as real processes on free loopback ports. One helper for the tests, the demo, the benchmarks
and the reliability suite; nothing in the services imports it."""

from devstack.commands import celery_argv, gunicorn_argv, moto_argv, redis_argv
from devstack.procs import BIN, REPO_ROOT, Exited, Service, ServiceGroup, TimedOut, free_port, http_ok, wait_for
from devstack.redis_server import RedisServer

__all__ = ["BIN", "REPO_ROOT", "Exited", "RedisServer", "Service", "ServiceGroup", "TimedOut", "celery_argv",
           "free_port", "gunicorn_argv", "http_ok", "moto_argv", "redis_argv", "wait_for"]
