"""Where a submission's time goes: the profile behind `bench/broker_bench.py`'s throughput figure.

`python -m bench._submit_profile [--jobs 300] [--tree]` stores N jobs in a throwaway Redis and runs the broker's submit
logic (`broker.submit.submit_job`: read, admit, render, create through the official client, record) on each, in this
process, against the Kubernetes API emulator in a child process — so the CPU of each side is counted apart: this
process (what one Celery pool child spends per submission, Celery's own dispatch excluded), the emulator (standing in
for the real API server, which runs elsewhere) and redis-server. `--tree` adds pyinstrument's call tree of the
submissions. Not part of `make bench` (it has no baseline; the modules without a leading underscore do).
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue
from pathlib import Path

import psutil

from devstack import RedisServer


@dataclass
class SubmitCost:
    jobs: int
    wall_ms: float  # per submission, this process
    logic_cpu_ms: float  # per submission, this process: the broker's logic and the client
    emulator_cpu_ms: float
    redis_cpu_ms: float
    outcomes: set[str]
    tree: str = ""


def _serve_emulator(kubeconfig: Queue) -> None:  # the child: the emulator until killed
    from tests.support.k8s_emulator import K8sEmulator

    emulator = K8sEmulator().start()
    with tempfile.TemporaryDirectory() as tmp:
        kubeconfig.put(emulator.write_kubeconfig(Path(tmp) / "kubeconfig").read_text())
        time.sleep(24 * 3600)


def _cpu_s(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def measure(jobs: int, warmup: int = 20, tree: bool = False) -> SubmitCost:
    from kubernetes import client, config
    from pyinstrument import Profiler

    from broker.backends.kubernetes import KubernetesBackend
    from broker.context import BrokerContext
    from broker.settings import BrokerSettings, Quota
    from broker.submit import submit_job
    from tests.support.jobs import make_record

    fork = multiprocessing.get_context("fork")
    queue: Queue = fork.Queue()
    child = fork.Process(target=_serve_emulator, args=(queue,), daemon=True)
    child.start()
    redis_server = RedisServer().start()
    try:
        with tempfile.TemporaryDirectory(prefix="tb-submit-profile-") as tmp:
            path = Path(tmp) / "kubeconfig"
            path.write_text(queue.get(timeout=60))
            configuration = client.Configuration()
            config.load_kube_config(config_file=str(path), client_configuration=configuration)
        configuration.retries = False
        settings = BrokerSettings(redis_url=redis_server.url(), key_prefix="prof:", cluster_backend="kubernetes",
                                  quotas={"default": Quota(gpus=10**6, jobs=10**6)})
        ctx = BrokerContext.build(settings, KubernetesBackend(client.ApiClient(configuration), timeout_s=10.0),
                                  lambda task, name: None)
        records = [make_record(f"profile-{i}") for i in range(warmup + jobs)]
        for record in records:
            ctx.store.create(record)
        for record in records[:warmup]:  # the client's set-up, the scripts loaded into Redis
            submit_job(ctx, record.name)
        assert child.pid is not None and redis_server.service and redis_server.service.proc
        redis_pid = redis_server.service.proc.pid
        profiler = Profiler(interval=0.0005) if tree else None
        emulator0, redis0 = _cpu_s(child.pid), _cpu_s(redis_pid)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        if profiler:
            profiler.start()
        outcomes = {submit_job(ctx, record.name) for record in records[warmup:]}
        if profiler:
            profiler.stop()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        per = 1000.0 / jobs
        return SubmitCost(jobs, wall * per, cpu * per, (_cpu_s(child.pid) - emulator0) * per,
                          (_cpu_s(redis_pid) - redis0) * per, outcomes,
                          profiler.output_text(unicode=True) if profiler else "")
    finally:
        redis_server.stop()
        child.kill()
        child.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--tree", action="store_true", help="print pyinstrument's call tree of the submissions")
    args = parser.parse_args()
    cost = measure(args.jobs, tree=args.tree)
    print(f"{cost.jobs} submissions ({', '.join(sorted(cost.outcomes))}), per submission: {cost.wall_ms:.2f} ms "
          f"wall; CPU {cost.logic_cpu_ms:.2f} ms broker logic + client, {cost.emulator_cpu_ms:.2f} ms emulator, "
          f"{cost.redis_cpu_ms:.2f} ms redis-server")
    if cost.tree:
        print(cost.tree)


if __name__ == "__main__":
    main()
