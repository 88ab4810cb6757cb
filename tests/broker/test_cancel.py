"""cancel_job in every state, on real parts: the object is deleted (background), the job ends cancelled, quota
is given back; terminal jobs are left alone."""

from __future__ import annotations

import pytest

from broker.admission import admit
from broker.cancel import cancel_job
from broker.context import BrokerContext
from broker.jobs import JobStatus
from broker.submit import submit_job
from tests.support.jobs import make_record
from tests.support.k8s_emulator import K8sEmulator

S = JobStatus


def in_state(ctx: BrokerContext, emulator: K8sEmulator, state: JobStatus) -> str:
    """A job brought to `state` through the real flow (submit, then the operator's conditions and a sync)."""
    from broker.sync import sync_jobs

    if state == S.WAITING_QUOTA:
        hog, _ = ctx.store.create(make_record("hog", gpus_per_node=16))
        submit_job(ctx, hog.name)
    record, _ = ctx.store.create(make_record(gpus_per_node=2))
    name = record.name
    if state == S.QUEUED:
        return name
    if state == S.ADMITTED:  # admitted by quota, its create not yet done
        assert admit(ctx, record) is not None
        return name
    submit_job(ctx, name)
    if state in (S.WAITING_QUOTA, S.SUBMITTED):
        return name
    conditions = {S.RUNNING: ["Running"], S.RESTARTING: ["Running", "Restarting"], S.SUSPENDED: ["Suspended"],
                  S.SUCCEEDED: ["Succeeded"], S.FAILED: ["Failed"]}[state]
    for kind in conditions:
        emulator.set_condition("ml", name, kind)
    sync_jobs(ctx)
    assert ctx.store.require(name).status == state
    return name


@pytest.mark.parametrize(
    "state", [S.QUEUED, S.WAITING_QUOTA, S.SUBMITTED, S.RUNNING, S.RESTARTING, S.SUSPENDED]
)
def test_cancel_in_every_live_state_ends_cancelled_with_nothing_left(
    ctx: BrokerContext, emulator: K8sEmulator, state: JobStatus
) -> None:
    name = in_state(ctx, emulator, state)
    if state not in (S.QUEUED, S.WAITING_QUOTA):  # what the API does before it enqueues the task
        ctx.store.transition(name, S.CANCELLING, reason="cancel requested")
    assert cancel_job(ctx, name) == "cancelled"
    record = ctx.store.require(name)
    assert record.status == S.CANCELLED and record.finished_at
    assert emulator.get("ml", name) is None
    assert f"{name}#1" not in ctx.quota.held("ml")
    assert name not in ctx.quota.line("ml")
    if state not in (S.QUEUED, S.WAITING_QUOTA):
        assert emulator.delete_policies == ["Background"]


def test_cancel_of_an_admitted_job_before_its_object_exists(ctx: BrokerContext, emulator: K8sEmulator) -> None:
    name = in_state(ctx, emulator, S.ADMITTED)
    ctx.store.transition(name, S.CANCELLING, reason="cancel requested")
    assert cancel_job(ctx, name) == "cancelled"  # the DELETE's 404 is fine
    assert submit_job(ctx, name) == "skipped: job is cancelled"  # the submit task, arriving late
    assert emulator.objects() == []


def test_a_job_still_running_when_the_task_runs_is_moved_to_cancelling_first(
    ctx: BrokerContext, emulator: K8sEmulator
) -> None:
    name = in_state(ctx, emulator, S.RUNNING)
    assert cancel_job(ctx, name) == "cancelled"
    assert [e["to"] for e in ctx.store.events(name)][-2:] == ["cancelling", "cancelled"]
    assert emulator.objects() == []


@pytest.mark.parametrize("state", [S.SUCCEEDED, S.FAILED])
def test_a_finished_job_is_left_alone(ctx: BrokerContext, emulator: K8sEmulator, state: JobStatus) -> None:
    name = in_state(ctx, emulator, state)
    assert cancel_job(ctx, name) == f"skipped: job is {state}"
    assert ctx.store.require(name).status == state


def test_a_transient_delete_failure_is_retried(ctx: BrokerContext, emulator: K8sEmulator) -> None:
    name = in_state(ctx, emulator, S.RUNNING)
    emulator.fail_next(2, 429, retry_after=1, verbs=("delete",))
    assert cancel_job(ctx, name) == "cancelled"
    assert emulator.calls("delete") == 3 and emulator.objects() == []


def test_a_cancelled_job_can_be_retried_as_attempt_two(ctx: BrokerContext, emulator: K8sEmulator) -> None:
    name = in_state(ctx, emulator, S.RUNNING)
    cancel_job(ctx, name)
    ctx.store.transition(name, S.QUEUED, reason="retry requested")  # what POST /retry does
    assert submit_job(ctx, name) == "submitted"
    record = ctx.store.require(name)
    assert record.attempt == 2 and record.cluster_object == f"{name}-r2"
    assert [o["metadata"]["name"] for o in emulator.objects()] == [f"{name}-r2"]


def test_a_cancel_during_a_recovery_backoff_ends_it_at_once(ctx: BrokerContext, emulator: K8sEmulator) -> None:
    from broker import recovery
    from broker.jobs import now_iso
    from broker.lifecycle import CancelOutcome, request_cancel

    record, _ = ctx.store.create(make_record(gpus_per_node=2))
    ctx.store.transition(record.name, S.FAILED, reason="PyTorchJob failed")
    ctx.store.transition(record.name, S.QUEUED, reason="automatic recovery", expect_from={S.FAILED},
                         not_before=now_iso(9e9))
    assert recovery.in_backoff(ctx.store.require(record.name))
    decision = request_cancel(ctx.store, ctx.quota, record.name)
    assert decision.outcome == CancelOutcome.CANCELLED and decision.record.status == S.CANCELLED
    assert "automatic recovery stopped" in ctx.store.events(record.name)[-1]["reason"]
    assert submit_job(ctx, record.name) == "skipped: job is cancelled" and emulator.objects() == []


def test_a_waiting_job_with_an_object_is_cancelled_through_the_cluster(
    ctx: BrokerContext, emulator: K8sEmulator
) -> None:
    """In Kueue mode a waiting job has a suspended object: the cancel must delete it, not just end the record."""
    from broker.lifecycle import CancelOutcome, request_cancel

    record, _ = ctx.store.create(make_record(gpus_per_node=2))
    ctx.store.transition(record.name, S.WAITING_QUOTA, reason="waiting for Kueue admission in default",
                         cluster_object=record.object_name())
    decision = request_cancel(ctx.store, ctx.quota, record.name)
    assert decision.outcome == CancelOutcome.CANCELLING and decision.record.status == S.CANCELLING
