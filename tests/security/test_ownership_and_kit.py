"""Only our own objects are deleted; Flower refuses empty or trivial credentials."""

from __future__ import annotations

import base64
import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from broker.cancel import cancel_job
from broker.celery_app import weak_basic_auth
from broker.context import BrokerContext
from broker.jobs import JobStatus
from broker.render import render_pytorchjob
from broker.submit import submit_job
from tests.support.jobs import make_record
from tests.support.k8s_emulator import K8sEmulator

ROOT = Path(__file__).resolve().parents[2]


def _foreign_object_named(emulator: K8sEmulator, ctx: BrokerContext, name: str) -> None:
    body = copy.deepcopy(render_pytorchjob(make_record("someone-else"), ctx.settings))
    body["metadata"] = {"name": name, "namespace": "ml", "labels": {"owner": "another-team"}}
    emulator.create("ml", body)


def test_retrying_a_job_whose_name_a_foreign_object_holds_never_deletes_it(
    ctx: BrokerContext, emulator: K8sEmulator
) -> None:
    record = make_record("collide")
    _foreign_object_named(emulator, ctx, record.object_name())
    ctx.store.create(record)
    assert submit_job(ctx, record.name) == "failed"
    ctx.store.transition(record.name, JobStatus.QUEUED, reason="retry requested")  # what POST /retry does
    assert submit_job(ctx, record.name) == "failed"
    assert ("ml", record.name) in emulator.jobs  # still there, untouched
    failed = ctx.store.require(record.name)
    assert failed.status == JobStatus.FAILED and "was not created by this system" in failed.detail


def test_cancelling_never_deletes_a_foreign_object_of_the_attempts_name(
    ctx: BrokerContext, emulator: K8sEmulator
) -> None:
    record = make_record("cancel-me")
    ctx.store.create(record)
    assert submit_job(ctx, record.name) == "submitted"
    emulator.jobs.pop(("ml", record.name))  # ours vanished; someone else took the name
    _foreign_object_named(emulator, ctx, record.name)
    ctx.store.transition(record.name, JobStatus.CANCELLING, reason="cancel requested")
    assert cancel_job(ctx, record.name) == "cancelled"
    assert ("ml", record.name) in emulator.jobs
    assert "left alone" in ctx.store.require(record.name).detail


@pytest.mark.parametrize("value", ["", ":", "admin:", ":password-long-enough", "admin:password",
                                   "admin:short", "alice:alice", "ok:this-one-is-long-enough,bad:",
                                   "admin:flower-demo-password", "ops:Flower-Demo-Password-2", "ops:replace-me-please",
                                   "ops:aaaaaaaaaaaaaaaa", "ops:abababababababab"])
