"""`GET /train` listing: two filters and a cursor against the same query with one filter, over 10k / 100k jobs.

The API app runs in-process (Flask's test client: the request path, auth, schema and JSON are the real ones; no
socket, so the figure is the listing's own cost) against a throwaway Redis holding that many jobs, their frameworks
and statuses mixed at random (fixed seed). Each request asks for page two (`limit=100`, the cursor of page one), the
median of repeated requests is the figure:

- baseline: `GET /train?status=queued&limit=100&cursor=…`
- measured: `GET /train?status=queued&framework=meta&limit=100&cursor=…` (target ≤ 2× the baseline)
- reported: a sparse pair (`framework=meta&namespace=team-7`, one job in thirty matches), where the scan of the
  smaller index examines many members per match.

Run: `.venv/bin/python -m bench.list_bench [--jobs 10000]`, or through `make bench`.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any

from api.app import create_app
from api.settings import ApiSettings
from bench.core import Figure, table
from broker.jobs import JobStatus
from broker.settings import BrokerSettings
from broker.store import Change, JobStore
from devstack import RedisServer
from tests.support.jobs import make_record

TOKEN = "bench-token"
FRAMEWORKS = ("hf", "meta", "nemo")


def populate(store: JobStore, count: int, seed: int = 7) -> None:
    """`count` jobs: frameworks at random, 10 namespaces, a quarter left queued, the rest cancelled or admitted."""
    rng = random.Random(seed)
    changes: list[Change] = []
    for i in range(count):
        framework = rng.choice(FRAMEWORKS)
        record = make_record(f"l{i}", framework=framework, namespace=f"team-{rng.randrange(10)}")
        store.create(record)
        roll = rng.random()
        if roll >= 0.25:
            changes.append(Change(record.name, JobStatus.CANCELLED if roll < 0.6 else JobStatus.ADMITTED, "bench"))
        if len(changes) >= 2000:
            store.transition_many(changes)
            changes = []
    store.transition_many(changes)


def _median_request(client: Any, query: str, repeats: int) -> float:
    headers = {"X-TRAINER-TOKEN": TOKEN}
    first = client.get(f"/train?{query}&limit=100", headers=headers)
    assert first.status_code == 200, first.get_data(as_text=True)
    cursor = first.get_json()["next_cursor"]
    assert cursor, f"{query}: fewer than two pages"
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        reply = client.get(f"/train?{query}&limit=100&cursor={cursor}", headers=headers)
        times.append(time.perf_counter() - start)
        assert reply.status_code == 200 and reply.get_json()["jobs"], query
    return statistics.median(times)


def figures(sizes: list[int], repeats: int) -> list[Figure]:
    out: list[Figure] = []
    server = RedisServer().start()
    try:
        settings = ApiSettings(api_tokens=(TOKEN,), broker=BrokerSettings(redis_url=server.url(0)))
        app = create_app({"SETTINGS": settings, "ENQUEUE": lambda task, name: True})
        store: JobStore = app.extensions["job_store"]
        client = app.test_client()
        for count in sizes:
            store.redis.flushdb()
            populate(store, count)
            one = _median_request(client, "status=queued", repeats)
            two = _median_request(client, "status=queued&framework=meta", repeats)
            sparse = _median_request(client, "framework=meta&namespace=team-7", repeats)
            label = f"GET /train 2 filters + cursor, {count:,} jobs"
            out.append(Figure(label, two * 1000, "ms", one * 1000, None, "<= 2",
                              note="baseline: status filter alone"))
            out.append(Figure(f"GET /train sparse pair + cursor, {count:,} jobs", sparse * 1000, "ms", one * 1000,
                              note="framework & namespace, 1 in 30 match; reported"))
    finally:
        server.stop()
    return out


def run(quick: bool) -> list[Figure]:
    return figures([10_000] if quick else [10_000, 100_000], repeats=10 if quick else 30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[10_000])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(table(figures(args.jobs, args.repeats)))


if __name__ == "__main__":
    main()
