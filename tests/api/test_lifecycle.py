"""Reading, listing, events, cancel and retry over the API, with the broker's moves made through the real store."""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask.testing import FlaskClient

from broker.jobs import JobStatus
from broker.names import CANCEL_TASK, SUBMIT_TASK
from broker.store import IllegalTransition, JobStore
from tests.api.conftest import AUTH, sample

S = JobStatus
PATHS = {
    S.ADMITTED: [S.ADMITTED],
    S.SUBMITTED: [S.ADMITTED, S.SUBMITTED],
    S.RUNNING: [S.ADMITTED, S.SUBMITTED, S.RUNNING],
    S.RESTARTING: [S.ADMITTED, S.SUBMITTED, S.RUNNING, S.RESTARTING],
    S.SUSPENDED: [S.ADMITTED, S.SUBMITTED, S.SUSPENDED],
    S.WAITING_QUOTA: [S.WAITING_QUOTA],
    S.SUCCEEDED: [S.ADMITTED, S.SUBMITTED, S.RUNNING, S.SUCCEEDED],
    S.FAILED: [S.ADMITTED, S.SUBMITTED, S.RUNNING, S.FAILED],
    S.CANCELLED: [S.CANCELLED],
    S.CANCELLING: [S.ADMITTED, S.SUBMITTED, S.CANCELLING],
}


def submit(client: FlaskClient, run_id: str = "run-1", **overrides: Any) -> str:
    response = client.post("/train", json=sample(run_id=run_id, **overrides), headers=AUTH)
    assert response.status_code == 202
    return str(response.get_json()["name"])


def move(store: JobStore, name: str, status: JobStatus) -> None:
    for step in PATHS[status]:
        store.transition(name, step, reason=f"broker: {step}")


def test_an_unknown_job_is_404_everywhere(client: FlaskClient) -> None:
    for method, path in [("get", "/train/nope"), ("get", "/train/nope/events"), ("post", "/train/nope/cancel"),
                         ("post", "/train/nope/retry")]:
        response = getattr(client, method)(path, headers=AUTH)
        assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"


def test_status_shows_what_the_broker_recorded(client: FlaskClient, store: JobStore) -> None:
    name = submit(client)
    move(store, name, S.RUNNING)
    store.update(name, cluster_object=name)
    body = client.get(f"/train/{name}", headers=AUTH).get_json()
    assert body["status"] == "running" and body["cluster_object"] == name
    assert body["submitted_at"] and body["started_at"] and body["finished_at"] is None


def test_events_list_every_transition_with_time_states_and_reason(client: FlaskClient, store: JobStore) -> None:
    name = submit(client)
    move(store, name, S.FAILED)
    events = client.get(f"/train/{name}/events", headers=AUTH).get_json()["events"]
    assert [(e["from"], e["to"]) for e in events] == [
        (None, "queued"), ("queued", "admitted"), ("admitted", "submitted"), ("submitted", "running"),
        ("running", "failed")]
    assert all(e["at"] and e["reason"] and e["attempt"] == 1 for e in events)


