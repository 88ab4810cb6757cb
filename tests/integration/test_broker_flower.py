"""Flower, the operators' dashboard, never runs without authentication."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from devstack import RedisServer, free_port
from tests.support.celery_worker import worker_env
from tests.support.pytorchjob_rules import REPO_ROOT

pytestmark = pytest.mark.slow


def flower(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "celery", "-A", "broker.celery_app", "flower", "--address=127.0.0.1",
            f"--port={port}"]
    return subprocess.Popen(argv, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_flower_refuses_to_start_without_credentials(redis_server: RedisServer, tmp_path: Path) -> None:
    env = worker_env(redis_server.url(9), tmp_path / "kubeconfig")
    env.pop("FLOWER_BASIC_AUTH", None)
    proc = flower(env, free_port())
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert b"FLOWER_BASIC_AUTH=user:password is required" in out


def test_flower_with_credentials_asks_for_them(redis_server: RedisServer, tmp_path: Path) -> None:
    env = worker_env(redis_server.url(9), tmp_path / "kubeconfig", FLOWER_BASIC_AUTH="ops:s3cret-long-enough")
    port = free_port()
    proc = flower(env, port)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 60
        while True:
            try:
                anonymous = requests.get(url, timeout=2)
                break
            except (requests.ConnectionError, requests.Timeout):
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else b""
                assert time.monotonic() < deadline, "flower did not start"
                time.sleep(0.2)
        assert anonymous.status_code == 401
        assert requests.get(url, auth=("ops", "s3cret-long-enough"), timeout=5).status_code == 200
    finally:
        proc.terminate()
        proc.wait(20)
