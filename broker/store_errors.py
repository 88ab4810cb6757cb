"""The job store's own errors (re-exported by `broker.store`)."""

from __future__ import annotations

from broker.jobs import JobRecord, JobStatus

# --- errors ----------------------------------------------------------------------------------------------------


class StoreError(Exception):
    """Base of the job store's own errors."""


class JobNotFound(StoreError):
    def __init__(self, name: str) -> None:
        super().__init__(f"job {name!r} not found")
        self.name = name


class JobConflict(StoreError):
    """A job of that name exists with a different spec. `existing` is that job."""

    def __init__(self, existing: JobRecord) -> None:
        super().__init__(f"job {existing.name!r} already exists with a different spec")
        self.existing = existing


class IllegalTransition(StoreError):
    """The move is not in the state machine from the job's current state. `current` is that state."""

    def __init__(self, name: str, current: JobStatus, target: JobStatus, attempt: int, why: str = "") -> None:
        message = why or f"job {name!r} cannot move from {current} to {target}"
        super().__init__(message)
        self.name, self.current, self.target, self.attempt = name, current, target, attempt


class TooManyJobs(StoreError):
    """The tenant holds as many job records as it may (`max_jobs`)."""

    def __init__(self, tenant: str, limit: int) -> None:
        super().__init__(f"tenant {tenant!r} holds {limit} jobs, its limit; wait until finished jobs expire")
        self.tenant, self.limit = tenant, limit


class StaleTransition(IllegalTransition):
    """The move is legal, but the job is not in the state (or attempt) the caller expected: it has moved on."""
