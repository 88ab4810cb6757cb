"""The env names k8s/ and docker-compose.yml set are the ones the code reads, the required ones are set, and the
settings objects accept the values as deployed."""

from __future__ import annotations

import ast
from pathlib import Path

import boto3
import pytest

from api.settings import ApiSettings
from broker.celery_app import weak_basic_auth
from broker.settings import BrokerSettings
from tests.kit import support

# What each process cannot run without outside a laptop: the defaults point at 127.0.0.1 or leave auth off.
REQUIRED = {
    "api": {"REDIS_URL", "TRAINER_API_TOKEN"},
    "worker": {"REDIS_URL", "TRAINER_CLUSTER_BACKEND", "TRAINER_NAMESPACE"},
    "beat": {"REDIS_URL", "TRAINER_CLUSTER_BACKEND", "TRAINER_NAMESPACE"},
    "flower": {"REDIS_URL", "FLOWER_BASIC_AUTH"},
}


def k8s_envs() -> list[tuple[str, str, dict[str, str]]]:
    return [(f"k8s {name}", support.container_role(c["command"]), support.container_env(c))
            for name, c in support.service_containers()]


def compose_envs() -> list[tuple[str, str, dict[str, str]]]:
    found = []
    for name, service in support.compose()["services"].items():
        if support.compose_service_image(service) and name != "s3-init":
            env = {k: support.compose_value(v) for k, v in (service.get("environment") or {}).items()}
            found.append((f"compose {name}", support.container_role(service["command"]), env))
    return found


def test_the_settings_modules_read_the_env_names_the_kit_relies_on() -> None:
    names = support.service_env_names()
    assert set().union(*REQUIRED.values()) <= names
    assert {"FRAMEWORK", "RUN_ID", "MODEL_ID", "CHECKPOINT_BASE_URI", "DATASET_URI"} <= support.trainer_env_names()


@pytest.mark.parametrize("where", ["k8s", "compose"])
def test_every_role_is_deployed_once(where: str) -> None:
    envs = k8s_envs() if where == "k8s" else compose_envs()
    assert sorted(role for _, role, _ in envs) == sorted(support.ROLE_PREFIX)


@pytest.mark.parametrize("where", ["k8s", "compose"])
def test_every_env_name_set_for_the_service_image_is_read_by_the_code(where: str) -> None:
    known = support.service_env_names() | set(support.LIBRARY_ENV)
    for label, _, env in k8s_envs() if where == "k8s" else compose_envs():
        unknown = set(env) - known
        assert not unknown, f"{label} sets {sorted(unknown)}, which no settings module (nor boto3) reads"


@pytest.mark.parametrize("where", ["k8s", "compose"])
def test_the_required_settings_are_set_for_each_role(where: str) -> None:
    for label, role, env in k8s_envs() if where == "k8s" else compose_envs():
        missing = {name for name in REQUIRED[role] if not env.get(name)}
        assert not missing, f"{label} ({role}) lacks {sorted(missing)}"
        assert env.get("TRAINER_AUTH_DISABLED", "") in {"", "0", "false"}, f"{label} turns authentication off"
        assert "127.0.0.1" not in env["REDIS_URL"] and "localhost" not in env["REDIS_URL"]
        if role in {"worker", "beat"}:
            assert env["TRAINER_CLUSTER_BACKEND"] == "kubernetes", "the service image has no trainer to run locally"


@pytest.mark.parametrize("where", ["k8s", "compose"])
def test_the_settings_objects_accept_the_deployed_values(where: str) -> None:
    for label, role, env in k8s_envs() if where == "k8s" else compose_envs():
        broker = BrokerSettings.from_env(env)
        expected = env["REDIS_URL"]
        if where == "compose":  # compose sets REDIS_PASSWORD beside a URL without one; the settings add it
            expected = expected.replace("redis://", f"redis://:{env['REDIS_PASSWORD']}@", 1)
        assert broker.redis_url == expected, label
        if role == "api":
            ApiSettings.from_env(env).check()
        if role == "flower":
            assert broker.flower_basic_auth and weak_basic_auth(broker.flower_basic_auth) is None


def test_the_library_env_names_are_used_by_boto3(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "kit-key",
              "AWS_SECRET_ACCESS_KEY": "kit-secret", "AWS_DEFAULT_REGION": "eu-west-3"}
    assert set(values) == set(support.LIBRARY_ENV)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    session = boto3.session.Session()
    client = session.client("s3")
    credentials = session.get_credentials()
    assert credentials is not None
    assert (client.meta.endpoint_url, client.meta.region_name) == ("http://127.0.0.1:9", "eu-west-3")
    assert (credentials.access_key, credentials.secret_key) == ("kit-key", "kit-secret")


def _env_reads(path: Path) -> list[str]:
    """Names read with os.environ[...], os.environ.get(...) or os.getenv(...) in one module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in ast.walk(tree):
        key: ast.AST | None = None
        if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
            key = node.slice
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in {"os.environ.get", "os.getenv"} and node.args:
            key = node.args[0]
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            names.append(key.value)
    return names


def test_only_the_settings_modules_read_the_environment() -> None:
    """Otherwise the configuration table, the manifests and these tests would miss a setting."""
    settings = {support.ROOT / p for p in support.SERVICE_SETTINGS}
    offenders = {}
    for package in ("api", "broker"):
        for path in sorted((support.ROOT / package).rglob("*.py")):
            reads = _env_reads(path)
            if reads and path not in settings:
                offenders[str(path.relative_to(support.ROOT))] = reads
    assert not offenders, f"read these through the package's settings object instead: {offenders}"
