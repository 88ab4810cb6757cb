"""Reliability, counted: each scenario runs real processes (Redis, gunicorn, Celery worker and beat, the Kubernetes
API emulator with fault injection; for the trainer scenarios moto's S3 server behind a faulting proxy and real
trainer processes), injects its faults under load, stops by itself within its bound, and counts the invariants from
the systems' own state: the emulator's objects and request log, Redis, S3's objects and the requests S3 answered.
`make reliability` runs them all and prints one table; `--quick` runs smaller loads in a few minutes (part of
`make test`; the trainer scenarios and the soak are left out of it, `--quick --only NAME` runs one small)."""
