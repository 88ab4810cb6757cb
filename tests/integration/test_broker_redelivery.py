"""A worker killed with `kill -9` in the middle of a submission loses nothing and duplicates nothing: the task was
not acknowledged (`acks_late`), Redis delivers it again after the visibility timeout, and the new run finds the
object the dead one created (its own, by labels) instead of making a second one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis

from broker.celery_config import make_app
from broker.jobs import JobStatus
from broker.names import SUBMIT_TASK, SYNC_TASK
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
SYNC_DONE = re.compile(r"Task broker\.sync_jobs\[[^\]]+\] succeeded")


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


def test_the_sync_is_not_held_behind_a_backlog_of_submits(redis_server: RedisServer, tmp_path: Path) -> None:
    """The periodic sync (status, admission, re-enqueueing stuck jobs) has its own queue: with a backlog of slow
    submissions queued first, a one-process worker still runs the sync after a submission or two, not after all of
    them (in one FIFO queue it waited for the whole backlog, and beat's messages expired on the way)."""
    url = redis_server.url(DB)
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    emulator = K8sEmulator().start()
    env = worker_env(url, emulator.write_kubeconfig(tmp_path / "kubeconfig"), TRAINER_SYNC_INTERVAL_S="3600")
    store = JobStore(client, "it:")
    celery = make_app(BrokerSettings(redis_url=url))
    backlog = 12
    emulator.slow_next(backlog, 1.0, verbs=("create",))  # every create takes the API server a second
    for i in range(backlog):
        record, _ = store.create(make_record(f"backlog-{i}", namespace="default"))
        celery.send_task(SUBMIT_TASK, args=[record.name])
    celery.send_task(SYNC_TASK)  # routed to its own queue, as beat's are
    worker = CeleryWorker(env, tmp_path, concurrency=1)
    try:
        worker.start()
        wait_for(lambda: SYNC_DONE.search(worker.output()), 60,
                 f"the sync to run; log:\n{worker.output()[-3000:]}")
        before_sync = emulator.calls("create")
        assert before_sync <= 3, f"the sync ran only after {before_sync} of {backlog} queued submissions"
        wait_for(lambda: emulator.calls("create") == backlog, 90, "the backlog to drain")
    finally:
        worker.stop()
        emulator.stop()
