"""The real stack one scenario runs against, owned by the scenario and torn down at its end.

A Redis server of its own (AOF `everysec` when the scenario restarts it), the Kubernetes API emulator (with a fault
policy when asked), the API under gunicorn, Celery workers and beat as separate processes — each in its own session,
so `kill -9` takes a whole process tree down like a lost node.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import redis

from devstack import RedisServer, Service, celery_argv, free_port, gunicorn_argv, http_ok
from tests.support.celery_worker import CeleryWorker, worker_env
from tests.support.k8s_emulator import K8sEmulator

PREFIX = "it:"
TOKEN = "reliability-token"


class Stack:
    """`with Stack(workdir, aof=…, env={…}) as stack:` starts Redis and the emulator; the scenario starts the services
    it needs (`start_api`, `start_worker`, `start_beat`) and everything it started is stopped at the end."""

    def __init__(self, workdir: Path, *, aof: bool = False, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.redis_server = RedisServer(aof=aof)
        self.emulator = K8sEmulator()
        self.overrides = dict(env or {})
        self.procs: list[Service] = []
        self.workers: list[CeleryWorker] = []
        self.api: Service | None = None
        self.api_url = ""

    def __enter__(self) -> Stack:
        self.redis_server.start()
        self.emulator.start()
        kubeconfig = self.emulator.write_kubeconfig(self.workdir / "kubeconfig")
        settings = {"TRAINER_API_TOKEN": TOKEN, "TRAINER_QUOTAS": '{"default": {"gpus": 1000000, "jobs": 1000000}}',
                    "TRAINER_SYNC_INTERVAL_S": "1", "TRAINER_REQUEUE_AFTER_S": "10",
                    "TRAINER_VISIBILITY_TIMEOUT_S": "30"} | self.overrides
        self.env = worker_env(self.redis_server.url(0), kubeconfig, **settings)
        self.redis = redis.Redis.from_url(self.redis_server.url(0), decode_responses=True, socket_timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        for worker in self.workers:
            worker.stop()
        for proc in self.procs:
            proc.stop()
        self.emulator.stop()
        self.redis_server.stop()

    # --- services ---------------------------------------------------------------------------------------------

    def start_api(self, workers: int = 2) -> Service:
        port = free_port()
        argv = gunicorn_argv(port, "-w", str(workers), "--graceful-timeout", "5", "--timeout", "30")
        self.api = self._proc(argv, "api")
        self.api_url = f"http://127.0.0.1:{port}"
        self.api.wait_ready(lambda: http_ok(f"{self.api_url}/healthz"), 60)
        return self.api

    def start_worker(self, concurrency: int = 2, *, wait: bool = True) -> CeleryWorker:
        worker = CeleryWorker(self.env, self.workdir, concurrency=concurrency)
        self.workers.append(worker)
        if wait:
            worker.start()
        else:
            worker.launch()  # a replacement started right after a kill
        return worker

    def start_beat(self) -> Service:
        schedule = self.workdir / f"beat-{uuid.uuid4().hex[:6]}"
        return self._proc(celery_argv("beat", "-l", "info", "-s", str(schedule)), "beat")

    def _proc(self, argv: list[str], role: str) -> Service:
        proc = Service(role, argv, self.env, self.workdir / f"{role}-{uuid.uuid4().hex[:6]}.log").start()
        self.procs.append(proc)
        return proc

    def wait_workers_ready(self, timeout: float = 90.0) -> None:
        for worker in self.workers:
            if worker.alive():
                worker.wait_ready(timeout)


def settle(check: object, timeout: float) -> float | None:
    """Poll `check()` (truthy when settled) until it holds: the seconds it took, or None when it never did."""
    start = time.monotonic()
    deadline = start + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return time.monotonic() - start
        time.sleep(0.5)
    return None
