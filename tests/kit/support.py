"""What the kit's tests read: the rendered manifests, the compose file, and the env names the code really reads.

Everything here is derived from the repository as it is (the settings modules' source, `kubectl kustomize k8s/`), so
a test built on it fails as soon as a manifest, a doc or the code moves without the others.
"""

from __future__ import annotations

import ast
import base64
import functools
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

# The settings modules: the only places that read the environment (tests/kit/test_env_names.py enforces it).
SERVICE_SETTINGS = ("broker/settings.py", "api/settings.py")
TRAINER_SETTINGS = ("trainer/config.py",)

# Names read by libraries the service image runs (not by our settings code), each proved by a test that sets the
# variable and observes the library use it (tests/kit/test_env_names.py).
LIBRARY_ENV = {
    "AWS_ENDPOINT_URL": "boto3: endpoint of the S3-compatible store",
    "AWS_ACCESS_KEY_ID": "boto3: access key",
    "AWS_SECRET_ACCESS_KEY": "boto3: secret key",
    "AWS_DEFAULT_REGION": "boto3: region",
}

# The one image api, worker, beat and flower run (kustomize `images` name in k8s/kustomization.yaml).
SERVICE_IMAGE_NAME = "training-broker"

# The commands every deployment must run, by role: argv prefixes (api's last word is the app factory).
ROLE_PREFIX = {
    "api": ["gunicorn"],
    "worker": ["celery", "-A", "broker.celery_app", "worker"],
    "beat": ["celery", "-A", "broker.celery_app", "beat"],
    "flower": ["celery", "-A", "broker.celery_app", "flower"],
}
API_APP_SPEC = "api.app:create_app()"

_ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]{2,}")


def _docstring_nodes(tree: ast.AST) -> set[int]:
    """ids of the Constant nodes that are docstrings (module, class, function or attribute docstrings)."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            for stmt in body:
                if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                    ids.add(id(stmt.value))
    return ids


def env_names_in(path: str) -> set[str]:
    """Every UPPER_CASE string constant in a settings module's code (docstrings excluded): the env names it reads."""
    tree = ast.parse((ROOT / path).read_text(), filename=path)
    docstrings = _docstring_nodes(tree)
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
        and _ENV_NAME.fullmatch(node.value)
    }


def service_env_names() -> set[str]:
    """Env names the service processes (api, worker, beat, flower) read through their settings objects."""
    return set().union(*(env_names_in(p) for p in SERVICE_SETTINGS if (ROOT / p).exists()))


def trainer_env_names() -> set[str]:
    return set().union(*(env_names_in(p) for p in TRAINER_SETTINGS if (ROOT / p).exists()))


def _default_of(value: ast.expr) -> ast.expr:
    """A pydantic `Field(default, …)`'s default; any other value as it is."""
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "Field" and value.args:
        return value.args[0]
    return value


def documented_fields(path: str) -> list[tuple[str, str, str]]:
    """(ENV_NAME, default source, meaning) for each settings field whose docstring starts `ENV_NAME: meaning`."""
    tree = ast.parse((ROOT / path).read_text(), filename=path)
    rows: list[tuple[str, str, str]] = []
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        body = cls.body
        for field, doc in zip(body, body[1:], strict=False):
            if not (isinstance(field, ast.AnnAssign) and isinstance(doc, ast.Expr)
                    and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str)):
                continue
            match = re.match(r"([A-Z][A-Z0-9_]+): (.*)", doc.value.value, re.S)
            if match:
                default = ast.unparse(_default_of(field.value)) if field.value is not None else ""
                rows.append((match[1], default, " ".join(match[2].split())))
    return rows


