"""The product's own cluster errors. Backends translate their client library's exceptions into these, once."""

from __future__ import annotations


class ClusterError(Exception):
    """Any failure talking to the cluster. `status` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransientClusterError(ClusterError):
    """Worth retrying with backoff: connection errors, timeouts, 5xx, throttling."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class Throttled(TransientClusterError):
    """429 Too Many Requests: wait at least `retry_after` seconds."""


class ServerError(TransientClusterError):
    """500, 502, 503, 504."""


class Unreachable(TransientClusterError):
    """Connection refused, reset or timed out: no HTTP answer at all."""


class PermanentClusterError(ClusterError):
    """Retrying will not help: the request itself is wrong or not allowed."""


class AlreadyExists(PermanentClusterError):
    """409 on create: an object of that name exists (the caller decides whether it is its own)."""


class Conflict(PermanentClusterError):
    """409 other than AlreadyExists (for example a resourceVersion conflict)."""


class Forbidden(PermanentClusterError):
    """403: RBAC or an admission policy refused the request."""


class Invalid(PermanentClusterError):
    """422 or 400: the API server or a webhook rejected the object."""


class NotFound(PermanentClusterError):
    """404."""
