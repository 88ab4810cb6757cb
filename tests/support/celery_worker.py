"""A real `celery -A broker.celery_app worker` process for integration tests (optionally with an embedded beat).

It runs in its own session (a `devstack.Service`) so `kill9()` takes down the whole worker (main process and pool
children) at once, like a lost node. Its log goes to a file the test can show on failure.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from pathlib import Path

from devstack import Exited, Service, celery_argv, wait_for
from devstack.commands import worker_options


class CeleryWorker:
    def __init__(self, env: dict[str, str], workdir: Path, *, beat: bool = False, concurrency: int = 2,
                 events: bool = False) -> None:
        self.env = env
        self.workdir = workdir
        self.beat = beat
        self.concurrency = concurrency
        #: `-E` and heartbeats on, as a monitor (Flower) needs them to list the worker; off by default (quieter).
        self.events = events
        #: The node name the worker registers under (`-n`), as Flower and `celery inspect` show it.
        self.hostname = f"test-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
        self.log = workdir / f"worker-{uuid.uuid4().hex[:6]}.log"
        self.service: Service | None = None

    def launch(self) -> CeleryWorker:
        """Start without waiting for readiness (a replacement started right after a kill)."""
        argv = celery_argv("worker", *worker_options(self.hostname, self.concurrency, heartbeat=self.events))
        if self.events:
            argv.append("-E")
        if self.beat:
            argv += ["-B", "-s", str(self.workdir / f"beat-{uuid.uuid4().hex[:6]}")]
        self.service = Service("celery worker", argv, self.env, self.log).start()
        return self

    def start(self, timeout: float = 90.0) -> CeleryWorker:
        self.launch()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 90.0) -> None:
        wait_for(self._ready, timeout, f"the celery worker to be ready (log: {self.log})")

    def _ready(self) -> bool:
        assert self.service is not None
        if not self.service.alive():
            raise Exited(f"the celery worker exited:\n{self.output()}")
        return " ready." in self.output()

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.service.proc if self.service else None

    def alive(self) -> bool:
        return self.service is not None and self.service.alive()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill9(self) -> None:
        """SIGKILL the worker's whole process group: no task gets to finish or acknowledge."""
        assert self.service is not None
        self.service.kill9()

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop(20)


def worker_env(redis_url: str, kubeconfig: Path, **overrides: str) -> dict[str, str]:
    """The environment of a worker pointed at a test Redis and the API emulator."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "TRAINER_", "CELERY_"))}
    env.update(
        REDIS_URL=redis_url,
        TRAINER_REDIS_PREFIX="it:",
        KUBECONFIG=str(kubeconfig),
        TRAINER_CLUSTER_BACKEND="kubernetes",
        TRAINER_SYNC_INTERVAL_S="0.5",
        TRAINER_SUBMIT_MAX_RETRIES="4",
        TRAINER_SUBMIT_BACKOFF_S="0.05",
        TRAINER_SUBMIT_BACKOFF_MAX_S="0.2",
        TRAINER_VANISHED_GRACE_CYCLES="2",
        TRAINER_REQUEUE_AFTER_S="60",
        TRAINER_QUOTAS='{"default": {"gpus": 64, "jobs": 20}, "ml": {"gpus": 16, "jobs": 4}}',
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env
