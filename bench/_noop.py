"""The no-op task the broker benchmarks' baseline measures: loaded into the benchmark's worker with
`celery … worker -I bench._noop`, never into a production worker."""

from __future__ import annotations

from broker.celery_app import app

NOOP_TASK = "bench.noop"


@app.task(name=NOOP_TASK, ignore_result=False, acks_late=True)
def noop(name: str) -> str:
    return name
