"""Property tests: whatever the body, the API answers a 2xx or a 4xx, never a 5xx."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.app import create_app
from tests.api.conftest import AUTH, SEED_SAMPLE, api_env

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from([*SEED_SAMPLE, "env", "labels", "annotations", "namespace", "job_name", "config_path"])
tricky_strings = st.sampled_from(
    ["", " ", "s3://", "s3://b/", "s3://bucket//x", "file://", "/", "//x", "a" * 300, "MASTER_PORT", "\x00",
     "ü", "training-broker.io/x", "0", "-1", "1e400", "null"]
)


@pytest.fixture(scope="module")
def fuzz_client(redis_server: Any) -> Any:
    return create_app({"ENVIRON": api_env(redis_server.url(3))}).test_client()


def assert_not_5xx(client: Any, body: bytes) -> None:
    response = client.post("/train", data=body, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code < 500, (body, response.get_json())
    assert response.get_json() is not None


common = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@common
@given(body=json_values)
def test_any_json_body_is_answered_without_a_5xx(fuzz_client: Any, body: Any) -> None:
    assert_not_5xx(fuzz_client, json.dumps(body).encode())


@common
@given(changes=st.dictionaries(field_names, json_values | tricky_strings, min_size=1, max_size=4),
       dropped=st.sets(st.sampled_from(list(SEED_SAMPLE)), max_size=2))
def test_the_sample_with_fields_changed_or_dropped_is_never_a_5xx(fuzz_client: Any, changes: dict[str, Any],
                                                                  dropped: set[str]) -> None:
    body = {k: v for k, v in SEED_SAMPLE.items() if k not in dropped} | changes
    assert_not_5xx(fuzz_client, json.dumps(body).encode())


@common
@given(key=st.text(max_size=40), value=json_values | tricky_strings,
       field=st.sampled_from(["extra_args", "env", "labels", "annotations"]))
def test_any_map_entry_is_never_a_5xx(fuzz_client: Any, key: str, value: Any, field: str) -> None:
    assert_not_5xx(fuzz_client, json.dumps({**SEED_SAMPLE, field: {key: value}}).encode())


@common
@given(raw=st.binary(max_size=200))
def test_any_bytes_are_never_a_5xx(fuzz_client: Any, raw: bytes) -> None:
    assert_not_5xx(fuzz_client, raw)


@common
@given(query=st.dictionaries(st.sampled_from(["status", "framework", "run_id", "namespace", "limit", "cursor", "x"]),
                             st.text(max_size=30), max_size=4),
       name=st.text(min_size=1, max_size=40).filter(lambda s: "/" not in s and s not in {".", ".."}))
def test_any_list_query_or_job_name_is_never_a_5xx(fuzz_client: Any, query: dict[str, str], name: str) -> None:
    assert fuzz_client.get("/train", query_string=query, headers=AUTH).status_code < 500
    for method, path in [("get", ""), ("get", "/events"), ("post", "/cancel"), ("post", "/retry")]:
        response = getattr(fuzz_client, method)(f"/train/{quote(name, safe='')}{path}", headers=AUTH)
        assert response.status_code < 500, (name, response.get_json())
