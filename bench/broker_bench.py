"""The broker's path: `POST /train` → PyTorchJob created, and submissions per second, against Celery's own floor.

Everything real: a throwaway Redis, the API under gunicorn (the image's settings), one Celery worker (`-c 2`, the
broker's app plus the benchmark's no-op task) and the Kubernetes API emulator, which records when each PyTorchJob
is created. The baseline is a no-op task through the same worker and Redis, measured in the same run:

- latency, idle: sequential `POST /train`, each timed until its PyTorchJob exists (p50/p99), against sequential
  no-op round trips (send, wait for the result);
- latency under load: the same at 50 requests (tasks) per second, paced;
- throughput: N stored jobs whose submit tasks are sent at once, timed until the last PyTorchJob exists, against N
  no-op tasks sent at once, timed until the last result.

Targets: p50 ≤ 50 ms and p99 ≤ 200 ms (values), throughput ≥ 0.5 of the no-op's; the latency ratios are reported.
Run: `.venv/bin/python -m bench.broker_bench [--samples 100]`, or through `make bench`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis

from bench._noop import NOOP_TASK
from bench._services import celery_worker, gunicorn
from bench.api_bench import BODY, TOKEN
from bench.core import Figure, percentile, table
from broker.celery_app import make_app
from broker.jobs import JobRecord
from broker.names import SUBMIT_TASK
from broker.settings import BrokerSettings
from broker.store import JobStore
from devstack import RedisServer
from tests.support.celery_worker import worker_env
from tests.support.jobs import make_record
from tests.support.k8s_emulator import K8sEmulator

RATE = 50.0


class StampingEmulator(K8sEmulator):
    """The emulator, noting the moment each PyTorchJob is created (perf_counter, this process)."""

    def __init__(self) -> None:
        super().__init__()
        self.created_at: dict[str, float] = {}
        self.changed = threading.Condition()

    def create(self, namespace: str, body: Any, dry_run: bool = False, by_hand: bool = False) -> dict[str, Any]:
        out = super().create(namespace, body, dry_run, by_hand)
        with self.changed:
            self.created_at[out["metadata"]["name"]] = time.perf_counter()
            self.changed.notify_all()
        return out

    def wait_created(self, names: list[str], timeout: float) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not all(n in self.created_at for n in names):
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = [n for n in names if n not in self.created_at]
                    raise TimeoutError(f"{len(missing)} PyTorchJobs never created, e.g. {missing[:3]}")
                self.changed.wait(min(left, 1.0))
            return {n: self.created_at[n] for n in names}


class Rig:
    def __init__(self, redis_url: str, emulator: StampingEmulator, api_port: int, env: dict[str, str]) -> None:
        self.emulator, self.api_port = emulator, api_port
        settings = BrokerSettings.from_env(env)
        self.celery = make_app(settings)
        self.store = JobStore(redis.Redis.from_url(redis_url, decode_responses=True), settings.key_prefix)
        self.counter = 0
        self.lock = threading.Lock()

    def post(self) -> tuple[str, float]:
        with self.lock:
            self.counter += 1
            n = self.counter
        body = json.dumps({**BODY, "run_id": f"bench_broker_{n}_{time.monotonic_ns()}"})
        start = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", self.api_port, timeout=30)
        conn.request("POST", "/train", body=body, headers={"X-TRAINER-TOKEN": TOKEN,
                                                            "Content-Type": "application/json"})
        reply = conn.getresponse()
        data = json.loads(reply.read())
        conn.close()
        assert reply.status == 202, data
        return str(data["name"]), start

    def noop(self) -> float:
        start = time.perf_counter()
        self.celery.send_task(NOOP_TASK, args=["x"], ignore_result=False).get(timeout=60)
        return time.perf_counter() - start


def _latencies(rig: Rig, starts: dict[str, float]) -> list[float]:
    created = rig.emulator.wait_created(list(starts), timeout=120)
    return [created[n] - starts[n] for n in starts]


def _paced(fn: Any, seconds: float) -> list[Any]:
    """Call `fn` RATE times a second for `seconds` from a thread pool; the results in order."""
    futures = []
    with ThreadPoolExecutor(max_workers=32) as pool:
        t0 = time.perf_counter()
        for i in range(int(RATE * seconds)):
            delay = t0 + i / RATE - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(fn))
        return [f.result(timeout=120) for f in futures]


def _throughput(rig: Rig, count: int) -> tuple[float, float]:
    records: list[JobRecord] = [make_record(f"tp-{time.monotonic_ns()}-{i}") for i in range(count)]
    for record in records:
        rig.store.create(record)
    start = time.perf_counter()
    for record in records:
        rig.celery.send_task(SUBMIT_TASK, args=[record.name])
    created = rig.emulator.wait_created([r.object_name() for r in records], timeout=600)
    jobs_s = count / (max(created.values()) - start)
    start = time.perf_counter()
    results = [rig.celery.send_task(NOOP_TASK, args=[str(i)], ignore_result=False) for i in range(count)]
    for result in results:
        result.get(timeout=600)
    noop_s = count / (time.perf_counter() - start)
    return jobs_s, noop_s


def figures(samples: int, load_seconds: float, throughput_jobs: int) -> list[Figure]:
    redis_server, emulator = RedisServer().start(), StampingEmulator()
    emulator.start()
    try:
        kubeconfig = emulator.write_kubeconfig(Path(tempfile.mkdtemp(prefix="tb-bench-")) / "kubeconfig")
        env = worker_env(redis_server.url(0), kubeconfig, TRAINER_API_TOKEN=TOKEN, TRAINER_REQUEUE_AFTER_S="600",
                         TRAINER_SYNC_INTERVAL_S="3600",
                         TRAINER_QUOTAS='{"default": {"gpus": 100000000, "jobs": 100000000}}')
        with celery_worker(env), gunicorn("api.app:create_app()", env, "/healthz") as port:
            rig = Rig(redis_server.url(0), emulator, port, env)
            rig.celery.send_task(NOOP_TASK, args=["warm"], ignore_result=False).get(timeout=120)
            for _ in range(5):  # warm both paths (connections, imports in the pool children)
                rig.noop()
                _latencies(rig, dict([rig.post()]))
            noop_idle = [rig.noop() for _ in range(samples)]
            idle = [lat for _ in range(samples) for lat in _latencies(rig, dict([rig.post()]))]  # one at a time
            noop_load = _paced(rig.noop, load_seconds)
            loaded = _latencies(rig, dict(_paced(rig.post, load_seconds)))
            jobs_s, noop_s = _throughput(rig, throughput_jobs)
    finally:
        emulator.stop()
        redis_server.stop()
    out: list[Figure] = []
    for label, got, base in (("idle", idle, noop_idle), (f"{RATE:.0f} req/s", loaded, noop_load)):
        for q, bound in ((50, 50), (99, 200)):
            value, baseline = percentile(got, q) * 1000, percentile(base, q) * 1000
            out.append(Figure(f"POST → PyTorchJob p{q}, {label}", value, "ms", baseline, None, f"<= {bound}",
                              "value", note=f"baseline: Celery no-op round trip p{q}; {len(got)} samples"))
    out.append(Figure("submissions/s, one worker -c 2", jobs_s, "jobs/s", noop_s, None, ">= 0.5",
                      note=f"baseline: no-op tasks/s; {throughput_jobs} each"))
    return out


def run(quick: bool) -> list[Figure]:
    if quick:
        return figures(samples=40, load_seconds=4, throughput_jobs=200)
    return figures(samples=200, load_seconds=20, throughput_jobs=1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--load-seconds", type=float, default=10)
    parser.add_argument("--jobs", type=int, default=500)
    args = parser.parse_args()
    print(table(figures(args.samples, args.load_seconds, args.jobs)))


if __name__ == "__main__":
    main()
