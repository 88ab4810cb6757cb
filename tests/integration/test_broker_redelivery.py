"""A worker killed with `kill -9` in the middle of a submission loses nothing and duplicates nothing: the task was
not acknowledged (`acks_late`), Redis delivers it again after the visibility timeout, and the new run finds the
object the dead one created (its own, by labels) instead of making a second one."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from broker.celery_config import make_app
from broker.jobs import JobStatus
from broker.names import SUBMIT_TASK
from broker.settings import BrokerSettings
from broker.store import JobStore
from devstack import RedisServer, wait_for
from tests.support.celery_worker import CeleryWorker, worker_env
from tests.support.jobs import make_record
from tests.support.k8s_emulator import K8sEmulator
from tests.support.pytorchjob_rules import validate_pytorchjob

pytestmark = pytest.mark.slow
DB = 8
VISIBILITY_TIMEOUT_S = 3


def test_a_worker_killed_mid_submission_is_redelivered_without_a_duplicate(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    url = redis_server.url(DB)
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    emulator = K8sEmulator().start()
    env = worker_env(url, emulator.write_kubeconfig(tmp_path / "kubeconfig"),
                     TRAINER_VISIBILITY_TIMEOUT_S=str(VISIBILITY_TIMEOUT_S), TRAINER_SYNC_INTERVAL_S="3600")
    store = JobStore(client, "it:")
    first = CeleryWorker(env, tmp_path).start()
    second = CeleryWorker(env, tmp_path)
    try:
        emulator.slow_next(1, 4.0, verbs=("create",))  # the API server takes its time with the first create
        record, _ = store.create(make_record(gpus_per_node=2))
        make_app(BrokerSettings(redis_url=url)).send_task(SUBMIT_TASK, args=[record.name])
        wait_for(lambda: emulator.calls("create") == 1, 30, "the submission to reach the API server")
        first.kill9()  # mid-create: no answer read, nothing acknowledged
        assert store.require(record.name).status == JobStatus.ADMITTED

        second.start()
        done = wait_for(lambda: (r := store.get(record.name)) and r.status == JobStatus.SUBMITTED and r, 60,
                        f"the redelivered submission; log:\n{second.output()[-3000:]}")
        assert done.cluster_object == record.name
        wait_for(lambda: emulator.calls("create") >= 2, 10, "the redelivered create")
        objects = emulator.objects()
        assert [o["metadata"]["name"] for o in objects] == [record.name]
        validate_pytorchjob(objects[0])
        held = client.hgetall("it:quota:held:ml")
        assert held == {f"{record.name}#1": "2"}  # one reservation, not two
        assert "Task broker.submit_job" in second.output()  # the second worker ran it
    finally:
        first.stop()
        second.stop()
        emulator.stop()