def kustomize(folder: Path) -> tuple[dict[str, Any], ...]:
    """`kubectl kustomize <folder>` parsed."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl must be on PATH to render k8s/"
    out = subprocess.run([kubectl, "kustomize", str(folder)], check=True, capture_output=True, text=True)
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


#: The Secret's values the operator would write (random for each test session: the repository holds none).
OPERATOR_SECRETS = {"TRAINER_API_TOKEN": secrets.token_hex(24), "FLOWER_BASIC_AUTH": f"ops:{secrets.token_hex(16)}",
                    "REDIS_PASSWORD": secrets.token_hex(24)}
#: The secrets an operator creates (the Secret `training-broker-secrets`, compose's .env).
SECRET_NAMES = tuple(OPERATOR_SECRETS)


def base() -> tuple[dict[str, Any], ...]:
    """`kubectl kustomize k8s/`: the base alone, which holds no Secret (the operator creates it)."""
    return kustomize(ROOT / "k8s")


@functools.cache
def rendered() -> tuple[dict[str, Any], ...]:
    """Every object a deploy creates: the base under an overlay that generates the Secret from an operator's file
    (OPERATOR_SECRETS), as scripts/build_and_deploy.sh does."""
    with tempfile.TemporaryDirectory() as tmp:
        overlay = Path(tmp)
        (overlay / "secret.env").write_text("".join(f"{k}={v}\n" for k, v in OPERATOR_SECRETS.items()))
        (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "namespace": "training-broker", "resources": [os.path.relpath(ROOT / "k8s", overlay)],
            "secretGenerator": [{"name": "training-broker-secrets", "envs": ["secret.env"]}]}))
        return kustomize(overlay)


def objects(kind: str) -> list[dict[str, Any]]:
    return [o for o in rendered() if o["kind"] == kind]


def obj(kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects(kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind}/{name}, found {len(found)}"
    return found[0]


def workloads() -> list[dict[str, Any]]:
    return [o for o in rendered() if o["kind"] in {"Deployment", "StatefulSet"}]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def service_containers() -> Iterator[tuple[str, dict[str, Any]]]:
    """(workload name, container) for every container that runs the service image."""
    for workload in workloads():
        for container in pod_spec(workload)["containers"]:
            image = container["image"].rsplit(":", 1)[0]
            if image.split("/")[-1] == SERVICE_IMAGE_NAME:
                yield workload["metadata"]["name"], container


def _config_data(kind: str, name: str) -> dict[str, str]:
    found = obj(kind, name)
    data = dict(found.get("stringData") or {})
    for key, value in (found.get("data") or {}).items():
        data[key] = base64.b64decode(value).decode() if kind == "Secret" else value
    return data


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """The environment a container gets: envFrom ConfigMaps/Secrets, then `env` (values or `<secret>` refs)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            env.update(_config_data("ConfigMap", source["configMapRef"]["name"]))
        if "secretRef" in source:
            env.update(_config_data("Secret", source["secretRef"]["name"]))
    for var in container.get("env") or []:
        ref = (var.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            env[var["name"]] = _config_data("Secret", ref["name"])[ref["key"]]
        elif "value" in var:
            env[var["name"]] = var["value"]
        else:
            env[var["name"]] = "<fieldRef>"
    return env


def container_role(argv: list[str]) -> str:
    """Which of api/worker/beat/flower an argv runs (AssertionError when none)."""
    for role, prefix in ROLE_PREFIX.items():
        if argv[: len(prefix)] == prefix:
            return role
    raise AssertionError(f"not a known service command: {argv}")


@functools.cache
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def compose_value(value: Any) -> str:
    """A compose value as `docker compose up` with the operator's `.env` resolves it: `${NAME:?…}` (required) from
    OPERATOR_SECRETS, `${NAME:-default}` to its default."""
    value = re.sub(r"\$\{(\w+):\?[^}]*\}", lambda m: OPERATOR_SECRETS[m[1]], str(value))
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def compose_service_image(service: dict[str, Any]) -> bool:
    """True for compose services built from the root Dockerfile (the service image)."""
    build = service.get("build") or {}
    return isinstance(build, dict) and build.get("dockerfile") == "Dockerfile" and build.get("context") == "."
