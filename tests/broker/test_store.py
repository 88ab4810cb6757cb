"""The job store on a real Redis: atomic create, the one transition function, events, listing, broker queries."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterable

import pytest
import redis

from broker.jobs import JobRecord, JobSpec, JobStatus
from broker.store import Change, IllegalTransition, JobConflict, JobNotFound, JobStore, StaleTransition

S = JobStatus


def spec(run_id: str = "run-1", **overrides: object) -> JobSpec:
    base = JobSpec(
        framework="hf",
        model_id="tiny",
        run_id=run_id,
        checkpoint_base_uri="s3://runs/base",
        dataset_uri="s3://data/set",
        namespace="default",
        job_name=f"hf-{run_id}",
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def record(run_id: str = "run-1", **overrides: object) -> JobRecord:
    job_spec = spec(run_id, **overrides)
    return JobRecord(name=job_spec.job_name, spec=job_spec)


@pytest.fixture
def store(redis_client: redis.Redis) -> JobStore:
    return JobStore(redis_client, prefix="t:")


def test_create_stores_a_queued_job_with_its_first_event(store: JobStore) -> None:
    created, is_new = store.create(record())
    assert is_new
    stored = store.require("hf-run-1")
    assert stored == created
    assert stored.status == S.QUEUED and stored.attempt == 1 and stored.created_at and stored.enqueued_at
    assert stored.spec == spec()
    [event] = store.events("hf-run-1")
    assert event["from"] is None and event["to"] == "queued" and event["reason"] == "created"


def test_create_again_with_the_same_spec_returns_the_existing_job(store: JobStore) -> None:
    first, _ = store.create(record())
    again, is_new = store.create(record())
    assert not is_new and again == first
    assert len(store.events("hf-run-1")) == 1


def test_create_with_a_different_spec_under_the_same_name_conflicts(store: JobStore) -> None:
    store.create(record())
    with pytest.raises(JobConflict) as info:
        store.create(record(model_id="other"))
    assert info.value.existing.spec.model_id == "tiny"


def test_concurrent_identical_creates_make_exactly_one_job(store: JobStore, redis_url: str) -> None:
    outcomes: list[bool] = []
    barrier = threading.Barrier(8)

    def submit() -> None:
        own = JobStore(redis.Redis.from_url(redis_url, decode_responses=True), prefix="t:")
        barrier.wait()
        outcomes.append(own.create(record())[1])

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [False] * 7 + [True]
    assert len(store.events("hf-run-1")) == 1
    assert [r.name for r in store.list_jobs()[0]] == ["hf-run-1"]


def test_transition_moves_along_the_lifecycle_setting_timestamps(store: JobStore) -> None:
    store.create(record())
    store.transition("hf-run-1", S.ADMITTED, reason="quota ok")
    submitted = store.transition("hf-run-1", S.SUBMITTED, reason="created", cluster_object="hf-run-1")
    assert submitted.submitted_at and submitted.cluster_object == "hf-run-1" and submitted.detail == "created"
    running = store.transition("hf-run-1", S.RUNNING, reason="pods running")
    store.transition("hf-run-1", S.RESTARTING, reason="pod restarted")
    again = store.transition("hf-run-1", S.RUNNING, reason="running again")
    assert again.started_at == running.started_at
    done = store.transition("hf-run-1", S.SUCCEEDED, reason="finished", detail="all steps done")
    assert done.finished_at and done.detail == "all steps done"
    assert [e["to"] for e in store.events("hf-run-1")] == [
        "queued", "admitted", "submitted", "running", "restarting", "running", "succeeded"]
    assert store.events("hf-run-1")[-1]["from"] == "running"


def test_illegal_transitions_are_refused_and_leave_no_trace(store: JobStore) -> None:
    store.create(record())
    with pytest.raises(IllegalTransition) as info:
        store.transition("hf-run-1", S.RUNNING, reason="skip ahead")
    assert info.value.current == S.QUEUED and not isinstance(info.value, StaleTransition)
    store.transition("hf-run-1", S.CANCELLED, reason="user")
    with pytest.raises(IllegalTransition):
        store.transition("hf-run-1", S.ADMITTED, reason="late task")
    assert store.require("hf-run-1").status == S.CANCELLED
    assert len(store.events("hf-run-1")) == 2


def test_expectations_make_a_late_task_do_nothing(store: JobStore) -> None:
    store.create(record())
    store.transition("hf-run-1", S.CANCELLED, reason="user")
    store.transition("hf-run-1", S.QUEUED, reason="retry")
    with pytest.raises(StaleTransition) as info:
        store.transition("hf-run-1", S.ADMITTED, reason="old task", expect_attempt=1)
    assert info.value.attempt == 2
    store.transition("hf-run-1", S.WAITING_QUOTA, reason="no gpus")
    with pytest.raises(StaleTransition):
        store.transition("hf-run-1", S.ADMITTED, reason="old task", expect_from={S.QUEUED})
    assert store.require("hf-run-1").status == S.WAITING_QUOTA


def test_unknown_job_is_not_found(store: JobStore) -> None:
    assert store.get("nope") is None
    with pytest.raises(JobNotFound):
        store.require("nope")
    with pytest.raises(JobNotFound):
        store.transition("nope", S.CANCELLED, reason="x")
    with pytest.raises(JobNotFound):
        store.update("nope", detail="x")


def test_retry_increments_attempt_and_clears_the_previous_attempts_traces(store: JobStore) -> None:
    store.create(record())
    for target in (S.ADMITTED, S.SUBMITTED, S.RUNNING, S.FAILED):
        store.transition("hf-run-1", target, reason=str(target), cluster_object="hf-run-1")
    retried = store.transition("hf-run-1", S.QUEUED, reason="retry", expect_from={S.FAILED, S.CANCELLED})
    assert retried.attempt == 2 and retried.resume
    assert retried.submitted_at is None and retried.started_at is None and retried.finished_at is None
    assert retried.cluster_object is None
    assert store.events("hf-run-1")[-1] == {
        "at": retried.updated_at, "from": "failed", "to": "queued", "reason": "retry", "attempt": 2}


def test_update_changes_fields_without_an_event(store: JobStore) -> None:
    store.create(record())
    store.transition("hf-run-1", S.WAITING_QUOTA, reason="no gpus")
    updated = store.update("hf-run-1", detail="waiting: 16 of 64 GPUs free")
    assert updated.detail == "waiting: 16 of 64 GPUs free" and updated.status == S.WAITING_QUOTA
    assert len(store.events("hf-run-1")) == 2
    with pytest.raises(ValueError):
        store.update("hf-run-1", status="running")


def test_transition_many_applies_each_change_and_reports_refusals(store: JobStore) -> None:
    for run in ("a", "b"):
        store.create(record(run))
        store.transition(f"hf-{run}", S.ADMITTED, reason="ok")
        store.transition(f"hf-{run}", S.SUBMITTED, reason="created")
    results = store.transition_many([
        Change("hf-a", S.RUNNING, "pods running"),
        Change("hf-b", S.QUEUED, "not legal"),
        Change("hf-missing", S.RUNNING, "gone"),
    ])
    assert isinstance(results[0], JobRecord) and results[0].status == S.RUNNING
    assert isinstance(results[1], IllegalTransition) and results[1].current == S.SUBMITTED
    assert isinstance(results[2], JobNotFound)
    assert store.require("hf-b").status == S.SUBMITTED


def test_list_is_newest_first_filtered_and_paginated(store: JobStore) -> None:
    for i in range(7):
        store.create(record(f"r{i}", framework="meta" if i % 2 else "hf", namespace="ml" if i < 3 else "default"))
        time.sleep(0.002)  # distinct creation milliseconds: the order under test is by creation time
    store.transition("hf-r4", S.CANCELLED, reason="user")
    everything, cursor = store.list_jobs()
    assert [r.run_id for r in everything] == [f"r{i}" for i in reversed(range(7))] and cursor is None
    assert [r.run_id for r in store.list_jobs(framework="meta")[0]] == ["r5", "r3", "r1"]
    assert [r.run_id for r in store.list_jobs(namespace="ml", framework="hf")[0]] == ["r2", "r0"]
    assert [r.run_id for r in store.list_jobs(status="cancelled")[0]] == ["r4"]
    assert [r.run_id for r in store.list_jobs(status="queued", run_id="r6")[0]] == ["r6"]
    assert store.list_jobs(run_id="absent") == ([], None)
    assert [r.run_id for r in store.list_jobs(limit=2)[0]] == ["r6", "r5"]
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = store.list_jobs(limit=3, cursor=cursor)
        seen += [r.run_id for r in page]
        assert len(page) <= 3
        if cursor is None:
            break
    assert seen == [f"r{i}" for i in reversed(range(7))]
    with pytest.raises(ValueError):
        store.list_jobs(cursor="not-a-cursor")


def test_names_in_is_fifo_by_entry_and_groups_by_namespace(store: JobStore) -> None:
    for run in ("x", "y", "z"):
        store.create(record(run, namespace=f"ns-{run}"))
    for run in ("z", "x"):
        store.transition(f"hf-{run}", S.WAITING_QUOTA, reason="no gpus")
        time.sleep(0.005)
    assert store.names_in(S.WAITING_QUOTA) == ["hf-z", "hf-x"]
    assert store.names_in(S.QUEUED) == ["hf-y"]
    assert store.by_namespace(S.WAITING_QUOTA, S.QUEUED) == {"ns-z": ["hf-z"], "ns-x": ["hf-x"], "ns-y": ["hf-y"]}
    assert store.count_by_status()["waiting_quota"] == 2


def test_stale_queued_finds_jobs_waiting_too_long(store: JobStore) -> None:
    store.create(record("old"))
    time.sleep(0.05)
    assert store.stale_queued(older_than_s=0.02) == ["hf-old"]
    assert store.stale_queued(older_than_s=60) == []
    store.mark_requeued(["hf-old"])
    assert store.stale_queued(older_than_s=0.02) == []
    store.transition("hf-old", S.ADMITTED, reason="ok")
    time.sleep(0.05)
    assert store.stale_queued(older_than_s=0.02) == []


def test_store_refuses_a_client_without_decoded_responses(redis_url: str) -> None:
    with pytest.raises(ValueError):
        JobStore(redis.Redis.from_url(redis_url))


def test_redis_down_surfaces_as_connection_error() -> None:
    from devstack import free_port

    store = JobStore(redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", decode_responses=True))
    with pytest.raises(redis.ConnectionError):
        store.create(record())


def test_pagination_sees_every_job_once_even_when_created_in_the_same_millisecond(store: JobStore) -> None:
    for i in range(9):
        store.create(record(f"s{i}"))
    seen: list[str] = []
    page, cursor = store.list_jobs(limit=2)
    seen += [r.name for r in page]
    while cursor:
        page, cursor = store.list_jobs(limit=2, cursor=cursor)
        seen += [r.name for r in page]
    assert sorted(seen) == sorted(f"hf-s{i}" for i in range(9))


def test_two_filters_page_through_exactly_the_intersection_without_reading_other_records(
        store: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("broker.store._LIST_BUDGET", 7)  # force several script calls per page
    for i in range(60):
        framework = ("meta", "hf", "nemo")[i % 3]
        store.create(record(f"m{i:02d}", framework=framework, job_name=f"{framework}-m{i:02d}"))
        if i % 2:
            store.transition(f"{framework}-m{i:02d}", JobStatus.CANCELLED, reason="test")
    expected = [r.run_id for r in store.list_jobs(limit=100)[0] if r.framework == "meta" and r.status == "queued"]
    assert len(expected) == 10
    loaded: list[int] = []
    real_get_many = store.get_many

    def counting_get_many(names: Iterable[str]) -> list[JobRecord | None]:
        wanted = list(names)
        loaded.append(len(wanted))
        return real_get_many(wanted)

    monkeypatch.setattr(store, "get_many", counting_get_many)
    seen, cursor = [], None
    while True:
        page, cursor = store.list_jobs(status="queued", framework="meta", limit=4, cursor=cursor)
        seen += [r.run_id for r in page]
        if cursor is None:
            break
    assert seen == expected
    assert max(loaded) <= 4, "only the page's records are read"