def test_list_is_newest_first_filtered_and_paginated_by_cursor(client: FlaskClient, store: JobStore) -> None:
    names = []
    for i, framework in enumerate(["hf", "meta", "hf", "nemo", "hf"]):
        names.append(submit(client, f"run-{i}", framework=framework, namespace="team-a" if i < 2 else "team-b"))
        time.sleep(0.002)  # distinct creation milliseconds: the order under test is by creation time
    move(store, names[2], S.FAILED)
    listed = client.get("/train", headers=AUTH).get_json()
    assert [j["name"] for j in listed["jobs"]] == names[::-1] and listed["next_cursor"] is None

    def names_for(query: str) -> list[str]:
        return [j["name"] for j in client.get(f"/train?{query}", headers=AUTH).get_json()["jobs"]]

    assert names_for("framework=hf") == [names[4], names[2], names[0]]
    assert names_for("status=failed") == [names[2]]
    assert names_for("run_id=run-3") == [names[3]]
    assert names_for("namespace=team-a&framework=meta") == [names[1]]
    seen, cursor = [], None
    while True:
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(f"/train?{query}", headers=AUTH).get_json()
        seen += [j["name"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == names[::-1]


@pytest.mark.parametrize("status", [S.QUEUED, S.WAITING_QUOTA])
def test_cancel_before_the_cluster_is_immediate(client: FlaskClient, store: JobStore, tasks: Any,
                                                status: JobStatus) -> None:
    name = submit(client)
    if status != S.QUEUED:
        move(store, name, status)
    response = client.post(f"/train/{name}/cancel", headers=AUTH)
    assert response.status_code == 200 and response.get_json()["status"] == "cancelled"
    assert response.get_json()["finished_at"]
    assert tasks() == [(SUBMIT_TASK, [name])]  # no cancel task: there is nothing on the cluster
    with pytest.raises(IllegalTransition):  # a submit task picking the job up later finds it cancelled and stops
        store.transition(name, S.ADMITTED, reason="late submit task", expect_from={S.QUEUED, S.WAITING_QUOTA})


@pytest.mark.parametrize("status", [S.ADMITTED, S.SUBMITTED, S.RUNNING, S.RESTARTING, S.SUSPENDED])
def test_cancel_of_a_job_that_may_be_on_the_cluster_goes_through_the_broker(
        client: FlaskClient, store: JobStore, tasks: Any, status: JobStatus) -> None:
    name = submit(client)
    move(store, name, status)
    response = client.post(f"/train/{name}/cancel", headers=AUTH)
    assert response.status_code == 202 and response.get_json()["status"] == "cancelling"
    again = client.post(f"/train/{name}/cancel", headers=AUTH)
    assert again.status_code == 202 and again.get_json()["status"] == "cancelling"
    assert tasks() == [(SUBMIT_TASK, [name]), (CANCEL_TASK, [name])]


@pytest.mark.parametrize("status", [S.SUCCEEDED, S.FAILED, S.CANCELLED])
def test_cancel_of_a_finished_job_is_409(client: FlaskClient, store: JobStore, status: JobStatus) -> None:
    name = submit(client)
    move(store, name, status)
    response = client.post(f"/train/{name}/cancel", headers=AUTH)
    assert response.status_code == 409
    assert response.get_json()["error"]["current_status"] == status.value


@pytest.mark.parametrize("status", [S.FAILED, S.CANCELLED])
def test_retry_requeues_with_the_next_attempt_resuming(client: FlaskClient, store: JobStore, tasks: Any,
                                                       status: JobStatus) -> None:
    name = submit(client, resume_from_checkpoint=False)
    move(store, name, status)
    response = client.post(f"/train/{name}/retry", headers=AUTH)
    assert response.status_code == 202 and response.headers["Location"] == f"/train/{name}"
    body = response.get_json()
    assert body["status"] == "queued" and body["attempt"] == 2 and body["resume_from_checkpoint"] is True
    assert body["finished_at"] is None
    assert tasks() == [(SUBMIT_TASK, [name]), (SUBMIT_TASK, [name])]
    assert store.events(name)[-1]["to"] == "queued" and store.events(name)[-1]["attempt"] == 2


@pytest.mark.parametrize("status", [S.QUEUED, S.RUNNING, S.SUCCEEDED, S.CANCELLING])
def test_retry_of_a_job_that_did_not_fail_or_get_cancelled_is_409(client: FlaskClient, store: JobStore,
                                                                  status: JobStatus) -> None:
    name = submit(client)
    if status != S.QUEUED:
        move(store, name, status)
    response = client.post(f"/train/{name}/retry", headers=AUTH)
    assert response.status_code == 409 and response.get_json()["error"]["current_status"] == status.value
