"""`TRAINER_ADMISSION=kueue` through a real Celery worker and beat, the API and the emulator's Kueue control: the
PyTorchJob is created suspended with the queue label, the job waits for Kueue and follows the object after
admission."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from api.app import create_app
from broker.jobs import JobRecord, JobStatus
from broker.quota import QuotaLedger
from broker.store import JobStore
from devstack import RedisServer, wait_for
from tests.api.conftest import AUTH, TOKEN
from tests.support.celery_worker import CeleryWorker, worker_env
from tests.support.k8s_emulator import K8sEmulator
from tests.support.pytorchjob_rules import validate_pytorchjob

pytestmark = pytest.mark.slow
S = JobStatus
DB = 9
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


class Kueue:
    def __init__(self, url: str, emulator: K8sEmulator, worker: CeleryWorker, api: FlaskClient) -> None:
        self.redis = redis.Redis.from_url(url, decode_responses=True)
        self.store = JobStore(self.redis, "it:")
        self.emulator, self.worker, self.api = emulator, worker, api

    def post(self, run_id: str, runs: Path, **fields: Any) -> str:
        body = {"framework": "hf", "model_id": "tiny-gpt2", "run_id": run_id, "checkpoint_base_uri": str(runs),
                "dataset_uri": "s3://data/train.jsonl", "namespace": "ml", "num_nodes": 2, "gpus_per_node": 8,
                **fields}
        answer = self.api.post("/train", json=body, headers=AUTH)
        assert answer.status_code == 202, answer.get_json()
        return str(answer.get_json()["name"])

    def reach(self, name: str, *statuses: JobStatus, timeout: float = 30) -> JobRecord:
        def reached() -> JobRecord | None:
            r = self.store.get(name)
            return r if r is not None and r.status in statuses else None

        return wait_for(reached, timeout, f"{name} to be {'/'.join(statuses)} (now {self.store.get(name)}); "
                                          f"worker log:\n{self.worker.output()[-3000:]}")


@pytest.fixture(scope="module")
def kueue(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kueue]:
    workdir = tmp_path_factory.mktemp("kueue")
    emulator = K8sEmulator().start()
    url = redis_server.url(DB)
    env = worker_env(url, emulator.write_kubeconfig(workdir / "kubeconfig"), TRAINER_ADMISSION="kueue",
                     TRAINER_KUEUE_QUEUES='{"default": "team-a"}')
    worker = CeleryWorker(env, workdir, beat=True).start()
    app = create_app({"ENVIRON": {**env, "TRAINER_API_TOKEN": TOKEN, "TRAINER_NAMESPACE": "ml"}})
    try:
        yield Kueue(url, emulator, worker, app.test_client())
    finally:
        worker.stop()
        emulator.stop()


@pytest.fixture
def k(kueue: Kueue) -> Kueue:
    for key in kueue.redis.scan_iter(match="it:*"):
        kueue.redis.delete(key)
    kueue.emulator.reset()
    return kueue


def test_a_job_waits_suspended_for_kueue_and_follows_its_object_to_succeeded(k: Kueue, tmp_path: Path) -> None:
    # More GPUs than the builtin quota of ml (16) would ever allow: in kueue mode the broker keeps no quota.
    name = k.post("kq-1", tmp_path, num_nodes=4)
    waiting = k.reach(name, S.WAITING_QUOTA)
    assert waiting.detail == "waiting for Kueue admission in team-a" and waiting.cluster_object == name
    obj = k.emulator.get("ml", name)
    assert obj is not None
    validate_pytorchjob(obj)
    assert obj["metadata"]["labels"][QUEUE_LABEL] == "team-a" and obj["spec"]["runPolicy"]["suspend"] is True
    status = k.api.get(f"/train/{name}", headers=AUTH).get_json()
    assert status["queue"]["admission"] == "kueue" and status["queue"]["kueue_queue"] == "team-a"
    line = k.api.get("/queue?namespace=ml", headers=AUTH).get_json()
    assert line["admission"] == "kueue" and [j["name"] for j in line["jobs"]] == [name]
    assert QuotaLedger(k.redis, "it:").held("ml") == {}

    k.emulator.kueue_admit("ml", name)
    assert "admitted by Kueue in team-a" in k.reach(name, S.SUBMITTED).detail
    k.emulator.set_condition("ml", name, "Running")
    k.reach(name, S.RUNNING)
    k.emulator.set_condition("ml", name, "Succeeded")
    k.reach(name, S.SUCCEEDED)
    assert [e["to"] for e in k.store.events(name)] == ["queued", "admitted", "waiting_quota", "submitted", "running",
                                                      "succeeded"]


def test_the_requests_queue_wins_and_a_cancel_deletes_the_suspended_object(k: Kueue, tmp_path: Path) -> None:
    name = k.post("kq-2", tmp_path, queue="research")
    assert k.reach(name, S.WAITING_QUOTA).detail == "waiting for Kueue admission in research"
    assert (k.emulator.get("ml", name) or {})["metadata"]["labels"][QUEUE_LABEL] == "research"
    answer = k.api.post(f"/train/{name}/cancel", headers=AUTH)
    assert answer.status_code == 202 and answer.get_json()["status"] == "cancelling"
    k.reach(name, S.CANCELLED)
    assert k.emulator.get("ml", name) is None
