"""`KubernetesBackend.validate`: a `dryRun=All` create against the emulator — checked with the CRD schema and the
webhook rules, never stored."""

from __future__ import annotations

import pytest

from broker.backends.errors import Forbidden, Invalid
from broker.backends.kubernetes import KubernetesBackend
from broker.render import render_pytorchjob
from broker.settings import BrokerSettings
from tests.support.jobs import make_record
from tests.support.k8s_emulator import K8sEmulator


def test_a_valid_object_is_accepted_and_not_stored(kube: KubernetesBackend, emulator: K8sEmulator) -> None:
    job = render_pytorchjob(make_record(), BrokerSettings())
    checked = kube.validate(job)
    assert checked["metadata"]["name"] == job["metadata"]["name"] and checked["metadata"]["uid"]
    assert emulator.objects() == [] and emulator.calls("dry_run") == 1 and emulator.calls("create") == 0


def test_an_object_breaking_the_webhook_rules_is_invalid(kube: KubernetesBackend, emulator: K8sEmulator) -> None:
    job = render_pytorchjob(make_record(), BrokerSettings())
    job["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] = 2
    with pytest.raises(Invalid, match="Master.replicas must be set explicitly to 1") as caught:
        kube.validate(job)
    assert caught.value.status == 422 and emulator.objects() == []


def test_a_policy_refusal_is_forbidden(kube: KubernetesBackend, emulator: K8sEmulator) -> None:
    emulator.deny_next(1, "no GPUs for this team")
    with pytest.raises(Forbidden, match="no GPUs for this team"):
        kube.validate(render_pytorchjob(make_record(), BrokerSettings()))
