"""`make_backend` picks the backend named by TRAINER_CLUSTER_BACKEND; the kubernetes one reads KUBECONFIG."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.backends import make_backend
from broker.backends.errors import ClusterError
from broker.backends.kubernetes import KubernetesBackend
from broker.render import MANAGED_SELECTOR
from broker.settings import BrokerSettings
from tests.support.k8s_emulator import K8sEmulator


def test_kubernetes_backend_from_kubeconfig_talks_to_that_server(
    emulator: K8sEmulator, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    backend = make_backend(BrokerSettings.from_env({"KUBECONFIG": str(kubeconfig)}))
    assert isinstance(backend, KubernetesBackend)
    assert backend.list("ml", MANAGED_SELECTOR) == []
    assert emulator.calls("list", "ml") == 1


def test_no_cluster_configuration_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ClusterError, match="no Kubernetes configuration"):
        make_backend(BrokerSettings(cluster_backend="kubernetes", kubeconfig=str(tmp_path / "missing")))


def test_local_backend_is_chosen_by_name(tmp_path: Path) -> None:
    backend = make_backend(BrokerSettings(cluster_backend="local", local_workdir=str(tmp_path)))
    assert type(backend).__name__ == "LocalBackend"


def test_an_unknown_backend_is_refused() -> None:
    with pytest.raises(ClusterError, match="unknown TRAINER_CLUSTER_BACKEND"):
        make_backend(BrokerSettings(cluster_backend="nomad"))
