"""Status sync: one LIST per namespace (what beat does) against one GET per job (what kubeflow's SDK wait loop does).

Both sides run in the same process, against the same HTTP API emulator and the same Redis, on the same jobs, so the
ratio is what the design choice is worth here. For each job count it builds that many submitted jobs, marks every
object Running in the emulator, then times:

- `sync`:   one `broker.sync.sync_jobs` cycle (LIST per namespace, changes written in one pipeline);
- `per-job`: one GET per job through the same Kubernetes adapter, mapped with the same `map_status`, each change
  written with its own `transition` call.

Run from the repository root: `.venv/bin/python -m bench.sync_bench [--jobs 10 100 500]`.
Prints API calls and seconds per cycle, and the per-job / sync ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from broker.backends.kubernetes import KubernetesBackend
from broker.context import BrokerContext
from broker.jobs import JobStatus
from broker.render import render_pytorchjob
from broker.settings import BrokerSettings
from broker.sync import map_status, sync_jobs
from tests.support.jobs import make_record
from tests.support.k8s_emulator import K8sEmulator
from tests.support.redis_server import RedisServer


def _populate(ctx: BrokerContext, emulator: K8sEmulator, count: int, tag: str) -> list[str]:
    names = []
    for i in range(count):
        record = make_record(f"{tag}-{i}")
        ctx.store.create(record)
        ctx.store.transition(record.name, JobStatus.ADMITTED, reason="bench")
        ctx.backend.create(render_pytorchjob(record, ctx.settings))
        ctx.store.transition(record.name, JobStatus.SUBMITTED, reason="bench", cluster_object=record.object_name())
        emulator.set_condition(record.namespace, record.object_name(), "Running")
        names.append(record.name)
    return names


def _per_job_cycle(ctx: BrokerContext, names: list[str]) -> None:
    for name in names:
        record = ctx.store.require(name)
        obj = ctx.backend.get(record.namespace, record.object_name())
        mapped = map_status(obj) if obj else None
        if mapped and mapped[0] != record.status:
            ctx.store.transition(name, mapped[0], reason=mapped[1])


def _measure(ctx: BrokerContext, emulator: K8sEmulator, count: int) -> tuple[int, float, int, float]:
    ctx.store.redis.flushdb()
    emulator.reset()
    _populate(ctx, emulator, count, "sync")
    before = emulator.calls("list") + emulator.calls("get")
    start = time.perf_counter()
    sync_jobs(ctx)
    sync_s = time.perf_counter() - start
    sync_calls = emulator.calls("list") + emulator.calls("get") - before
    assert len(ctx.store.names_in(JobStatus.RUNNING)) == count, "sync did not move every job to running"

    ctx.store.redis.flushdb()
    emulator.reset()
    names = _populate(ctx, emulator, count, "get")
    before = emulator.calls("list") + emulator.calls("get")
    start = time.perf_counter()
    _per_job_cycle(ctx, names)
    per_job_s = time.perf_counter() - start
    per_job_calls = emulator.calls("list") + emulator.calls("get") - before
    assert len(ctx.store.names_in(JobStatus.RUNNING)) == count, "per-job loop did not move every job to running"
    return sync_calls, sync_s, per_job_calls, per_job_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[10, 100, 500])
    args = parser.parse_args()
    redis_server, emulator = RedisServer().start(), K8sEmulator().start()
    try:
        kubeconfig = emulator.write_kubeconfig(Path(tempfile.mkdtemp()) / "kubeconfig")
        settings = BrokerSettings(redis_url=redis_server.url(0), cluster_backend="kubernetes",
                                  kubeconfig=str(kubeconfig), quotas=BrokerSettings().quotas)
        backend = KubernetesBackend(kubeconfig=str(kubeconfig))
        ctx = BrokerContext.build(settings, backend, enqueue=lambda task, name: None)
        print(f"{'jobs':>6} {'sync calls':>10} {'sync s':>8} {'per-job calls':>13} {'per-job s':>9} "
              f"{'ratio (time)':>12}")
        for count in args.jobs:
            sync_calls, sync_s, per_job_calls, per_job_s = _measure(ctx, emulator, count)
            print(f"{count:>6} {sync_calls:>10} {sync_s:>8.3f} {per_job_calls:>13} {per_job_s:>9.3f} "
                  f"{per_job_s / sync_s:>11.1f}x")
    finally:
        emulator.stop()
        redis_server.stop()


if __name__ == "__main__":
    main()
