"""submit_job on real parts (Redis, the API emulator over HTTP): exactly one valid PyTorchJob per attempt."""

from __future__ import annotations

import pytest

from broker.context import BrokerContext
from broker.jobs import JobStatus
from broker.render import render_pytorchjob
from broker.submit import submit_job
from tests.support.jobs import make_record
from tests.support.k8s_emulator import K8sEmulator
from tests.support.pytorchjob_rules import validate_pytorchjob

S = JobStatus


def stored(ctx: BrokerContext, run_id: str = "run-1", **overrides: object) -> str:
    record, _ = ctx.store.create(make_record(run_id, **overrides))
    return record.name


def test_a_queued_job_becomes_one_valid_pytorchjob_and_submitted(ctx: BrokerContext, emulator: K8sEmulator) -> None:
    name = stored(ctx, num_nodes=4, gpus_per_node=2)
    assert submit_job(ctx, name) == "submitted"
    objects = emulator.objects("ml")
    assert [o["metadata"]["name"] for o in objects] == [name]
    validate_pytorchjob(objects[0])
    record = ctx.store.require(name)
    assert record.status == S.SUBMITTED and record.cluster_object == name and record.submitted_at
    assert [e["to"] for e in ctx.store.events(name)] == ["queued", "admitted", "submitted"]
    assert ctx.quota.held("ml") == {f"{name}#1": 8}


def test_submitting_again_does_nothing(ctx: BrokerContext, emulator: K8sEmulator) -> None:
    name = stored(ctx)
    submit_job(ctx, name)
    assert submit_job(ctx, name) == "skipped: job is submitted"
    assert emulator.calls("create") == 1


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_transient_errors_are_retried_without_a_duplicate(
    ctx: BrokerContext, emulator: K8sEmulator, sleeps: list[float], status: int
) -> None:
    emulator.fail_next(2, status, retry_after=3, verbs=("create",))
    name = stored(ctx)
    assert submit_job(ctx, name) == "submitted"
    assert emulator.calls("create") == 3 and len(emulator.objects()) == 1
    assert len(sleeps) == 2 and min(sleeps) >= 3  # Retry-After honoured


def test_a_create_whose_answer_was_lost_is_recognised_as_our_own(ctx: BrokerContext, emulator: K8sEmulator) -> None:
    emulator.drop_next(1, after_action=True, verbs=("create",))
    name = stored(ctx)
    assert submit_job(ctx, name) == "submitted"
    assert emulator.calls("create") == 2 and len(emulator.objects()) == 1


def test_a_slow_create_that_timed_out_still_leaves_one_object(ctx: BrokerContext, emulator: K8sEmulator) -> None:
    from broker.backends.kubernetes import KubernetesBackend
    from tests.support.k8s_emulator import api_client_for

    ctx.backend = KubernetesBackend(api_client_for(emulator), timeout_s=0.3)
    emulator.slow_next(1, 0.8, verbs=("create",))
    name = stored(ctx)
    assert submit_job(ctx, name) == "submitted"
    assert len(emulator.objects()) == 1


def test_transient_errors_past_the_limit_fail_the_job_with_the_last_error(
    ctx: BrokerContext, emulator: K8sEmulator
) -> None:
    emulator.fail_next(10, 503, verbs=("create",))
    name = stored(ctx)
    assert submit_job(ctx, name) == "failed"
    record = ctx.store.require(name)
    assert record.status == S.FAILED and "gave up after 4 tries" in record.detail and "503" in record.detail
    assert emulator.objects() == [] and ctx.quota.held("ml") == {}


def test_an_invalid_or_forbidden_answer_fails_at_once_with_the_servers_message(
    ctx: BrokerContext, emulator: K8sEmulator
) -> None:
    emulator.fail_next(1, 403, verbs=("create",))
    name = stored(ctx)
    assert submit_job(ctx, name) == "failed"
    assert emulator.calls("create") == 1
    assert "403" in ctx.store.require(name).detail


def test_someone_elses_object_of_the_same_name_is_a_clear_failure(ctx: BrokerContext, emulator: K8sEmulator) -> None:
    foreign = render_pytorchjob(make_record(), ctx.settings)
    foreign["metadata"]["labels"] = {"owner": "someone"}
    ctx.backend.create(foreign)
    name = stored(ctx)
    assert submit_job(ctx, name) == "failed"
    assert "was not created by this system" in ctx.store.require(name).detail
    assert emulator.get("ml", name)["metadata"]["labels"] == {"owner": "someone"}  # left alone


