"""The Kubernetes adapter against the API emulator over HTTP: real client, real requests, typed errors."""

from __future__ import annotations

import json

import pytest

from broker.backends import errors
from broker.backends.kubernetes import KubernetesBackend
from broker.render import MANAGED_SELECTOR, render_pytorchjob
from broker.settings import BrokerSettings
from devstack import free_port
from tests.support.jobs import make_record
from tests.support.k8s_emulator import K8sEmulator

SETTINGS = BrokerSettings()


def job(run_id: str = "run-1", **overrides: object) -> dict:
    return render_pytorchjob(make_record(run_id, **overrides), SETTINGS)


def test_create_returns_the_stored_object_and_get_reads_it(kube: KubernetesBackend, emulator: K8sEmulator) -> None:
    created = kube.create(job())
    assert created["metadata"]["uid"] and created["metadata"]["resourceVersion"]
    assert kube.get("ml", "hf-run-1") == created
    assert kube.get("ml", "nope") is None


def test_a_second_create_of_the_same_name_is_already_exists(kube: KubernetesBackend) -> None:
    kube.create(job())
    with pytest.raises(errors.AlreadyExists) as caught:
        kube.create(job())
    assert caught.value.status == 409 and "already exists" in str(caught.value)


def test_an_object_the_cluster_refuses_is_invalid_with_the_servers_message(kube: KubernetesBackend) -> None:
    bad = job()
    bad["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] = 2
    with pytest.raises(errors.Invalid) as caught:
        kube.create(bad)
    assert caught.value.status == 422 and "Master.replicas" in str(caught.value)


def test_list_follows_every_page_and_filters_by_label(kube: KubernetesBackend, emulator: K8sEmulator) -> None:
    for i in range(5):
        kube.create(job(f"run-{i}"))
    stranger = job("other")
    stranger["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "someone-else"
    kube.create(stranger)
    names = sorted(o["metadata"]["name"] for o in kube.list("ml", MANAGED_SELECTOR))
    assert names == [f"hf-run-{i}" for i in range(5)]
    assert emulator.calls("list", "ml") == 3  # page size 2: 2 + 2 + 1


def test_a_list_of_some_names_reads_every_page_and_keeps_only_those(kube: KubernetesBackend,
                                                                    emulator: K8sEmulator) -> None:
    for i in range(5):
        kube.create(job(f"run-{i}"))
    kept = kube.list("ml", MANAGED_SELECTOR, only={"hf-run-1", "hf-run-4", "hf-gone"})
    assert sorted(o["metadata"]["name"] for o in kept) == ["hf-run-1", "hf-run-4"]
    assert emulator.calls("list", "ml") == 3  # still one LIST, every page of it


def test_a_listed_object_keeps_what_the_sync_reads_and_not_its_pod_templates(
    kube: KubernetesBackend, emulator: K8sEmulator
) -> None:
    created = kube.create(job("slim"))
    emulator.set_condition("ml", "hf-slim", "Running")
    [listed] = kube.list("ml", MANAGED_SELECTOR)
    assert listed["metadata"]["name"] == "hf-slim" and listed["metadata"]["uid"] == created["metadata"]["uid"]
    assert listed["metadata"]["labels"] == created["metadata"]["labels"]
    assert listed["spec"] == {"runPolicy": created["spec"]["runPolicy"]}  # no pytorchReplicaSpecs
    assert [c["type"] for c in listed["status"]["conditions"]][-1] == "Running"
    full = kube.get("ml", "hf-slim")
    assert full is not None and "pytorchReplicaSpecs" in full["spec"]  # a GET still answers the whole object
    assert len(json.dumps(listed)) * 2 < len(json.dumps(full))


def test_delete_uses_background_propagation_and_a_missing_object_is_false(
    kube: KubernetesBackend, emulator: K8sEmulator
) -> None:
    kube.create(job())
    assert kube.delete("ml", "hf-run-1") is True
    assert emulator.delete_policies == ["Background"]
    assert kube.delete("ml", "hf-run-1") is False
    assert emulator.objects() == []


@pytest.mark.parametrize(
    ("status", "kind"),
    [(429, errors.Throttled), (500, errors.ServerError), (503, errors.ServerError), (504, errors.ServerError)],
)
def test_transient_answers_become_transient_errors(
    kube: KubernetesBackend, emulator: K8sEmulator, status: int, kind: type
) -> None:
    emulator.fail_next(1, status, retry_after=2, verbs=("create",))
    with pytest.raises(kind) as caught:
        kube.create(job())
    assert caught.value.status == status and caught.value.retry_after == 2.0
    assert emulator.objects() == []


def test_forbidden_is_permanent(kube: KubernetesBackend, emulator: K8sEmulator) -> None:
    emulator.fail_next(1, 403)
    with pytest.raises(errors.Forbidden):
        kube.list("ml", MANAGED_SELECTOR)


def test_a_dropped_connection_is_unreachable(kube: KubernetesBackend, emulator: K8sEmulator) -> None:
    emulator.drop_next(1, verbs=("get",))
    with pytest.raises(errors.Unreachable):
        kube.get("ml", "x")
    assert kube.get("ml", "x") is None  # the next request is served normally


def test_a_slow_answer_times_out_as_unreachable(emulator: K8sEmulator) -> None:
    from tests.support.k8s_emulator import api_client_for

    impatient = KubernetesBackend(api_client_for(emulator), timeout_s=0.3)
    emulator.slow_next(1, 1.0, verbs=("list",))
    with pytest.raises(errors.Unreachable, match="timed out"):
        impatient.list("ml", MANAGED_SELECTOR)


def test_nothing_listening_is_unreachable() -> None:
    from kubernetes import client

    configuration = client.Configuration(host=f"http://127.0.0.1:{free_port()}")
    configuration.retries = False
    with pytest.raises(errors.Unreachable):
        KubernetesBackend(client.ApiClient(configuration), timeout_s=1.0).get("ml", "x")


def test_gpu_quota_is_the_tightest_hard_minus_used(kube: KubernetesBackend, emulator: K8sEmulator) -> None:
    assert kube.gpu_quota_free("ml") is None
    emulator.set_gpu_quota("ml", hard=16, used=4)
    emulator.set_gpu_quota("ml", hard=10, used=4, key="nvidia.com/gpu")
    assert kube.gpu_quota_free("ml") == 6


def test_a_create_answered_with_200_still_returns_the_object(kube: KubernetesBackend, emulator: K8sEmulator) -> None:
    emulator.create_code = 200  # the client decodes the body only on 201
    created = kube.create(job())
    assert created["metadata"]["name"] == "hf-run-1" and created["metadata"]["uid"]


def test_an_expired_continue_token_restarts_the_list(kube: KubernetesBackend, emulator: K8sEmulator) -> None:
    for i in range(3):
        kube.create(job(f"run-{i}"))
    emulator.expire_continues = 1
    names = sorted(o["metadata"]["name"] for o in kube.list("ml", MANAGED_SELECTOR))
    assert names == ["hf-run-0", "hf-run-1", "hf-run-2"]
    assert emulator.calls("list", "ml") == 4  # page, 410, then the LIST again from the start (2 pages)


def test_409_is_already_exists_or_conflict_by_the_status_reason() -> None:
    import json

    from kubernetes.client.exceptions import ApiException

    from broker.backends.kubernetes import from_api_exception

    def answer(reason: str) -> ApiException:
        return ApiException(status=409, reason="Conflict", body=json.dumps({"kind": "Status", "reason": reason,
                                                                            "message": f"{reason} happened"}))

    assert isinstance(from_api_exception(answer("AlreadyExists"), "create"), errors.AlreadyExists)
    conflict = from_api_exception(answer("Conflict"), "update")
    assert isinstance(conflict, errors.Conflict) and "Conflict happened" in str(conflict)


def test_the_operator_can_write_status_through_the_status_subresource(
    kube: KubernetesBackend, emulator: K8sEmulator
) -> None:
    kube.create(job())
    status = {"status": {"conditions": [{"type": "Running", "status": "True"}], "startTime": "2026-01-01T00:00:00Z"}}
    kube.custom.patch_namespaced_custom_object_status("kubeflow.org", "v1", "ml", "pytorchjobs", "hf-run-1", status)
    assert kube.get("ml", "hf-run-1")["status"]["startTime"] == "2026-01-01T00:00:00Z"
