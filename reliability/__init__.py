"""Reliability, counted: each scenario runs real processes (Redis, gunicorn, Celery worker and beat, the Kubernetes
API emulator with fault injection), injects its faults under load, stops by itself within its bound, and counts
the invariants from the emulator's objects and request log and from Redis. `make reliability` runs them all and
prints one table; `--quick` runs smaller loads in a few minutes (part of `make test`)."""
