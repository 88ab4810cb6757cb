"""API test fixtures: a fresh app per test on the session's real Redis, and a reader of the Celery queue."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from api.app import create_app
from broker.store import JobStore
from devstack.samples import sample_request

TOKEN = "token-a"
AUTH = {"X-TRAINER-TOKEN": TOKEN}

#: The product's sample request, docs/examples/request.json.
SEED_SAMPLE: dict[str, Any] = sample_request()


def sample(**overrides: Any) -> dict[str, Any]:
    return sample_request(**overrides)


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
