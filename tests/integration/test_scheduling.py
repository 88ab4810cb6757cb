"""Scheduling through a real Celery worker and beat, the API (Flask app, real Celery enqueuer) and the emulator:
automatic recovery, queue positions, dry run. The Kueue mode has its own module (another worker's settings)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from api.app import create_app
from broker.jobs import JobRecord, JobStatus
from broker.store import JobStore
from devstack import RedisServer, wait_for
from tests.api.conftest import AUTH, TOKEN
from tests.support.celery_worker import CeleryWorker, worker_env
from tests.support.k8s_emulator import K8sEmulator
from trainctl import Client
from trainctl.cli import main as trainctl

pytestmark = pytest.mark.slow
S = JobStatus
DB = 8


class System:
    def __init__(self, url: str, emulator: K8sEmulator, worker: CeleryWorker, api: FlaskClient, api_url: str) -> None:
        self.redis = redis.Redis.from_url(url, decode_responses=True)
        self.store = JobStore(self.redis, "it:")
        self.emulator, self.worker, self.api, self.api_url = emulator, worker, api, api_url
        self.client = Client(api_url, TOKEN, timeout_s=30)

    def trainctl(self, *argv: str) -> tuple[int, str]:
        """The `trainctl` CLI against the API over HTTP."""
        out = io.StringIO()
        code = trainctl(["--url", self.api_url, "--token", TOKEN, *argv], out=out)
        return code, out.getvalue()

    def post(self, run_id: str, runs: Path, **fields: Any) -> str:
        body = {"framework": "hf", "model_id": "tiny-gpt2", "run_id": run_id, "checkpoint_base_uri": str(runs),
                "dataset_uri": "s3://data/train.jsonl", "namespace": "ml", "num_nodes": 1, "gpus_per_node": 0,
                "cpus_per_node": 2, "memory_per_node_gb": 4, **fields}
        answer = self.api.post("/train", json=body, headers=AUTH)
        assert answer.status_code == 202, answer.get_json()
        return str(answer.get_json()["name"])

    def status(self, name: str) -> dict[str, Any]:
        return self.api.get(f"/train/{name}", headers=AUTH).get_json()  # type: ignore[no-any-return]

    def reach(self, name: str, *statuses: JobStatus, attempt: int | None = None, timeout: float = 30) -> JobRecord:
        def reached() -> JobRecord | None:
            r = self.store.get(name)
            ok = r is not None and r.status in statuses and (attempt is None or r.attempt == attempt)
            return r if ok else None

        return wait_for(reached, timeout, f"{name} to be {'/'.join(statuses)} attempt {attempt} (now "
                                          f"{self.store.get(name)}); worker log:\n{self.worker.output()[-3000:]}")

    def fail_object(self, name: str, message: str = "PyTorchJob failed: pod restarts used up") -> None:
        self.emulator.set_condition("ml", name, "Running")
        self.emulator.set_condition("ml", name, "Failed", message=message)

    def clean(self) -> None:
        for key in self.redis.scan_iter(match="it:*"):
            self.redis.delete(key)
        self.emulator.reset()


@pytest.fixture(scope="module")
def system(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    workdir = tmp_path_factory.mktemp("scheduling")
    emulator = K8sEmulator().start()
    url = redis_server.url(DB)
    env = worker_env(url, emulator.write_kubeconfig(workdir / "kubeconfig"))
    worker = CeleryWorker(env, workdir, beat=True).start()
    app = create_app({"ENVIRON": {**env, "TRAINER_API_TOKEN": TOKEN, "TRAINER_NAMESPACE": "ml",
                                  "TRAINER_DRY_RUN_TIMEOUT_S": "20"}})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield System(url, emulator, worker, app.test_client(), f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        worker.stop()
        emulator.stop()


@pytest.fixture
def s(system: System) -> System:
    system.clean()
    return system


def env_of(obj: dict[str, Any]) -> dict[str, str]:
    container = obj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"]}


# --- automatic recovery ----------------------------------------------------------------------------------------


def test_a_failed_object_is_restarted_as_attempt_2_from_the_checkpoint_and_stops_after_max_attempts(
        s: System, tmp_path: Path) -> None:
    name = s.post("rec-1", tmp_path, recovery={"max_attempts": 3, "backoff_s": 0.5})
    s.reach(name, S.SUBMITTED)
    assert s.status(name)["recovery"] == {"max_attempts": 3, "backoff_s": 0.5, "attempts_used": 1,
                                          "attempts_left": 2, "next_attempt_at": None, "last_failure": None}
    s.fail_object(name)
    second = s.reach(name, S.SUBMITTED, attempt=2)
    obj = s.emulator.get("ml", f"{name}-r2")
    assert obj is not None and second.cluster_object == f"{name}-r2"
    container = obj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert "--resume" in container["command"] and env_of(obj)["RESUME_FROM_CHECKPOINT"] == "true"
    assert env_of(obj)["TRAINER_ATTEMPT"] == "2"
    status = s.status(name)
    assert status["recovery"]["attempts_used"] == 2 and status["recovery"]["attempts_left"] == 1
    assert "pod restarts used up" in status["recovery"]["last_failure"] or status["recovery"]["last_failure"]

    s.emulator.remove("ml", f"{name}-r2")  # the object vanishes: also fixable
    s.reach(name, S.SUBMITTED, attempt=3)
    s.fail_object(f"{name}-r3")
    last = s.reach(name, S.FAILED, attempt=3)
    time.sleep(1.5)  # a few sync cycles: no fourth attempt
    assert s.store.require(name).status == S.FAILED and s.emulator.get("ml", f"{name}-r4") is None
    assert "automatic recovery used up: 3 of 3 attempts" in s.store.require(name).detail
    assert s.status(name)["recovery"]["attempts_left"] == 0 and last.attempt == 3
    recoveries = [e for e in s.store.events(name) if e["reason"].startswith("automatic recovery")]
    assert [e["attempt"] for e in recoveries] == [2, 3]
    assert "vanished" in recoveries[1]["reason"] and "resumes from the latest checkpoint" in recoveries[0]["reason"]


def test_a_trainer_exit_2_is_not_retried_and_the_detail_says_why(s: System, tmp_path: Path) -> None:
    name = s.post("rec-exit2", tmp_path, recovery={"max_attempts": 3, "backoff_s": 0.1},
                  extra_args={"max_steps": "many"})
    s.reach(name, S.SUBMITTED)
    # The real trainer, with the environment the broker rendered: its settings are invalid, it exits 2 and
    # records the failure kind in the run's logs/failure.json.
    env = {**{k: v for k, v in os.environ.items() if k not in env_of(s.emulator.get("ml", name) or {})},
           **env_of(s.emulator.get("ml", name) or {})}
    trainer = subprocess.run([sys.executable, "-m", "trainer"], env=env, capture_output=True, text=True, timeout=120)
    assert trainer.returncode == 2, trainer.stderr
    failure = json.loads((tmp_path / "rec-exit2" / "framework=hf" / "logs" / "failure.json").read_text())
    assert failure["kind"] == "invalid_input" and failure["attempt"] == 1
    s.fail_object(name, message="PyTorchJob failed: 1 Master replica(s) failed")
    failed = s.reach(name, S.FAILED)
    time.sleep(1.5)
    record = s.store.require(name)
    assert record.status == S.FAILED and record.attempt == 1 and failed.attempt == 1
    assert "not retried automatically: the trainer exited with status 2" in record.detail
    assert s.emulator.get("ml", f"{name}-r2") is None


def test_a_cluster_refusal_is_not_retried(s: System, tmp_path: Path) -> None:
    s.emulator.deny_next(1, "namespace ml may not run training today")
    name = s.post("rec-403", tmp_path, recovery={"max_attempts": 3, "backoff_s": 0.1})
    record = s.reach(name, S.FAILED)
    time.sleep(1.0)
    assert s.store.require(name).attempt == 1
    assert "not retried automatically: the cluster refused" in record.detail or \
        "not retried automatically" in s.store.require(name).detail


def test_cancel_during_the_backoff_ends_the_recovery(s: System, tmp_path: Path) -> None:
    name = s.post("rec-cancel", tmp_path, recovery={"max_attempts": 3, "backoff_s": 30})
    s.reach(name, S.SUBMITTED)
    s.fail_object(name)
    waiting = s.reach(name, S.QUEUED, attempt=2)
    assert waiting.not_before and s.status(name)["recovery"]["next_attempt_at"] == waiting.not_before
    answer = s.api.post(f"/train/{name}/cancel", headers=AUTH)
    assert answer.status_code == 200 and answer.get_json()["status"] == "cancelled"
    s.redis.zadd("it:recovery:due", {name: 0})  # even if the backoff were over now
    time.sleep(1.5)
    assert s.store.require(name).status == S.CANCELLED
    assert s.emulator.get("ml", f"{name}-r2") is None and s.emulator.calls("create") == 1


# --- queue position ----------------------------------------------------------------------------------------------


def test_queue_positions_follow_the_jobs_ahead(s: System, tmp_path: Path) -> None:
    # namespace ml: 16 GPUs, 4 jobs
    a = s.post("q-a", tmp_path, num_nodes=2, gpus_per_node=8)
    s.reach(a, S.SUBMITTED)
    b = s.post("q-b", tmp_path, num_nodes=2, gpus_per_node=8)
    c = s.post("q-c", tmp_path, num_nodes=1, gpus_per_node=8)
    d = s.post("q-d", tmp_path, num_nodes=1, gpus_per_node=8)
    for name in (b, c, d):
        s.reach(name, S.WAITING_QUOTA)

    def positions() -> list[tuple[str, int]]:
        body = s.api.get("/queue?namespace=ml", headers=AUTH).get_json()
        return [(j["name"], j["queue"]["position"]) for j in body["jobs"]]

    wait_for(lambda: positions() == [(b, 1), (c, 2), (d, 3)], 10, f"positions b, c, d (now {positions()})")
    assert [j["name"] for j in s.client.queue("ml")["jobs"]] == [b, c, d]
    code, out = s.trainctl("queue", "--namespace", "ml")
    lines = out.splitlines()
    assert code == 0 and lines[0] == "namespace ml (builtin admission): 3 waiting", out
    assert lines[1].split()[:3] == ["#1", b, "ahead=0"] and lines[3].split()[:3] == ["#3", d, "ahead=2"], out
    assert "waiting for gpus (needs 8 GPUs, 0 of 16 free)" in lines[3], out
    queue = s.status(d)["queue"]
    assert queue["ahead"] == 2 and queue["ahead_jobs"] == [b, c] and queue["waiting_for"] == "gpus"
    assert s.status(b)["queue"]["gpus"] == {"requested": 16, "free": 0, "limit": 16}
    assert s.status(b)["queue"]["waiting_for"] == "gpus" and s.status(b)["queue"]["jobs"] == {"running": 1,
                                                                                             "limit": 4}
    assert s.api.post(f"/train/{c}/cancel", headers=AUTH).status_code == 200
    wait_for(lambda: positions() == [(b, 1), (d, 2)], 10, f"d to move up after c's cancel (now {positions()})")
    assert s.status(d)["queue"]["ahead_jobs"] == [b]
    s.emulator.set_condition("ml", a, "Running")
    s.emulator.set_condition("ml", a, "Succeeded")
    s.reach(b, S.SUBMITTED)
    wait_for(lambda: positions() == [(d, 1)], 10, f"d first in line once b got in (now {positions()})")
    assert s.status(d)["queue"]["waiting_for"] == "gpus" and s.status(b)["queue"] is None


# --- dry run -----------------------------------------------------------------------------------------------------


def _dry_body(tmp_path: Path, **fields: Any) -> dict[str, Any]:
    return {"framework": "hf", "model_id": "tiny-gpt2", "run_id": "dry-1", "checkpoint_base_uri": str(tmp_path),
            "dataset_uri": "s3://data/train.jsonl", "namespace": "ml", "num_nodes": 1, "gpus_per_node": 8, **fields}


def _dry(s: System, tmp_path: Path, **fields: Any) -> Any:
    return s.api.post("/train?dry_run=true", json=_dry_body(tmp_path, **fields), headers=AUTH)


def test_a_dry_run_renders_validates_and_stores_nothing(s: System, tmp_path: Path) -> None:
    answer = _dry(s, tmp_path)
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["valid"] is True and body["cluster"]["accepted"] is True
    assert body["object"]["kind"] == "PyTorchJob" and body["object"]["metadata"]["name"] == "hf-dry-1"
    assert body["admission"]["verdict"] == "would_start"
    assert s.emulator.calls("dry_run") == 1 and s.emulator.calls("create") == 0 and s.emulator.objects() == []
    assert list(s.redis.scan_iter(match="it:job:*")) == [] and list(s.redis.scan_iter(match="it:dryrun:*")) == []
    assert s.api.get("/train/hf-dry-1", headers=AUTH).status_code == 404
    request = tmp_path / "request.json"
    request.write_text(json.dumps(_dry_body(tmp_path)))
    code, out = s.trainctl("submit", str(request), "--dry-run")
    assert code == 0 and out.splitlines()[:3] == [
        "hf-dry-1: dry run, nothing stored", "cluster: accepts: the cluster accepts the object",
        "admission: would_start: would start now: 8 GPUs fit the quota of namespace ml and no job waits ahead"], out
    assert s.emulator.objects() == [] and list(s.redis.scan_iter(match="it:job:*")) == []

    busy = s.post("dry-busy", tmp_path, num_nodes=2, gpus_per_node=8)  # takes all 16 GPUs of ml
    s.reach(busy, S.SUBMITTED)
    body = _dry(s, tmp_path).get_json()
    assert body["admission"]["verdict"] == "would_wait"
    assert body["admission"]["queue"]["position"] == 1 and body["admission"]["queue"]["waiting_for"] == "gpus"


@pytest.mark.parametrize(("refuse", "status"), [("reject_next", 422), ("deny_next", 403)])
def test_a_dry_run_reports_the_clusters_refusal(s: System, tmp_path: Path, refuse: str, status: int) -> None:
    getattr(s.emulator, refuse)(1, "no training on Fridays")
    answer = _dry(s, tmp_path)
    assert answer.status_code == 422
    body = answer.get_json()
    assert body["error"]["code"] == "cluster_refused" and body["error"]["cluster_status"] == status
    assert body["cluster"]["accepted"] is False and "no training on Fridays" in body["cluster"]["message"]
    assert body["valid"] is False and body["object"]["metadata"]["name"] == "hf-dry-1"
    assert s.emulator.objects() == [] and list(s.redis.scan_iter(match="it:job:*")) == []
    getattr(s.emulator, refuse)(1, "no training on Fridays")
    sdk = s.client.submit(_dry_body(tmp_path), dry_run=True)  # a refusal is an answer, not an ApiRefused
    assert sdk["valid"] is False and sdk["cluster"]["status"] == status
    getattr(s.emulator, refuse)(1, "no training on Fridays")
    request = tmp_path / "request.json"
    request.write_text(json.dumps(_dry_body(tmp_path)))
    code, out = s.trainctl("submit", str(request), "--dry-run")
    assert code == 1 and f"cluster: refuses ({status} " in out and "no training on Fridays" in out, out
