"""Tenants: a token holder sees, cancels and retries only its own jobs, only in its namespaces and storage roots."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from flask.testing import FlaskClient

from devstack import free_port
from tests.security.conftest import OPS, A, B, request_for, tenants_env

ROOT = Path(__file__).resolve().parents[2]


def test_a_tenant_sees_lists_cancels_and_retries_only_its_own_jobs(client: FlaskClient, root: Path) -> None:
    mine = client.post("/train", json=request_for(root, "team-a"), headers=A)
    theirs = client.post("/train", json=request_for(root, "team-b", run_id="rb"), headers=B)
    assert mine.status_code == 202 and theirs.status_code == 202, (mine.json, theirs.json)
    other = theirs.json["name"]
    for method, path in [("get", f"/train/{other}"), ("get", f"/train/{other}/events"),
                         ("post", f"/train/{other}/cancel"), ("post", f"/train/{other}/retry"),
                         ("get", f"/train/{other}/progress"), ("get", f"/train/{other}/logs"),
                         ("get", f"/train/{other}/metrics")]:
        answer = getattr(client, method)(path, headers=A)
        assert answer.status_code == 404, (path, answer.json)
    assert client.get(f"/train/{other}", headers=B).json["status"] == "queued"  # untouched
    listed = [job["name"] for job in client.get("/train", headers=A).json["jobs"]]
    assert listed == [mine.json["name"]]
    everyone = {job["name"] for job in client.get("/train", headers=OPS).json["jobs"]}
    assert everyone == {mine.json["name"], other}
    assert client.post(f"/train/{other}/cancel", headers=OPS).status_code == 200


def test_a_rotated_token_maps_to_the_same_tenant(client: FlaskClient, root: Path) -> None:
    created = client.post("/train", json=request_for(root, "team-a"), headers=A).json["name"]
    assert client.get(f"/train/{created}", headers={"X-TRAINER-TOKEN": "tok-team-a-next"}).status_code == 200


def test_a_namespace_or_storage_outside_the_tenant_is_403_naming_the_field(client: FlaskClient, root: Path) -> None:
    cases = {
        "namespace": request_for(root, "team-a", namespace="team-b"),
        "checkpoint_base_uri": request_for(root, "team-a", checkpoint_base_uri=f"{root}/b/runs"),
        "dataset_uri": request_for(root, "team-a", dataset_uri="s3://team-b-data/x.jsonl"),
    }
    for field, body in cases.items():
        answer = client.post("/train", json=body, headers=A)
        assert answer.status_code == 403 and field in answer.json["error"]["fields"], (field, answer.json)
    sibling = request_for(root, "team-a", checkpoint_base_uri=f"{root}/ab/runs")  # a prefix, not a parent
    assert client.post("/train", json=sibling, headers=A).status_code == 403


def test_a_job_name_held_by_another_tenant_is_409_without_its_details(client: FlaskClient, root: Path) -> None:
    body = request_for(root, "team-b", run_id="same", job_name="shared-name")
    assert client.post("/train", json=body, headers=B).status_code == 202
    clash = client.post("/train", json=request_for(root, "team-a", run_id="same", job_name="shared-name"), headers=A)
    assert clash.status_code == 409 and "team-b" not in clash.get_data(as_text=True)
    assert str(root) not in clash.get_data(as_text=True)


def test_the_tenant_job_cap_is_429_with_retry_after(client: FlaskClient, root: Path) -> None:
    for i in range(3):
        assert client.post("/train", json=request_for(root, "team-a", run_id=f"c{i}"), headers=A).status_code == 202
    full = client.post("/train", json=request_for(root, "team-a", run_id="c3"), headers=A)
    assert full.status_code == 429 and full.json["error"]["code"] == "too_many_jobs" and full.headers["Retry-After"]
    assert client.post("/train", json=request_for(root, "team-b", run_id="c3"), headers=B).status_code == 202


def test_gunicorn_serves_tenants_and_a_single_token_deployment_still_works(redis_url: str, tmp_path: Path) -> None:
    def serve(env: dict[str, str]) -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        clean = {k: v for k, v in os.environ.items() if not k.startswith("TRAINER_")}
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", "1",
                                 "api.app:create_app()"], cwd=ROOT, env={**clean, **env},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base}/healthz", timeout=2).ok:
                    return base, proc
            except (requests.ConnectionError, requests.Timeout):  # still importing the app
                time.sleep(0.2)
        proc.terminate()
        raise RuntimeError("gunicorn did not start")

    base, proc = serve(tenants_env(redis_url, tmp_path))
    try:
        body = request_for(tmp_path, "team-b", run_id="http")
        assert requests.post(f"{base}/train", json=body, headers=A, timeout=10).status_code == 403
        created = requests.post(f"{base}/train", json=body, headers=B, timeout=10)
        assert created.status_code == 202
        assert requests.get(f"{base}/train/{created.json()['name']}", headers=A, timeout=10).status_code == 404
    finally:
        proc.terminate()
        proc.wait(20)
    legacy = {"REDIS_URL": redis_url, "TRAINER_API_TOKEN": "old-token", "TRAINER_CLUSTER_BACKEND": "local"}
    base, proc = serve(legacy)
    try:
        headers = {"X-TRAINER-TOKEN": "old-token"}
        body = request_for(tmp_path, "team-b", run_id="legacy", namespace="anything")
        assert requests.post(f"{base}/train", json=body, headers=headers, timeout=10).status_code == 202
        jobs = requests.get(f"{base}/train", headers=headers, timeout=10).json()["jobs"]
        assert "hf-legacy" in [j["name"] for j in jobs]
        assert requests.get(f"{base}/train/hf-legacy", headers=headers, timeout=10).status_code == 200
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.mark.parametrize("bad", ["..", "."])
def test_run_id_dot_segments_are_refused(client: FlaskClient, root: Path, bad: str) -> None:
    answer = client.post("/train", json=request_for(root, "team-a", run_id=bad), headers=A)
    assert answer.status_code == 400 and "run_id" in answer.json["error"]["fields"]
