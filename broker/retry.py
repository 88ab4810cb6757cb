"""The broker's one retry layer for cluster calls: tenacity, with exponential backoff and jitter, honouring
`Retry-After`. Celery never retries a task on top of it (`broker.tasks`).

Only `TransientClusterError` (connection errors, timeouts, 429, 5xx) is retried; every other error propagates at
once. The delay before retry `i` (0-based) is a random value in `[d/2, d]` with `d = min(cap, base × 2^i)`, and
never less than the server's `Retry-After`. After `max_retries` retries the call raises `GaveUp` with the last
error. The worst case of one call is stated in `BrokerSettings.worst_case_call_s`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from tenacity import RetryCallState, RetryError, Retrying, retry_if_exception_type, stop_after_attempt

from broker.backends.errors import ClusterError, TransientClusterError

T = TypeVar("T")
log = logging.getLogger(__name__)


class GaveUp(ClusterError):
    """Still transient after every allowed retry. `last` is the final error; `tries` how many calls were made.

    A `ClusterError` but not a `TransientClusterError`: nothing retries it again."""

    def __init__(self, last: TransientClusterError, tries: int) -> None:
        super().__init__(f"gave up after {tries} tries: {last}", status=last.status)
        self.last, self.tries, self.retry_after = last, tries, last.retry_after


def backoff_delay(retry: int, base_s: float, cap_s: float, retry_after: float | None = None) -> float:
    ceiling = min(cap_s, base_s * (2**retry))
    delay = random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography
    return max(delay, retry_after or 0.0)


def _error(state: RetryCallState) -> TransientClusterError | None:
    exc = state.outcome.exception() if state.outcome else None
    return exc if isinstance(exc, TransientClusterError) else None


def call_with_retries(
    call: Callable[[], T],
    *,
    max_retries: int,
    base_s: float,
    cap_s: float,
    what: str,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`call()`, retried up to `max_retries` times on transient errors. Raises GaveUp after the last one."""

    def wait(state: RetryCallState) -> float:
        exc = _error(state)
        return backoff_delay(state.attempt_number - 1, base_s, cap_s, exc.retry_after if exc else None)

    def before_sleep(state: RetryCallState) -> None:
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning("%s: %s; retry %d/%d in %.2fs", what, _error(state), state.attempt_number, max_retries, delay)

    retrying = Retrying(stop=stop_after_attempt(max_retries + 1), wait=wait, sleep=sleep,
                        retry=retry_if_exception_type(TransientClusterError), before_sleep=before_sleep)
    try:
        return retrying(call)
    except RetryError as exc:
        last = exc.last_attempt
        error = last.exception()
        assert isinstance(error, TransientClusterError)
        raise GaveUp(error, last.attempt_number) from error
