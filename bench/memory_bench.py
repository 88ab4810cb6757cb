"""Redis memory per stored job (the sample request, with its first event and index entries) and per event.

A throwaway Redis (same version as production's here) holds `count` jobs built from the product's sample request;
`INFO memory`'s `used_memory` before and after gives bytes per job; one more transition per job (an event appended,
the status index entry moved) gives bytes per event. Also reported: jobs one GiB holds.

Run: `.venv/bin/python -m bench.memory_bench [--jobs 20000]`, or through `make bench`.
"""

from __future__ import annotations

import argparse
from typing import Any

import redis

from bench.core import Figure, table
from broker.jobs import JobStatus
from broker.store import Change, JobStore
from devstack import RedisServer
from devstack.samples import sample_request
from tests.support.jobs import make_record

#: The sample request's shape (docs/examples/request.json: 2 nodes × 8 GPUs, an 8B model, extra args).
SAMPLE = {k: v for k, v in sample_request().items() if k != "run_id"}


def _used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])  # type: ignore[index]


def figures(count: int) -> list[Figure]:
    server = RedisServer().start()
    try:
        client = redis.Redis.from_url(server.url(0), decode_responses=True)
        store = JobStore(client)
        fields: dict[str, Any] = {k: v for k, v in SAMPLE.items() if k not in ("framework",)}
        records = [make_record(f"fx_ruleset_v3_2025_11_26_{i:06d}", framework="nemo", **fields)
                   for i in range(count)]
        before = _used(client)
        for record in records:
            store.create(record)
        per_job = (_used(client) - before) / count
        before = _used(client)
        for start in range(0, count, 2000):
            store.transition_many([Change(r.name, JobStatus.ADMITTED, "admitted: 16 of 64 GPUs in use")
                                   for r in records[start:start + 2000]])
        per_event = (_used(client) - before) / count
    finally:
        server.stop()
    return [
        Figure("Redis bytes per stored job (sample request)", per_job, "B",
               note=f"{count:,} jobs; a GiB holds {2**30 / per_job:,.0f}"),
        Figure("Redis bytes per event (transition)", per_event, "B",
               note=f"a GiB holds {2**30 / per_event:,.0f} events"),
        Figure("jobs one GiB holds (job + 10 events)", 2**30 / (per_job + 10 * per_event), "jobs"),
    ]


def run(quick: bool) -> list[Figure]:
    return figures(5000 if quick else 50_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    print(table(figures(parser.parse_args().jobs)))


if __name__ == "__main__":
    main()
