"""The periodic sync on real parts: one LIST per namespace, conditions → lifecycle, vanished objects, FIFO admission
as capacity frees, re-enqueue of stuck jobs, quota given back."""

from __future__ import annotations

import time

import pytest

from broker.context import BrokerContext
from broker.jobs import JobStatus
from broker.names import DEFAULT_QUEUE, SUBMIT_TASK
from broker.submit import submit_job
from broker.sync import cycle_due, sync_jobs
from tests.support.jobs import make_record
from tests.support.k8s_emulator import K8sEmulator

S = JobStatus


def submitted(ctx: BrokerContext, run_id: str = "run-1", **overrides: object) -> str:
    record, _ = ctx.store.create(make_record(run_id, **overrides))
    assert submit_job(ctx, record.name) == "submitted"
    return record.name


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        (["Created"], S.SUBMITTED),
        (["Created", "Running"], S.RUNNING),
        (["Created", "Running", "Restarting"], S.RESTARTING),
        (["Created", "Suspended"], S.SUSPENDED),
        (["Created", "Running", "Succeeded"], S.SUCCEEDED),
        (["Created", "Running", "Failed"], S.FAILED),
        (["Created", "Running", "Suspended", "Failed"], S.FAILED),
    ],
)
def test_conditions_map_onto_the_lifecycle(
    ctx: BrokerContext, emulator: K8sEmulator, conditions: list[str], expected: JobStatus
) -> None:
    name = submitted(ctx)
    for kind in conditions:
        emulator.set_condition("ml", name, kind, message=f"job is {kind.lower()}")
    sync_jobs(ctx)
    record = ctx.store.require(name)
    assert record.status == expected
    if expected != S.SUBMITTED:
        assert record.detail.startswith(f"job is {conditions[-1].lower()}")


def test_a_job_follows_its_conditions_through_restart_to_success(ctx: BrokerContext, emulator: K8sEmulator) -> None:
    name = submitted(ctx, num_nodes=2)
    steps = [("Running", S.RUNNING), ("Restarting", S.RESTARTING), ("Running", S.RUNNING),
             ("Succeeded", S.SUCCEEDED)]
    for kind, expected in steps:
        emulator.set_condition("ml", name, kind)
        emulator.set_replica_statuses("ml", name, {"Master": {"active": 1}, "Worker": {"active": 1}})
        sync_jobs(ctx)
        assert ctx.store.require(name).status == expected
    record = ctx.store.require(name)
    obj = emulator.get("ml", name)
    assert record.started_at == obj["status"]["startTime"]
    assert record.finished_at == obj["status"]["completionTime"]
    assert "Master: 1 active; Worker: 1 active" in record.detail
    assert [e["to"] for e in ctx.store.events(name)][-4:] == ["running", "restarting", "running", "succeeded"]
    assert ctx.quota.held("ml") == {}  # released when it ended


def test_only_changes_are_written(ctx: BrokerContext, emulator: K8sEmulator) -> None:
    name = submitted(ctx)
    emulator.set_condition("ml", name, "Running")
    sync_jobs(ctx)
    events = ctx.store.events(name)
    assert sync_jobs(ctx).changed == {}
    assert ctx.store.events(name) == events


def test_one_list_per_namespace_per_cycle_and_no_gets(ctx: BrokerContext, emulator: K8sEmulator) -> None:
    for run_id, namespace in [("a", "ml"), ("b", "ml"), ("c", "cv")]:
        submitted(ctx, run_id, namespace=namespace)
    before = {verb: emulator.calls(verb) for verb in ("list", "get")}
    report = sync_jobs(ctx)
    assert sorted(report.listed_namespaces) == ["cv", "ml"]
    assert emulator.calls("list") - before["list"] == 2 and emulator.calls("get") == before["get"]


def test_a_vanished_object_fails_the_job_after_the_grace_cycles(ctx: BrokerContext, emulator: K8sEmulator) -> None:
    name = submitted(ctx)
    emulator.set_condition("ml", name, "Running")
    sync_jobs(ctx)
    emulator.remove("ml", name)  # kubectl delete, or a TTL
    sync_jobs(ctx)
    assert ctx.store.require(name).status == S.RUNNING  # one miss is within the grace
    assert sync_jobs(ctx).vanished == [name]
    record = ctx.store.require(name)
    assert record.status == S.FAILED and "vanished from the cluster" in record.detail
    assert ctx.quota.held("ml") == {}
    assert len(ctx.store.events(name)) == 5  # the history outlives the object


def test_an_object_seen_again_resets_the_grace(ctx: BrokerContext, emulator: K8sEmulator) -> None:
    name = submitted(ctx)
    obj = emulator.get("ml", name)
    emulator.remove("ml", name)
    sync_jobs(ctx)
    with emulator.lock:
        emulator.jobs[("ml", name)] = obj
    sync_jobs(ctx)
    emulator.remove("ml", name)
    sync_jobs(ctx)
    assert ctx.store.require(name).status == S.SUBMITTED


