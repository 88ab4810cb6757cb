"""Only our own objects are ever deleted: an object is this system's, for this job and that attempt, by its labels.

`delete_own` reads the object first and deletes it only when its labels say `managed-by: training-broker`, this job
and this attempt, passing the object's uid as a precondition (the API server then refuses to delete a different
object that took the name meanwhile). A foreign object raises `ForeignObject`, which callers turn into a job detail;
it is never deleted.
"""

from __future__ import annotations

from typing import Any

from broker.backends.errors import PermanentClusterError
from broker.context import BrokerContext
from broker.render import attempt_selector


class ForeignObject(PermanentClusterError):
    """An object of the expected name exists but this system did not create it for that job and attempt."""


def is_own(obj: dict[str, Any], job_name: str, attempt: int) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in attempt_selector(job_name, attempt).items())


def foreign_detail(namespace: str, name: str, job_name: str, attempt: int) -> str:
    return (f"a PyTorchJob named {name} exists in namespace {namespace} but was not created by this system for job "
            f"{job_name} attempt {attempt}; it was left alone")


def delete_own(ctx: BrokerContext, namespace: str, name: str, job_name: str, attempt: int) -> bool:
    """Delete `namespace/name` when it is this job's attempt. False when it is already gone; ForeignObject when it
    belongs to someone else."""
    obj = ctx.with_retries(lambda: ctx.backend.get(namespace, name), f"get PyTorchJob {namespace}/{name}")
    if obj is None:
        return False
    if not is_own(obj, job_name, attempt):
        raise ForeignObject(foreign_detail(namespace, name, job_name, attempt), status=409)
    uid = (obj.get("metadata") or {}).get("uid")
    return ctx.with_retries(lambda: ctx.backend.delete(namespace, name, uid=uid), f"delete PyTorchJob {name}")
