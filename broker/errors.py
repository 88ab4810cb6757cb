"""The broker's domain errors, in one module without dependencies, so any caller (the API's error handlers, the
tasks) can catch them without importing the store, Redis or the cluster client.

Cluster errors are the backends' own (`broker.backends.errors`): they are raised below this layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from broker.jobs import JobRecord, JobStatus


class SettingsError(ValueError):
    """An environment variable holds a value the broker cannot use."""


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


class Busy(StoreError):
    """A lifecycle decision lost its race with the broker too many times in a row; the caller may try again."""

    def __init__(self, name: str) -> None:
        super().__init__(f"job {name!r} kept changing state; try again")
        self.name = name