def test_flower_refuses_empty_or_trivial_credentials(value: str) -> None:
    assert weak_basic_auth(value)
    env = {k: v for k, v in os.environ.items() if k != "FLOWER_BASIC_AUTH"} | {"FLOWER_BASIC_AUTH": value,
                                                                               "REDIS_URL": "redis://127.0.0.1:1/0"}
    celery = str(Path(sys.executable).parent / "celery")
    result = subprocess.run([celery, "-A", "broker.celery_app", "flower", "--port=1"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "FLOWER_BASIC_AUTH" in result.stderr


def test_a_strong_flower_credential_is_accepted() -> None:
    assert weak_basic_auth("ops:Zq8v1-long-random-secret") is None


def test_the_role_grants_only_the_calls_the_broker_makes() -> None:
    from tests.kit.test_rbac import granted_permissions, used_permissions

    assert granted_permissions() <= used_permissions()


def _deploy(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """scripts/build_and_deploy.sh with docker a no-op and kubectl real for `kustomize`, recording what `apply -k`
    would apply (rendered by the real kubectl) into the returned file."""
    shim = tmp_path / "bin"
    shim.mkdir(exist_ok=True)
    applied = tmp_path / "applied.yaml"
    kubectl = shutil.which("kubectl")
    assert kubectl
    (shim / "docker").write_text("#!/bin/sh\nexit 0\n")
    (shim / "kubectl").write_text(f"""#!/bin/sh
if [ "$1" = apply ] && [ "$2" = -k ]; then exec {kubectl} kustomize "$3" > {applied}; fi
if [ "$1" = kustomize ]; then exec {kubectl} "$@"; fi
exit 0
""")
    for tool in ("docker", "kubectl"):
        (shim / tool).chmod(0o755)
    env = {**os.environ, "DOCKER": str(shim / "docker"), "KUBECTL": str(shim / "kubectl")}
    result = subprocess.run(["bash", str(ROOT / "scripts" / "build_and_deploy.sh"), *args, "reg.example", "t1"],
                            env=env, capture_output=True, text=True, timeout=120)
    return result, applied


GOOD = {"TRAINER_API_TOKEN": "9f2c41d0a7be5e3386c1f0d24b7a9e15", "FLOWER_BASIC_AUTH": "ops:5b8e0c1f9a2d7e4c",
        "REDIS_PASSWORD": "c3d9a1e7f05b2c8d4e6f1a0b"}


@pytest.mark.parametrize(("change", "why"), [
    (None, "is missing or empty"),
    ({"TRAINER_API_TOKEN": "trainer-demo-token"}, "known demo or placeholder value"),
    ({"FLOWER_BASIC_AUTH": "admin:flower-demo-password"}, "known demo or placeholder value"),
    ({"REDIS_PASSWORD": "redis-demo-password"}, "known demo or placeholder value"),
    ({"TRAINER_API_TOKEN": "REPLACE-ME-with-a-random-token"}, "known demo or placeholder value"),
    ({"REDIS_PASSWORD": ""}, "REDIS_PASSWORD is missing or empty"),
    ({"FLOWER_BASIC_AUTH": ""}, "FLOWER_BASIC_AUTH is missing or empty"),
    ({"TRAINER_API_TOKEN": ""}, "TRAINER_API_TOKEN (or TRAINER_TENANT_TOKENS) is missing"),
    ({"TRAINER_API_TOKEN": "short-token"}, "shorter than 16 characters"),
    ({"REDIS_PASSWORD": "short"}, "shorter than 16 characters"),
    ({"REDIS_PASSWORD": "has/slash@and-more-chars"}, "may hold only"),
    ({"FLOWER_BASIC_AUTH": "ops:short"}, "FLOWER_BASIC_AUTH"),
    ({"FLOWER_BASIC_AUTH": "5b8e0c1f9a2d7e4c:5b8e0c1f9a2d7e4c"}, "FLOWER_BASIC_AUTH"),
    ({"FLOWER_BASIC_AUTH": "no-colon-in-this-value"}, "FLOWER_BASIC_AUTH"),
])
def test_the_deploy_script_refuses_missing_demo_or_weak_secrets_before_building(
    tmp_path: Path, change: dict[str, str] | None, why: str
) -> None:
    secret_file = tmp_path / "secret.env"
    if change is not None:
        secret_file.write_text("".join(f"{k}={v}\n" for k, v in {**GOOD, **change}.items()))
    result, applied = _deploy(tmp_path, "--no-push", "--secrets", str(secret_file))
    assert result.returncode == 3 and why in result.stderr, result.stderr
    assert not applied.exists()


def test_the_deploy_script_applies_the_operators_secrets_in_the_namespace(tmp_path: Path) -> None:
    secret_file = tmp_path / "ops" / "secret.env"
    secret_file.parent.mkdir()
    secret_file.write_text("# written by the operator\n" + "".join(f"{k}={v}\n" for k, v in GOOD.items()))
    result, applied = _deploy(tmp_path, "--no-push", "--secrets", str(secret_file))
    assert result.returncode == 0, result.stderr
    (secret,) = [d for d in yaml.safe_load_all(applied.read_text()) if d and d["kind"] == "Secret"]
    assert secret["metadata"]["namespace"] == "training-broker"
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == GOOD
    dry, _ = _deploy(tmp_path, "--dry-run", "--secrets", str(secret_file))
    assert dry.returncode == 0, dry.stderr
    assert not any(value in dry.stdout + dry.stderr for value in GOOD.values())  # a dry run shows none of them
    manifest = "\n".join(line for line in dry.stdout.splitlines() if not line.startswith("+ "))
    (shown,) = [d for d in yaml.safe_load_all(manifest) if d and d["kind"] == "Secret"]
    assert {base64.b64decode(v).decode() for v in shown["data"].values()} == {"<redacted>"}
    assert set(shown["data"]) == set(GOOD)


def test_redis_requires_a_password_that_every_service_uses() -> None:
    from tests.kit import support

    (redis_set,) = support.objects("StatefulSet")
    container = redis_set["spec"]["template"]["spec"]["containers"][0]
    argv = container["command"]
    assert argv[argv.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert {e["name"] for e in container["env"]} >= {"REDIS_PASSWORD", "REDISCLI_AUTH"}
    for _, service in support.service_containers():
        env = {e["name"]: e for e in service.get("env") or []}
        assert env["REDIS_URL"]["value"] == "redis://:$(REDIS_PASSWORD)@redis:6379/0"
        assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "REDIS_PASSWORD"


def test_flower_and_the_deploy_script_refuse_the_same_demo_parts() -> None:
    from broker.celery_app import DEMO_PARTS

    script = (ROOT / "scripts" / "build_and_deploy.sh").read_text()
    (patterns,) = [line.strip() for line in script.splitlines() if "*demo-token*" in line]
    assert {p.strip("*") for p in patterns.rstrip(")").split("|")} == set(DEMO_PARTS)