def test_a_failing_list_changes_nothing_this_cycle(ctx: BrokerContext, emulator: K8sEmulator) -> None:
    name = submitted(ctx)
    emulator.fail_next(5, 503, verbs=("list",))
    for _ in range(3):
        assert sync_jobs(ctx).listed_namespaces == []
    assert ctx.store.require(name).status == S.SUBMITTED


def test_waiting_jobs_are_admitted_in_fifo_order_as_capacity_frees(
    ctx: BrokerContext, emulator: K8sEmulator, enqueued: list[tuple[str, str]]
) -> None:
    big = submitted(ctx, "big", gpus_per_node=12)
    first, _ = ctx.store.create(make_record("first", gpus_per_node=8))
    second, _ = ctx.store.create(make_record("second", gpus_per_node=4))
    assert submit_job(ctx, first.name) == "waiting_quota"
    assert submit_job(ctx, second.name) == "waiting_quota"  # 4 GPUs are free, but "first" is ahead
    assert ctx.store.require(second.name).detail.endswith("2nd in line")
    sync_jobs(ctx)
    assert enqueued == []
    emulator.set_condition("ml", big, "Succeeded")
    report = sync_jobs(ctx)
    assert report.admitted == [first.name, second.name]
    assert enqueued == [(SUBMIT_TASK, first.name), (SUBMIT_TASK, second.name)]
    assert ctx.store.require(first.name).status == S.ADMITTED
    assert submit_job(ctx, first.name) == "submitted"


def test_stuck_queued_jobs_are_enqueued_again(ctx: BrokerContext, enqueued: list[tuple[str, str]]) -> None:
    record, _ = ctx.store.create(make_record())
    sync_jobs(ctx)
    assert enqueued == []
    ctx.settings = ctx.settings.model_copy(update={"requeue_after_s": 0})
    sync_jobs(ctx)
    assert enqueued == [(SUBMIT_TASK, record.name)]


def test_nothing_is_re_sent_while_celerys_queue_still_holds_messages(
    ctx: BrokerContext, enqueued: list[tuple[str, str]]
) -> None:
    """Behind a backlog every waiting job looks stuck while its message is still queued: re-sending them all each
    cycle only grows the backlog. Once the queue has drained, a job still waiting gets its task again."""
    record, _ = ctx.store.create(make_record())
    ctx.settings = ctx.settings.model_copy(update={"requeue_after_s": 0})
    ctx.redis.lpush(DEFAULT_QUEUE, "a message not yet taken")
    try:
        sync_jobs(ctx)
        assert enqueued == []
    finally:
        ctx.redis.delete(DEFAULT_QUEUE)
    sync_jobs(ctx)
    assert enqueued == [(SUBMIT_TASK, record.name)]


def test_reservations_nobody_holds_are_given_back(ctx: BrokerContext) -> None:
    record, _ = ctx.store.create(make_record(gpus_per_node=4))
    ctx.quota.admit("ml", record.name, 1, 4, ctx.settings.quota_for("ml"))  # then the worker died
    ctx.store.transition(record.name, S.CANCELLED, reason="cancelled by request")  # the API cancels it
    sync_jobs(ctx)
    assert ctx.quota.held("ml") == {}


def test_a_cycle_skips_while_another_runs(ctx: BrokerContext) -> None:
    ctx.redis.set(ctx.keys.sync_lock, "other", ex=60)
    assert sync_jobs(ctx).skipped


def test_of_several_sync_messages_read_at_once_one_runs_a_cycle(ctx: BrokerContext) -> None:
    """A busy worker reads beat's queued messages late and together: the first runs, the rest skip, until half an
    interval has passed."""
    ctx.settings = ctx.settings.model_copy(update={"sync_interval_s": 0.4})
    assert [cycle_due(ctx) for _ in range(3)] == [True, False, False]
    time.sleep(0.3)
    assert cycle_due(ctx)


def test_admitted_and_cancelling_jobs_whose_task_was_lost_get_it_again(
    ctx: BrokerContext, enqueued: list[tuple[str, str]]
) -> None:
    from broker.admission import admit
    from broker.names import CANCEL_TASK

    admitted, _ = ctx.store.create(make_record("a"))
    admit(ctx, admitted)
    cancelling = submitted(ctx, "c")
    ctx.store.transition(cancelling, S.CANCELLING, reason="cancel requested")
    sync_jobs(ctx)
    assert enqueued == []
    ctx.settings = ctx.settings.model_copy(update={"requeue_after_s": 0})
    sync_jobs(ctx)
    assert sorted(enqueued) == sorted([(SUBMIT_TASK, admitted.name), (CANCEL_TASK, cancelling)])


def test_a_running_job_never_moves_back_to_submitted(ctx: BrokerContext, emulator: K8sEmulator) -> None:
    name = submitted(ctx)
    emulator.set_condition("ml", name, "Running")
    sync_jobs(ctx)
    emulator.set_condition("ml", name, "Running", status=False)  # only Created is True now
    assert sync_jobs(ctx).changed == {}
    assert ctx.store.require(name).status == S.RUNNING
