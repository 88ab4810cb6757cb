"""The broker end to end: a real Celery worker process (with its beat) on a real Redis, creating PyTorchJobs in
the API emulator through the official client over HTTP. One worker serves the whole module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from celery import Celery

from broker.celery_config import make_app
from broker.jobs import JobRecord, JobStatus
from broker.names import CANCEL_TASK, SUBMIT_TASK
from broker.quota import QuotaLedger
from broker.settings import BrokerSettings
from broker.store import JobStore
from devstack import RedisServer, wait_for
from tests.support.celery_worker import CeleryWorker, worker_env
from tests.support.jobs import make_record
from tests.support.k8s_emulator import K8sEmulator
from tests.support.pytorchjob_rules import validate_pytorchjob

pytestmark = pytest.mark.slow
S = JobStatus
DB = 7  # a database of its own: other tests' FLUSHALL never runs while this module's worker is up


class Broker:
    """The test's view: the job store the API writes, the emulator, and a Celery client that sends tasks."""

    def __init__(self, url: str, emulator: K8sEmulator, worker: CeleryWorker) -> None:
        self.redis = redis.Redis.from_url(url, decode_responses=True)
        self.store = JobStore(self.redis, "it:")
        self.quota = QuotaLedger(self.redis, "it:")
        self.emulator = emulator
        self.worker = worker
        self.celery: Celery = make_app(BrokerSettings(redis_url=url))

    def post(self, run_id: str = "run-1", **overrides: object) -> str:
        """What `POST /train` does: store the job, enqueue its submission."""
        record, _ = self.store.create(make_record(run_id, **overrides))
        self.send(SUBMIT_TASK, record.name)
        return record.name

    def send(self, task: str, name: str) -> None:
        self.celery.send_task(task, args=[name])

    def status_is(self, name: str, *statuses: JobStatus, timeout: float = 30.0) -> JobRecord:
        def reached() -> JobRecord | None:
            record = self.store.get(name)
            return record if record is not None and record.status in statuses else None

        return wait_for(reached, timeout, f"{name} to be {'/'.join(statuses)} (now {self.store.get(name)}); "
                                          f"worker log:\n{self.worker.output()[-3000:]}")

    def cancel(self, name: str) -> None:
        """What `POST /train/<name>/cancel` does."""
        record = self.store.require(name)
        if record.status in (S.QUEUED, S.WAITING_QUOTA):
            self.store.transition(name, S.CANCELLED, reason="cancelled by request")
            return
        self.store.transition(name, S.CANCELLING, reason="cancel requested")
        self.send(CANCEL_TASK, name)

    def clean(self) -> None:
        for key in self.redis.scan_iter(match="it:*"):
            self.redis.delete(key)
        self.emulator.reset()


