"""Admission by Kueue (`TRAINER_ADMISSION=kueue`): the broker keeps no quota of its own.

Each attempt's PyTorchJob is created suspended (`spec.runPolicy.suspend: true`) with the label
`kueue.x-k8s.io/queue-name: <LocalQueue>` — the request's `queue`, else the namespace's default
(`TRAINER_KUEUE_QUEUES`). Kueue's PyTorchJob integration admits the workload under its ClusterQueue and un-suspends
the object. Meanwhile the job is `waiting_quota` ("waiting for Kueue admission in <queue>") with its object recorded,
so the status sync follows it: once un-suspended it moves on (`submitted`, then whatever the operator reports), and
a cancel goes through the broker, which deletes the object.
"""

from __future__ import annotations

from typing import Any

from broker.jobs import JobRecord, JobSpec
from broker.settings import BrokerSettings

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


def enabled(settings: BrokerSettings) -> bool:
    return settings.admission == "kueue"


def queue_for(spec: JobSpec, settings: BrokerSettings) -> str:
    return spec.queue or settings.kueue_queue_for(spec.namespace)


def waiting_detail(queue: str) -> str:
    return f"waiting for Kueue admission in {queue}"


def apply(job: dict[str, Any], record: JobRecord, settings: BrokerSettings) -> dict[str, Any]:
    """The rendered PyTorchJob, suspended and labelled for Kueue (unchanged in `builtin` mode)."""
    if not enabled(settings):
        return job
    job["metadata"].setdefault("labels", {})[QUEUE_LABEL] = queue_for(record.spec, settings)
    job["spec"].setdefault("runPolicy", {})["suspend"] = True
    return job


def is_suspended_by_kueue(obj: dict[str, Any]) -> bool:
    """The object waits for Kueue: labelled with a queue and still suspended."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    run_policy = (obj.get("spec") or {}).get("runPolicy") or {}
    return QUEUE_LABEL in labels and run_policy.get("suspend") is True


def admitted_detail(obj: dict[str, Any]) -> str:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return f"admitted by Kueue in {labels.get(QUEUE_LABEL, '?')}"


def queue_view(record: JobRecord, settings: BrokerSettings) -> dict[str, Any]:
    """The `queue` object of a job waiting for Kueue: Kueue orders its line, so no position of ours."""
    return {"admission": "kueue", "namespace": record.namespace, "kueue_queue": queue_for(record.spec, settings),
            "position": None, "ahead": None, "waiting_for": "kueue"}
