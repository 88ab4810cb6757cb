"""The API served by a real gunicorn process, over HTTP, configured only through its environment."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from broker.names import SUBMIT_TASK
from devstack import free_port
from devstack.gunicorn import serve
from tests.api.conftest import SEED_SAMPLE

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture
def server(redis_url: str, tmp_path: Path) -> Iterator[str]:
    env = {**os.environ, "REDIS_URL": redis_url, "TRAINER_API_TOKEN": "http-token",
           "TRAINER_CLUSTER_BACKEND": "local", "TRAINER_NAMESPACE": "http-team"}
    env.pop("TRAINER_AUTH_DISABLED", None)
    with serve(env, tmp_path / "gunicorn.log", "-w", "2") as served:
        yield served.url


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