@pytest.fixture(scope="module")
def broker(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    workdir = tmp_path_factory.mktemp("broker-worker")
    emulator = K8sEmulator().start()
    url = redis_server.url(DB)
    env = worker_env(url, emulator.write_kubeconfig(workdir / "kubeconfig"))
    worker = CeleryWorker(env, workdir, beat=True).start()
    try:
        yield Broker(url, emulator, worker)
    finally:
        worker.stop()
        emulator.stop()


@pytest.fixture
def b(broker: Broker) -> Broker:
    broker.clean()
    return broker


def test_a_posted_job_ends_as_exactly_one_valid_pytorchjob_whose_status_it_follows(b: Broker) -> None:
    name = b.post(num_nodes=4, gpus_per_node=1)
    record = b.status_is(name, S.SUBMITTED)
    objects = b.emulator.objects()
    assert [o["metadata"]["name"] for o in objects] == [record.cluster_object] == [name]
    validate_pytorchjob(objects[0])
    assert objects[0]["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 3
    walk = [("Running", S.RUNNING), ("Restarting", S.RESTARTING), ("Running", S.RUNNING),
            ("Suspended", S.SUSPENDED), ("Running", S.RUNNING), ("Succeeded", S.SUCCEEDED)]
    for condition, status in walk:
        b.emulator.set_condition("ml", name, condition)
        b.status_is(name, status)
    assert [e["to"] for e in b.store.events(name)] == [
        "queued", "admitted", "submitted", "running", "restarting", "running", "suspended", "running", "succeeded"]
    # The sync releases the quota right after it records the end (a second Redis call): wait for it, not assume it.
    wait_for(lambda: b.quota.held("ml") == {}, 10, f"ml's quota released (held: {b.quota.held('ml')})")
    assert b.emulator.calls("get") == 0  # status came from LISTs only


def test_a_failed_condition_fails_the_job_with_the_operators_message(b: Broker) -> None:
    name = b.post()
    b.status_is(name, S.SUBMITTED)
    b.emulator.set_condition("ml", name, "Running")
    b.emulator.set_condition("ml", name, "Failed", message="Master-0 exited with code 1")
    assert "Master-0 exited with code 1" in b.status_is(name, S.FAILED).detail


def test_faults_and_duplicate_deliveries_never_make_a_duplicate(b: Broker) -> None:
    b.emulator.fail_next(1, 429, retry_after=0.2, verbs=("create",))
    b.emulator.fail_next(1, 503, verbs=("create",))
    b.emulator.drop_next(1, after_action=True, verbs=("create",))  # created, but the answer is lost
    name = b.post()
    b.send(SUBMIT_TASK, name)  # the same task delivered again
    b.send(SUBMIT_TASK, name)
    b.status_is(name, S.SUBMITTED)
    wait_for(lambda: b.emulator.calls("create") >= 4, 10, "every create attempt")
    assert len(b.emulator.objects()) == 1


def test_a_vanished_object_fails_the_job(b: Broker) -> None:
    name = b.post()
    b.status_is(name, S.SUBMITTED)
    b.emulator.set_condition("ml", name, "Running")
    b.status_is(name, S.RUNNING)
    b.emulator.remove("ml", name)
    assert "vanished from the cluster" in b.status_is(name, S.FAILED).detail


def test_jobs_wait_for_quota_and_are_admitted_in_fifo_order(b: Broker) -> None:
    big = b.post("big", gpus_per_node=12)
    b.status_is(big, S.SUBMITTED)
    first = b.post("first", gpus_per_node=8)
    b.status_is(first, S.WAITING_QUOTA)
    second = b.post("second", gpus_per_node=4)
    waiting = b.status_is(second, S.WAITING_QUOTA)
    assert waiting.detail == "needs 4 GPUs, 4 of 16 free in namespace ml; 2nd in line"
    assert {o["metadata"]["name"] for o in b.emulator.objects()} == {big}
    b.emulator.set_condition("ml", big, "Succeeded")
    admitted_first = b.status_is(first, S.SUBMITTED)
    admitted_second = b.status_is(second, S.SUBMITTED)
    assert admitted_first.submitted_at and admitted_second.submitted_at
    assert {o["metadata"]["name"] for o in b.emulator.objects()} == {big, first, second}


@pytest.mark.parametrize("state", [S.QUEUED, S.WAITING_QUOTA, S.SUBMITTED, S.RUNNING, S.RESTARTING, S.SUSPENDED])
def test_cancel_in_every_state_leaves_nothing_on_the_cluster(b: Broker, state: JobStatus) -> None:
    if state == S.WAITING_QUOTA:
        b.status_is(b.post("hog", gpus_per_node=16), S.SUBMITTED)
    if state == S.QUEUED:
        record, _ = b.store.create(make_record())  # stored; its submit task not yet run
        name = record.name
    else:
        name = b.post(gpus_per_node=2)
        b.status_is(name, S.WAITING_QUOTA if state == S.WAITING_QUOTA else S.SUBMITTED)
    conditions = {S.RUNNING: ["Running"], S.RESTARTING: ["Running", "Restarting"], S.SUSPENDED: ["Suspended"]}
    for condition in conditions.get(state, []):
        b.emulator.set_condition("ml", name, condition)
    b.status_is(name, state)
    b.cancel(name)
    b.status_is(name, S.CANCELLED)
    b.send(SUBMIT_TASK, name)  # a submission arriving late changes nothing
    wait_for(lambda: b.emulator.get("ml", name) is None, 10, "the object to be deleted")
    assert f"{name}#1" not in b.quota.held("ml")
    assert b.store.require(name).status == S.CANCELLED


def test_retry_creates_attempt_two_and_deletes_the_first_object(b: Broker) -> None:
    name = b.post()
    b.status_is(name, S.SUBMITTED)
    b.emulator.set_condition("ml", name, "Failed", message="out of memory")
    b.status_is(name, S.FAILED)
    b.store.transition(name, S.QUEUED, reason="retry requested")  # what POST /train/<name>/retry does
    b.send(SUBMIT_TASK, name)
    record = b.status_is(name, S.SUBMITTED)
    assert record.attempt == 2 and record.cluster_object == f"{name}-r2"
    assert [o["metadata"]["name"] for o in b.emulator.objects()] == [f"{name}-r2"]
    second = b.emulator.get("ml", f"{name}-r2")
    assert second is not None and second["metadata"]["labels"]["training-broker.io/attempt"] == "2"
    validate_pytorchjob(second)


def test_through_the_api_post_cancel_and_retry_drive_the_cluster(b: Broker) -> None:
    """The product's path: the real Flask API stores and enqueues, the worker creates, cancels and retries."""
    from api.app import create_app

    url = b.redis.connection_pool.connection_kwargs
    environ = {"REDIS_URL": f"redis://{url['host']}:{url['port']}/{DB}", "TRAINER_REDIS_PREFIX": "it:",
               "TRAINER_API_TOKEN": "t0ken", "TRAINER_CLUSTER_BACKEND": "kubernetes"}
    api = create_app({"ENVIRON": environ, "TESTING": True}).test_client()
    auth = {"X-TRAINER-TOKEN": "t0ken"}
    body = {"framework": "nemo", "model_id": "nemotron-8b-fx", "run_id": "fx_ruleset_v3", "num_nodes": 2,
            "gpus_per_node": 8, "checkpoint_base_uri": "s3://runs", "dataset_uri": "s3://data/fx/",
            "extra_args": {"max_steps": 50000, "lr": 3e-5}}
    posted = api.post("/train", json=body, headers=auth)
    assert posted.status_code == 202, posted.get_json()
    name = posted.get_json()["name"]
    b.status_is(name, S.SUBMITTED)
    objects = b.emulator.objects()
    assert len(objects) == 1 and objects[0]["metadata"]["name"] == name
    validate_pytorchjob(objects[0])
    assert api.get(f"/train/{name}", headers=auth).get_json()["status"] == "submitted"

    assert api.post(f"/train/{name}/cancel", headers=auth).status_code == 202
    b.status_is(name, S.CANCELLED)
    assert b.emulator.objects() == []

    assert api.post(f"/train/{name}/retry", headers=auth).status_code in (200, 202)
    record = b.status_is(name, S.SUBMITTED)
    assert record.attempt == 2
    assert [o["metadata"]["name"] for o in b.emulator.objects()] == [record.cluster_object]
