"""Safe launches: request env is an allow-list, nothing is expanded from the worker's environment, extra-arg values
never become flags, local replicas get a minimal environment, and the trainer refuses paths outside its run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from broker.backends.local import LocalBackend
from broker.jobs import JobRecord
from broker.render import render_pytorchjob
from broker.settings import BrokerSettings
from tests.security.conftest import A, request_for
from trainer.config import ConfigError, parse_config


@pytest.mark.parametrize("key", ["PYTHONSTARTUP", "PYTHONPATH", "PYTHONWARNINGS", "LD_PRELOAD", "LD_LIBRARY_PATH",
                                 "PATH", "BROWSER", "BASH_ENV", "TRAINER_WORK_DIR", "AWS_ENDPOINT_URL", "HOME",
                                 "RUN_ID", "MASTER_ADDR", "NCCL_NET_PLUGIN", "SOMETHING_ELSE", "pythonstartup"])
def test_env_outside_the_allow_list_is_400_naming_the_key(client: FlaskClient, root: Path, key: str) -> None:
    answer = client.post("/train", json=request_for(root, "team-a", env={key: "x"}), headers=A)
    assert answer.status_code == 400, answer.json
    assert key in answer.json["error"]["fields"]["env"]


def test_allowed_env_names_are_accepted(client: FlaskClient, root: Path) -> None:
    body = request_for(root, "team-a", env={"HF_HOME": "/cache", "WANDB_MODE": "offline", "APP_COLOR": "blue"})
    assert client.post("/train", json=body, headers=A).status_code == 202


@pytest.mark.parametrize("key", ["logs_uri", "resume", "work_dir", "checkpoint_prefix"])
def test_extra_args_naming_the_runs_own_settings_are_400(client: FlaskClient, root: Path, key: str) -> None:
    answer = client.post("/train", json=request_for(root, "team-a", extra_args={key: "x"}), headers=A)
    assert answer.status_code == 400 and key in answer.json["error"]["fields"]["extra_args"]


def _stored(app: Flask, client: FlaskClient, body: dict[str, object]) -> JobRecord:
    created = client.post("/train", json=body, headers=A)
    assert created.status_code == 202, created.json
    return app.extensions["job_store"].require(created.json["name"])  # type: ignore[no-any-return]


def test_the_local_backend_expands_nothing_from_the_worker_and_keeps_its_secrets(
    app: Flask, client: FlaskClient, root: Path
) -> None:
    """A real local launch of the rendered object: the replica prints what it received."""
    body = request_for(root, "team-a", model_id="$(REDIS_URL)", env={"APP_X": "$(TRAINER_API_TOKEN)"},
                       extra_args={"note": "--logs-uri=s3://elsewhere", "tag": "$(AWS_SECRET_ACCESS_KEY)",
                                   "flag": "--resume"})
    record = _stored(app, client, body)
    job = render_pytorchjob(record, BrokerSettings())
    container = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    script = "import json,os,sys; print('REPORT', json.dumps({'argv': sys.argv[1:], 'env': dict(os.environ)}))"
    at = container["command"].index("train.py")
    container["command"] = [sys.executable, "-c", script, *container["command"][at + 1:]]
    worker_env = {"PATH": "/usr/bin:/bin", "REDIS_URL": "redis://:hunter2@10.0.0.9:6379/0",
                  "TRAINER_API_TOKEN": "worker-secret", "AWS_SECRET_ACCESS_KEY": "cloud-secret",
                  "CELERY_BROKER_URL": "redis://x", "SOME_OTHER_SECRET": "s"}
    backend = LocalBackend(root / "jobs", terminate_grace_s=2, base_env=worker_env)
    backend.create(job)
    log = backend.log_files("team-a", job["metadata"]["name"])[0]
    deadline = time.monotonic() + 60
    while "REPORT" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.2)
    report = json.loads(log.read_text().split("REPORT ", 1)[1].splitlines()[0])
    text = json.dumps(report)
    for secret in ("hunter2", "worker-secret", "cloud-secret", "redis://x"):
        assert secret not in text
    assert not {"REDIS_URL", "TRAINER_API_TOKEN", "AWS_SECRET_ACCESS_KEY", "SOME_OTHER_SECRET"} & set(report["env"])
    assert report["env"]["APP_X"] == "$(TRAINER_API_TOKEN)" and report["env"]["MODEL_ID"] == "$(REDIS_URL)"
    argv = report["argv"]
    assert "--note=--logs-uri=s3://elsewhere" in argv and "--flag=--resume" in argv
    assert "--tag=$(AWS_SECRET_ACCESS_KEY)" in argv
    config = parse_config(argv, report["env"])  # what train.py makes of exactly that argv and env
    assert config.logs_uri == f"{record.checkpoint_prefix}/logs" and config.resume is False
    assert config.extra["note"] == "--logs-uri=s3://elsewhere" and config.extra["flag"] == "--resume"
    assert config.extra["tag"] == "$(AWS_SECRET_ACCESS_KEY)"


def test_the_rendered_pod_is_restricted_and_mounts_no_api_token(app: Flask, client: FlaskClient, root: Path) -> None:
    record = _stored(app, client, request_for(root, "team-a", run_id="pod"))
    pod = render_pytorchjob(record, app.config["SETTINGS"].broker)["spec"]["pytorchReplicaSpecs"]["Master"]
    spec = pod["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False and spec["securityContext"]["runAsNonRoot"] is True
    security = spec["containers"][0]["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["capabilities"] == {"drop": ["ALL"]}
    relaxed = BrokerSettings.from_env({"TRAINER_TENANTS": json.dumps({"team-a": {
        "namespaces": ["team-a"], "storage_roots": [str(root)], "allow_root": True, "service_account": "irsa-a"}})})
    spec = render_pytorchjob(record, relaxed)["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert "runAsNonRoot" not in spec["securityContext"] and spec["serviceAccountName"] == "irsa-a"
    assert spec["automountServiceAccountToken"] is False
    assert spec["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}


BASE = ["--framework", "hf", "--run-id", "r1", "--checkpoint-base-uri", "/runs", "--dataset-uri", "/d.jsonl",
        "--model-id", "m"]


@pytest.mark.parametrize(("extra", "why"), [
    (["--checkpoint-prefix", "/runs/other/framework=hf"], "outside the run's own prefix"),
    (["--logs-uri", "s3://elsewhere/logs"], "outside the run's prefix"),
    (["--work-dir", "relative/dir"], "work_dir must be an absolute path"),
    (["--work-dir", "/tmp/../etc"], "work_dir must be an absolute path"),
    (["--", "--logs-uri=/x"], "names one of the run's own settings"),
])
def test_the_trainer_refuses_paths_outside_its_run(extra: list[str], why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        parse_config([*BASE, *extra], {})


def test_train_py_exits_2_for_a_dot_dot_run_id() -> None:
    argv = [sys.executable, "-m", "trainer", "--framework", "hf", "--run-id", "..", "--checkpoint-base-uri", "/runs",
            "--dataset-uri", "/d.jsonl", "--model-id", "m"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "run_id must not be" in result.stderr
