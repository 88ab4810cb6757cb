"""Fixtures of the broker's tests: the Kubernetes API emulator over HTTP and a backend pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.backends.kubernetes import KubernetesBackend
from tests.support.k8s_emulator import K8sEmulator, api_client_for


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[K8sEmulator]:
    server = K8sEmulator().start()
    yield server
    server.stop()


@pytest.fixture
def emulator(emulator_server: K8sEmulator) -> K8sEmulator:
    """The session's emulator, emptied (objects, quotas, faults, counters) for this test."""
    emulator_server.reset()
    return emulator_server


@pytest.fixture
def kube(emulator: K8sEmulator) -> KubernetesBackend:
    return KubernetesBackend(api_client_for(emulator), timeout_s=5.0, page_size=2)


@pytest.fixture
def kubeconfig(emulator: K8sEmulator, tmp_path: Path) -> Path:
    return emulator.write_kubeconfig(tmp_path / "kubeconfig")
