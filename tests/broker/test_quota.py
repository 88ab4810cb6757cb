"""Quota admission on a real Redis: atomic reservations, idempotent per attempt, FIFO per namespace."""

from __future__ import annotations

import threading

import pytest
import redis

from broker.quota import QuotaLedger
from broker.settings import Quota

LIMIT = Quota(gpus=64, jobs=3)


@pytest.fixture
def ledger(redis_client: redis.Redis) -> QuotaLedger:
    return QuotaLedger(redis_client, prefix="t:")


def test_a_job_that_fits_is_admitted_and_admitting_again_is_idempotent(ledger: QuotaLedger) -> None:
    assert ledger.admit("ml", "a", 1, 16, LIMIT).admitted
    assert ledger.admit("ml", "a", 1, 16, LIMIT).admitted
    assert ledger.held("ml") == {"a#1": 16}


def test_a_job_that_does_not_fit_waits_with_a_detail_a_person_understands(ledger: QuotaLedger) -> None:
    ledger.admit("ml", "big", 1, 56, LIMIT)
    ledger.admit("ml", "first", 1, 16, LIMIT)
    waiting = ledger.admit("ml", "second", 1, 16, LIMIT)
    assert not waiting.admitted
    assert waiting.detail == "needs 16 GPUs, 8 of 64 free in namespace ml; 2nd in line"
    assert ledger.line("ml") == ["first", "second"]


def test_a_later_small_job_does_not_jump_ahead_of_an_earlier_waiting_one(ledger: QuotaLedger) -> None:
    ledger.admit("ml", "big", 1, 56, LIMIT)
    assert not ledger.admit("ml", "earlier", 1, 16, LIMIT).admitted
    assert not ledger.admit("ml", "later", 1, 4, LIMIT).admitted  # 4 would fit, but "earlier" is first
    ledger.release("ml", "big", 1)
    assert not ledger.admit("ml", "later", 1, 4, LIMIT).admitted
    assert ledger.admit("ml", "earlier", 1, 16, LIMIT).admitted
    assert ledger.admit("ml", "later", 1, 4, LIMIT).admitted
    assert ledger.line("ml") == []


def test_other_namespaces_have_their_own_line(ledger: QuotaLedger) -> None:
    ledger.admit("ml", "big", 1, 64, LIMIT)
    assert not ledger.admit("ml", "x", 1, 1, LIMIT).admitted
    assert ledger.admit("cv", "y", 1, 1, LIMIT).admitted


def test_the_job_count_limits_too(ledger: QuotaLedger) -> None:
    for name in "abc":
        assert ledger.admit("ml", name, 1, 0, LIMIT).admitted
    waiting = ledger.admit("ml", "d", 1, 0, LIMIT)
    assert waiting.detail == "needs a job slot, 3 of 3 jobs running in namespace ml; 1st in line"


def test_release_is_idempotent_and_per_attempt(ledger: QuotaLedger) -> None:
    ledger.admit("ml", "a", 1, 8, LIMIT)
    assert ledger.release("ml", "a", 2) is False
    assert ledger.release("ml", "a", 1) is True
    assert ledger.release("ml", "a", 1) is False
    assert ledger.held("ml") == {}


def test_the_clusters_resource_quota_is_respected(ledger: QuotaLedger) -> None:
    waiting = ledger.admit("ml", "a", 1, 8, LIMIT, cluster_free=4)
    assert not waiting.admitted and "4 free under the ResourceQuota" in waiting.detail
    assert ledger.admit("ml", "a", 1, 8, LIMIT, cluster_free=8).admitted


def test_a_job_larger_than_the_limit_waits_without_blocking_the_line(ledger: QuotaLedger) -> None:
    huge = ledger.admit("ml", "huge", 1, 128, LIMIT)
    assert not huge.admitted and "more than the limit of 64" in huge.detail
    assert ledger.admit("ml", "small", 1, 8, LIMIT).admitted


def test_concurrent_admissions_never_overbook(redis_url: str) -> None:
    results: list[bool] = []

    def admit(i: int) -> None:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        results.append(QuotaLedger(client, "t:").admit("ml", f"j{i}", 1, 16, Quota(gpus=64, jobs=100)).admitted)

    threads = [threading.Thread(target=admit, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 4