def test_a_job_that_does_not_fit_waits_and_creates_nothing(ctx: BrokerContext, emulator: K8sEmulator) -> None:
    big = stored(ctx, "big", gpus_per_node=12)
    small = stored(ctx, "small", gpus_per_node=8)
    assert submit_job(ctx, big) == "submitted"
    assert submit_job(ctx, small) == "waiting_quota"
    record = ctx.store.require(small)
    assert record.status == S.WAITING_QUOTA
    assert record.detail == "needs 8 GPUs, 4 of 16 free in namespace ml; 1st in line"
    assert emulator.calls("create") == 1


def test_the_clusters_resource_quota_holds_a_job_back(ctx: BrokerContext, emulator: K8sEmulator) -> None:
    emulator.set_gpu_quota("ml", hard=8, used=6)
    name = stored(ctx, gpus_per_node=4)
    assert submit_job(ctx, name) == "waiting_quota"
    assert "2 free under the ResourceQuota" in ctx.store.require(name).detail


def test_a_retried_attempt_deletes_the_previous_object_and_creates_its_own(
    ctx: BrokerContext, emulator: K8sEmulator
) -> None:
    name = stored(ctx)
    submit_job(ctx, name)
    ctx.store.transition(name, S.FAILED, reason="boom")
    ctx.quota.release("ml", name, 1)
    ctx.store.transition(name, S.QUEUED, reason="retry requested")
    assert submit_job(ctx, name) == "submitted"
    objects = emulator.objects("ml")
    assert [o["metadata"]["name"] for o in objects] == [f"{name}-r2"]
    assert objects[0]["metadata"]["labels"]["training-broker.io/attempt"] == "2"
    assert "--resume" in objects[0]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0][
        "command"]
    assert ctx.store.require(name).cluster_object == f"{name}-r2"


def test_a_cancel_during_the_create_leaves_no_object_behind(ctx: BrokerContext, emulator: K8sEmulator) -> None:
    name = stored(ctx)
    original_create = ctx.backend.create

    def create_while_cancel_arrives(job: dict) -> dict:
        ctx.store.transition(name, S.CANCELLING, reason="cancel requested")  # the API, mid-create
        return original_create(job)

    ctx.backend.create = create_while_cancel_arrives  # type: ignore[method-assign]
    assert submit_job(ctx, name) == "cancelled"
    assert emulator.objects() == []
    assert ctx.store.require(name).status == S.CANCELLED
    assert ctx.quota.held("ml") == {}


def test_a_cancelled_job_is_not_submitted(ctx: BrokerContext, emulator: K8sEmulator) -> None:
    name = stored(ctx)
    ctx.store.transition(name, S.CANCELLED, reason="cancelled by request")
    assert submit_job(ctx, name) == "skipped: job is cancelled"
    assert emulator.calls("create") == 0


def test_an_object_created_for_a_job_that_failed_meanwhile_is_deleted(
    ctx: BrokerContext, emulator: K8sEmulator
) -> None:
    name = stored(ctx)
    original_create = ctx.backend.create

    def create_after_a_duplicate_gave_up(job: dict) -> dict:
        ctx.store.transition(name, S.FAILED, reason="could not create the PyTorchJob")  # the other task
        return original_create(job)

    ctx.backend.create = create_after_a_duplicate_gave_up  # type: ignore[method-assign]
    assert submit_job(ctx, name).startswith("skipped: job is failed; deleted PyTorchJob")
    assert emulator.objects() == []


def test_a_duplicate_task_that_loses_the_race_keeps_the_object(ctx: BrokerContext, emulator: K8sEmulator) -> None:
    name = stored(ctx)
    original_create = ctx.backend.create

    def create_while_the_duplicate_finishes(job: dict) -> dict:
        created = original_create(job)
        ctx.store.transition(name, S.SUBMITTED, reason="created by the duplicate", cluster_object=name)
        return created

    ctx.backend.create = create_while_the_duplicate_finishes  # type: ignore[method-assign]
    assert submit_job(ctx, name) == "skipped: job is already submitted"
    assert len(emulator.objects()) == 1


def test_a_duplicate_task_that_lost_the_admission_race_keeps_its_twins_reservation(
    ctx: BrokerContext, emulator: K8sEmulator
) -> None:
    from broker.admission import admit

    name = stored(ctx, gpus_per_node=4)
    snapshot = ctx.store.require(name)  # the duplicate read the job while it was still queued
    assert submit_job(ctx, name) == "submitted"  # its twin ran first
    assert admit(ctx, snapshot) is None
    assert ctx.quota.held("ml") == {f"{name}#1": 4}


def test_a_job_cancelled_while_being_admitted_gives_its_reservation_back(ctx: BrokerContext) -> None:
    from broker.admission import admit

    name = stored(ctx, gpus_per_node=4)
    snapshot = ctx.store.require(name)
    ctx.store.transition(name, S.CANCELLED, reason="cancelled by request")
    assert admit(ctx, snapshot) is None
    assert ctx.quota.held("ml") == {} and ctx.quota.line("ml") == []
