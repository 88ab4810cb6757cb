"""A real `celery -A broker.celery_app worker` process for integration tests (optionally with an embedded beat).

It runs in its own session so `kill9()` takes down the whole worker (main process and pool children) at once, like
a lost node. Its log goes to a file the test can show on failure.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tests.support.pytorchjob_rules import REPO_ROOT

T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout: float = 30.0, what: str = "condition") -> T:
    """Poll `check()` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


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
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> CeleryWorker:
        argv = [sys.executable, "-m", "celery", "-A", "broker.celery_app", "worker", "-l", "info",
                "-c", str(self.concurrency), "-n", self.hostname, "--without-gossip", "--without-mingle",
                *(["-E"] if self.events else ["--without-heartbeat"])]
        if self.beat:
            argv += ["-B", "-s", str(self.workdir / f"beat-{uuid.uuid4().hex[:6]}")]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(argv, env=self.env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        wait_for(self._ready, timeout, f"the celery worker to be ready (log: {self.log})")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the celery worker exited with {self.proc.returncode}:\n{self.output()}")
        return " ready." in self.output()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill9(self) -> None:
        """SIGKILL the worker's whole process group: no task gets to finish or acknowledge."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


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
