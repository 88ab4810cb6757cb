"""Flower, the operators' dashboard, never runs without authentication (in a browser: tests/ui/test_flower.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from devstack import RedisServer, free_port
from tests.support.celery_worker import worker_env
from tests.support.flower import start_flower, stop_flower, wait_listening

pytestmark = pytest.mark.slow


def test_flower_refuses_to_start_without_credentials(redis_server: RedisServer, tmp_path: Path) -> None:
    env = worker_env(redis_server.url(9), tmp_path / "kubeconfig")
    env.pop("FLOWER_BASIC_AUTH", None)
    proc = start_flower(env, free_port())
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert b"FLOWER_BASIC_AUTH=user:password is required" in out


def test_flower_with_credentials_asks_for_them(redis_server: RedisServer, tmp_path: Path) -> None:
    env = worker_env(redis_server.url(9), tmp_path / "kubeconfig", FLOWER_BASIC_AUTH="ops:s3cret-long-enough")
    port = free_port()
    proc = start_flower(env, port)
    try:
        url = f"http://127.0.0.1:{port}/"
        assert wait_listening(proc, url).status_code == 401
        assert requests.get(url, auth=("ops", "s3cret-long-enough"), timeout=5).status_code == 200
    finally:
        stop_flower(proc)
