"""The emulator's controls that play the cluster's other actors: the Training Operator (conditions, replica
statuses), the cluster's admission (ResourceQuotas, an admission policy's 403, a validating webhook's 422) and Kueue.

Kueue, just enough to test the broker's `kueue` admission mode (no ClusterQueues, no quota of its own):
`kueue_admit(namespace, name)` is what Kueue does when it admits a workload — it un-suspends the PyTorchJob
(`spec.runPolicy.suspend: false`) and, playing the operator, marks the Suspended condition False. It refuses an
object without the `kueue.x-k8s.io/queue-name` label or that is not suspended, as Kueue would never touch it.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ClusterControls:
    """Mixed into `K8sEmulator`, whose state (under its lock) these methods change."""

    lock: threading.RLock
    jobs: dict[tuple[str, str], dict[str, Any]]
    quotas: dict[str, list[dict[str, Any]]]
    denials: list[tuple[int, int, str, str]]
    version: int

    def set_condition(self, namespace: str, name: str, kind: str, status: bool = True, *,
                      reason: str | None = None, message: str = "") -> None:
        """Write a status condition as the Training Operator does (Running and Restarting exclude each other; a
        final condition ends Running; startTime/completionTime follow)."""
        with self.lock:
            obj = self.jobs[(namespace, name)]
            st = obj.setdefault("status", {})
            conditions: list[dict[str, Any]] = st.setdefault("conditions", [])
            stamp = now()
            exclusive = {"Running": ["Restarting", "Suspended"], "Restarting": ["Running"], "Succeeded": ["Running"],
                         "Failed": ["Running"], "Suspended": ["Running"]}
            if status:
                for other in exclusive.get(kind, []):
                    for cond in conditions:
                        if cond["type"] == other and cond["status"] == "True":
                            cond.update(status="False", lastTransitionTime=stamp, lastUpdateTime=stamp)
            conditions[:] = [c for c in conditions if c["type"] != kind]
            conditions.append({
                "type": kind, "status": "True" if status else "False",
                "reason": reason or f"PyTorchJob{kind}", "message": message or f"PyTorchJob {name} is {kind}.",
                "lastUpdateTime": stamp, "lastTransitionTime": stamp,
            })
            if kind == "Running" and status:
                st.setdefault("startTime", stamp)
            if kind in ("Succeeded", "Failed") and status:
                st["completionTime"] = stamp
            self._bump(obj)

    def deny_next(self, n: int, message: str = "denied by admission policy") -> None:
        with self.lock:
            self.denials.append((n, 403, "Forbidden", message))

    def reject_next(self, n: int, message: str = "denied by a validating webhook") -> None:
        with self.lock:
            self.denials.append((n, 422, "Invalid", message))

    def kueue_admit(self, namespace: str, name: str) -> None:
        """Admit a suspended, queue-labelled PyTorchJob as Kueue does: un-suspend it (see the module docstring)."""
        with self.lock:
            obj = self.jobs[(namespace, name)]
            if "kueue.x-k8s.io/queue-name" not in (obj["metadata"].get("labels") or {}):
                raise ValueError(f"{namespace}/{name} has no kueue.x-k8s.io/queue-name label")
            policy = obj["spec"].setdefault("runPolicy", {})
            if policy.get("suspend") is not True:
                raise ValueError(f"{namespace}/{name} is not suspended")
            policy["suspend"] = False
            obj["metadata"]["generation"] = int(obj["metadata"].get("generation", 1)) + 1
        self.set_condition(namespace, name, "Suspended", False, reason="PyTorchJobResumed",
                           message=f"PyTorchJob {name} is resumed.")

    def set_replica_statuses(self, namespace: str, name: str, statuses: dict[str, dict[str, int]]) -> None:
        with self.lock:
            obj = self.jobs[(namespace, name)]
            obj.setdefault("status", {})["replicaStatuses"] = statuses
            self._bump(obj)

    def set_gpu_quota(self, namespace: str, hard: int, used: int = 0, key: str = "requests.nvidia.com/gpu") -> None:
        with self.lock:
            self.quotas.setdefault(namespace, []).append({
                "metadata": {"name": f"gpu-quota-{len(self.quotas[namespace])}", "namespace": namespace},
                "spec": {"hard": {key: str(hard)}},
                "status": {"hard": {key: str(hard)}, "used": {key: str(used)}},
            })

    def _bump(self, obj: dict[str, Any]) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
