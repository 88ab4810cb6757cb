"""The Training Operator's status shape, computed from what the local backend observes of its replicas.

Pure functions: given each replica's state (running, or ended with an exit code, or vanished), produce
`.status` the way the operator writes it — `conditions` Created → Running → Succeeded | Failed (the job succeeds when
its Master succeeds; any failed replica fails it otherwise), `replicaStatuses` {active, succeeded, failed} per
replica type, `startTime`, `completionTime` — so the broker's sync maps a local job exactly like a cluster one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

RUNNING, SUCCEEDED, FAILED = "Running", "Succeeded", "Failed"


@dataclasses.dataclass(frozen=True)
class ReplicaState:
    """One replica as observed now. `exit_code` is None while it runs, and when it vanished without one."""

    replica_type: str
    index: int
    phase: str  # RUNNING | SUCCEEDED | FAILED
    exit_code: int | None = None
    finished_at: str | None = None
    vanished: bool = False

    @property
    def label(self) -> str:
        return f"{self.replica_type}-{self.index}"

    def describe(self) -> str:
        if self.vanished:
            return f"{self.label} vanished without recording an exit code"
        return f"{self.label} exited with code {self.exit_code}"


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How the job ended: `phase` SUCCEEDED or FAILED, when, and why."""

    phase: str
    at: str
    reason: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> Outcome:
        return cls(phase=data["phase"], at=data["at"], reason=data["reason"], message=data["message"])


def decide_outcome(name: str, replicas: list[ReplicaState], now: str) -> Outcome | None:
    """The job's terminal outcome, or None while it still runs. Master success is job success."""
    master = [r for r in replicas if r.replica_type == "Master"]
    if master and all(r.phase == SUCCEEDED for r in master):
        at = max((r.finished_at or now) for r in master)
        return Outcome(SUCCEEDED, at, "PyTorchJobSucceeded", f"PyTorchJob {name} is successfully completed.")
    failed = [r for r in replicas if r.phase == FAILED]
    if failed:
        at = min((r.finished_at or now) for r in failed)
        counts = _failed_counts(failed)
        why = "; ".join(r.describe() for r in failed)
        message = f"PyTorchJob {name} is failed because {counts}: {why}."
        return Outcome(FAILED, at, "PyTorchJobFailed", message)
    if not any(r.phase == RUNNING for r in replicas):
        # Only workers were left and they all succeeded while no Master was declared: count it as success.
        at = max((r.finished_at or now) for r in replicas) if replicas else now
        return Outcome(SUCCEEDED, at, "PyTorchJobSucceeded", f"PyTorchJob {name} is successfully completed.")
    return None


def _failed_counts(failed: list[ReplicaState]) -> str:
    by_type: dict[str, int] = {}
    for r in failed:
        by_type[r.replica_type] = by_type.get(r.replica_type, 0) + 1
    return ", ".join(f"{n} {t} replica(s) failed" for t, n in by_type.items())


def _condition(kind: str, status: bool, reason: str, message: str, at: str) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message,
        "lastUpdateTime": at,
        "lastTransitionTime": at,
    }


def replica_statuses(replicas: list[ReplicaState]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in replicas:
        counts = out.setdefault(r.replica_type, {"active": 0, "succeeded": 0, "failed": 0})
        key = {RUNNING: "active", SUCCEEDED: "succeeded", FAILED: "failed"}[r.phase]
        counts[key] += 1
    return out


def job_status(name: str, created_at: str, replicas: list[ReplicaState], outcome: Outcome | None) -> dict[str, Any]:
    """`.status` as the operator writes it: conditions in the order they happened, the last one current."""
    conditions = [_condition("Created", True, "PyTorchJobCreated", f"PyTorchJob {name} is created.", created_at)]
    running_msg = f"PyTorchJob {name} is running."
    if outcome is None:
        conditions.append(_condition("Running", True, "PyTorchJobRunning", running_msg, created_at))
    else:
        conditions.append(_condition("Running", False, "PyTorchJobRunning", running_msg, outcome.at))
        conditions.append(_condition(outcome.phase, True, outcome.reason, outcome.message, outcome.at))
    status: dict[str, Any] = {
        "conditions": conditions,
        "replicaStatuses": replica_statuses(replicas),
        "startTime": created_at,
    }
    if outcome is not None:
        status["completionTime"] = outcome.at
    return status
