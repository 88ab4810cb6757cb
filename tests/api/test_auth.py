"""X-TRAINER-TOKEN: required on every route but the probes and /metrics; rotation; no token, no start."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from api.app import create_app
from api.auth import token_ok
from broker.settings import SettingsError
from tests.api.conftest import SEED_SAMPLE

PROTECTED = [("get", "/train"), ("post", "/train"), ("get", "/train/x"), ("get", "/train/x/events"),
             ("post", "/train/x/cancel"), ("post", "/train/x/retry"), ("get", "/openapi.json"), ("get", "/nowhere")]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_a_missing_token_is_401_and_a_wrong_one_403(client: FlaskClient, method: str, path: str) -> None:
    missing = getattr(client, method)(path, json=SEED_SAMPLE)
    assert missing.status_code == 401 and missing.get_json()["error"]["code"] == "unauthorized"
    wrong = getattr(client, method)(path, json=SEED_SAMPLE, headers={"X-TRAINER-TOKEN": "token-c"})
    assert wrong.status_code == 403 and wrong.get_json()["error"]["code"] == "forbidden"


def test_every_configured_token_is_accepted_during_a_rotation(client: FlaskClient) -> None:
    for token in ("token-a", "token-b"):
        assert client.get("/train", headers={"X-TRAINER-TOKEN": token}).status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_probes_and_metrics_need_no_token(client: FlaskClient, path: str) -> None:
    assert client.get(path).status_code == 200


def test_without_a_token_the_api_refuses_to_start(redis_url: str) -> None:
    with pytest.raises(SettingsError, match="TRAINER_API_TOKEN"):
        create_app({"ENVIRON": {"REDIS_URL": redis_url, "TRAINER_CLUSTER_BACKEND": "local"}})
    with pytest.raises(SettingsError):
        blank = {"REDIS_URL": redis_url, "TRAINER_API_TOKEN": " , ", "TRAINER_CLUSTER_BACKEND": "local"}
        create_app({"ENVIRON": blank})


def test_authentication_can_be_disabled_explicitly(redis_url: str) -> None:
    env = {"REDIS_URL": redis_url, "TRAINER_AUTH_DISABLED": "1", "TRAINER_CLUSTER_BACKEND": "local"}
    client = create_app({"ENVIRON": env}).test_client()
    assert client.get("/train").status_code == 200


def test_token_comparison_handles_any_header_text() -> None:
    assert token_ok("token-a", ("token-b", "token-a"))
    assert not token_ok("tökén\udcff", ("token-a",))
    assert not token_ok("", ("token-a",))

