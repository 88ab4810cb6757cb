"""What every piece of broker logic needs, built once per worker process: settings, store, quota ledger, backend,
and a way to enqueue a task. Logic functions take it as their first argument, so tests build one from real parts
(a real Redis, the API emulator) and call the logic directly, and tasks stay thin."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from broker.backends.base import ClusterBackend
from broker.keys import Keys
from broker.quota import QuotaLedger
from broker.retry import call_with_retries
from broker.settings import BrokerSettings
from broker.store import JobStore

T = TypeVar("T")
#: `enqueue(task_name, job_name)`: send a broker task whose only argument is the job's name.
Enqueue = Callable[[str, str], Any]


@dataclasses.dataclass
class BrokerContext:
    settings: BrokerSettings
    store: JobStore
    quota: QuotaLedger
    backend: ClusterBackend
    enqueue: Enqueue
    sleep: Callable[[float], None] = time.sleep

    @classmethod
    def build(cls, settings: BrokerSettings, backend: ClusterBackend, enqueue: Enqueue) -> BrokerContext:
        client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
        return cls(settings, JobStore(client, settings.key_prefix), QuotaLedger(client, settings.key_prefix),
                   backend, enqueue)

    @property
    def redis(self) -> redis.Redis:
        return self.store.redis

    @property
    def keys(self) -> Keys:
        return self.store.keys

    def with_retries(self, call: Callable[[], T], what: str) -> T:
        """`call()` under the broker's one retry loop with the submit retry settings."""
        s = self.settings
        return call_with_retries(call, max_retries=s.submit_max_retries, base_s=s.submit_backoff_s,
                                 cap_s=s.submit_backoff_max_s, what=what, sleep=self.sleep)
