"""Progress and logs are read on demand from the run's storage (or the local backend's replica logs)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api.app import create_app
from broker import run_files
from broker.backends.local import LocalBackend  # the worker side: it runs the job whose logs the API reads
from broker.store import JobStore
from devstack import free_port
from devstack.s3 import S3Server
from tests.api.conftest import AUTH, api_env, sample


def make_client(redis_url: str, workdir: Path, **config: Any) -> tuple[FlaskClient, JobStore]:
    env = api_env(redis_url, TRAINER_LOCAL_WORKDIR=str(workdir))
    app: Flask = create_app({"ENVIRON": env, "TESTING": True, **config})
    return app.test_client(), app.extensions["job_store"]


def submit(client: FlaskClient, base_uri: str) -> dict[str, Any]:
    body = sample(framework="hf", checkpoint_base_uri=base_uri, dataset_uri="/data/fx.jsonl", num_nodes=1,
                  gpus_per_node=0)
    response = client.post("/train", json=body, headers=AUTH)
    assert response.status_code == 202, response.json
    return response.json  # type: ignore[no-any-return]


def write_progress(job: dict[str, Any], step: int) -> None:
    logs = Path(job["checkpoint_prefix"]) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    progress = {"step": step, "total_steps": 40, "loss": 2.5, "state": "running", "updated_at": "2026-11-29T05:00:00Z"}
    (logs / "progress.json").write_text(json.dumps(progress))


@pytest.fixture
def client_store(redis_url: str, tmp_path: Path) -> tuple[FlaskClient, JobStore]:
    return make_client(redis_url, tmp_path / "jobs", PROGRESS_CACHE_S=0)


def test_progress_is_the_runs_latest_progress_json(client_store: tuple[FlaskClient, JobStore], tmp_path: Path) -> None:
    client, _ = client_store
    job = submit(client, str(tmp_path / "runs"))
    write_progress(job, 10)
    first = client.get(f"/train/{job['name']}/progress", headers=AUTH)
    write_progress(job, 20)
    second = client.get(f"/train/{job['name']}/progress", headers=AUTH)
    assert first.status_code == 200 and first.json["progress"]["step"] == 10
    assert second.json["progress"] == {**first.json["progress"], "step": 20}
    assert second.json["name"] == job["name"] and second.json["status"] == "queued"


def test_progress_is_cached_briefly_in_process(redis_url: str, tmp_path: Path) -> None:
    client, _ = make_client(redis_url, tmp_path / "jobs", PROGRESS_CACHE_S=3600)
    job = submit(client, str(tmp_path / "runs"))
    write_progress(job, 10)
    assert client.get(f"/train/{job['name']}/progress", headers=AUTH).json["progress"]["step"] == 10
    write_progress(job, 20)
    assert client.get(f"/train/{job['name']}/progress", headers=AUTH).json["progress"]["step"] == 10


def test_no_progress_yet_and_unknown_jobs_are_404(client_store: tuple[FlaskClient, JobStore], tmp_path: Path) -> None:
    client, _ = client_store
    job = submit(client, f"file://{tmp_path}/runs")
    missing = client.get(f"/train/{job['name']}/progress", headers=AUTH)
    assert missing.status_code == 404 and missing.json["error"]["code"] == "not_found"
    assert client.get("/train/nope/progress", headers=AUTH).status_code == 404
    assert client.get("/train/nope/logs", headers=AUTH).status_code == 404
    assert client.get(f"/train/{job['name']}/logs", headers=AUTH).status_code == 404


def test_progress_and_logs_need_the_token(client_store: tuple[FlaskClient, JobStore], tmp_path: Path) -> None:
    client, _ = client_store
    job = submit(client, str(tmp_path / "runs"))
    assert client.get(f"/train/{job['name']}/progress").status_code == 401
    assert client.get(f"/train/{job['name']}/logs", headers={"X-TRAINER-TOKEN": "wrong"}).status_code == 403


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    server = S3Server().start()
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    run_files._s3.cache_clear()
    yield server
    run_files._s3.cache_clear()
    server.stop()


def test_progress_and_logs_come_from_s3(client_store: tuple[FlaskClient, JobStore], s3_env: S3Server) -> None:
    client, _ = client_store
    bucket = s3_env.new_bucket()
    job = submit(client, f"s3://{bucket}/runs")
    prefix = job["checkpoint_prefix"].removeprefix(f"s3://{bucket}/")
    s3 = s3_env.client()
    s3.put_object(Bucket=bucket, Key=f"{prefix}/logs/progress.json", Body=json.dumps({"step": 7, "total_steps": 9}))
    lines = "".join(f"line {i}\n" for i in range(50))
    s3.put_object(Bucket=bucket, Key=f"{prefix}/logs/train-rank0.log", Body=lines.encode())
    s3.put_object(Bucket=bucket, Key=f"{prefix}/logs/metrics.jsonl", Body=b"{}\n")

    assert client.get(f"/train/{job['name']}/progress", headers=AUTH).json["progress"]["step"] == 7
    logs = client.get(f"/train/{job['name']}/logs?tail=3", headers=AUTH).json
    assert logs["source"] == "storage"
    assert logs["logs"] == [{"file": "train-rank0.log", "text": "line 47\nline 48\nline 49\n"}]


def test_unreachable_storage_is_503(
    client_store: tuple[FlaskClient, JobStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _ = client_store
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    run_files._s3.cache_clear()
    try:
        job = submit(client, "s3://nowhere-bucket/runs")
        for path in ("progress", "logs"):
            response = client.get(f"/train/{job['name']}/{path}", headers=AUTH)
            assert response.status_code == 503 and response.json["error"]["code"] == "storage_unavailable"
            assert response.headers["Retry-After"]
    finally:
        run_files._s3.cache_clear()


def test_logs_of_a_local_job_are_its_replica_logs_tailed(
    client_store: tuple[FlaskClient, JobStore], tmp_path: Path
) -> None:
    client, store = client_store
    job = submit(client, str(tmp_path / "runs"))
    store.update(job["name"], cluster_object=job["name"])
    backend = LocalBackend(tmp_path / "jobs")
    container = {"name": "pytorch", "image": "x", "command": [sys.executable, "-c", "for i in range(30): print(i)"]}
    replica = {"replicas": 1, "template": {"spec": {"containers": [container]}}}
    backend.create({"metadata": {"name": job["name"], "namespace": job["namespace"]},
                    "spec": {"pytorchReplicaSpecs": {"Master": replica, "Worker": replica}}})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = backend.get(job["namespace"], job["name"])
        if status and all(r["active"] == 0 for r in status["status"]["replicaStatuses"].values()):
            break
        time.sleep(0.1)

    body = client.get(f"/train/{job['name']}/logs?tail=2", headers=AUTH).json
    assert body["source"] == "local" and [e["file"] for e in body["logs"]] == ["master-0.log", "worker-0.log"]
    assert body["logs"][0]["text"].splitlines()[0] == "29"  # the supervisor's closing line follows
    assert client.get(f"/train/{job['name']}/logs?tail=0", headers=AUTH).status_code == 400
    assert client.get(f"/train/{job['name']}/logs?tail=x", headers=AUTH).json["error"]["fields"]["tail"]
