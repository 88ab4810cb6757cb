"""docs/API_SPEC.md says what the running API's /openapi.json says: routes, methods, response codes, the request's
fields (required or not, defaults) and the status fields."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import pytest
import requests

from broker.jobs import JobSpec, JobStatus
from tests.kit import support
from tests.kit.conftest import LiveApi
from tests.kit.test_postman import served_routes

DOC = support.ROOT / "docs" / "API_SPEC.md"
_ROUTE = re.compile(r"^### `(GET|POST|PUT|PATCH|DELETE) (/\S*)`$")
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture(scope="module")
def spec(live_api: LiveApi) -> dict[str, Any]:
    answer = requests.get(f"{live_api.url}/openapi.json", headers={"X-TRAINER-TOKEN": live_api.token}, timeout=10)
    assert answer.status_code == 200
    data: dict[str, Any] = answer.json()
    return data


def doc_routes() -> dict[tuple[str, str], list[str]]:
    """(METHOD, path) → the response codes its `Responses:` line lists."""
    routes: dict[tuple[str, str], list[str]] = {}
    current: tuple[str, str] | None = None
    for line in DOC.read_text().splitlines():
        match = _ROUTE.match(line)
        if match:
            current = (match[1], match[2])
            assert current not in routes, f"{current} is documented twice"
            routes[current] = []
        elif current and line.startswith("Responses:"):
            routes[current] = re.findall(r"`(\d{3})`", line)
    return routes


def spec_routes(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.upper(), path) for path, ops in spec["paths"].items() for m in ops if m in HTTP_METHODS}


def doc_table(heading: str) -> dict[str, list[str]]:
    """The rows of the table under `## heading`: first cell (field name) → the other cells."""
    text = DOC.read_text().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) > 1:
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_the_doc_lists_every_route_of_the_spec_and_no_other(spec: dict[str, Any]) -> None:
    assert set(doc_routes()) == spec_routes(spec)


def test_the_doc_lists_every_route_the_app_serves() -> None:
    assert set(doc_routes()) == served_routes()


def test_each_route_lists_the_response_codes_of_the_spec(spec: dict[str, Any]) -> None:
    for (method, path), codes in doc_routes().items():
        operation = spec["paths"].get(path, {}).get(method.lower())
        if operation is not None:
            assert codes == sorted(operation["responses"]), f"{method} {path}"


def test_the_request_table_has_every_field_and_which_are_required(spec: dict[str, Any]) -> None:
    schema = spec["components"]["schemas"]["TrainingJobRequest"]
    rows = doc_table("TrainingJobRequest")
    assert set(rows) == set(schema["properties"])
    required = {name for name, cells in rows.items() if cells[1] == "yes"}
    assert required == set(schema["required"])


def test_the_request_table_states_the_defaults_the_job_spec_applies() -> None:
    rows = doc_table("TrainingJobRequest")
    for field in dataclasses.fields(JobSpec):
        if field.default is not dataclasses.MISSING:
            default: Any = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            continue
        cell = rows[field.name][2]
        assert cell.startswith("`") and json.loads(cell.strip("`")) == default, f"{field.name}: {cell}"


def test_the_status_table_has_every_field_of_the_status(spec: dict[str, Any]) -> None:
    assert set(doc_table("TrainingJobStatus")) == set(spec["components"]["schemas"]["TrainingJobStatus"]["properties"])


def test_the_doc_names_every_lifecycle_state() -> None:
    text = DOC.read_text()
    missing = [s.value for s in JobStatus if s.value not in text]
    assert not missing


def test_the_metrics_the_doc_names_are_served(live_api: LiveApi) -> None:
    section = DOC.read_text().split("### `GET /metrics`", 1)[1].split("###", 1)[0]
    named = set(re.findall(r"`(trainer_\w+)", section))
    assert len(named) >= 3
    text = requests.get(f"{live_api.url}/metrics", timeout=10).text
    served = set(re.findall(r"^# TYPE (\w+)", text, re.M)) | set(re.findall(r"^(\w+)[{ ]", text, re.M))
    assert named <= served, f"not in /metrics: {sorted(named - served)}"
