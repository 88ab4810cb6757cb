"""The broker's one retry loop for cluster calls: exponential backoff with jitter, honouring `Retry-After`.

Only `TransientClusterError` (connection errors, timeouts, 429, 5xx) is retried; every other error propagates at
once. The delay before retry `i` (0-based) is a random value in `[d/2, d]` with `d = min(cap, base × 2^i)`, and
never less than the server's `Retry-After`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from broker.backends.errors import TransientClusterError

T = TypeVar("T")
log = logging.getLogger(__name__)


class GaveUp(TransientClusterError):
    """Still transient after every allowed retry. `last` is the final error; `tries` how many calls were made."""

    def __init__(self, last: TransientClusterError, tries: int) -> None:
        super().__init__(f"gave up after {tries} tries: {last}", status=last.status, retry_after=last.retry_after)
        self.last, self.tries = last, tries


def backoff_delay(retry: int, base_s: float, cap_s: float, retry_after: float | None = None) -> float:
    ceiling = min(cap_s, base_s * (2**retry))
    delay = random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography
    return max(delay, retry_after or 0.0)


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
    for retry in range(max_retries + 1):
        try:
            return call()
        except TransientClusterError as exc:
            if retry == max_retries:
                raise GaveUp(exc, retry + 1) from exc
            delay = backoff_delay(retry, base_s, cap_s, exc.retry_after)
            log.warning("%s: %s; retry %d/%d in %.2fs", what, exc, retry + 1, max_retries, delay)
            sleep(delay)
    raise AssertionError("unreachable")
