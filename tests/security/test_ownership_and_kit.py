"""Only our own objects are deleted; Flower refuses empty or trivial credentials."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
                                   "admin:short", "alice:alice", "ok:this-one-is-long-enough,bad:"])
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


def test_the_deploy_script_refuses_a_demo_secret(tmp_path: Path) -> None:
    shim = tmp_path / "bin"
    shim.mkdir()
    for tool in ("docker", "kubectl"):
        (shim / tool).write_text("#!/bin/sh\nexit 0\n")
        (shim / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}", "DOCKER": str(shim / "docker"),
           "KUBECTL": str(shim / "kubectl")}
    result = subprocess.run(["bash", str(ROOT / "scripts" / "build_and_deploy.sh"), "--no-push", "reg.example", "t1"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 3 and "known demo value" in result.stderr


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
