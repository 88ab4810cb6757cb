"""Validation: every bad request is a 400 naming the field (or 413 / malformed JSON), never a 5xx."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from api.app import create_app
from broker.jobs import MAX_JOB_NAME, default_job_name
from tests.api.conftest import AUTH, api_env, sample


def post(client: FlaskClient, body: Any) -> Any:
    return client.post("/train", json=body, headers=AUTH)


def field_errors(response: Any) -> dict[str, Any]:
    assert response.status_code == 400, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "invalid_request" and error["message"]
    return error["fields"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"framework": "jax"}, "framework"),
        ({"model_id": ""}, "model_id"),
        ({"image": "Not An Image!"}, "image"),
        ({"image": ""}, "image"),
        ({"run_id": "has space"}, "run_id"),
        ({"run_id": "x" * 64}, "run_id"),
        ({"run_id": "run\n"}, "run_id"),
        ({"num_nodes": 0}, "num_nodes"),
        ({"num_nodes": 65}, "num_nodes"),
        ({"num_nodes": "2"}, "num_nodes"),
        ({"num_nodes": 1.5}, "num_nodes"),
        ({"num_nodes": True}, "num_nodes"),
        ({"gpus_per_node": -1}, "gpus_per_node"),
        ({"gpus_per_node": 9}, "gpus_per_node"),
        ({"cpus_per_node": 0}, "cpus_per_node"),
        ({"memory_per_node_gb": 0}, "memory_per_node_gb"),
        ({"checkpoint_base_uri": "http://example.com/runs"}, "checkpoint_base_uri"),
        ({"checkpoint_base_uri": "s3://Bad_Bucket/runs"}, "checkpoint_base_uri"),
        ({"checkpoint_base_uri": "s3://ab"}, "checkpoint_base_uri"),
        ({"checkpoint_base_uri": "s3://192.168.1.1/x"}, "checkpoint_base_uri"),
        ({"checkpoint_base_uri": "s3://bucket/a/../b"}, "checkpoint_base_uri"),
        ({"dataset_uri": "relative/path"}, "dataset_uri"),
        ({"dataset_uri": "file://relative"}, "dataset_uri"),
        ({"dataset_uri": "/"}, "dataset_uri"),
        ({"extra_args": {"1bad": 1}}, "extra_args"),
        ({"extra_args": {"nested": {"a": 1}}}, "extra_args"),
        ({"extra_args": {"listed": [1, [2]]}}, "extra_args"),
        ({"extra_args": []}, "extra_args"),
        ({"env": {"MASTER_ADDR": "x"}}, "env"),
        ({"env": {"PET_NNODES": "1"}}, "env"),
        ({"env": {"RUN_ID": "x"}}, "env"),
        ({"env": {"WORLD_SIZE": "4"}}, "env"),
        ({"env": {"TRAINING_EXTRA_ARGS_JSON": "{}"}}, "env"),
        ({"env": {"BAD-NAME": "x"}}, "env"),
        ({"env": {"OK": 1}}, "env"),
        ({"labels": {"training-broker.io/owner": "me"}}, "labels"),
        ({"labels": {"app.kubernetes.io/managed-by": "me"}}, "labels"),
        ({"labels": {"team": "has space"}}, "labels"),
        ({"labels": {"-bad": "x"}}, "labels"),
        ({"annotations": {"training-broker.io/x": "y"}}, "annotations"),
        ({"namespace": "Team_A"}, "namespace"),
        ({"job_name": "1starts-with-digit"}, "job_name"),
        ({"job_name": "x" * (MAX_JOB_NAME + 1)}, "job_name"),
        ({"resume_from_checkpoint": "perhaps"}, "resume_from_checkpoint"),
        ({"unknown_field": 1}, "unknown_field"),
    ],
)
def test_invalid_fields_are_refused_by_name(client: FlaskClient, overrides: dict[str, Any], field: str) -> None:
    assert field in field_errors(post(client, sample(**overrides)))


@pytest.mark.parametrize("missing", ["framework", "model_id", "run_id", "checkpoint_base_uri", "dataset_uri"])
def test_required_fields_are_named_when_missing(client: FlaskClient, missing: str) -> None:
    body = sample()
    del body[missing]
    assert missing in field_errors(post(client, body))


@pytest.mark.parametrize(
    ("uri", "stored"),
    [
        ("s3://bucket/runs/", "s3://bucket/runs"),
        ("s3://my.bucket-1", "s3://my.bucket-1"),
        ("s3://bucket/", "s3://bucket"),
        ("/data/runs/", "/data/runs"),
        ("file:///data/runs/", "file:///data/runs"),
    ],
)
def test_storage_uris_are_normalised(client: FlaskClient, uri: str, stored: str) -> None:
    response = post(client, sample(checkpoint_base_uri=uri, dataset_uri=uri))
    assert response.status_code == 202
    job = client.application.extensions["job_store"].require(response.get_json()["name"])
    assert job.spec.checkpoint_base_uri == stored and job.spec.dataset_uri == stored


def test_a_cpu_job_and_every_optional_field_are_accepted(client: FlaskClient) -> None:
    body = sample(
        framework="hf", gpus_per_node=0, num_nodes=1, image="registry.local:5000/team/trainer@sha256:" + "a" * 64,
        config_path="configs/fx.yaml", extra_args={"tags": ["a", "b"], "flag": True, "lr": 1e-4},
        env={"HF_HOME": "/cache", "WANDB_MODE": "offline"}, labels={"team": "fx", "example.com/cost-center": "42"},
        annotations={"example.com/note": "any text at all"}, namespace="team-a", job_name="fx-cpu",
    )
    response = post(client, body)
    assert response.status_code == 202, response.get_json()
    spec = client.application.extensions["job_store"].require("fx-cpu").spec
    assert spec.gpus_per_node == 0 and spec.env == {"HF_HOME": "/cache", "WANDB_MODE": "offline"}
    assert spec.labels == {"team": "fx", "example.com/cost-center": "42"}


def test_default_job_names_are_valid_and_distinct_for_long_run_ids(client: FlaskClient) -> None:
    long_a, long_b = "a" * 60 + "_x", "a" * 60 + "_y"
    names = {post(client, sample(run_id=run)).get_json()["name"] for run in (long_a, long_b)}
    assert names == {default_job_name("nemo", long_a), default_job_name("nemo", long_b)}
    assert all(len(name) <= MAX_JOB_NAME for name in names)


def test_limits_and_namespace_allow_list_come_from_settings(redis_url: str) -> None:
    env = api_env(redis_url, TRAINER_MAX_NODES="2", TRAINER_MAX_GPUS_PER_NODE="4",
                  TRAINER_ALLOWED_NAMESPACES="team-a,team-b")
    client = create_app({"ENVIRON": env}).test_client()
    assert "num_nodes" in field_errors(post(client, sample(num_nodes=3, namespace="team-a")))
    assert "gpus_per_node" in field_errors(post(client, sample(gpus_per_node=8, namespace="team-a")))
    assert "namespace" in field_errors(post(client, sample(gpus_per_node=4, namespace="team-c")))
    assert post(client, sample(gpus_per_node=4, namespace="team-b")).status_code == 202


@pytest.mark.parametrize("raw", [b"{", b"not json", b'{"a": NaN}', b"[" * 100000, b"\xff\xfe"])
def test_malformed_json_is_400(client: FlaskClient, raw: bytes) -> None:
    response = client.post("/train", data=raw, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "malformed_json"


@pytest.mark.parametrize("body", [[], "text", 3, None])
def test_a_body_that_is_not_an_object_is_400(client: FlaskClient, body: Any) -> None:
    response = client.post("/train", data=json.dumps(body), headers=AUTH)
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_request"


def test_a_lone_surrogate_is_refused_not_crashing(client: FlaskClient) -> None:
    response = client.post("/train", data=b'{"framework": "\\ud800"}', headers=AUTH)
    assert response.status_code == 400


def test_a_body_beyond_the_size_limit_is_413(redis_url: str) -> None:
    client = create_app({"ENVIRON": api_env(redis_url, TRAINER_MAX_BODY_BYTES="2048")}).test_client()
    body = sample(annotations={"example.com/note": "x" * 4000})
    response = client.post("/train", json=body, headers=AUTH)
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "request_entity_too_large"


def test_list_query_parameters_are_validated(client: FlaskClient) -> None:
    for query in ("limit=0", "limit=101", "limit=x", "status=done", "framework=jax", "cursor=%%%", "color=red"):
        response = client.get(f"/train?{query}", headers=AUTH)
        assert response.status_code == 400, query
