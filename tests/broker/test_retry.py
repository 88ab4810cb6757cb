"""The one retry loop: exponential backoff with jitter, never shorter than Retry-After, only transient errors."""

from __future__ import annotations

import pytest

from broker.backends.errors import Forbidden, ServerError, Throttled
from broker.retry import GaveUp, backoff_delay, call_with_retries


def test_delays_double_with_jitter_up_to_the_cap() -> None:
    for retry, ceiling in [(0, 1.0), (1, 2.0), (2, 4.0), (6, 10.0)]:
        delay = backoff_delay(retry, base_s=1.0, cap_s=10.0)
        assert ceiling / 2 <= delay <= ceiling


def test_retry_after_is_a_floor() -> None:
    assert backoff_delay(0, base_s=0.1, cap_s=1.0, retry_after=7) == 7


def test_transient_errors_are_retried_then_given_up_with_the_last_error() -> None:
    sleeps: list[float] = []
    errors = iter([Throttled("slow down", status=429, retry_after=2), ServerError("boom", status=503)] * 3)

    def call() -> None:
        raise next(errors)

    with pytest.raises(GaveUp) as caught:
        call_with_retries(call, max_retries=3, base_s=0.01, cap_s=0.1, what="x", sleep=sleeps.append)
    assert caught.value.tries == 4 and isinstance(caught.value.last, ServerError)
    assert "gave up after 4 tries: boom" in str(caught.value)
    assert len(sleeps) == 3 and sleeps[0] >= 2


def test_permanent_errors_are_not_retried() -> None:
    calls: list[int] = []

    def call() -> None:
        calls.append(1)
        raise Forbidden("no", status=403)

    with pytest.raises(Forbidden):
        call_with_retries(call, max_retries=5, base_s=0.01, cap_s=0.1, what="x", sleep=lambda _: None)
    assert calls == [1]
