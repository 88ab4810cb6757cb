"""Scheduling under tenants: `GET /queue` and the dry run keep a tenant to its own namespaces, storage and jobs;
a dry run renders the tenant's pod settings; the retention purge also clears what recovery keeps by a job's name."""

from __future__ import annotations

import json
import time
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient

from api.app import create_app
from broker.context import BrokerContext
from broker.dryrun import evaluate
from broker.jobs import JobSpec, JobStatus
from broker.quota import QuotaLedger
from broker.retention import purge_expired
from broker.store import JobStore
from broker.tenants import Tenant
from tests.security.conftest import OPS, A, B, request_for, tenants_env


def _waiting(app: Flask, client: FlaskClient, root: Path, tenant: str, run_id: str, headers: dict[str, str],
             namespace: str | None = None) -> str:
    """A job of `tenant` waiting for quota in its namespace's line (or `namespace`'s)."""
    body = request_for(root, tenant, run_id=run_id, **({"namespace": namespace} if namespace else {}))
    name: str = client.post("/train", json=body, headers=headers).json["name"]
    store: JobStore = app.extensions["job_store"]
    quota: QuotaLedger = app.extensions["quota"]
    store.transition(name, JobStatus.WAITING_QUOTA, reason="test: waits for quota")
    _, line, _ = store.keys.quota(namespace or tenant)
    store.redis.zadd(line, {name: int(time.time() * 1000)})
    assert name in quota.line(namespace or tenant)
    return name


def test_a_tenant_reads_the_queue_of_its_own_namespaces_only(app: Flask, client: FlaskClient, root: Path) -> None:
    theirs = _waiting(app, client, root, "team-b", "qb", B)
    mine = _waiting(app, client, root, "team-a", "qa", A)
    refused = client.get("/queue?namespace=team-b", headers=A)
    assert refused.status_code == 403 and "namespace" in refused.json["error"]["fields"], refused.json
    assert theirs not in refused.get_data(as_text=True)
    own = client.get("/queue?namespace=team-a", headers=A)
    assert own.status_code == 200 and [j["name"] for j in own.json["jobs"]] == [mine]
    assert [j["name"] for j in client.get("/queue?namespace=team-b", headers=B).json["jobs"]] == [theirs]
    assert [j["name"] for j in client.get("/queue?namespace=team-b", headers=OPS).json["jobs"]] == [theirs]


def test_a_dry_run_is_held_to_the_tenants_limits_like_a_submit(app: Flask, client: FlaskClient, root: Path) -> None:
    store: JobStore = app.extensions["job_store"]
    cases = {
        "namespace": request_for(root, "team-a", namespace="team-b"),
        "checkpoint_base_uri": request_for(root, "team-a", checkpoint_base_uri=f"{root}/b/runs"),
        "dataset_uri": request_for(root, "team-a", dataset_uri=f"{root}/b/data.jsonl"),
    }
    for field, body in cases.items():
        answer = client.post("/train?dry_run=true", json=body, headers=A)
        assert answer.status_code == 403 and field in answer.json["error"]["fields"], (field, answer.json)
    held = request_for(root, "team-b", run_id="same", job_name="shared-name")
    assert client.post("/train", json=held, headers=B).status_code == 202
    clash = client.post("/train?dry_run=true", headers=A,
                        json=request_for(root, "team-a", run_id="same", job_name="shared-name"))
    assert clash.status_code == 409 and "team-b" not in clash.get_data(as_text=True)
    assert "queued" not in clash.get_data(as_text=True)
    assert list(store.redis.scan_iter(match=f"{store.keys.prefix}dryrun:*")) == []  # nothing was parked


def test_a_dry_run_renders_the_tenants_pod_settings(ctx: BrokerContext, tmp_path: Path) -> None:
    relaxed = Tenant("team-a", ("ml",), (str(tmp_path),), allow_root=True, service_account="team-a-trainer")
    ctx.settings = ctx.settings.model_copy(update={"tenants": {"team-a": relaxed}})
    spec = JobSpec(framework="hf", model_id="tiny", run_id="dr", checkpoint_base_uri=f"{tmp_path}/runs",
                   dataset_uri=f"{tmp_path}/d.jsonl", namespace="ml", job_name="hf-dr")
    pod = evaluate(ctx, spec, "team-a")["object"]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert pod["serviceAccountName"] == "team-a-trainer" and "runAsNonRoot" not in pod["securityContext"]
    restricted = evaluate(ctx, spec, "")["object"]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert "serviceAccountName" not in restricted and restricted["securityContext"]["runAsNonRoot"] is True


def test_the_purge_also_clears_recovery_and_sync_entries(app: Flask, client: FlaskClient, root: Path) -> None:
    store: JobStore = app.extensions["job_store"]
    name = client.post("/train", json=request_for(root, "team-a", run_id="rec"), headers=A).json["name"]
    store.redis.zadd(store.keys.recovery_due, {name: int((time.time() + 600) * 1000)})
    store.redis.hset(store.keys.sync_nudged, name, json.dumps(time.time()))
    assert client.post(f"/train/{name}/cancel", headers=A).status_code == 200
    assert purge_expired(store, retention_s=3600, now=time.time() + 3601) == 1
    assert store.redis.zscore(store.keys.recovery_due, name) is None
    assert not store.redis.hexists(store.keys.sync_nudged, name)


def test_in_a_shared_namespace_another_tenants_job_ahead_is_counted_never_named(redis_url: str, root: Path) -> None:
    """Two tenants whose namespaces overlap wait in one line: the job status, the listing and `GET /queue` count the
    other tenant's job ahead but never name it; the operator sees its name."""
    shared = {"namespaces": ["shared"], "storage_roots": [str(root)]}
    tenants = {"team-a": shared | {"quotas": {"shared": {"gpus": 8, "jobs": 2}}}, "team-b": shared}
    environ = tenants_env(redis_url, root) | {"TRAINER_TENANTS": json.dumps(tenants)}
    app = create_app({"ENVIRON": environ, "TESTING": True, "ENQUEUE": lambda t, n: True, "PROGRESS_CACHE_S": 0})
    client = app.test_client()
    theirs = _waiting(app, client, root, "team-b", "qb", B, namespace="shared")
    mine = _waiting(app, client, root, "team-a", "qa", A, namespace="shared")
    store: JobStore = app.extensions["job_store"]
    info = {"admission": "builtin", "namespace": "shared", "position": 2, "ahead": 1, "ahead_jobs": [theirs]}
    store.update(mine, queue_info=json.dumps(info))

    answers = {
        "status": client.get(f"/train/{mine}", headers=A).json["queue"],
        "list": client.get("/train?status=waiting_quota", headers=A).json["jobs"][0]["queue"],
        "queue": client.get("/queue?namespace=shared", headers=A).json["jobs"][0]["queue"],
    }
    for where, queue in answers.items():
        assert queue["position"] == 2 and queue["ahead"] == 1, (where, queue)
        assert queue["ahead_jobs"] == [], (where, queue)
    assert client.get(f"/train/{mine}", headers=OPS).json["queue"]["ahead_jobs"] == [theirs]
