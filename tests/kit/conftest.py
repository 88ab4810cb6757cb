"""Live services for the kit's tests: the API started with the exact command and environment of k8s/api.yaml.

Only what cannot run here is rewritten: the bind address (a free loopback port instead of 0.0.0.0:8080), REDIS_URL
(a redis-server of this module's own) and the S3 endpoint (a moto server over HTTP).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devstack import RedisServer, Service, free_port, http_ok
from devstack.s3 import S3Server
from tests.kit import support

BUCKET = "training-runs"


@dataclass
class LiveApi:
    url: str
    token: str
    s3_endpoint: str
    service: Service
    log: Path


@pytest.fixture(scope="session")
def kit_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def kit_s3() -> Iterator[str]:
    server = S3Server().start()
    server.client().create_bucket(Bucket=BUCKET)
    yield server.endpoint_url
    server.stop()


def rebind(argv: list[str], flag: str, value: str) -> list[str]:
    """argv with the value after `flag` (or of `flag=value`) replaced."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == flag:
            out[i + 1] = value
            return out
        if arg.startswith(flag + "="):
            out[i] = f"{flag}={value}"
            return out
    raise AssertionError(f"{flag} not in {argv}")


def deployed(role: str) -> tuple[list[str], dict[str, str]]:
    """The argv and environment k8s/ gives the container of one role."""
    for _, container in support.service_containers():
        if support.container_role(container["command"]) == role:
            return list(container["command"]), support.container_env(container)
    raise AssertionError(f"no {role} container in k8s/")


def local_env(env: dict[str, str], redis: RedisServer, s3_endpoint: str) -> dict[str, str]:
    return {**env, "REDIS_URL": redis.url(0), "AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "PATH": f"{support.VENV_BIN}:{os.environ.get('PATH', '')}", "HOME": os.environ.get("HOME", "/tmp")}


def wait_http(url: str, service: Service, timeout: float = 60) -> None:
    """Wait for `url` to answer 2xx, failing with the log's tail when the service exits first."""
    service.wait_ready(lambda: http_ok(url, timeout=5), timeout)


@pytest.fixture(scope="session")
def live_api(kit_redis: RedisServer, kit_s3: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    argv, env = deployed("api")
    port = free_port()
    argv = rebind(argv, "--bind", f"127.0.0.1:{port}")
    argv = rebind(argv, "--worker-tmp-dir", str(tmp_path_factory.mktemp("gunicorn")))
    log = tmp_path_factory.mktemp("api") / "api.log"
    service = Service("api", argv, local_env(env, kit_redis, kit_s3), log).start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/readyz", service)
        yield LiveApi(url=url, token=env["TRAINER_API_TOKEN"], s3_endpoint=kit_s3, service=service, log=log)
    finally:
        service.stop(20)
