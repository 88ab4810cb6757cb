"""Browser tests: the API under gunicorn on a real Redis, and Debian's Chromium driven by playwright-core from a
node test file (tests/ui/*.test.mjs). `make test` installs both (Makefile: the chromium and node_modules steps)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests

from broker.settings import BrokerSettings
from broker.store import JobStore
from devstack import RedisServer
from devstack.gunicorn import serve

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
PLAYWRIGHT = ROOT / "node_modules" / "playwright-core" / "package.json"
TOKEN = "ui-token"


@dataclass
class LiveApi:
    url: str
    token: str
    store: JobStore
    runs: Path
    log: Path


@pytest.fixture(scope="session")
def browser_ready() -> None:
    """Fail (not skip) when the browser or its driver is missing: `make test` installs them."""
    assert CHROMIUM.is_file(), f"{CHROMIUM} is missing: `make test` installs it (apt-get install -y chromium)"
    assert PLAYWRIGHT.is_file(), "playwright-core is missing: `make test` runs npm ci from package-lock.json"
    assert shutil.which("node"), "node must be on PATH"


@pytest.fixture(scope="module")
def live_api(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    """`gunicorn "api.app:create_app()"` on a database of the session's Redis of its own."""
    url = redis_server.url(6)
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    tmp = tmp_path_factory.mktemp("ui-api")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TRAINER_")}, "REDIS_URL": url,
           "TRAINER_API_TOKEN": TOKEN, "TRAINER_CLUSTER_BACKEND": "local", "TRAINER_NAMESPACE": "ui-team",
           "TRAINER_LOCAL_WORKDIR": str(tmp / "jobs")}
    log_path = tmp / "gunicorn.log"
    try:
        with serve(env, log_path, "-w", "2", ready_path="/readyz", timeout=90) as served:
            store = JobStore(client, BrokerSettings.from_env(env).key_prefix)
            yield LiveApi(url=served.url, token=TOKEN, store=store, runs=tmp / "runs", log=log_path)
    finally:
        client.close()


def submit(api: LiveApi, run_id: str, framework: str = "hf") -> dict[str, object]:
    """POST /train over HTTP, as a platform team does."""
    body = {"framework": framework, "model_id": "tiny-gpt2", "num_nodes": 1, "gpus_per_node": 0, "run_id": run_id,
            "checkpoint_base_uri": str(api.runs), "dataset_uri": "/data/fx.jsonl",
            "extra_args": {"max_steps": 120}}
    answer = requests.post(f"{api.url}/train", json=body, headers={"X-TRAINER-TOKEN": api.token}, timeout=10)
    assert answer.status_code == 202, answer.text
    return answer.json()  # type: ignore[no-any-return]


def node_test(script: str, pattern: str, env: dict[str, str], timeout: float = 120) -> str:
    """Run the node tests of `tests/ui/<script>` whose names match `pattern`; fail with their output."""
    argv = ["node", "--test", "--test-reporter=spec", f"--test-name-pattern={pattern}", str(ROOT / "tests" / "ui" /
            script)]
    done = subprocess.run(argv, cwd=ROOT, env={**os.environ, **env, "NO_COLOR": "1"}, capture_output=True,
                          text=True, timeout=timeout)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-8000:]
    assert "# pass 0" not in output and "# tests 0" not in output, f"no test matched {pattern!r}:\n{output}"
    return output
