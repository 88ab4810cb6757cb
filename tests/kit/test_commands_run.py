"""The worker, beat and Flower commands of k8s/ start and do their job when run exactly as deployed (the API's is run
by the live_api fixture): the worker answers its own liveness probe, beat enqueues the periodic sync, Flower answers
/healthcheck openly and everything else only with the Secret's credentials.

Only what cannot run here is rewritten: ports, the beat schedule path, and REDIS_URL (a redis-server of the tests').
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
import requests

from broker.names import DEFAULT_QUEUE, SYNC_QUEUE, SYNC_TASK
from devstack import RedisServer, Service, free_port
from tests.kit import support
from tests.kit.conftest import deployed, local_env, rebind, wait_http


@contextmanager
def running(argv: list[str], env: dict[str, str], log: Path) -> Iterator[Service]:
    service = Service(Path(argv[0]).name, argv, env, log).start()
    try:
        yield service
    finally:
        service.stop(30)


def _env(role: str, server: RedisServer, db: int) -> tuple[list[str], dict[str, str]]:
    argv, env = deployed(role)
    env = local_env(env, server, "http://127.0.0.1:9")
    env["REDIS_URL"] = server.url(db)
    return argv, env


@pytest.mark.slow
def test_the_worker_starts_and_answers_its_liveness_probe(kit_redis: RedisServer, tmp_path: Path) -> None:
    argv, env = _env("worker", kit_redis, 3)
    probe = support.obj("Deployment", "training-worker")["spec"]["template"]["spec"]["containers"][0]
    probe_argv = probe["livenessProbe"]["exec"]["command"]
    env["HOSTNAME"] = socket.gethostname()  # what Kubernetes sets to the pod name, which is the pod's hostname
    log = tmp_path / "worker.log"
    with running(argv, env, log) as proc:
        deadline = time.monotonic() + 90
        while True:
            proc.check_alive(tail=40)
            done = subprocess.run(probe_argv, cwd=support.ROOT, env=env, capture_output=True, text=True, timeout=60)
            if done.returncode == 0:
                assert "pong" in done.stdout
                break
            assert time.monotonic() < deadline, f"probe never passed: {done.stdout}{done.stderr}{log.read_text()}"
            time.sleep(1)


@pytest.mark.slow
def test_beat_enqueues_the_periodic_sync(kit_redis: RedisServer, tmp_path: Path) -> None:
    argv, env = _env("beat", kit_redis, 4)
    argv = rebind(argv, "--schedule", str(tmp_path / "celerybeat-schedule"))
    client = redis.Redis.from_url(env["REDIS_URL"], decode_responses=True)
    client.flushdb()
    log = tmp_path / "beat.log"
    with running(argv, env, log) as proc:
        deadline = time.monotonic() + 90
        while client.llen(SYNC_QUEUE) == 0:
            proc.check_alive(tail=40)
            assert time.monotonic() < deadline, f"beat sent nothing: {log.read_text()[-3000:]}"
            time.sleep(0.5)
    assert SYNC_TASK in client.lindex(SYNC_QUEUE, 0)  # type: ignore[operator]
    assert client.llen(DEFAULT_QUEUE) == 0  # the sync has its own queue, never behind the submits


@pytest.mark.slow
def test_flower_answers_only_with_the_secret_credentials(kit_redis: RedisServer, tmp_path: Path) -> None:
    argv, env = _env("flower", kit_redis, 5)
    port = free_port()
    argv = rebind(argv, "--port", str(port))
    user, password = env["FLOWER_BASIC_AUTH"].split(":", 1)
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "flower.log"
    with running(argv, env, log) as proc:
        wait_http(f"{url}/healthcheck", proc, timeout=90)
        assert requests.get(f"{url}/", timeout=10).status_code == 401
        assert requests.get(f"{url}/api/workers", timeout=10).status_code == 401
        assert requests.get(f"{url}/", auth=(user, "wrong"), timeout=10).status_code == 401
        assert requests.get(f"{url}/", auth=(user, password), timeout=10).status_code == 200


def test_the_flower_command_refuses_to_start_without_credentials(kit_redis: RedisServer, tmp_path: Path) -> None:
    argv, env = _env("flower", kit_redis, 5)
    del env["FLOWER_BASIC_AUTH"]
    argv = rebind(argv, "--port", str(free_port()))
    done = subprocess.run(argv, cwd=support.ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "FLOWER_BASIC_AUTH" in done.stderr + done.stdout
