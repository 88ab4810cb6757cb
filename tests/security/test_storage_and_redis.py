"""Bounded, contained reads of a run's storage; bounded Redis; metrics and error bodies that leak nothing."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import redis
from flask import Flask
from flask.testing import FlaskClient

from api.app import create_app
from broker.retention import purge_expired
from broker.store import JobStore
from devstack import RedisServer
from tests.security.conftest import A, request_for, tenants_env


def _job(client: FlaskClient, root: Path, run_id: str, **overrides: object) -> tuple[str, Path]:
    created = client.post("/train", json=request_for(root, "team-a", run_id=run_id, **overrides), headers=A)
    assert created.status_code == 202, created.json
    logs = root / "a" / "runs" / run_id / "framework=hf" / "logs"
    logs.mkdir(parents=True)
    return created.json["name"], logs


def test_a_huge_progress_file_is_not_read_and_a_link_outside_is_not_followed(client: FlaskClient, root: Path) -> None:
    name, logs = _job(client, root, "big")
    (logs / "progress.json").write_text(json.dumps({"step": 1, "pad": "x" * 2_000_000}))
    answer = client.get(f"/train/{name}/progress", headers=A)
    assert answer.status_code == 422 and len(answer.get_data()) < 2000
    secret = root / "b" / "secret.json"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text(json.dumps({"step": 99, "token": "team-b-secret"}))
    (logs / "progress.json").unlink()
    os.symlink(secret, logs / "progress.json")
    os.symlink(secret, logs / "stolen.log")
    assert client.get(f"/train/{name}/progress", headers=A).status_code == 404
    assert "team-b-secret" not in client.get(f"/train/{name}/logs", headers=A).get_data(as_text=True)
    stolen_metrics = root / "b" / "metrics.jsonl"
    stolen_metrics.write_text(json.dumps({"step": 7, "loss": 0.5, "kind": "train"}) + "\n")
    os.symlink(stolen_metrics, logs / "metrics.jsonl")
    assert client.get(f"/train/{name}/metrics", headers=A).status_code == 404
    (logs / "train-rank0.log").write_bytes(b"old\n" * 2_000_000 + b"last line\n")
    tail = client.get(f"/train/{name}/logs?tail=1", headers=A).json
    assert tail["logs"] == [{"file": "train-rank0.log", "text": "last line\n"}]


def test_request_maps_have_a_total_size_limit(client: FlaskClient, root: Path) -> None:
    fat = {"annotations": {f"k{i}": "v" * 4000 for i in range(30)}}
    answer = client.post("/train", json=request_for(root, "team-a", **fat), headers=A)
    assert answer.status_code == 400 and "annotations" in answer.json["error"]["fields"]


def test_finished_jobs_expire_after_the_retention(app: Flask, client: FlaskClient, root: Path) -> None:
    store: JobStore = app.extensions["job_store"]
    name = client.post("/train", json=request_for(root, "team-a", run_id="old"), headers=A).json["name"]
    assert client.post(f"/train/{name}/cancel", headers=A).status_code == 200
    assert purge_expired(store, retention_s=3600) == 0
    assert client.get(f"/train/{name}/events", headers=A).status_code == 200  # history readable until then
    assert purge_expired(store, retention_s=3600, now=time.time() + 3601) == 1
    assert client.get(f"/train/{name}", headers=A).status_code == 404
    leftovers = [k for k in store.redis.scan_iter(match=f"{store.keys.prefix}*")
                 if store.redis.type(k) == "zset" and store.redis.zcard(k)]
    assert leftovers == [], leftovers  # no index still names it


def test_redis_out_of_memory_is_503_with_retry_after_and_readyz_says_so(tmp_path: Path) -> None:
    server = RedisServer().start()
    try:
        client = create_app({"ENVIRON": tenants_env(server.url(0), tmp_path), "ENQUEUE": lambda t, n: True}
                            ).test_client()
        assert client.get("/readyz").status_code == 200
        raw = redis.Redis.from_url(server.url(0))
        raw.config_set("maxmemory-policy", "noeviction")
        raw.config_set("maxmemory", str(int(raw.info("memory")["used_memory"]) + 1024))
        for i in range(200):
            try:
                raw.set(f"fill{i}", "x" * 50_000)
            except redis.ResponseError:
                break
        answer = client.post("/train", json=request_for(tmp_path, "team-a"), headers=A)
        assert answer.status_code == 503 and answer.headers["Retry-After"], answer.json
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.headers["Retry-After"]
        raw.config_set("maxmemory", "0")
        assert client.get("/readyz").status_code == 200
    finally:
        server.stop()


def test_made_up_methods_add_no_metric_series(client: FlaskClient) -> None:
    for i in range(20):
        client.open("/train", method=f"HACK{i}")
    exposition = client.get("/metrics").get_data(as_text=True)
    methods = {line.split('method="')[1].split('"')[0] for line in exposition.splitlines() if 'method="' in line}
    assert methods <= {"GET", "POST", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}


def test_unreachable_storage_answers_503_without_its_address(redis_url: str, tmp_path: Path,
                                                              monkeypatch: object) -> None:
    os.environ["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "x")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "x")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    from broker import run_files
    run_files._s3.cache_clear()
    try:
        client = create_app({"ENVIRON": tenants_env(redis_url, tmp_path), "ENQUEUE": lambda t, n: True,
                             "PROGRESS_CACHE_S": 0}).test_client()
        body = request_for(tmp_path, "team-a", checkpoint_base_uri="s3://team-a-runs/x",
                           dataset_uri="s3://team-a-runs/d.jsonl")
        name = client.post("/train", json=body, headers=A).json["name"]
        answer = client.get(f"/train/{name}/progress", headers=A)
        assert answer.status_code == 503 and "127.0.0.1:9" not in answer.get_data(as_text=True)
        assert "Traceback" not in answer.get_data(as_text=True)
    finally:
        del os.environ["AWS_ENDPOINT_URL"]
        run_files._s3.cache_clear()
