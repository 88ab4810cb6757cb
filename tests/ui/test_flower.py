"""Flower in headless Chromium: its basic-auth login (FLOWER_BASIC_AUTH) and its workers page listing a running
worker — a real redis-server, a real `celery worker` and a real `celery flower`. The browser side is
tests/ui/flower.test.mjs."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import RedisServer, free_port
from tests.support.celery_worker import CeleryWorker, worker_env
from tests.support.flower import start_flower, stop_flower, wait_listening
from tests.ui.conftest import node_test

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("browser_ready")]

USER = "ops"


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("flower-ui")
    password = secrets.token_urlsafe(18)
    env = worker_env(redis_server.url(11), tmp / "kubeconfig", TRAINER_CLUSTER_BACKEND="local",
                     TRAINER_LOCAL_WORKDIR=str(tmp / "jobs"), FLOWER_BASIC_AUTH=f"{USER}:{password}")
    worker = CeleryWorker(env, tmp, events=True, concurrency=1).start()
    port = free_port()
    proc = start_flower(env, port)
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_listening(proc, f"{url}/healthcheck").status_code == 200
        yield {"FLOWER_URL": url, "FLOWER_USER": USER, "FLOWER_PASSWORD": password, "WORKER": worker.hostname}
    finally:
        stop_flower(proc)
        worker.stop()


def test_flower_refuses_the_browser_without_or_with_wrong_credentials(stack: dict[str, str]) -> None:
    node_test("flower.test.mjs", "without credentials|wrong password", stack)


def test_flower_login_shows_the_running_worker_on_the_workers_page(stack: dict[str, str], tmp_path: Path) -> None:
    node_test("flower.test.mjs", "right credentials", {**stack, "SHOTS": str(tmp_path)})
    assert (tmp_path / "flower-workers.png").stat().st_size > 1000
