"""API test fixtures: a fresh app per test on the session's real Redis, and a reader of the Celery queue."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from api.app import create_app
from broker.store import JobStore

TOKEN = "token-a"
AUTH = {"X-TRAINER-TOKEN": TOKEN}

#: The product's sample request (8B model, 2 nodes x 8 GPUs), as a platform team sends it.
SEED_SAMPLE: dict[str, Any] = {
    "framework": "nemo",
    "model_id": "nemotron-8b-fx",
    "num_nodes": 2,
    "gpus_per_node": 8,
    "cpus_per_node": 48,
    "memory_per_node_gb": 512,
    "image": "ghcr.io/deepfinery/trainer:latest",
    "run_id": "fx_ruleset_v3_2025_11_26_01",
    "checkpoint_base_uri": "s3://deepfinery-training/runs",
    "dataset_uri": "s3://deepfinery-datasets/fx/v3/",
    "resume_from_checkpoint": True,
    "extra_args": {"max_steps": 50000, "lr": 3e-5, "batch_size": 128},
}


def sample(**overrides: Any) -> dict[str, Any]:
    body = copy.deepcopy(SEED_SAMPLE)
    body.update(overrides)
    return body


def api_env(redis_url: str, **extra: str) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "TRAINER_API_TOKEN": f"{TOKEN},token-b", "TRAINER_CLUSTER_BACKEND": "local",
            **extra}


@pytest.fixture
def app(redis_url: str) -> Flask:
    return create_app({"ENVIRON": api_env(redis_url), "TESTING": True})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def store(app: Flask) -> JobStore:
    return app.extensions["job_store"]  # type: ignore[no-any-return]


def queued_tasks(client: redis.Redis, queue: str = "celery") -> list[tuple[str, list[Any]]]:
    """(task name, args) of every Celery message waiting in `queue` of the test Redis, oldest first."""
    out = []
    for raw in reversed(client.lrange(queue, 0, -1)):  # type: ignore[union-attr]
        message = json.loads(raw)
        args = json.loads(base64.b64decode(message["body"]))[0]
        out.append((message["headers"]["task"], args))
    return out


@pytest.fixture
def tasks(redis_client: redis.Redis) -> Iterator[Any]:
    yield lambda: queued_tasks(redis_client)
