"""Fixtures of the broker's tests: the Kubernetes API emulator over HTTP and a backend pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.backends.kubernetes import KubernetesBackend
from broker.context import BrokerContext
from broker.settings import BrokerSettings, Quota
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


@pytest.fixture
def settings(redis_url: str) -> BrokerSettings:
    return BrokerSettings(
        redis_url=redis_url, key_prefix="t:", cluster_backend="kubernetes", submit_max_retries=3,
        submit_backoff_s=0.01, submit_backoff_max_s=0.05, vanished_grace_cycles=2, requeue_after_s=60,
        quotas={"default": Quota(gpus=64, jobs=20), "ml": Quota(gpus=16, jobs=4)},
    )


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def enqueued() -> list[tuple[str, str]]:
    """The tasks the logic enqueued, as `(task_name, job_name)`."""
    return []


@pytest.fixture
def ctx(
    settings: BrokerSettings, kube: KubernetesBackend, sleeps: list[float], enqueued: list[tuple[str, str]]
) -> BrokerContext:
    """Broker logic on real parts: a real Redis, the emulator over HTTP; backoff sleeps are recorded, not slept."""
    context = BrokerContext.build(settings, kube, lambda task, name: enqueued.append((task, name)))
    context.sleep = sleeps.append
    return context
