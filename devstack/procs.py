"""Processes in their own sessions with their output in a log file, and the waits around them.

A `Service` is one command started with `start_new_session=True`, so a signal to its process group (`stop()`,
`kill9()`) reaches the whole tree at once — gunicorn's workers, a Celery pool — like a lost node. A `ServiceGroup`
is everything one run started: `check_alive()` fails with the log tail of the first that exited, `stop()` stops them
in reverse order.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import psutil
import requests

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parent.parent
#: The folder of this interpreter's scripts (gunicorn, celery, moto_server, trainctl of the same venv).
BIN = Path(sys.executable).parent


class TimedOut(AssertionError):
    """A wait ran out; the message says what it waited for."""


class Exited(AssertionError):
    """A service exited while it should be running; the message carries its log's tail."""


def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], T], timeout: float = 30.0, what: str = "condition", interval: float = 0.1) -> T:
    """Poll `check()` until it returns something truthy (returned); `TimedOut` naming `what` after `timeout` s.
    `check` may raise (`Exited` from `Service.check_alive`, say) to end the wait early."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimedOut(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def http_ok(url: str, timeout: float = 2.0, below: int = 300) -> bool:
    """True when `GET url` answers with a status under `below`; False when it fails or answers otherwise."""
    try:
        return requests.get(url, timeout=timeout).status_code < below
    except requests.RequestException:
        return False


class Service:
    """One process in its own session, its stdout and stderr appended to `log`."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log: Path,
                 cwd: Path = REPO_ROOT) -> None:
        self.name, self.argv, self.env, self.log, self.cwd = name, list(argv), dict(env), log, cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was not started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def check_alive(self, tail: int = 15) -> None:
        """`Exited` with the last `tail` lines of the log when the process has ended."""
        if self.proc is not None and self.proc.poll() is not None:
            lines = self.output().splitlines()[-tail:]
            raise Exited(f"{self.name} exited with code {self.proc.returncode}; its log ends:\n  " + "\n  ".join(lines))

    def wait_ready(self, check: Callable[[], bool], timeout: float = 60.0) -> None:
        """Wait for `check()`, failing at once (with the log's tail) when the process exits first."""

        def ready() -> bool:
            self.check_alive(tail=40)
            return check()

        wait_for(ready, timeout, f"{self.name} to be ready (log: {self.log})", interval=0.2)

    def children(self) -> list[int]:
        """Pids of the direct children (gunicorn's workers, a Celery pool)."""
        if not self.alive():
            return []
        try:
            return [child.pid for child in psutil.Process(self.pid).children()]
        except psutil.Error:
            return []

    def signal(self, signum: int) -> None:
        """Send `signum` to the whole process group (nothing when it has ended)."""
        if self.alive():
            try:
                os.killpg(self.pid, signum)
            except (ProcessLookupError, PermissionError):
                pass

    def kill9(self) -> None:
        """SIGKILL the whole group: nothing gets to finish, flush or acknowledge."""
        if self.alive():
            self.signal(signal.SIGKILL)
            assert self.proc is not None
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the group, SIGKILL it after `timeout` seconds."""
        if not self.alive():
            return
        assert self.proc is not None
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait(10)


class ServiceGroup:
    """The services one run started, each logging to `<log_dir>/<name>.log`."""

    def __init__(self, log_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.env = dict(os.environ if env is None else env)
        self.services: list[Service] = []

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> Service:
        service = Service(name, argv, self.env if env is None else env, self.log_dir / f"{name}.log").start()
        self.services.append(service)
        return service

    def check_alive(self) -> None:
        for service in self.services:
            service.check_alive()

    def stop(self, timeout: float = 15.0, on_stopped: Callable[[str], None] | None = None) -> None:
        """SIGTERM every group (the last started first), then wait for each; SIGKILL what is left at `timeout`."""
        for service in reversed(self.services):
            service.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for service in reversed(self.services):
            service.stop(max(0.1, deadline - time.monotonic()))
            if on_stopped:
                on_stopped(service.name)
        self.services.clear()
