"""Status sync: one LIST per namespace (what beat does) against one GET per job (what kubeflow's SDK wait loop does).

Both sides run in the same process, against the same HTTP API emulator and the same Redis, on the same number of
jobs, so the ratio is what the design choice is worth here. For each size (jobs × namespaces) it builds that many
submitted jobs (quota reservations held), marks every object Running in the emulator, then measures:

- `sync`: one `broker.sync.sync_jobs` cycle: wall seconds, broker CPU seconds (the calling thread's CPU time: the
  emulator serves from other threads, Redis is its own process), Kubernetes API calls and Redis round trips;
- `per-job`: one GET per job through the same Kubernetes adapter, mapped with the same `map_status`, each change
  written with its own `transition` call (only at the sizes where it finishes in reasonable time).

Targets: Kubernetes calls = Σ namespaces × pages; Redis round trips a constant per namespace; 10k jobs in under one
second of broker time.

Run from the repository root: `.venv/bin/python -m bench.sync_bench [--jobs 1000 10000] [--namespaces 1 10]`, or
through `make bench`.
"""

from __future__ import annotations

import argparse
import math
import time

from bench._support import Cluster, CountingConnection, cluster, populate_running
from bench.core import Figure, table
from broker.jobs import JobStatus
from broker.sync import map_status, sync_jobs

#: Redis round trips one sync cycle may spend per namespace (and a few per cycle), whatever its job count.
ROUND_TRIPS_PER_NAMESPACE = 8
ROUND_TRIPS_PER_CYCLE = 16


def _per_job_cycle(c: Cluster, names: list[str]) -> None:
    ctx = c.ctx
    for name in names:
        record = ctx.store.require(name)
        obj = ctx.backend.get(record.namespace, record.object_name())
        mapped = map_status(obj) if obj else None
        if mapped and mapped[0] != record.status:
            ctx.store.transition(name, mapped[0], reason=mapped[1])


def _reset(c: Cluster) -> None:
    c.ctx.redis.flushdb()
    c.emulator.reset()


def measure_sync(c: Cluster, jobs: int, namespaces: int) -> dict[str, float]:
    _reset(c)
    populate_running(c, jobs, namespaces, "sync")
    k8s_before = c.emulator.calls("list") + c.emulator.calls("get")
    redis_before = CountingConnection.sent
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    report = sync_jobs(c.ctx)
    wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
    assert not report.skipped
    moved = len(c.ctx.store.names_in(JobStatus.RUNNING))
    assert moved == jobs, f"sync moved {moved} of {jobs} jobs to running"
    return {"wall": wall, "cpu": cpu, "k8s": c.emulator.calls("list") + c.emulator.calls("get") - k8s_before,
            "redis": CountingConnection.sent - redis_before}


def measure_per_job(c: Cluster, jobs: int, namespaces: int) -> float:
    _reset(c)
    names = populate_running(c, jobs, namespaces, "get")
    start = time.perf_counter()
    _per_job_cycle(c, names)
    wall = time.perf_counter() - start
    assert len(c.ctx.store.names_in(JobStatus.RUNNING)) == jobs, "per-job loop did not move every job to running"
    return wall


def figures(sizes: list[tuple[int, int]], per_job_up_to: int) -> list[Figure]:
    out: list[Figure] = []
    with cluster() as c:
        # One cycle first, uncounted: Redis loads each Lua script on its first use (a NOSCRIPT answer, then the
        # script), once per server, not per cycle — the counted cycles below are the steady state.
        _reset(c)
        populate_running(c, 1, 1, "warm")
        sync_jobs(c.ctx)
        page = c.ctx.settings.kube_list_page_size
        for jobs, namespaces in sizes:
            label = f"sync {jobs:,} jobs / {namespaces} ns"
            got = measure_sync(c, jobs, namespaces)
            per_ns = math.ceil(jobs / namespaces)
            pages = namespaces * max(1, math.ceil(per_ns / page))
            baseline = measure_per_job(c, jobs, namespaces) if jobs <= per_job_up_to else None
            out.append(Figure(f"{label}: wall", got["wall"], "s", baseline, None,
                              "<= 1" if baseline else "", note="baseline: one GET per job"))
            cpu_target = "<= 1" if jobs <= 10_000 else ""
            out.append(Figure(f"{label}: broker CPU", got["cpu"], "s", target=cpu_target, target_on="value"))
            out.append(Figure(f"{label}: Kubernetes calls", got["k8s"], "", float(jobs), None,
                              f"<= {pages}", "value", note=f"baseline: {jobs} GETs; target namespaces × pages"))
            budget = ROUND_TRIPS_PER_CYCLE + ROUND_TRIPS_PER_NAMESPACE * namespaces
            out.append(Figure(f"{label}: Redis round trips", got["redis"], "", target=f"<= {budget}",
                              target_on="value", note="constant per namespace"))
    return out


def run(quick: bool) -> list[Figure]:
    if quick:
        return figures([(1000, 1), (1000, 10), (10_000, 1)], per_job_up_to=1000)
    sizes = [(n, ns) for n in (1000, 10_000, 50_000) for ns in (1, 10)]
    return figures(sizes, per_job_up_to=10_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--namespaces", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--per-job-up-to", type=int, default=1000)
    args = parser.parse_args()
    print(table(figures([(n, ns) for n in args.jobs for ns in args.namespaces], args.per_job_up_to)))


if __name__ == "__main__":
    main()
