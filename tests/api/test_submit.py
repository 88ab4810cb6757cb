"""POST /train: the seed's request is accepted, stored before it is enqueued, idempotent, and never lost."""

from __future__ import annotations

import threading
from typing import Any

import redis
from flask import Flask
from flask.testing import FlaskClient

from api.app import create_app
from api.enqueue import CeleryEnqueuer
from api.settings import ApiSettings
from broker.jobs import JobStatus, default_job_name
from broker.names import SUBMIT_TASK
from broker.settings import BrokerSettings
from broker.store import JobStore
from devstack import free_port
from tests.api.conftest import AUTH, SEED_SAMPLE, api_env, sample

SEED_NAME = default_job_name("nemo", "fx_ruleset_v3_2025_11_26_01")


def test_the_seed_sample_is_accepted_as_is_stored_and_enqueued(client: FlaskClient, store: JobStore,
                                                                 tasks: Any) -> None:
    response = client.post("/train", json=SEED_SAMPLE, headers=AUTH)
    assert response.status_code == 202
    assert response.headers["Location"] == f"/train/{SEED_NAME}"
    body = response.get_json()
    assert body["name"] == SEED_NAME and body["status"] == "queued" and body["attempt"] == 1
    assert body["framework"] == "nemo" and body["run_id"] == "fx_ruleset_v3_2025_11_26_01"
    assert body["namespace"] == "default" and body["resume_from_checkpoint"] is True
    assert body["checkpoint_prefix"] == "s3://deepfinery-training/runs/fx_ruleset_v3_2025_11_26_01/framework=nemo"
    stored = store.require(SEED_NAME)
    assert stored.spec.dataset_uri == "s3://deepfinery-datasets/fx/v3"  # trailing slash normalised away
    assert stored.spec.extra_args == {"max_steps": 50000, "lr": 3e-5, "batch_size": 128}
    assert tasks() == [(SUBMIT_TASK, [SEED_NAME])]
    assert client.get(f"/train/{SEED_NAME}", headers=AUTH).get_json() == body


def test_posting_the_same_request_again_returns_the_same_job_and_enqueues_nothing(client: FlaskClient,
                                                                                  tasks: Any) -> None:
    first = client.post("/train", json=SEED_SAMPLE, headers=AUTH)
    again = client.post("/train", json=sample(), headers=AUTH)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.get_json() == first.get_json()
    assert len(tasks()) == 1


def test_the_same_name_with_a_different_request_is_a_conflict_naming_the_job(client: FlaskClient) -> None:
    client.post("/train", json=SEED_SAMPLE, headers=AUTH)
    response = client.post("/train", json=sample(num_nodes=4), headers=AUTH)
    assert response.status_code == 409
    error = response.get_json()["error"]
    assert error["code"] == "conflict" and error["job"] == SEED_NAME and SEED_NAME in error["message"]


def test_concurrent_identical_posts_create_one_job(app: Flask, store: JobStore, tasks: Any) -> None:
    codes: list[int] = []
    barrier = threading.Barrier(6)

    def post() -> None:
        own_client = app.test_client()
        barrier.wait()
        codes.append(own_client.post("/train", json=SEED_SAMPLE, headers=AUTH).status_code)

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(codes) == [200] * 5 + [202]
    assert len(store.events(SEED_NAME)) == 1
    assert tasks() == [(SUBMIT_TASK, [SEED_NAME])]


def test_defaults_fill_namespace_job_name_and_resources(redis_url: str) -> None:
    app = create_app({"ENVIRON": api_env(redis_url, TRAINER_NAMESPACE="ml-team")})
    body = {k: SEED_SAMPLE[k] for k in ("framework", "model_id", "run_id", "checkpoint_base_uri", "dataset_uri")}
    response = app.test_client().post("/train", json=body, headers=AUTH)
    assert response.status_code == 202
    job = app.extensions["job_store"].require(SEED_NAME)
    assert job.namespace == "ml-team" and job.spec.job_name == SEED_NAME
    assert (job.spec.num_nodes, job.spec.gpus_per_node, job.spec.image) == (1, 1, "ghcr.io/deepfinery/trainer:latest")
    assert response.get_json()["resume_from_checkpoint"] is False


def test_an_explicit_job_name_and_namespace_are_used(client: FlaskClient) -> None:
    response = client.post("/train", json=sample(job_name="fx-run", namespace="team-a"), headers=AUTH)
    assert response.status_code == 202
    assert response.headers["Location"] == "/train/fx-run"
    assert response.get_json()["namespace"] == "team-a"


def test_an_unreachable_broker_leaves_the_job_queued_and_still_accepts(redis_url: str, redis_client: redis.Redis
                                                                       ) -> None:
    dead_broker = CeleryEnqueuer(BrokerSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    app = create_app({"ENVIRON": api_env(redis_url), "ENQUEUE": dead_broker})
    response = app.test_client().post("/train", json=SEED_SAMPLE, headers=AUTH)
    assert response.status_code == 202
    store: JobStore = app.extensions["job_store"]
    assert store.require(SEED_NAME).status == JobStatus.QUEUED
    assert store.stale_queued(older_than_s=0) == [SEED_NAME]  # what the broker's periodic re-enqueue picks up
    assert redis_client.llen("celery") == 0


def test_redis_down_answers_503_with_retry_after() -> None:
    settings = ApiSettings.from_env({"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "TRAINER_API_TOKEN": "t",
                                     "TRAINER_CLUSTER_BACKEND": "local", "TRAINER_RETRY_AFTER_S": "7"})
    client = create_app({"SETTINGS": settings}).test_client()
    for response in (client.post("/train", json=SEED_SAMPLE, headers={"X-TRAINER-TOKEN": "t"}),
                     client.get("/train", headers={"X-TRAINER-TOKEN": "t"}),
                     client.get("/readyz")):
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "7"
        assert response.get_json()["error"]["code"] == "unavailable"
    assert client.get("/healthz").status_code == 200
