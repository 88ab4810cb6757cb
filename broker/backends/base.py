"""One interface for every place a PyTorchJob can run.

Backends speak in plain `kubeflow.org/v1` PyTorchJob dicts, exactly as the Kubernetes API returns them
(`metadata`, `spec`, `status.conditions`, `status.replicaStatuses`, `startTime`, `completionTime`), so the broker's
status sync maps one shape whatever the backend. They raise only the errors in `broker.backends.errors`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Protocol

PyTorchJob = dict[str, Any]

#: What a LIST keeps of each object's metadata: the sync's view (`status_view`).
_LISTED_METADATA = ("name", "namespace", "uid", "labels", "annotations", "resourceVersion", "creationTimestamp")


def status_view(obj: PyTorchJob) -> PyTorchJob:
    """The object as the status sync reads it: identity, labels and annotations, `spec.runPolicy` (Kueue's
    `suspend`) and the whole `status`, without the replica specs (pod templates: containers, env, args, volumes)
    and `managedFields` — most of an object's size, so a LIST of many objects holds a few hundred bytes each."""
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    view: PyTorchJob = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
                        "metadata": {k: metadata[k] for k in _LISTED_METADATA if k in metadata}}
    if "runPolicy" in spec:
        view["spec"] = {"runPolicy": spec["runPolicy"]}
    if "status" in obj:
        view["status"] = obj["status"]
    return view


class ClusterBackend(Protocol):
    def create(self, job: PyTorchJob) -> PyTorchJob:
        """Create the object in `job["metadata"]["namespace"]`; return it as stored. Raises AlreadyExists."""
        ...

    def get(self, namespace: str, name: str) -> PyTorchJob | None:
        """The object, or None when it does not exist."""
        ...

    def list(self, namespace: str, label_selector: str,
             only: Collection[str] | None = None) -> list[PyTorchJob]:
        """Every object in the namespace matching the selector (all pages), each as its `status_view`; with `only`,
        just the objects of those names, kept page by page — so the sync holds the jobs it follows, not every
        finished object the namespace still has."""
        ...

    def delete(self, namespace: str, name: str, uid: str | None = None) -> bool:
        """Delete with background propagation. False when it was already gone (404 is not an error). With `uid`,
        only the object of that uid (another object that took the name is refused with Conflict)."""
        ...

    def validate(self, job: PyTorchJob) -> PyTorchJob:
        """Ask the cluster to check the object without storing it (a dry-run create, `dryRun=All`): the object
        as it would be stored. Raises Invalid (422/400), Forbidden (403) or another ClusterError."""
        ...

    def gpu_quota_free(self, namespace: str) -> int | None:
        """GPUs still free under the namespace's ResourceQuota, or None when there is no such quota."""
        ...
