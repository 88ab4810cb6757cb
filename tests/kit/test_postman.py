"""The Postman collection names every route the API serves, and newman runs it, end to end, against a live API."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from typing import Any

import pytest

from api.app import create_app
from devstack.s3 import s3_client
from tests.kit import support
from tests.kit.conftest import BUCKET, LiveApi

COLLECTION = support.ROOT / "docs" / "postman" / "trainer-apis.postman_collection.json"
NEWMAN = support.ROOT / "node_modules" / ".bin" / "newman"


def served_routes() -> set[tuple[str, str]]:
    """(METHOD, /path/{param}) for every route of the real app (Flask's url map, static files aside)."""
    app = create_app({"ENVIRON": {"TRAINER_API_TOKEN": "kit", "REDIS_URL": "redis://127.0.0.1:1/0"}})
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        routes |= {(m, path) for m in (rule.methods or set()) - {"HEAD", "OPTIONS"}}
    return routes


def _requests(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for item in items:
        found += _requests(item["item"]) if "item" in item else [item]
    return found


def collection_routes() -> set[tuple[str, str]]:
    collection = json.loads(COLLECTION.read_text())
    routes = set()
    for item in _requests(collection["item"]):
        request = item["request"]
        path = "/" + "/".join(request["url"]["path"])
        path = re.sub(r"/(\{\{job_name\}\}|no-such-job)", "/{name}", path)
        path = re.sub(r"/:(\w+)", r"/{\1}", path)  # Postman's own path variables (`:filename`)
        routes.add((request["method"], path))
    return routes


def test_the_collection_has_every_route_the_api_serves_and_no_other() -> None:
    assert collection_routes() == served_routes()


def test_every_request_checks_its_status_and_authenticated_ones_send_the_token_variable() -> None:
    for item in _requests(json.loads(COLLECTION.read_text())["item"]):
        scripts = " ".join(line for e in item["event"] for line in e["script"]["exec"])
        assert "to.have.status(" in scripts, item["name"]
        headers = {h["key"]: h["value"] for h in item["request"]["header"]}
        assert headers.get("X-TRAINER-TOKEN") in {None, "{{trainer_api_token}}"}, item["name"]


@pytest.mark.slow
def test_newman_runs_the_collection_against_the_live_api(live_api: LiveApi, tmp_path: Any) -> None:
    assert NEWMAN.exists(), "newman is missing: run `make unit` (npm ci installs it from package-lock.json)"
    node = shutil.which("node")
    assert node, "node must be on PATH to run newman"
    run_id = f"postman_{uuid.uuid4().hex[:8]}"
    prefix = f"runs/{run_id}/framework=hf/logs"
    s3 = s3_client(live_api.s3_endpoint)
    # What a trainer writes while it runs: the API reads these on demand for /progress and /logs.
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/progress.json",
                  Body=json.dumps({"step": 5, "total_steps": 20, "loss": 2.5, "state": "running"}).encode())
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/train.log", Body=b"step 5 loss 2.5\n")
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/metrics.jsonl",
                  Body=b'{"step": 5, "loss": 2.5, "lr": 0.001, "tokens_per_s": 900.0, "kind": "train"}\n')
    report = tmp_path / "newman.json"
    argv = [str(NEWMAN), "run", str(COLLECTION), "--bail", "--reporters", "cli,json",
            "--reporter-json-export", str(report),
            "--env-var", f"trainer_base_url={live_api.url}", "--env-var", f"trainer_api_token={live_api.token}",
            "--env-var", f"run_id={run_id}", "--env-var", f"checkpoint_base_uri=s3://{BUCKET}/runs",
            "--env-var", f"dataset_uri=s3://{BUCKET}/datasets/tiny.jsonl"]
    env = {**os.environ, "NO_COLOR": "1"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    stats = json.loads(report.read_text())["run"]["stats"]
    assert stats["requests"]["total"] == len(_requests(json.loads(COLLECTION.read_text())["item"]))
    assert stats["assertions"]["failed"] == 0 and stats["assertions"]["total"] > stats["requests"]["total"]


def test_the_node_tools_are_pinned_and_installed_by_make_before_the_tests() -> None:
    package = json.loads((support.ROOT / "package.json").read_text())
    lock = json.loads((support.ROOT / "package-lock.json").read_text())
    assert lock["packages"][""]["devDependencies"] == package["devDependencies"]
    for name, version in package["devDependencies"].items():
        assert lock["packages"][f"node_modules/{name}"]["version"] == version, name
    makefile = (support.ROOT / "Makefile").read_text()
    assert re.search(r"^unit:.*\$\(NODE_STAMP\)", makefile, re.M), "make unit must install newman first"
    assert "npm ci" in makefile
