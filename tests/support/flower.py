"""A real `celery -A broker.celery_app flower` process for tests, on 127.0.0.1 and a port of its own."""

from __future__ import annotations

import subprocess
import sys
import time

import requests

from tests.support.pytorchjob_rules import REPO_ROOT


def start_flower(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    """Flower as the Makefile and the kit run it; its output goes to the returned process' stdout pipe."""
    argv = [sys.executable, "-m", "celery", "-A", "broker.celery_app", "flower", "--address=127.0.0.1",
            f"--port={port}"]
    return subprocess.Popen(argv, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_listening(proc: subprocess.Popen[bytes], url: str, timeout: float = 60) -> requests.Response:
    """The first answer of `url` (any status) once Flower listens; fails with Flower's output if it exits first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return requests.get(url, timeout=2)
        except (requests.ConnectionError, requests.Timeout):
            if proc.poll() is not None:
                output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                raise AssertionError(f"flower exited with {proc.returncode}:\n{output}") from None
            assert time.monotonic() < deadline, "flower did not start"
            time.sleep(0.2)


def stop_flower(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
