"""Attack-suite fixtures: a multi-tenant API on the session's real Redis, and the broker's emulator fixtures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api.app import create_app
from tests.broker.conftest import ctx, emulator, emulator_server, enqueued, kube, settings, sleeps  # noqa: F401

A, B, OPS = {"X-TRAINER-TOKEN": "tok-team-a"}, {"X-TRAINER-TOKEN": "tok-team-b"}, {"X-TRAINER-TOKEN": "tok-ops"}


def tenants_env(redis_url: str, root: Path, **extra: str) -> dict[str, str]:
    tenants = {
        "team-a": {"namespaces": ["team-a"], "storage_roots": [f"{root}/a", "s3://team-a-runs"],
                   "quotas": {"team-a": {"gpus": 16, "jobs": 4}}, "max_jobs": 3},
        "team-b": {"namespaces": ["team-b"], "storage_roots": [f"{root}/b"],
                   "quotas": {"team-b": {"gpus": 8, "jobs": 2}}},
    }
    return {"REDIS_URL": redis_url, "TRAINER_CLUSTER_BACKEND": "local", "TRAINER_LOCAL_WORKDIR": str(root / "jobs"),
            "TRAINER_TENANTS": json.dumps(tenants),
            "TRAINER_TENANT_TOKENS": json.dumps({"team-a": ["tok-team-a", "tok-team-a-next"],
                                                 "team-b": ["tok-team-b"]}),
            "TRAINER_OPERATOR_TOKEN": "tok-ops", **extra}


def request_for(root: Path, tenant: str, run_id: str = "r1", **overrides: Any) -> dict[str, Any]:
    body = {"framework": "hf", "model_id": "tiny", "run_id": run_id, "num_nodes": 1, "gpus_per_node": 0,
            "checkpoint_base_uri": f"{root}/{tenant[-1]}/runs", "dataset_uri": f"{root}/{tenant[-1]}/data.jsonl",
            "namespace": tenant}
    body.update(overrides)
    return body


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def app(redis_url: str, root: Path) -> Flask:
    return create_app({"ENVIRON": tenants_env(redis_url, root), "TESTING": True, "ENQUEUE": lambda t, n: True,
                       "PROGRESS_CACHE_S": 0})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
