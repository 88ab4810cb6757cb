"""The API served by a real gunicorn process, over HTTP, configured only through its environment."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from broker.names import SUBMIT_TASK
from devstack import free_port
from tests.api.conftest import SEED_SAMPLE

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture
def server(redis_url: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "TRAINER_API_TOKEN": "http-token",
           "TRAINER_CLUSTER_BACKEND": "local", "TRAINER_NAMESPACE": "http-team"}
    env.pop("TRAINER_AUTH_DISABLED", None)
    log = (tmp_path / "gunicorn.log").open("w")
    argv = [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", "2", "api.app:create_app()"]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, proc, tmp_path / "gunicorn.log")
        yield base
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def _wait_ready(base: str, proc: subprocess.Popen[Any], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited: {log.read_text()}")
        try:
            if requests.get(f"{base}/healthz", timeout=2).ok:
                return
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.2)
    raise RuntimeError(f"gunicorn did not become ready: {log.read_text()}")


def test_the_seed_sample_posted_over_http_is_queued_stored_and_read_back(server: str, tasks: Any) -> None:
    headers = {"X-TRAINER-TOKEN": "http-token"}
    created = requests.post(f"{server}/train", json=SEED_SAMPLE, headers=headers, timeout=10)
    assert created.status_code == 202, created.text
    name = created.json()["name"]
    assert created.headers["Location"] == f"/train/{name}"
    read = requests.get(f"{server}{created.headers['Location']}", headers=headers, timeout=10)
    assert read.status_code == 200 and read.json() == created.json()
    assert read.json()["status"] == "queued" and read.json()["namespace"] == "http-team"
    assert requests.post(f"{server}/train", json=SEED_SAMPLE, headers=headers, timeout=10).status_code == 200
    assert tasks() == [(SUBMIT_TASK, [name])]
    assert requests.get(f"{server}/train", timeout=10).status_code == 401
    assert requests.get(f"{server}/readyz", timeout=10).status_code == 200
    too_big = requests.post(f"{server}/train", data=b"x" * 300_000, headers=headers, timeout=10)
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "request_entity_too_large"


def test_an_upload_far_beyond_the_limit_still_reads_its_413(server: str) -> None:
    headers = {"X-TRAINER-TOKEN": "http-token", "Content-Type": "application/json"}
    huge = requests.post(f"{server}/train", data=b"x" * 11_000_000, headers=headers, timeout=30)
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "request_entity_too_large"
    chunked = requests.post(f"{server}/train", data=iter([b"x" * 1_000_000] * 11), headers=headers, timeout=30)
    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "request_entity_too_large"
    assert requests.get(f"{server}/healthz", timeout=10).ok


def test_gunicorn_refuses_to_start_without_a_token(redis_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINER_")}
    env |= {"REDIS_URL": redis_url, "TRAINER_CLUSTER_BACKEND": "local"}
    argv = [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{free_port()}", "api.app:create_app()"]
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "TRAINER_API_TOKEN" in result.stderr
