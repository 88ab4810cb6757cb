"""Cluster backends. `make_backend(settings)` is the one place that picks one, by `TRAINER_CLUSTER_BACKEND`;
`replica_logs(settings, …)` is where a backend's own replica logs are, for readers that must not run a backend
(the API)."""

from __future__ import annotations

from pathlib import Path

from broker.backends.base import ClusterBackend
from broker.backends.errors import ClusterError
from broker.settings import BrokerSettings


def make_backend(settings: BrokerSettings) -> ClusterBackend:
    """`kubernetes` → the Kubernetes API adapter; `local` → processes on this machine. Imports lazily, so a worker
    never loads the client library it does not use. Raises ClusterError for an unknown or unavailable backend."""
    if settings.cluster_backend == "kubernetes":
        from broker.backends.kubernetes import KubernetesBackend

        return KubernetesBackend(kubeconfig=settings.kubeconfig, timeout_s=settings.kube_request_timeout_s,
                                 page_size=settings.kube_list_page_size)
    if settings.cluster_backend == "local":
        try:
            from broker.backends.local import LocalBackend
        except ImportError as exc:
            raise ClusterError(f"the local backend is not available ({exc}); set TRAINER_CLUSTER_BACKEND") from exc
        return LocalBackend(settings.local_workdir, terminate_grace_s=settings.local_terminate_grace_s,
                            pass_env=settings.local_replica_env)
    raise ClusterError(f"unknown TRAINER_CLUSTER_BACKEND {settings.cluster_backend!r}: use kubernetes or local")


def replica_logs(settings: BrokerSettings, namespace: str, name: str) -> list[Path]:
    """The replica logs the configured backend keeps itself for object `name`, Master first. Only the local backend
    keeps any (files under `TRAINER_LOCAL_WORKDIR`); on Kubernetes the run's `logs/` in storage is the one source."""
    if settings.cluster_backend != "local":
        return []
    from broker.backends import local_files

    return local_files.log_files(Path(settings.local_workdir).resolve(), namespace, name)
