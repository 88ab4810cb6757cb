"""Operations endpoints: health, readiness, Prometheus metrics, and the generated OpenAPI document."""

from __future__ import annotations

import re

import pytest
from flask.testing import FlaskClient

from api.app import create_app
from api.openapi import build_spec
from api.schemas import TrainingJobRequestSchema, TrainingJobStatusSchema
from broker.jobs import JobStatus
from broker.store import JobStore
from tests.api.conftest import AUTH, SEED_SAMPLE, api_env


def test_healthz_and_readyz_answer_when_redis_is_up(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json() == {"status": "ready"}


def test_metrics_count_requests_by_route_and_status_and_jobs_by_status(client: FlaskClient, store: JobStore) -> None:
    name = client.post("/train", json=SEED_SAMPLE, headers=AUTH).get_json()["name"]
    store.transition(name, JobStatus.ADMITTED, reason="ok")
    client.get("/train/missing", headers=AUTH)
    client.get("/train")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'trainer_http_requests_total{method="POST",route="/train",status="202"} 1.0' in text
    assert 'trainer_http_requests_total{method="GET",route="/train/<name>",status="404"} 1.0' in text
    assert 'trainer_http_requests_total{method="GET",route="/train",status="401"} 1.0' in text
    assert 'trainer_http_request_duration_seconds_bucket{le="+Inf",method="POST",route="/train"} 1.0' in text
    assert 'trainer_jobs{status="admitted"} 1.0' in text and 'trainer_jobs{status="queued"} 0.0' in text


def test_openapi_is_generated_from_the_validating_schemas(redis_url: str) -> None:
    app = create_app({"ENVIRON": api_env(redis_url, TRAINER_MAX_NODES="16")})
    document = app.test_client().get("/openapi.json", headers=AUTH).get_json()
    assert document["openapi"].startswith("3.")
    request = document["components"]["schemas"]["TrainingJobRequest"]
    assert set(request["properties"]) == set(TrainingJobRequestSchema().fields)
    assert set(request["required"]) == {"framework", "model_id", "run_id", "checkpoint_base_uri", "dataset_uri"}
    assert request["additionalProperties"] is False
    assert request["properties"]["num_nodes"]["maximum"] == 16  # the configured limit, as enforced
    assert request["properties"]["framework"]["enum"] == ["nemo", "hf", "meta"]
    status = document["components"]["schemas"]["TrainingJobStatus"]
    assert set(status["properties"]) == set(TrainingJobStatusSchema().fields)
    assert {"/train", "/train/{name}", "/train/{name}/events", "/train/{name}/cancel",
            "/train/{name}/retry"} <= set(document["paths"])
    assert document["components"]["securitySchemes"]["token"]["name"] == "X-TRAINER-TOKEN"


def test_openapi_describes_every_rule_of_the_url_map_and_refuses_an_undescribed_one(redis_url: str) -> None:
    app = create_app({"ENVIRON": api_env(redis_url)})
    document = app.test_client().get("/openapi.json", headers=AUTH).get_json()
    served = {(m.lower(), re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule))
              for rule in app.url_map.iter_rules() for m in (rule.methods or set()) - {"HEAD", "OPTIONS"}}
    assert served == {(m, path) for path, ops in document["paths"].items() for m in ops}
    assert document["paths"]["/train/{name}/logs"]["get"]["parameters"][0]["name"] == "name"
    assert document["paths"]["/ui/"]["get"]["security"] == []
    assert set(document["paths"]["/openapi.json"]["get"]["responses"]) == {"200", "401", "403"}
    fresh = create_app({"ENVIRON": api_env(redis_url)})
    fresh.add_url_rule("/undescribed", "undescribed", lambda: "")
    with pytest.raises(LookupError, match="/undescribed"):
        build_spec(fresh, TrainingJobRequestSchema())
