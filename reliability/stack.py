"""The real stack one scenario runs against, owned by the scenario and torn down at its end.

A Redis server of its own (AOF `everysec` when the scenario restarts it), the Kubernetes API emulator (with a fault
policy when asked), the API under gunicorn, Celery workers and beat as separate processes — each in its own session,
so `kill -9` takes a whole process tree down like a lost node.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import redis
import requests

from tests.support.celery_worker import CeleryWorker, wait_for, worker_env
from tests.support.k8s_emulator import K8sEmulator
from tests.support.pytorchjob_rules import REPO_ROOT
from tests.support.redis_server import RedisServer, free_port

PREFIX = "it:"
TOKEN = "reliability-token"
BIN = Path(sys.executable).parent


class Proc:
    """A service process in its own session, its output in a log file."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.argv, self.env, self.log = argv, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def children(self) -> list[int]:
        """Pids of the direct children (gunicorn's workers, a Celery pool)."""
        if self.proc is None:
            return []
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except OSError:
            return []

    def signal(self, signum: int) -> None:
        if self.alive():
            assert self.proc is not None
            os.killpg(self.proc.pid, signum)

    def stop(self, timeout: float = 20.0) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Stack:
    """`with Stack(workdir, aof=…, **env) as stack:` starts Redis and the emulator; the scenario starts the services
    it needs (`start_api`, `start_worker`, `start_beat`) and everything it started is stopped at the end."""

    def __init__(self, workdir: Path, *, aof: bool = False, **env: str) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.redis_server = RedisServer(aof=aof)
        self.emulator = K8sEmulator()
        self.overrides = env
        self.procs: list[Proc] = []
        self.workers: list[CeleryWorker] = []
        self.api: Proc | None = None
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

    def start_api(self, workers: int = 2) -> Proc:
        port = free_port()
        argv = [str(BIN / "gunicorn"), "-w", str(workers), "-b", f"127.0.0.1:{port}", "--graceful-timeout", "5",
                "--timeout", "30", "api.app:create_app()"]
        self.api = self._proc(argv, "api")
        self.api_url = f"http://127.0.0.1:{port}"
        wait_for(self._api_ready, 60, f"the API under gunicorn (log: {self.api.log})")
        return self.api

    def _api_ready(self) -> bool:
        assert self.api is not None
        if not self.api.alive():
            raise AssertionError(f"gunicorn exited:\n{self.api.output()[-3000:]}")
        try:
            return requests.get(f"{self.api_url}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def start_worker(self, concurrency: int = 2, *, wait: bool = True) -> CeleryWorker:
        worker = CeleryWorker(self.env, self.workdir, concurrency=concurrency)
        self.workers.append(worker)
        if wait:
            worker.start()
        else:
            self._launch_worker(worker)
        return worker

    def _launch_worker(self, worker: CeleryWorker) -> None:
        """Start without waiting for readiness (a replacement started right after a kill)."""
        argv = [sys.executable, "-m", "celery", "-A", "broker.celery_app", "worker", "-l", "info",
                "-c", str(worker.concurrency), "-n", f"rel-{uuid.uuid4().hex[:6]}@%h",
                "--without-gossip", "--without-mingle", "--without-heartbeat"]
        with worker.log.open("wb") as log:
            worker.proc = subprocess.Popen(argv, env=self.env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True)

    def start_beat(self) -> Proc:
        schedule = self.workdir / f"beat-{uuid.uuid4().hex[:6]}"
        argv = [str(BIN / "celery"), "-A", "broker.celery_app", "beat", "-l", "info", "-s", str(schedule)]
        return self._proc(argv, "beat")

    def _proc(self, argv: list[str], role: str) -> Proc:
        proc = Proc(argv, self.env, self.workdir / f"{role}-{uuid.uuid4().hex[:6]}.log").start()
        self.procs.append(proc)
        return proc

    def wait_workers_ready(self, timeout: float = 90.0) -> None:
        for worker in self.workers:
            if worker.proc is not None and worker.proc.poll() is None:
                wait_for(worker._ready, timeout, f"worker {worker.log}")


def settle(check: object, timeout: float) -> float | None:
    """Poll `check()` (truthy when settled) until it holds: the seconds it took, or None when it never did."""
    start = time.monotonic()
    deadline = start + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return time.monotonic() - start
        time.sleep(0.5)
    return None
